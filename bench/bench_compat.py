# ruff: noqa: B023 -- every closure below is timed and discarded inside the loop iteration that defines it
"""The drop-in paths (pointins.compat) against the libraries they replace, side by side in one process.

One row per migration (README "Migrating from other libraries"): the peer's call and ours on the same input,
results checked equal first, then both timed (medians of ``--repeat`` alternating runs after a warm-up; ratio =
peer time / our time, above 1 we are faster). Peers that are not installed are reported as skipped:
torch_scatter (built from source: ``pip install --no-build-isolation torch-scatter``), spconv 2.3.8 (``pip install
spconv``, CPU build; timed at 1 thread because its CPU rulebook races with more), faiss-cpu, SciPy, Open3D, and
Pointcept's own code (read from a checkout, ``../.mirror/Pointcept+Pointcept/repo``; never committed).

    python bench/bench_compat.py                     # every row, 5-10 minutes on 2 cores; Markdown table on stdout
    python bench/bench_compat.py --quick --only spconv scatter --out compat.md

The ``ptv3`` rows run tools/pointcept_ptv3.py (Pointcept's PT-v3m2 file on spconv + torch_scatter, on
pointins.compat, and PointINS's own encoder with the same weights; 1 thread).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "bench"))

from peers import Row, _peer, add, cli, timepair  # noqa: E402

import pointins.compat.torch_scatter as our_ts  # noqa: E402


def _agree(ok: bool, what: str, err: float | None = None) -> str:
    if not ok:
        return f"DIFFER ({what}{'' if err is None else f', max diff {err:.1e}'})"
    return what if err is None else f"{what}, max diff {err:.0e}"


def bench_scatter(quick: bool, repeat: int) -> None:
    ts = _peer("torch_scatter")
    if ts is not None and ts.__name__.startswith("pointins"):
        ts = None
    n, c, m = (100_000, 32, 2_000) if quick else (1_000_000, 32, 20_000)
    g = torch.Generator().manual_seed(0)
    src = torch.randn(n, c, generator=g)
    index = torch.randint(0, m, (n,), generator=g)
    sorted_index = index.sort().values
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(sorted_index, minlength=m).cumsum(0)])
    size = f"{n // 1000}k x {c} -> {m // 1000}k"
    for reduce in ("sum", "mean", "max"):
        name = f"torch_scatter.scatter(reduce='{reduce}', dim=0)"
        if ts is None:
            add(Row(f"{name} vs torch_scatter", size, note="skipped: torch_scatter not installed"))
            continue

        def ours():
            return our_ts.scatter(src, index, dim=0, dim_size=m, reduce=reduce)

        def peer():
            return ts.scatter(src, index, dim=0, dim_size=m, reduce=reduce)

        err = float((ours() - peer()).abs().max())
        add(Row(f"{name} vs torch_scatter", size, *timepair(ours, peer, repeat), _agree(err < 1e-4, "equal", err)))
    if ts is not None:

        def ours_csr():
            return our_ts.segment_csr(src, indptr, reduce="sum")

        def peer_csr():
            return ts.segment_csr(src, indptr, reduce="sum")

        err = float((ours_csr() - peer_csr()).abs().max())
        add(Row("torch_scatter.segment_csr(reduce='sum') vs torch_scatter", size,
                *timepair(ours_csr, peer_csr, repeat), _agree(err < 1e-4, "equal", err)))  # fmt: skip

        def ours_sm():
            return our_ts.scatter_softmax(src, index, dim=0)

        def peer_sm():
            return ts.scatter_softmax(src, index, dim=0)

        err = float((ours_sm() - peer_sm()).abs().max())
        add(Row("torch_scatter.scatter_softmax(dim=0) vs torch_scatter", size, *timepair(ours_sm, peer_sm, repeat),
                _agree(err < 1e-5, "equal", err)))  # fmt: skip
    else:
        add(Row("torch_scatter.segment_csr / scatter_softmax vs torch_scatter", size, note="skipped"))


def _voxels(n: int, shape=(256, 256, 64), batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, batch, (2 * n,), generator=g)
    # a surface-like cloud: points on a few planes, so neighbourhoods are scan-like (5-10 of 27 occupied)
    x = torch.randint(0, shape[0], (2 * n,), generator=g)
    y = torch.randint(0, shape[1], (2 * n,), generator=g)
    z = (x // 16 + y // 32) % shape[2]
    idx = torch.unique(torch.stack([b, x, y, z], 1), dim=0)[:n]
    return idx.to(torch.int32)


def bench_spconv(quick: bool, repeat: int) -> None:
    sp = _peer("spconv.pytorch")
    import pointins.compat.spconv as ours

    n, c = (20_000, 32) if quick else (150_000, 32)
    idx = _voxels(n)
    shape = [256, 256, 64]
    size = f"{len(idx) // 1000}k voxels, C={c}, 1 thread"
    if sp is None or sp.__name__.startswith("pointins"):
        add(Row("spconv SubMConv3d / SparseConv3d / SparseInverseConv3d", size, note="skipped: spconv not installed"))
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        feat = torch.randn(len(idx), c, generator=torch.Generator().manual_seed(1))
        for label, build in (
            ("SubMConv3d(k=3), kernel map built per call",
             lambda m: m.SubMConv3d(c, c, 3, bias=False, indice_key="s")),
            ("SparseConv3d(k=2, stride=2) + SparseInverseConv3d",
             lambda m: m.SparseSequential(m.SparseConv3d(c, c, 2, stride=2, bias=False, indice_key="d"),
                                          m.SparseInverseConv3d(c, c, 2, bias=False, indice_key="d"))),
        ):  # fmt: skip
            torch.manual_seed(0)
            theirs = build(sp)
            mine = build(ours)
            mine.load_state_dict(theirs.state_dict())

            def peer():
                with torch.no_grad():
                    return theirs(sp.SparseConvTensor(feat, idx, shape, 2))

            def mine_f():
                with torch.no_grad():
                    return mine(ours.SparseConvTensor(feat, idx, shape, 2))

            a, b = peer(), mine_f()
            same = torch.equal(a.indices, b.indices)
            err = float((a.features - b.features).abs().max()) if same else float("inf")
            add(Row(f"spconv.{label} vs spconv 2.3.8", size, *timepair(mine_f, peer, repeat),
                    _agree(same and err < 1e-4, "same indices (order too)", err)))  # fmt: skip
        # cached map (indice_key reuse), the PTv3 CPE pattern
        theirs = sp.SubMConv3d(c, c, 3, bias=False, indice_key="s")
        mine = ours.SubMConv3d(c, c, 3, bias=False, indice_key="s")
        mine.load_state_dict(theirs.state_dict())
        xa, xb = sp.SparseConvTensor(feat, idx, shape, 2), ours.SparseConvTensor(feat, idx, shape, 2)
        with torch.no_grad():
            theirs(xa), mine(xb)

            def peer_c():
                return theirs(xa)

            def mine_c():
                return mine(xb)

            err = float((peer_c().features - mine_c().features).abs().max())
            add(Row("spconv.SubMConv3d(k=3), map cached by indice_key vs spconv 2.3.8", size,
                    *timepair(mine_c, peer_c, repeat), _agree(err < 1e-4, "equal", err)))  # fmt: skip
        xr = ours.SparseConvTensor(feat.clone().requires_grad_(True), idx, shape, 2)

        def mine_b():
            mine(xr).features.square().sum().backward()

        t = timepair(mine_b, mine_b, max(3, repeat // 2))[0]
        add(Row("same, cached map, fwd + bwd (spconv's CPU build has no backward)", size, t, None,
                note="peer cannot: spconv 2.3.8 CPU raises on backward"))  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def bench_pointcept(quick: bool, repeat: int) -> None:
    import pointcept_src

    from pointins.compat import pointcept as pc

    n = 200_000 if quick else 1_000_000
    if not pointcept_src.POINTCEPT.exists():
        add(Row("Pointcept encode / GridSample", f"{n // 1000}k", note="skipped: no Pointcept checkout"))
        return
    theirs = pointcept_src.serialization()
    g = torch.Generator().manual_seed(0)
    grid = torch.randint(0, 1024, (n, 3), generator=g)
    batch = torch.sort(torch.randint(0, 4, (n,), generator=g)).values
    for order in ("z", "hilbert"):

        def ours():
            return pc.encode(grid, batch, depth=10, order=order)

        def peer():
            return theirs.encode(grid, batch, depth=10, order=order)

        same = torch.equal(ours(), peer())
        add(Row(f"Pointcept encode(order='{order}') vs Pointcept's serialization code", f"{n // 1000}k, depth 10",
                *timepair(ours, peer, repeat), _agree(same, "identical codes")))  # fmt: skip
    cls = pointcept_src.grid_sample()
    rng = np.random.default_rng(0)
    coord = (rng.uniform(0, 8, (n, 3))).astype(np.float32)
    color = rng.uniform(0, 255, (n, 3)).astype(np.float32)
    kw = dict(grid_size=0.04, hash_type="fnv", mode="train", return_grid_coord=True, return_inverse=True)
    mine_t, theirs_t = pc.GridSample(**kw), cls(**kw)

    def ours_gs():
        return mine_t({"coord": coord, "color": color})

    def peer_gs():
        return theirs_t({"coord": coord.copy(), "color": color})

    a, b = ours_gs(), peer_gs()
    ka = {tuple(r) for r in a["grid_coord"].tolist()}
    kb = {tuple(r) for r in b["grid_coord"].tolist()}
    same = ka == kb and np.array_equal(a["grid_coord"][a["inverse"]], b["grid_coord"][b["inverse"]])
    add(Row("Pointcept GridSample(mode='train') vs Pointcept's class", f"{n // 1000}k points, 4 cm",
            *timepair(ours_gs, peer_gs, repeat),
            _agree(same, "same voxels and inverse (random pick differs)")))  # fmt: skip


def bench_faiss(quick: bool, repeat: int) -> None:
    faiss = _peer("faiss")
    from pointins.compat.faiss import Kmeans

    n, d, k, it = (20_000, 64, 20, 10) if quick else (200_000, 64, 20, 10)
    size = f"{n // 1000}k x D={d}, k={k}, {it} iters"
    if faiss is None:
        add(Row("faiss.Kmeans vs faiss", size, note="skipped: faiss not installed"))
        return
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(30, d)) * 4)[rng.integers(0, 30, n)] + rng.normal(size=(n, d))
    x = x.astype(np.float32)
    init = x[rng.choice(n, k, replace=False)].copy()

    def ours():
        km = Kmeans(d, k, niter=it)
        km.train(x, init_centroids=init)
        return km.centroids

    def peer():
        km = faiss.Kmeans(d, k, niter=it, max_points_per_centroid=10**9)
        km.train(x, init_centroids=init)
        return km.centroids

    # one Lloyd step from the same start must agree; over more steps float32 distance ties at cluster boundaries
    # move a few points, so the check there is the objective (sum of squared distances to the nearest centroid)
    one_a, one_b = Kmeans(d, k, niter=1), faiss.Kmeans(d, k, niter=1, max_points_per_centroid=10**9)
    one_a.train(x, init_centroids=init)
    one_b.train(x, init_centroids=init)
    err1 = float(np.abs(one_a.centroids - one_b.centroids).max())
    ca, cb = ours(), peer()

    rel = abs(_inertia(x, ca) - _inertia(x, cb)) / _inertia(x, cb)
    ok = err1 < 1e-3 and rel < 1e-4
    add(Row("faiss.Kmeans(...).train(x, init_centroids=) vs faiss", size, *timepair(ours, peer, repeat),
            _agree(ok, f"1 step from the same start: centroids within {err1:.0e}; after {it}: objective within "
                       f"{rel:.0e} (relative)")))  # fmt: skip


def _inertia(x: np.ndarray, c: np.ndarray) -> float:
    """Sum of squared distances to the nearest centroid, in float64 chunks."""
    total = 0.0
    c64 = c.astype(np.float64)
    for s in range(0, len(x), 20_000):
        xb = x[s : s + 20_000].astype(np.float64)
        d2 = (xb * xb).sum(1)[:, None] - 2 * xb @ c64.T + (c64 * c64).sum(1)[None]
        total += float(d2.min(1).sum())
    return total


def bench_scipy(quick: bool, repeat: int) -> None:
    spatial, csgraph, sparse = _peer("scipy.spatial"), _peer("scipy.sparse.csgraph"), _peer("scipy.sparse")
    from pointins.compat.scipy import radius_components

    n, r = (40_000, 0.03) if quick else (200_000, 0.03)
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, (n, 3)) * np.array([6.0, 5.0, 0.3])
    size = f"{n // 1000}k points, r={r}"
    if spatial is None:
        add(Row("radius components vs SciPy", size, note="skipped: scipy not installed"))
        return

    def ours():
        return radius_components(pts, r)

    def peer():
        pairs = spatial.cKDTree(pts).query_pairs(r, output_type="ndarray")
        m = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        return csgraph.connected_components(m, directed=False)

    (na, la), (nb, lb) = ours(), peer()
    same = na == nb and np.array_equal(la, lb)
    add(Row("scipy cKDTree.query_pairs + csgraph.connected_components vs ours", size, *timepair(ours, peer, repeat),
            _agree(same, "same labels")))  # fmt: skip


def bench_open3d(quick: bool, repeat: int) -> None:
    o3d = _peer("open3d")
    from pointins.compat.open3d import voxel_down_sample

    n, v = (200_000, 0.05) if quick else (1_000_000, 0.05)
    size = f"{n // 1000}k points, {v} m"
    if o3d is None:
        add(Row("Open3D voxel_down_sample", size, note="skipped: open3d not installed"))
        return
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 10, (n, 3))
    c = rng.uniform(size=(n, 3))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
    pcd.colors = o3d.utility.Vector3dVector(c)

    def ours():
        return voxel_down_sample(p, v, colors=c)

    def peer():
        return pcd.voxel_down_sample(v)

    a, b = ours(), peer()
    bp = np.asarray(b.points)
    same = len(bp) == len(a.points)
    err = float(np.abs(bp[np.lexsort(bp.T)] - a.points[np.lexsort(a.points.T)]).max()) if same else float("inf")
    add(Row("Open3D PointCloud.voxel_down_sample vs ours", size, *timepair(ours, peer, repeat),
            _agree(same and err < 1e-9, "same voxel means", err)))  # fmt: skip


def bench_ptv3(quick: bool, repeat: int) -> None:
    points = 20_000 if quick else 60_000
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, str(ROOT / "tools" / "pointcept_ptv3.py"), "--points", str(points), "--repeat",
               str(max(3, repeat // 2)), "--steps", "2", "--json", str(out)]  # fmt: skip
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if not out.exists():
            add(Row("Pointcept PT-v3m2", f"{points // 1000}k", note=f"skipped: {r.stderr.strip()[-120:]}"))
            return
        res = json.loads(out.read_text())
    c, nat = res["compat"], res["native"]
    size = f"{c['points'] // 1000}k voxels, tiny shape, 1 thread"
    if "peer" in res:
        pe = res["peer"]
        ok = c["same_voxels"] and c["max_abs_diff_vs_peer"] < 1e-4
        add(Row("Pointcept PT-v3m2 file: on pointins.compat vs on spconv + torch_scatter", size, c["forward_s"],
                pe["forward_s"], _agree(ok, "same output", c["max_abs_diff_vs_peer"])))  # fmt: skip
        ok = nat["same_voxels"] and nat["max_abs_diff_vs_pointcept_file"] < 1e-4
        add(Row("encoder forward: pointins PTv3 vs Pointcept PT-v3m2 (spconv + torch_scatter)", size,
                nat["forward_s"], pe["forward_s"], _agree(ok, "same weights, same output",
                                                          nat["max_abs_diff_vs_pointcept_file"])))  # fmt: skip
    else:
        add(Row("Pointcept PT-v3m2 on spconv + torch_scatter", size, note="skipped: spconv / torch_scatter absent"))


BENCHES = {"scatter": bench_scatter, "spconv": bench_spconv, "pointcept": bench_pointcept, "faiss": bench_faiss,
           "scipy": bench_scipy, "open3d": bench_open3d, "ptv3": bench_ptv3}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return cli(
        argv,
        BENCHES,
        __doc__,
        "Drop-in paths vs the peers",
        "Takes 5-10 minutes on 2 cores (--quick: 1-2); the Markdown table goes to stdout (--out FILE too).",
        repeat=5,
    )


if __name__ == "__main__":
    sys.exit(main())
