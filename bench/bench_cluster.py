"""Clustering: ragged batched K-means vs scikit-learn KMeans (per set, same initial centroids) and a
plain-PyTorch Lloyd loop; radius-graph connected components vs SciPy (cKDTree + csgraph)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pointins.ops as ops

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
ITERS = 10


def _sets(num_sets: int, n: int, d: int, device: str):
    g = torch.Generator().manual_seed(0)
    parts = []
    for _ in range(num_sets):
        centres = torch.randn(30, d, generator=g) * 4
        parts.append(centres[torch.randint(0, 30, (n,), generator=g)] + torch.randn(n, d, generator=g))
    x = torch.cat(parts).to(device)
    offsets = torch.arange(num_sets + 1, device=device) * n
    return x, offsets


def torch_lloyd(x, offsets, init, k, iters):
    """Plain PyTorch: per set, cdist + argmin + index_add_, until the centres stop moving."""
    cents, labels = [], []
    for b in range(offsets.numel() - 1):
        xs = x[offsets[b] : offsets[b + 1]]
        c = init[b * k : (b + 1) * k].clone()
        for _ in range(iters + 1):
            lab = torch.cdist(xs, c).argmin(1)
            sums = torch.zeros_like(c).index_add_(0, lab, xs)
            cnt = torch.bincount(lab, minlength=k).clamp(min=1)[:, None]
            new = torch.where(cnt > 0, sums / cnt, c)
            if torch.equal(new, c):
                break
            c = new
        cents.append(c)
        labels.append(lab)
    return torch.cat(cents), torch.cat(labels)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d", [3, 64])
@pytest.mark.parametrize("k", [20, 64])
@pytest.mark.parametrize("impl", ["ours", "scikit-learn KMeans per set", "torch Lloyd loop"])
def bench_kmeans(bench, quick, device, d, k, impl):
    num_sets, n = (2, 20_000) if quick else (8, 100_000)
    x, offsets = _sets(num_sets, n, d, device)
    init = ops.kmeans(x, offsets, k=k, iters=0, seed=0).centroids  # same k-means++ seeds for everyone
    if impl == "ours":
        # tol=0: stop a set once its centres no longer move, as scikit-learn's tol=0 does
        fn = lambda: ops.kmeans(x, offsets, k=k, init=init, iters=ITERS, tol=0.0)
    elif impl == "torch Lloyd loop":
        fn = lambda: torch_lloyd(x, offsets, init, k, ITERS)
    else:
        if device != "cpu":
            pytest.skip("scikit-learn runs on the CPU")
        cluster = pytest.importorskip("sklearn.cluster")
        xn, cn = x.numpy(), init.numpy()

        def fn():
            out = []
            for b in range(num_sets):
                km = cluster.KMeans(
                    k, init=cn[b * k : (b + 1) * k], n_init=1, max_iter=ITERS, tol=0.0, algorithm="lloyd"
                )
                out.append(km.fit(xn[b * n : (b + 1) * n]).inertia_)
            return out

    out = bench(
        fn,
        group=f"kmeans {num_sets}x{n // 1000}k D={d} k={k} iters={ITERS} {device}",
        impl=impl,
        baseline=impl == ("scikit-learn KMeans per set" if device == "cpu" else "torch Lloyd loop"),
        device=device,
        rounds=3,
        points=num_sets * n,
    )
    if impl == "ours" and device == "cpu" and not quick:  # the quality side of the comparison, recorded
        sk = pytest.importorskip("sklearn.cluster")
        b0 = sk.KMeans(k, init=init[:k].numpy(), n_init=1, max_iter=ITERS, tol=0.0, algorithm="lloyd").fit(
            x[:n].numpy()
        )
        rel = abs(float(out.inertia[0]) - b0.inertia_) / b0.inertia_
        ours = float(out.inertia[0])
        print(f"\nkmeans D={d} k={k}: set 0 inertia ours {ours:.6g} sklearn {b0.inertia_:.6g} rel {rel:.2e}")


def _room(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(200, 3, generator=g) * torch.tensor([8.0, 6.0, 3.0])
    lab = torch.randint(0, 200, (n,), generator=g)
    return centres[lab] + 0.12 * torch.randn(n, 3, generator=g)  # instance blobs (offset-shifted points)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["ours", "scipy cKDTree + csgraph"])
@pytest.mark.parametrize("n", [200_000, 1_000_000])
def bench_connected_components(bench, quick, device, impl, n):
    if quick and n > 200_000:
        pytest.skip("--bench-quick")
    coord = _room(n).to(device)
    r = 0.03
    if impl == "ours":
        fn = lambda: ops.connected_components(coord, radius=r)
    else:
        if device != "cpu":
            pytest.skip("SciPy runs on the CPU")
        spatial = pytest.importorskip("scipy.spatial")
        csgraph = pytest.importorskip("scipy.sparse.csgraph")
        sparse = pytest.importorskip("scipy.sparse")
        c = coord.double().numpy()

        def fn():
            pairs = spatial.cKDTree(c).query_pairs(r, output_type="ndarray")
            adj = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
            return csgraph.connected_components(adj, directed=False)

    bench(
        fn,
        group=f"connected components r={r} N={n // 1000}k {device}",
        impl=impl,
        baseline=impl != "ours",
        device=device,
        rounds=3,
        points=n,
    )
