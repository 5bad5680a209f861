"""Ragged batched K-means against the reference, scikit-learn and across backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pointins.ops as ops
from pointins.ops import reference as ref

HYP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def blobs(sizes, d, centers_per_set=4, seed=0, dtype=torch.float64, spread=0.3):
    """Sets of Gaussian blobs (well separated: the right clustering is unambiguous)."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for n in sizes:
        c = torch.randn(centers_per_set, d, generator=g, dtype=torch.float64) * 10
        lab = torch.randint(0, centers_per_set, (n,), generator=g)
        parts.append(c[lab] + spread * torch.randn(n, d, generator=g, dtype=torch.float64))
    x = torch.cat(parts) if parts else torch.zeros(0, d, dtype=torch.float64)
    return x.to(dtype), torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.long)


def _same(a, b, atol=1e-9):
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.centroid_offsets, b.centroid_offsets)
    torch.testing.assert_close(a.centroids, b.centroids, atol=atol, rtol=1e-6)
    torch.testing.assert_close(a.inertia, b.inertia, atol=atol, rtol=1e-6)
    assert torch.equal(a.n_iter, b.n_iter)


@HYP
@given(
    sizes=st.lists(st.integers(0, 120), min_size=1, max_size=4),
    d=st.sampled_from([1, 3, 12]),
    k=st.integers(1, 9),
    init=st.sampled_from(["k-means++", "random"]),
    metric=st.sampled_from(["l2", "cosine"]),
    tol=st.sampled_from([None, 0.0, 1e-3]),
    seed=st.integers(0, 2**20),
    trials=st.sampled_from([None, 1, 3]),
)
def test_cpu_matches_reference(sizes, d, k, init, metric, tol, seed, trials):
    x, off = blobs(sizes, d, seed=seed)
    if metric == "cosine":
        x = x + 0.5  # no zero rows
    kw = dict(k=k, iters=6, init=init, metric=metric, tol=tol, seed=seed, local_trials=trials)
    _same(ops.kmeans(x, off, **kw), ops.kmeans(x, off, backend="reference", **kw))


def _numpy_plusplus(x: np.ndarray, k: int, seed: int, trials: int, set_id: int = 0) -> np.ndarray:
    """Greedy k-means++ written from its description (scikit-learn's ``_kmeans_plusplus``) with the kernels'
    draws: the first centre floor(u0 n); per centre ``trials`` D^2-sampled candidates, the lowest potential kept."""
    n = len(x)
    u = lambda draw: ref.kmeans_uniform(seed, set_id, draw)
    centres = [min(n - 1, int(u(0) * n))]
    d2 = ((x - x[centres[0]]) ** 2).sum(1)
    for r in range(1, k):
        cands = []
        for t in range(trials):
            target = u(1 + (r - 1) * trials + t) * d2.sum()
            above = np.flatnonzero((np.cumsum(d2) > target) & (d2 > 0))
            cands.append(int(above[0]) if len(above) else int(np.flatnonzero(d2 > 0)[-1]))
        pots = [np.minimum(d2, ((x - x[c]) ** 2).sum(1)).sum() for c in cands]
        best = cands[int(np.argmin(pots))]
        centres.append(best)
        d2 = np.minimum(d2, ((x - x[best]) ** 2).sum(1))
    return x[centres]


@pytest.mark.parametrize("trials", [None, 1, 4])
@pytest.mark.parametrize("d", [2, 16])
def test_greedy_plusplus_matches_its_description(trials, d):
    rng = np.random.default_rng(d)
    x = rng.normal(size=(3000, d)) * rng.uniform(0.5, 3, d)
    for seed in range(3):
        got = ops.kmeans(torch.from_numpy(x), None, k=12, iters=0, seed=seed, local_trials=trials).centroids
        want = _numpy_plusplus(x, 12, seed, ref.kmeans_local_trials(trials or 0, 12))
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=0)
    assert [ref.kmeans_local_trials(0, k) for k in (1, 2, 3, 7, 8, 20, 21, 64, 403, 404)] == [2, 2, 3, 3, 4, 4, 5, 6,
                                                                                              7, 8]  # fmt: skip
    assert all(ref.kmeans_local_trials(0, k) == 2 + int(np.log(k)) for k in range(1, 5000))


