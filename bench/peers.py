# ruff: noqa: B023 -- every closure below is timed and discarded inside the loop iteration that defines it
"""Our CPU kernels against the real peers, side by side in one process (issue #24).

Each comparison builds one input, runs ours and the peer on it, checks that the results agree (same voxels,
same partition, same centroids from the same initial centroids, outputs within float tolerance) and only then
times both (medians of ``--repeat`` alternating runs after a warm-up, ``--threads`` threads for everyone). The
ratio is peer time / our time: above 1 we are faster. A peer that is not installed is reported as skipped (``pip install
-e ".[bench]"`` brings faiss-cpu, spconv, torch_geometric, scikit-learn and SciPy; Open3D needs libusb).

    python bench/peers.py                      # every comparison at the issue's sizes, Markdown table on stdout
    python bench/peers.py --quick --only kmeans segment --out peers.md
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

import pointins.ops as ops

ROWS: list[Row] = []


@dataclass
class Row:
    comparison: str
    size: str
    ours_s: float | None = None
    peer_s: float | None = None
    agree: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.peer_s / self.ours_s if self.ours_s and self.peer_s else None


def _peer(name: str):
    with contextlib.suppress(Exception):
        return importlib.import_module(name)
    return None


def timeit(fn: Callable[[], object], repeat: int) -> float:
    """Median time of ``fn`` over ``repeat`` runs after a warm-up (rows with no peer to time)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def timepair(ours: Callable[[], object], peer: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median times of ``ours`` and ``peer``, runs alternating (after a warm-up of each): drift on the machine
    (another runtime's spinning OpenMP threads, page-cache and allocator state) hits both alike."""
    ours(), peer()
    a, b = [], []
    for _ in range(repeat):
        for fn, out in ((ours, a), (peer, b)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return statistics.median(a), statistics.median(b)


def add(row: Row) -> None:
    ROWS.append(row)
    r = f"{row.ratio:.2f}" if row.ratio else "-"
    print(f"  {row.comparison} [{row.size}]: ratio {r} ({row.agree or row.note})", file=sys.stderr, flush=True)


def _clustered(num_sets: int, n: int, d: int, seed: int = 0, centres: int = 30):
    g = torch.Generator().manual_seed(seed)
    parts = []
    for _ in range(num_sets):
        c = torch.randn(centres, d, generator=g) * 4
        parts.append(c[torch.randint(0, centres, (n,), generator=g)] + torch.randn(n, d, generator=g))
    return torch.cat(parts).contiguous(), torch.arange(num_sets + 1) * n


# ------------------------------------------------------------------------------------------------
# K-means
# ------------------------------------------------------------------------------------------------


def bench_kmeans(quick: bool, repeat: int) -> None:
    faiss, skc = _peer("faiss"), _peer("sklearn.cluster")
    cases = [(2, 5_000, 64, 20, 10)] if quick else [(8, 20_000, 64, 20, 10), (8, 20_000, 64, 20, 20),
                                                     (1, 100_000, 64, 20, 10)]  # fmt: skip
    for sets, n, d, k, iters in cases:
        x, off = _clustered(sets, n, d)
        size = f"{sets} x {n // 1000}k x D={d}, k={k}, {iters} iters"
        init = ops.kmeans(x, off, k=k, iters=0, seed=0).centroids

        def ours():  # faiss stops once the objective no longer drops (early_stop_threshold 0), scikit-learn once
            # the labels no longer change (tol=0): ours with tol=0 stops once the centres no longer move
            return ops.kmeans(x, off, k=k, init=init, iters=iters, tol=0.0)

        mine = ours()
        ran = f"ours {int(mine.n_iter.max())}"
        xs = [x[off[b] : off[b + 1]].numpy() for b in range(sets)]
        cs = [init[b * k : (b + 1) * k].numpy() for b in range(sets)]
        if faiss is None:
            add(Row("K-means vs faiss Kmeans (per set)", size, note="skipped: faiss not installed"))
        else:
            faiss_iters = []

            def peer():
                out = []
                faiss_iters.clear()
                for xb, cb in zip(xs, cs, strict=True):
                    km = faiss.Kmeans(d, k, niter=iters, verbose=False, max_points_per_centroid=10**9,
                                      min_points_per_centroid=1)  # fmt: skip
                    km.train(xb, init_centroids=cb)
                    out.append(km.centroids)
                    faiss_iters.append(len(km.obj))
                return np.concatenate(out)

            err = float(np.abs(peer() - mine.centroids.numpy()).max())
            add(Row("K-means vs faiss Kmeans (per set)", size, *timepair(ours, peer, repeat),
                    (f"same init: centroids within {err:.0e}" if err < 1e-3 else f"DIFFER by {err:.2e}")
                    + f"; iterations run: {ran}, faiss {max(faiss_iters)}"))  # fmt: skip
        if skc is None:
            add(Row("K-means vs scikit-learn KMeans(n_init=1)", size, note="skipped: scikit-learn not installed"))
            continue
        sk_iters = []

        def sk():
            sk_iters.clear()
            out = []
            for xb, cb in zip(xs, cs, strict=True):
                km = skc.KMeans(k, init=cb, n_init=1, max_iter=iters, tol=0, algorithm="lloyd").fit(xb)
                out.append(km.cluster_centers_)
                sk_iters.append(km.n_iter_)
            return np.concatenate(out)

        err = float(np.abs(sk() - mine.centroids.numpy()).max())
        add(Row("K-means vs scikit-learn KMeans(n_init=1)", size, *timepair(ours, sk, repeat),
                (f"same init: centroids within {err:.0e}" if err < 1e-3 else f"DIFFER by {err:.2e}")
                + f"; iterations run: {ran}, scikit-learn {max(sk_iters)}"))  # fmt: skip
        # quality: each with its own (greedy) k-means++, inertia ratio per set, median over 7 seeds
        ratios = []
        for b in range(sets):
            mine_i = [float(ops.kmeans(torch.from_numpy(xs[b]), None, k, iters=iters, seed=s).inertia[0])
                      for s in range(7)]  # fmt: skip
            theirs = [skc.KMeans(k, n_init=1, max_iter=iters, tol=0, algorithm="lloyd", random_state=s)
                      .fit(xs[b]).inertia_ for s in range(7)]  # fmt: skip
            ratios.append(statistics.median(mine_i) / statistics.median(theirs))
        add(Row("K-means quality: inertia ours / scikit-learn, own k-means++", size, None, None,
                f"per set {min(ratios):.3f}-{max(ratios):.3f}, geo-mean {float(np.exp(np.mean(np.log(ratios)))):.3f}",
                extra={"ratios": ratios}))  # fmt: skip


def bench_kmeans_fixed(quick: bool, repeat: int) -> None:
    """Uniform data (no early convergence) at a fixed iteration count: faiss with early stopping off
    (``early_stop_threshold=-1``), ours with ``tol=None``. Agreement is checked after one iteration from the same
    initial centroids (later iterations amplify float32 near-ties on uniform data)."""
    faiss = _peer("faiss")
    sets, n, d, k, iters = (2, 5_000, 64, 20, 5) if quick else (8, 20_000, 64, 20, 10)
    size = f"{sets} x {n // 1000}k x D={d} uniform, k={k}, {iters} iters"
    if faiss is None:
        add(Row("K-means vs faiss Kmeans, fixed iterations", size, note="skipped: faiss not installed"))
        return
    x = torch.from_numpy(np.random.default_rng(0).random((sets * n, d), dtype=np.float32))
    off = torch.arange(0, sets * n + 1, n)
    init = ops.kmeans(x, off, k=k, iters=0, seed=0).centroids
    xs = [x[off[b] : off[b + 1]].numpy() for b in range(sets)]
    cs = [init[b * k : (b + 1) * k].numpy() for b in range(sets)]

    def peer(niter=iters):
        out = []
        for xb, cb in zip(xs, cs, strict=True):
            km = faiss.Kmeans(d, k, niter=niter, verbose=False, max_points_per_centroid=10**9,
                              min_points_per_centroid=1, early_stop_threshold=-1.0)  # fmt: skip
            km.train(xb, init_centroids=cb)
            out.append(km.centroids)
        return np.concatenate(out)

    def ours(it=iters):
        return ops.kmeans(x, off, k=k, init=init, iters=it)

    err = float(np.abs(peer(1) - ours(1).centroids.numpy()).max())
    agree = f"same init, 1 iteration: centroids within {err:.0e}" if err < 1e-3 else f"DIFFER by {err:.2e}"
    add(Row("K-means vs faiss Kmeans, fixed iterations (per set)", size, *timepair(ours, peer, repeat),
            agree))  # fmt: skip


# ------------------------------------------------------------------------------------------------
# segment reductions
# ------------------------------------------------------------------------------------------------


def bench_segment(quick: bool, repeat: int) -> None:
    pyg = _peer("torch_geometric.utils")
    n, c = (100_000, 64) if quick else (1_000_000, 64)
    for segs in [20_000] if quick else [200_000, 690_000]:
        g = torch.Generator().manual_seed(1)
        src = torch.randn(n, c, generator=g)
        idx = torch.sort(torch.randint(0, segs, (n,), generator=g)).values
        size = f"{n // 1000}k x {c}, {segs // 1000}k segments"
        for red, tred in (("mean", "mean"), ("max", "amax")):

            def ours(red=red):
                return ops.segment_reduce(src, index=idx, reduce=red, num_segments=segs)

            def torch_peer(tred=tred):
                out = torch.zeros(segs, c)
                return out.scatter_reduce_(0, idx[:, None].expand(-1, c), src, tred, include_self=False)

            a, b = ours(), torch_peer()
            present = torch.bincount(idx, minlength=segs) > 0
            ok = torch.allclose(a[present], b[present], atol=1e-5)
            add(Row(f"segment {red} vs torch.scatter_reduce", size, *timepair(ours, torch_peer, repeat),
                    "yes" if ok else "DIFFER"))  # fmt: skip
            if pyg is None:
                add(Row(f"segment {red} vs torch_geometric scatter", size, note="skipped: torch_geometric absent"))
                continue

            def pyg_peer(red=red):
                return pyg.scatter(src, idx, dim=0, dim_size=segs, reduce=red)

            ok = torch.allclose(a[present], pyg_peer()[present], atol=1e-5)
            add(Row(f"segment {red} vs torch_geometric scatter", size, *timepair(ours, pyg_peer, repeat),
                    "yes" if ok else "DIFFER"))  # fmt: skip


# ------------------------------------------------------------------------------------------------
# connected components
# ------------------------------------------------------------------------------------------------


def _room(n: int, seed: int = 0) -> np.ndarray:
    from pointins.data import synthetic

    sc = synthetic.indoor_scene(seed, 0, synthetic.IndoorConfig(points=(n, n)))
    return np.ascontiguousarray(sc["coord"], np.float32)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def bench_components(quick: bool, repeat: int) -> None:
    spatial, csgraph = _peer("scipy.spatial"), _peer("scipy.sparse.csgraph")
    sparse, o3d = _peer("scipy.sparse"), _peer("open3d")
    n, r = (40_000 if quick else 200_000), 0.03
    coord = _room(n)
    size = f"{n // 1000}k points, r = {r} m"
    t = torch.from_numpy(coord)

    def ours():
        return ops.connected_components(t, None, r).labels.numpy()

    mine = ours()
    if spatial is None or csgraph is None:
        add(Row("connected components vs scipy cKDTree + csgraph", size, note="skipped: scipy absent"))
    else:

        def sp():
            pairs = spatial.cKDTree(coord).query_pairs(r, output_type="ndarray")
            m = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
            return csgraph.connected_components(m, directed=False)[1]

        add(Row("connected components vs scipy cKDTree.query_pairs + csgraph", size, *timepair(ours,
                sp, repeat), "same partition" if _same_partition(mine, sp()) else "DIFFER"))  # fmt: skip
    if o3d is None:
        add(Row("connected components vs Open3D cluster_dbscan(min_points=1)", size, note="skipped: open3d absent"))
    else:
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(coord.astype(np.float64)))

        def o3():
            return np.asarray(pcd.cluster_dbscan(r, 1))

        add(Row("connected components vs Open3D cluster_dbscan(min_points=1)", size, *timepair(ours,
                o3, repeat), "same partition" if _same_partition(mine, o3()) else "DIFFER"))  # fmt: skip


# ------------------------------------------------------------------------------------------------
# voxelization
# ------------------------------------------------------------------------------------------------


def _fnv_grid_sample(coord: np.ndarray, grid: float, rng: np.random.Generator):
    """Pointcept's GridSample(mode="train", hash_type="fnv") as its method reads: 64-bit FNV-1 hash of the grid
    coordinates, argsort, unique with counts, one random point per voxel."""
    gc = np.floor(coord / grid).astype(np.int64)
    gc -= gc.min(0)
    h = np.full(len(gc), 14695981039346656037, np.uint64)
    for j in range(3):
        h = (h * np.uint64(1099511628211)) ^ gc[:, j].astype(np.uint64)
    order = np.argsort(h)
    _, counts = np.unique(h[order], return_counts=True)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pick = order[start + rng.integers(0, counts.max(), counts.size) % counts]
    return pick, counts, gc[pick]


def bench_voxel(quick: bool, repeat: int) -> None:
    o3d = _peer("open3d")
    n = 200_000 if quick else 1_000_000
    coord = _room(n)
    t = torch.from_numpy(coord)
    rng = np.random.default_rng(0)
    for grid in (0.02, 0.05):
        size = f"{n // 1000}k points, {int(grid * 100)} cm"

        def ours(grid=grid):
            return ops.voxelize(t, None, grid, mode="train", seed=0)

        v = ours()
        _, counts, cells = _fnv_grid_sample(coord, grid, rng)
        ours_cells = v.grid_coord.numpy().astype(np.int64)
        ours_cells = ours_cells[v.index.numpy()] if len(ours_cells) == len(coord) else ours_cells

        def key(a):
            return np.sort(a[:, 0] * 2**42 + a[:, 1] * 2**21 + a[:, 2])

        ok = len(counts) == len(v.counts) and np.array_equal(key(cells), key(ours_cells))
        ok = ok and np.array_equal(np.sort(counts), np.sort(v.counts.numpy()))
        add(Row("voxelize (train) vs NumPy FNV hash + argsort (Pointcept's GridSample)", size, *timepair(ours,
                lambda grid=grid: _fnv_grid_sample(coord, grid, rng), repeat),
                "same voxels" if ok else "DIFFER"))  # fmt: skip
        if o3d is None:
            add(Row("voxelize with feature means vs Open3D voxel_down_sample", size, note="skipped: open3d absent"))


# ------------------------------------------------------------------------------------------------
# sparse convolution
# ------------------------------------------------------------------------------------------------


def _voxels(n: int, grid: float = 0.02) -> torch.Tensor:
    """``n`` occupied voxels of a generated room: the ones nearest one voxel (a compact patch of surfaces, so
    the kernel maps are as dense as a scan's)."""
    coord = _room(max(200_000, 2 * n))
    gc = ops.voxelize(torch.from_numpy(coord), None, grid, mode="train", seed=0).grid_coord
    d = ((gc - gc[0]).float() ** 2).sum(1)
    keep = torch.sort(torch.argsort(d)[:n]).values
    gc = gc[keep]
    return (gc - gc.min(0).values).contiguous()


def _spconv_offset_order(spconv, cin: int) -> list[int]:
    """Which spconv kernel slot each of our 27 kernel-map columns is (found on a small cloud, not assumed)."""
    gc = _voxels(400)
    km = ops.kernel_map(gc, None, kernel_size=3)
    feat = torch.randn(len(gc), cin)
    idx = torch.cat([torch.zeros(len(gc), 1, dtype=torch.int32), gc.int()], 1)
    shape = (gc.max(0).values + 1).tolist()
    conv = spconv.SubMConv3d(cin, 1, 3, bias=False, indice_key="probe")
    slots = conv.weight.shape  # (out, kz, ky, kx, in) in spconv 2.x
    order = []
    for j in range(27):
        w = torch.zeros(27, cin, 1)
        w[j, :, 0] = 1.0
        want = ops.sparse_conv(feat, km, w)
        found = -1
        for s in range(27):
            wt = torch.zeros(slots)
            wt.view(1, 27, cin)[0, s] = 1.0
            conv.weight.data.copy_(wt)
            out = conv(spconv.SparseConvTensor(feat, idx, shape, 1)).features
            if torch.allclose(out, want, atol=1e-5):
                found = s
                break
        if want.abs().max() == 0:  # an offset with no neighbour anywhere in the probe cloud: ambiguous
            found = -1
        order.append(found)
    return order if len(set(order)) == 27 else [-1] * 27


def bench_sparse_conv(quick: bool, repeat: int) -> None:
    sp = _peer("spconv.pytorch")
    n = 20_000 if quick else 100_000
    if sp is None:
        add(Row("submanifold conv 3x3x3 vs spconv SubMConv3d (CPU)", f"{n // 1000}k voxels",
                note="skipped: spconv not installed"))  # fmt: skip
        return
    gc = _voxels(n)
    idx = torch.cat([torch.zeros(len(gc), 1, dtype=torch.int32), gc.int()], 1)
    shape = (gc.max(0).values + 1).tolist()
    # spconv 2.3.8's CPU path races with more than one thread: repeated calls on one input differ (measured
    # max diffs of 0.5 with 2 threads; none with 1). The comparison then runs at 1 thread for both.
    threads = torch.get_num_threads()
    probe = sp.SubMConv3d(16, 16, 3, bias=False)
    pf = torch.randn(len(gc), 16, generator=torch.Generator().manual_seed(3))
    runs = [probe(sp.SparseConvTensor(pf, idx, shape, 1)).features for _ in range(3)]
    race = max(float((r - runs[0]).abs().max()) for r in runs)
    if race > 1e-4:
        torch.set_num_threads(1)
    try:
        _sparse_conv_rows(sp, gc, idx, shape, repeat,
                          f"; spconv at {threads} threads: repeated calls differ by {race:.1e}, both timed at 1 thread"
                          if race > 1e-4 else "")  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def _sparse_conv_rows(sp, gc, idx, shape, repeat, race_note):
    n = len(gc)
    for c in (32, 64):
        order = _spconv_offset_order(sp, c)
        size = f"{n // 1000}k voxels, C={c}"
        if min(order) < 0:
            add(Row("submanifold conv vs spconv", size, note="DIFFER: kernel offsets could not be matched"))
            continue
        g = torch.Generator().manual_seed(2)
        w = torch.randn(27, c, c, generator=g) / 27**0.5
        feat = torch.randn(len(gc), c, generator=g)
        conv = sp.SubMConv3d(c, c, 3, bias=False, indice_key="bench")
        wt = torch.zeros_like(conv.weight)  # (out, kz, ky, kx, in)
        wt.view(c, 27, c)[:, order, :] = w.permute(2, 0, 1)
        conv.weight.data.copy_(wt)
        km = ops.kernel_map(gc, None, kernel_size=3)
        x_sp = sp.SparseConvTensor(feat, idx, shape, 1)
        conv(x_sp)  # builds and caches the rulebook on x_sp (indice_key): later calls reuse it
        err = float((ops.sparse_conv(feat, km, w) - conv(x_sp).features).abs().max())
        agree = (f"max diff {err:.0e}" if err < 1e-3 else f"DIFFER by {err:.2e}") + race_note

        def ours_f():
            return ops.sparse_conv(feat, km, w)

        def peer_f():
            return conv(x_sp).features

        add(Row("submanifold conv 3x3x3 vs spconv SubMConv3d, maps reused, fwd", size, *timepair(ours_f,
                peer_f, repeat), agree))  # fmt: skip
        fr = feat.clone().requires_grad_(True)
        wr = w.clone().requires_grad_(True)

        def ours_fb():
            ops.sparse_conv(fr, km, wr).sum().backward()

        try:  # spconv's CPU build has no backward (2.3.8: "Torch not compiled with CUDA enabled")
            conv.weight.requires_grad_(True)
            x_spr = sp.SparseConvTensor(fr, idx, shape, 1)
            conv(x_spr)

            def peer_fb():
                conv(x_spr).features.sum().backward()

            peer_fb()
            add(Row("same, fwd + bwd", size, *timepair(ours_fb, peer_fb, repeat), agree))
        except (AssertionError, RuntimeError) as e:
            add(Row("same, fwd + bwd", size, timeit(ours_fb, repeat), None,
                    note=f"peer cannot: spconv CPU backward raises {type(e).__name__}: {str(e)[:60]}"))  # fmt: skip

        def ours_map():
            return ops.sparse_conv(feat, ops.kernel_map(gc, None, kernel_size=3), w)

        def peer_map():
            return conv(sp.SparseConvTensor(feat, idx, shape, 1)).features

        add(Row("same, including kernel-map / indice generation, fwd", size, *timepair(ours_map,
                peer_map, repeat), agree))  # fmt: skip


BENCHES = {"kmeans": bench_kmeans, "kmeans_fixed": bench_kmeans_fixed, "segment": bench_segment,
           "components": bench_components, "voxel": bench_voxel, "sparse_conv": bench_sparse_conv}  # fmt: skip


def table(rows: list[Row]) -> str:
    out = ["| comparison | size | ours (ms) | peer (ms) | ratio (peer / ours) | results agree |",
           "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ms = lambda s: f"{1e3 * s:.1f}" if s else "-"
        ratio = f"**{r.ratio:.2f}**" if r.ratio and r.ratio < 1 else (f"{r.ratio:.2f}" if r.ratio else "-")
        out.append(f"| {r.comparison} | {r.size} | {ms(r.ours_s)} | {ms(r.peer_s)} | {ratio} | {r.agree or r.note} |")
    return "\n".join(out)


def cli(argv, benches: dict, doc: str, title: str, epilog: str, repeat: int = 7) -> int:
    """The command line both peer benches share: ``--quick``, ``--only``, ``--repeat``, ``--threads``, ``--out``;
    runs the chosen benches, prints the Markdown table headed ``title`` (plus date, machine, threads, torch), and
    exits 1 when any row says DIFFER."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog)
    p.add_argument("--quick", action="store_true", help="small sizes (seconds): a smoke run")
    p.add_argument("--only", nargs="+", choices=sorted(benches), default=list(benches))
    p.add_argument("--repeat", type=int, default=repeat)
    p.add_argument("--threads", type=int, default=2, help="threads for ours and every peer")
    p.add_argument("--out", default=None, help="also write the Markdown table here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    faiss = _peer("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(a.threads)
    ROWS.clear()
    for name in a.only:
        print(f"bench: {name}", file=sys.stderr, flush=True)
        benches[name](a.quick, a.repeat)
    head = (f"{title}, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {a.threads} threads, torch "
            f"{torch.__version__}{' (quick sizes)' if a.quick else ''}")  # fmt: skip
    text = f"{head}\n\n{table(ROWS)}\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    return 1 if any("DIFFER" in r.agree or "DIFFER" in r.note for r in ROWS) else 0


def main(argv: list[str] | None = None) -> int:
    return cli(
        argv,
        BENCHES,
        __doc__,
        "CPU peers",
        "Takes 5-15 minutes on 2 cores (--quick: under 2); the Markdown table goes to stdout (--out FILE too).",
    )


if __name__ == "__main__":
    sys.exit(main())