def test_greedy_plusplus_wide_float32_matches_its_description():
    """The CPU init computes distances through a transposed copy, vectorised across points (the speed path for
    SCR's 384-wide teacher features); each point sums its D squared differences in double, in order (compiled
    without FMA contraction, so the sums equal the row-wise ones). The centres must be exactly those of the
    description with those sums: candidates from sequential prefix sums, potentials summed in 2048-point chunks."""
    rng = np.random.default_rng(3)
    n, d, k, seed = 2500, 384, 6, 11
    x = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32)), dim=1)
    xd = x.double()

    def sq(c):  # sum over d in order: one rounding per multiply, one per add
        out = torch.zeros(n, dtype=torch.float64)
        for j in range(d):
            t = xd[:, j] - xd[c, j]
            out = out + t * t
        return out.numpy()

    trials = ref.kmeans_local_trials(0, k)
    u = lambda draw: ref.kmeans_uniform(seed, 0, draw)
    centres = [min(n - 1, int(u(0) * n))]
    d2 = sq(centres[0])
    for r in range(1, k):
        prefix = np.cumsum(d2)  # sequential, as the kernel's running sum
        cands = []
        for t in range(trials):
            above = np.flatnonzero((prefix > u(1 + (r - 1) * trials + t) * prefix[-1]) & (d2 > 0))
            cands.append(int(above[0]))
        pots = []
        for c in cands:
            v = np.minimum(d2, sq(c))
            pots.append(sum(float(np.cumsum(v[i : i + 2048])[-1]) for i in range(0, n, 2048)))
        best = cands[int(np.argmin(pots))]
        centres.append(best)
        d2 = np.minimum(d2, sq(best))
    got = ops.kmeans(x, None, k=k, iters=0, seed=seed).centroids
    assert torch.equal(got, x[centres])


def test_greedy_plusplus_quality_matches_scikit_learn():
    """Inertia after 10 Lloyd iterations within 2% of scikit-learn's median single run (its greedy k-means++),
    geometric mean over sets and seeds, on clustered and on uniform data; the classic single-draw seeding
    (local_trials=1) is far worse on clustered data."""
    sk = pytest.importorskip("sklearn.cluster")
    rng = np.random.default_rng(0)
    ratios: dict = {}
    for kind in ("clustered", "uniform"):
        for d, k in ((3, 8), (64, 32), (1088, 16)):
            for seed in range(2):
                if kind == "uniform":
                    x = rng.random((2000, d))
                else:
                    x = rng.normal(0, 3, (k, d))[rng.integers(0, k, 2000)] + rng.normal(size=(2000, d))
                fits = [sk.KMeans(k, n_init=1, random_state=s, max_iter=10, tol=0, algorithm="lloyd").fit(x).inertia_
                        for s in range(5)]  # fmt: skip
                base = float(np.median(fits))
                for trials in (None, 1):
                    ours = float(ops.kmeans(torch.from_numpy(x), None, k, iters=10, seed=seed,
                                            local_trials=trials).inertia[0])  # fmt: skip
                    ratios.setdefault((kind, trials), []).append(ours / base)
    geo = {key: float(np.exp(np.mean(np.log(v)))) for key, v in ratios.items()}
    assert geo[("clustered", None)] <= 1.02 and geo[("uniform", None)] <= 1.02, geo
    assert geo[("clustered", 1)] > geo[("clustered", None)] + 0.05, geo


def test_per_set_k_clamping_and_empty_sets():
    x, off = blobs([50, 0, 3, 200], 3)
    km = ops.kmeans(x, off, k=[4, 5, 10, 7], iters=5)
    assert km.centroid_offsets.tolist() == [0, 4, 4, 7, 14]  # k_b = min(k, n_b)
    assert km.inertia[1] == 0 and km.inertia[2] == 0  # 3 points, 3 clusters
    assert km.labels.min() >= 0 and (km.labels < torch.tensor([4, 5, 3, 7])[km.batch]).all()
    g = km.global_labels
    assert torch.equal(g, km.labels + km.centroid_offsets[km.batch])
    # every centroid is the mean of its points
    for j in range(km.centroids.shape[0]):
        if (g == j).any():
            torch.testing.assert_close(km.centroids[j], x[g == j].mean(0))


def test_empty_cluster_is_reseeded_with_the_farthest_point():
    x = torch.tensor([[0.0, 0], [0.1, 0], [5.0, 0], [5.2, 0], [9.0, 0]], dtype=torch.float64)
    init = torch.tensor([[0.0, 0], [5.0, 0], [100.0, 100.0]], dtype=torch.float64)  # third one gets no point
    for be in ("cpu", "reference"):
        km = ops.kmeans(x, k=3, init=init, iters=1, backend=be)
        # after one update the empty cluster sits on the point farthest from its centre (9.0)
        assert km.centroids[2].tolist() == [9.0, 0.0], be
        assert sorted(km.labels.tolist()) == [0, 0, 1, 1, 2]


def test_matches_scikit_learn_with_the_same_initial_centroids():
    sklearn = pytest.importorskip("sklearn.cluster")
    x, off = blobs([3000, 1700], 16, centers_per_set=8, seed=3, spread=2.0)
    init = ops.kmeans(x, off, k=[10, 6], iters=0).centroids  # k-means++ seeds, 0 iterations
    km = ops.kmeans(x, off, k=[10, 6], init=init, iters=30, tol=1e-4)
    for b, (lo, hi) in enumerate(zip(off[:-1].tolist(), off[1:].tolist(), strict=True)):
        c0, c1 = km.centroid_offsets[b].item(), km.centroid_offsets[b + 1].item()
        sk = sklearn.KMeans(c1 - c0, init=init[c0:c1].numpy(), n_init=1, max_iter=30, tol=1e-4, algorithm="lloyd")
        sk.fit(x[lo:hi].numpy())
        assert abs(km.inertia[b].item() - sk.inertia_) <= 1e-4 * sk.inertia_
        assert km.n_iter[b].item() <= 30


def test_tolerance_stops_sets_independently():
    x, off = blobs([400, 400], 2, centers_per_set=3, seed=5)
    km = ops.kmeans(x, off, k=3, iters=50, tol=1e-6, seed=1)
    assert (km.n_iter < 50).all()
    fixed = ops.kmeans(x, off, k=3, iters=int(km.n_iter.max()) + 5, seed=1)
    torch.testing.assert_close(km.inertia, fixed.inertia)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_tol0_keeps_the_converged_assignment(dtype, metric):
    # tol=0 on the CPU reuses each set's last assignment instead of a closing pass: labels and inertia must be
    # exactly those of a fresh assignment to the final centres, with sets converging at different iterations,
    # an empty set, a set with fewer points than k, and a run cut short before every set converged
    x, off = blobs([300, 0, 2, 500, 120], 5, centers_per_set=3, seed=8, dtype=dtype, spread=2.0)
    for iters in (40, 2):
        km = ops.kmeans(x, off, k=4, iters=iters, tol=0.0, seed=3, metric=metric)
        again = ops.kmeans(x, off, k=4, init=km.centroids, iters=0, metric=metric)
        assert torch.equal(km.labels, again.labels)
        if metric == "l2":
            assert torch.equal(km.inertia, again.inertia)
        else:  # init= re-normalises the (unit) centroids: last-bit changes
            torch.testing.assert_close(km.inertia, again.inertia, rtol=1e-6, atol=1e-6)
    assert len(set(ops.kmeans(x, off, k=4, iters=40, tol=0.0, seed=3).n_iter.tolist())) > 1


def test_unsorted_batch_ids_keep_the_caller_order():
    x, off = blobs([60, 90], 3, seed=6)
    b = ref.offsets_to_batch(off)
    perm = torch.randperm(150, generator=torch.Generator().manual_seed(0))
    xs, bs = x[perm], b[perm]
    order = torch.sort(bs, stable=True).indices  # the sets' points in their order of appearance
    a = ops.kmeans(xs[order], off, k=4, iters=4)
    c = ops.kmeans(xs, batch=bs, k=4, iters=4)
    assert torch.equal(c.labels[order], a.labels) and torch.equal(c.batch, bs)


def test_deterministic_across_thread_counts():
    x, off = blobs([5000, 3000], 40, centers_per_set=10, seed=7, dtype=torch.float32, spread=3.0)
    prev = torch.get_num_threads()
    try:
        res = []
        for t in (1, max(2, prev)):
            torch.set_num_threads(t)
            res.append(ops.kmeans(x, off, k=12, iters=5, seed=3))
    finally:
        torch.set_num_threads(prev)
    _same(res[0], res[1], atol=0)


def test_float32_high_dim_matches_reference():
    x, off = blobs([700, 500], 64, centers_per_set=6, seed=8, dtype=torch.float32, spread=1.0)
    a = ops.kmeans(x, off, k=6, iters=5, seed=2)
    b = ops.kmeans(x, off, k=6, iters=5, seed=2, backend="reference")
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.inertia, b.inertia, rtol=1e-4, atol=1e-3)


@pytest.mark.triton
@pytest.mark.parametrize("d", [3, 40])
def test_triton_assignment_matches_cpu(triton_interpret, d):
    x, off = blobs([300, 0, 170], d, centers_per_set=5, seed=9, dtype=torch.float32, spread=0.5)
    kw = dict(k=[5, 2, 40], iters=4, seed=4, tol=1e-5)
    a = ops.kmeans(x, off, backend="triton", **kw)
    b = ops.kmeans(x, off, backend="cpu", **kw)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.n_iter, b.n_iter)
    torch.testing.assert_close(a.centroids, b.centroids, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.inertia, b.inertia, rtol=1e-4, atol=1e-3)


@pytest.mark.cuda
@pytest.mark.parametrize("d", [3, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(d, dtype):
    x, off = blobs([4000, 100, 0, 2500], d, centers_per_set=6, seed=10, dtype=dtype, spread=0.5)
    for init in ("k-means++", "random"):
        kw = dict(k=[8, 3, 4, 20], iters=8, seed=5, init=init, tol=1e-6)
        a = ops.kmeans(x.cuda(), off.cuda(), **kw)
        b = ops.kmeans(x, off, **kw)
        torch.testing.assert_close(a.centroids.cpu(), b.centroids, rtol=1e-4, atol=1e-4)
        assert (a.labels.cpu() == b.labels).float().mean() > 0.999
        torch.testing.assert_close(a.inertia.cpu(), b.inertia, rtol=1e-4, atol=1e-3)
    for m in ("l2", "cosine"):  # backend='cuda' without Triton too (D >= 32 otherwise uses Triton)
        a = ops.kmeans(x.cuda() + 1, off.cuda(), k=5, iters=4, metric=m, backend="cuda")
        b = ops.kmeans(x + 1, off, k=5, iters=4, metric=m)
        torch.testing.assert_close(a.inertia.cpu(), b.inertia, rtol=1e-4, atol=1e-3)


def test_bad_input():
    x, off = blobs([20, 30], 3)
    nan = x.clone()
    nan[7, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf in 1 of 50 rows \(first at row 7\)"):
        ops.kmeans(nan, off, k=3)
    zero = x.clone()
    zero[4] = 0
    with pytest.raises(ValueError, match="metric='cosine' needs non-zero features"):
        ops.kmeans(zero, off, k=3, metric="cosine")
    ops.kmeans(zero, off, k=3, metric="l2")  # fine under L2
    with pytest.raises(ValueError, match="k has 3 entries but there are 2 sets"):
        ops.kmeans(x, off, k=[1, 2, 3])
    for bad in (0, 2000, True, 2.0):
        with pytest.raises(ValueError, match="local_trials must be an integer"):
            ops.kmeans(torch.randn(20, 3), None, 4, local_trials=bad)
    with pytest.raises(ValueError, match="k must be >= 1"):
        ops.kmeans(x, off, k=0)
    with pytest.raises(ValueError, match=r"init centroids must have shape \(sum k_b, D\) = \(6, 3\)"):
        ops.kmeans(x, off, k=3, init=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="metric must be one of"):
        ops.kmeans(x, off, metric="l1")
    with pytest.raises(ValueError, match="init must be one of"):
        ops.kmeans(x, off, init="forgy")
    with pytest.raises(ValueError, match="not valid CSR offsets"):
        ops.kmeans(x, torch.tensor([0, 30, 20]), k=2)
    with pytest.raises(TypeError, match="floating point"):
        ops.kmeans(x.long(), off)
    with pytest.raises(ValueError, match="has 20 points but 21 clusters"):
        torch.ops.pointins.kmeans_init(x, off, torch.tensor([0, 21, 22]), 0, 0)


def test_opcheck():
    x, off = blobs([30, 0, 25], 5)
    coff = torch.tensor([0, 4, 4, 7])
    cen = torch.ops.pointins.kmeans_init(x, off, coff, 0, 1)
    conv = torch.tensor([False, False, True])
    torch.library.opcheck(torch.ops.pointins.kmeans_init, (x, off, coff, 1, 3))
    torch.library.opcheck(torch.ops.pointins.kmeans_assign, (x, off, coff, cen, conv, True, None))
    labels, dist, sums, counts = torch.ops.pointins.kmeans_assign(x, off, coff, cen, None, True)
    assert (labels[55 - 25 :] >= 0).all()
    args = (x, off, coff, labels, dist, sums, counts, cen, torch.ones(3), conv, torch.zeros(3, dtype=torch.long), False)
    torch.library.opcheck(torch.ops.pointins.kmeans_update, args)


@pytest.mark.cuda
@pytest.mark.parametrize("d", [3, 64])
def test_cuda_lloyd_steps_never_synchronise(d):
    # The tolerance is checked on the device: an iteration (assignment + update) must not sync.
    x, off = blobs([3000, 2000], d, dtype=torch.float32)
    x, off = x.cuda(), off.cuda()
    coff = torch.tensor([0, 6, 10], device="cuda")
    cen = torch.ops.pointins.kmeans_init(x, off, coff, 0, 0)
    conv = torch.zeros(2, dtype=torch.bool, device="cuda")
    n_iter = torch.zeros(2, dtype=torch.long, device="cuda")
    tol = torch.full((2,), 1e-3, dtype=torch.float64, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            lab, dist, sums, cnt = torch.ops.pointins.kmeans_assign(x, off, coff, cen, conv, True, 6)
            cen, conv, n_iter = torch.ops.pointins.kmeans_update(
                x, off, coff, lab, dist, sums, cnt, cen, tol, conv, n_iter, False
            )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert (n_iter.cpu() >= 1).all()


@pytest.mark.triton
def test_triton_set_with_points_but_no_clusters(triton_interpret):
    """A set with points and k_b = 0 (the registered op is public: ops.kmeans never makes one) must leave its
    points unlabelled and must not add them into the next set's first centroid (past the end for the last)."""
    from pointins.triton import kmeans as tk

    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, generator=g)
    off = torch.tensor([0, 10, 30])
    coff = torch.tensor([0, 0, 2])  # set 0: 10 points, no clusters; set 1: 2 clusters
    cen = torch.randn(2, 3, generator=g)
    labels, dist, sums, counts = tk.assign(x, off, coff, cen, None, True)
    ref = ops.reference.kmeans_assign(x, off, coff, cen)
    assert torch.equal(labels, ref[0])
    assert (labels[:10] == -1).all() and (dist[:10] == 0).all()
    assert torch.equal(counts, ref[3]) and counts.sum() == 20
    torch.testing.assert_close(sums, ref[2], rtol=1e-5, atol=1e-5)
    # the last set without clusters: nothing written past the end
    labels, _, sums, counts = tk.assign(x, torch.tensor([0, 20, 30]), torch.tensor([0, 2, 2]), cen, None, True)
    assert (labels[20:] == -1).all() and counts.sum() == 20


def test_triton_feature_block_fits_small_dims():
    from pointins.triton.kmeans import feature_block

    assert [feature_block(d) for d in (1, 2, 3, 4, 5, 8, 9, 15, 16, 64)] == [2, 2, 4, 4, 8, 8, 16, 16, 32, 32]


@pytest.mark.triton
@pytest.mark.parametrize("trials", [0, 1, 3])
def test_triton_greedy_plusplus_matches_reference(triton_interpret, trials):
    """The Triton initialisation (one program per set) picks the same centres as the reference: ragged sets,
    an empty set, a set without clusters, k = n, and a set whose points all coincide."""
    from pointins.triton import kmeans as tk

    x, off = blobs([300, 0, 170, 5, 40], 5, centers_per_set=5, seed=9, dtype=torch.float32, spread=0.5)
    x[off[4] : off[5]] = 1.5  # every d2 is 0 after the first centre
    coff = torch.tensor([0, 7, 7, 7, 12, 16])  # k: 7, 0 (empty set), 0 (points, no clusters), 5 = n, 4
    for seed in (0, 11):
        got = tk.plusplus(x, off, coff, seed, trials)
        want = ref.kmeans_init(x, off, coff, "k-means++", seed, trials)
        assert torch.equal(got, want), (seed, trials)
