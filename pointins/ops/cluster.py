"""Clustering: ragged batched K-means and radius-graph connected components.

:func:`kmeans` clusters many point sets of different sizes in one call (the SCR step of PointINS
runs it per scene on teacher features); :func:`connected_components` links points closer than a
radius within groups (instance clustering at evaluation, pseudo-instances in SCR).

Example::

    >>> import torch, pointins.ops as ops
    >>> x = torch.cat([torch.randn(500, 8), torch.randn(300, 8) + 10])
    >>> km = ops.kmeans(x, offsets=torch.tensor([0, 500, 800]), k=4, iters=20, seed=0)
    >>> km.labels.shape, km.centroids.shape, km.centroid_offsets.tolist()
    (torch.Size([800]), torch.Size([8, 8]), [0, 4, 8])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pointins import _ext
from pointins.ops import _dispatch, reference
from pointins.ops._checks import misplaced
from pointins.ops._interop import check_seed, result_fields, to_tensor
from pointins.ops.keys import _offsets_and_perm
from pointins.ops.segment import segment_reduce

__all__ = ["Components", "KMeans", "connected_components", "kmeans"]

METRICS = ("l2", "cosine")
INITS = ("k-means++", "random")
TRITON_MIN_DIM = 32  # on CUDA, feature dims >= this use the Triton tensor-core assignment


@dataclass
class KMeans:
    """Result of :func:`kmeans`. Set b's centroids are rows
    ``centroid_offsets[b]:centroid_offsets[b+1]`` of ``centroids``."""

    labels: torch.Tensor  # (N,) int64 cluster of each point within its set (0 .. k_b - 1)
    centroids: torch.Tensor  # (sum k_b, D) in x's dtype (unit vectors for metric="cosine")
    centroid_offsets: torch.Tensor  # (B+1,) int64
    inertia: torch.Tensor  # (B,) float64: sum of squared distances (cosine: of 1 - cos)
    n_iter: torch.Tensor  # (B,) int64 Lloyd iterations run per set
    batch: torch.Tensor  # (N,) int64 set of each point

    @property
    def global_labels(self) -> torch.Tensor:
        """Cluster ids unique across sets: ``labels + centroid_offsets[batch]``."""
        return self.labels + self.centroid_offsets[self.batch]


def _per_set_k(k: Any, counts: list[int]) -> list[int]:
    b = len(counts)
    if isinstance(k, int) and not isinstance(k, bool):
        ks = [k] * b
    elif isinstance(k, torch.Tensor | Sequence):
        ks = [int(v) for v in (k.tolist() if isinstance(k, torch.Tensor) else k)]
        if len(ks) != b:
            raise ValueError(f"pointins.kmeans: k has {len(ks)} entries but there are {b} sets; pass one k per set.")
    else:
        raise TypeError(f"pointins.kmeans: k must be an int or one int per set, got {type(k).__name__}.")
    if any(v < 1 for v in ks):
        raise ValueError(f"pointins.kmeans: k must be >= 1 for every set, got {ks}.")
    return [min(v, n) for v, n in zip(ks, counts, strict=True)]  # at most one cluster per point


def kmeans(
    x: Any,
    offsets: Any = None,
    k: int | Sequence[int] | torch.Tensor = 20,
    *,
    batch: Any = None,
    iters: int = 10,
    metric: str = "l2",
    init: str | Any = "k-means++",
    seed: int = 0,
    tol: float | None = None,
    local_trials: int | None = None,
    backend: str | None = None,
) -> KMeans:
    """Lloyd's K-means on every set of a batch at once.

    Args:
        x: (N, D) float32/float64 features (float16/bfloat16 are computed in float32).
        offsets: (B+1,) CSR offsets of the sets (or ``batch=`` per-point set ids; None: one set).
        k: clusters per set, one int or one per set. A set with fewer points than k gets one
            cluster per point (k_b = min(k, n_b)); an empty set gets none.
        iters: maximum Lloyd iterations.
        metric: ``"l2"``, or ``"cosine"`` (spherical K-means: features and centroids are
            L2-normalised; zero-norm features are an error).
        init: ``"k-means++"`` (greedy D^2 sampling: ``local_trials`` candidates per centre, the one
            that lowers the potential most kept, as scikit-learn's default), ``"random"`` (k distinct
            points), or a (sum k_b, D) tensor of initial centroids. Seeded by ``seed``: identical on
            every backend and independent of the thread count.
        local_trials: k-means++ candidates per centre; None: 2 + floor(ln k_b) per set
            (scikit-learn's ``n_local_trials``); 1: the classic single-draw k-means++.
        tol: stop a set once its squared centre shift is <= ``tol * mean per-feature variance``
            of the set (scikit-learn's rule). Checked on the device: no host sync per
            iteration; finished sets skip their work. None: run ``iters`` iterations.

    Empty clusters are re-seeded with the points farthest from their centres (scikit-learn's
    rule). Labels and inertia come from a final assignment to the returned centroids.
    """
    op = "kmeans"
    slip = misplaced(op, "offsets", offsets, "k", "kmeans(x, offsets=None, k=20, *, batch=None, iters=10, "
                     "metric='l2', init='k-means++', seed=0, ...)")  # fmt: skip
    if slip is not None:
        raise slip
    xt, kind = to_tensor(x, "x", op)
    if metric not in METRICS:
        raise ValueError(f"pointins.{op}: metric must be one of {METRICS}, got {metric!r}.")
    if xt.dim() != 2:
        raise ValueError(f"pointins.{op}: x must have shape (N, D), got {tuple(xt.shape)}.")
    if not xt.is_floating_point():
        raise TypeError(f"pointins.{op}: x must be floating point, got {xt.dtype}.")
    if xt.dtype in (torch.float16, torch.bfloat16):
        xt = xt.float()
    if iters < 0:
        raise ValueError(f"pointins.{op}: iters must be >= 0, got {iters}.")
    n, d = xt.shape
    off, perm = _offsets_and_perm(offsets, batch, n, xt.device, op)
    if off[0] != 0 or off[-1] != n or bool((off.diff() < 0).any()):
        reference.check_offsets(off, n, op)
    if perm is not None:
        xt = xt[perm]
    # One reduction instead of an (N, D) mask: a NaN/Inf anywhere makes the sum non-finite (a
    # finite overflow only costs the exact check below).
    if not bool(torch.isfinite(xt.sum())) and not bool((finite := torch.isfinite(xt).all(1)).all()):
        bad = (~finite).nonzero().flatten()
        raise ValueError(
            f"pointins.{op}: x contains NaN or Inf in {bad.numel()} of {n} rows (first at row {int(bad[0])}); "
            "drop them first, e.g. keep = torch.isfinite(x).all(1)."
        )
    if metric == "cosine":
        norms = xt.norm(dim=1)
        zero = norms == 0
        if bool(zero.any()):
            raise ValueError(
                f"pointins.{op}: metric='cosine' needs non-zero features, but {int(zero.sum())} rows have norm 0 "
                f"(first at row {int(zero.nonzero()[0])}). Drop them or use metric='l2'."
            )
        xt = xt / norms[:, None]
    counts = off.diff().tolist()
    ks = _per_set_k(k, counts)
    coff = torch.tensor([0, *torch.tensor(ks).cumsum(0).tolist()], dtype=torch.long, device=xt.device)
    be = _dispatch.select(backend, xt.device, op, ("cpu", "cuda", "triton", "reference"))
    compiled = be in ("cpu", "cuda") or (be == "triton" and _compiled_available(xt.device))

    seed = check_seed(seed, op)
    if local_trials is not None and (
        isinstance(local_trials, bool) or not isinstance(local_trials, int) or not 1 <= local_trials <= 1024
    ):
        raise ValueError(f"pointins.{op}: local_trials must be an integer in [1, 1024] or None, got {local_trials!r}.")
    trials = 0 if local_trials is None else int(local_trials)
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"pointins.{op}: init must be one of {INITS} or a tensor of centroids, got {init!r}.")
        if compiled:
            cen = torch.ops.pointins.kmeans_init(xt, off, coff, INITS.index(init), int(seed) & (2**63 - 1), trials)
        elif be == "triton" and init == "k-means++" and xt.dtype == torch.float32:
            from pointins.triton import load

            cen = load("kmeans").plusplus(xt, off, coff, int(seed) & (2**63 - 1), trials)
        else:
            cen = reference.kmeans_init(xt, off, coff, "random" if init == "random" else "k-means++", int(seed), trials)
    else:
        cen, _ = to_tensor(init, "init", op)
        if cen.shape != (int(coff[-1]), d):
            raise ValueError(
                f"pointins.{op}: init centroids must have shape (sum k_b, D) = ({int(coff[-1])}, {d}), got "
                f"{tuple(cen.shape)} (k per set after clamping to the set sizes: {ks})."
            )
        cen = cen.to(device=xt.device, dtype=xt.dtype).contiguous()
        if metric == "cosine":
            cen = torch.nn.functional.normalize(cen, dim=1)

    tol_t = None
    if tol is not None:
        if tol < 0:
            raise ValueError(f"pointins.{op}: tol must be >= 0, got {tol}.")
        if tol == 0:  # stop when the centres no longer move: no variance needed
            tol_t = torch.zeros(off.numel() - 1, dtype=torch.float64, device=xt.device)
        else:
            var = segment_reduce(xt, offsets=off, reduce="var", backend="reference" if not compiled else None)
            tol_t = tol * var.double().mean(1)
    num_sets = off.numel() - 1
    converged = torch.zeros(num_sets, dtype=torch.bool, device=xt.device)
    n_iter = torch.zeros(num_sets, dtype=torch.long, device=xt.device)
    use_triton = be == "triton" or (
        be == "cuda"
        and d >= TRITON_MIN_DIM
        and xt.dtype == torch.float32  # the tensor-core path; float64 stays on the CUDA kernel
        and _dispatch.triton_status(xt.device) is None
    )
    spherical = metric == "cosine"
    max_k = max(ks, default=0)
    # With tol=0 a set converges only when its centres did not move at all, so its labels and distances from the
    # assignment that preceded are already final: on the CPU they are kept (a set skipped by the kernel reads -1)
    # and the closing assignment pass is skipped when every set converged (scikit-learn skips it the same way).
    exact = tol == 0 and xt.device.type == "cpu"
    kept = None
    for _ in range(iters):
        labels, dist, sums, cnt = _assign(xt, off, coff, cen, converged, True, be, use_triton, max_k)
        if exact:
            kept = (labels, dist) if kept is None else (
                torch.where(labels >= 0, labels, kept[0]), torch.where(labels >= 0, dist, kept[1]))  # fmt: skip
        if compiled:
            cen, converged, n_iter = torch.ops.pointins.kmeans_update(
                xt, off, coff, labels, dist, sums, cnt, cen, tol_t, converged, n_iter, spherical
            )
        else:
            cen, converged, n_iter = reference.kmeans_update(
                xt, off, coff, labels, dist, sums, cnt, cen, tol_t, converged, n_iter, spherical
            )
        if xt.device.type == "cpu" and bool(converged.all()):
            break  # free on the CPU; on the GPU finished sets just skip their work
    if kept is not None and bool(converged.all()):
        labels, dist = kept
    else:
        labels, dist, _, _ = _assign(xt, off, coff, cen, None, False, be, use_triton, max_k)
    inertia = segment_reduce(dist.double()[:, None], offsets=off, backend=None if compiled else "reference")[:, 0]
    if spherical:
        inertia = inertia / 2  # |x - c|^2 = 2 (1 - cos) for unit vectors
    set_of_point = reference.offsets_to_batch(off)
    if perm is not None:
        labels = torch.empty_like(labels).index_copy_(0, perm, labels)
        set_of_point = torch.empty_like(set_of_point).index_copy_(0, perm, set_of_point)
    return result_fields(KMeans(labels, cen, coff, inertia, n_iter, set_of_point), kind)


@dataclass
class Components:
    """Result of :func:`connected_components`. Components are numbered by their first point, so
    those of each sample are contiguous (``offsets`` is their CSR split)."""

    labels: torch.Tensor  # (N,) int64 component of each point; -1: negative group or too small
    sizes: torch.Tensor  # (C,) int64 points per component
    batch: torch.Tensor  # (C,) int64 sample of each component
    offsets: torch.Tensor  # (B+1,) int64 CSR offsets of the components per sample
    first: torch.Tensor  # (C,) int64 smallest point index of each component

    @property
    def num_components(self) -> int:
        return int(self.sizes.shape[0])


def connected_components(
    coord: Any,
    offsets: Any = None,
    radius: float | None = None,
    *,
    batch: Any = None,
    group: Any = None,
    min_size: int = 1,
    backend: str | None = None,
) -> Components:
    """Connected components of the radius graph: points i, j are linked when
    ``|coord_i - coord_j| < radius`` (strictly), they are in the same sample and, when ``group``
    is given, ``group_i == group_j``.

    Args:
        coord: (N, 3) float32/float64 points (e.g. offset-shifted points, or predicted centres).
        offsets / batch: samples (CSR offsets or per-point ids); components never cross samples.
        radius: link distance (> 0).
        group: optional (N,) int ids (a K-means segment, a predicted class); points with a
            **negative group are left out** (label -1, they join nothing).
        min_size: components with fewer points are dropped (their points get label -1).

    Built on hashing of cells of side radius/sqrt(3) and lock-free union-find (CPU and CUDA);
    labels are deterministic: each component is identified by its smallest point index.
    """
    op = "connected_components"
    slip = misplaced(op, "offsets", offsets, "radius", "connected_components(coord, offsets=None, radius=None, *, "
                     "batch=None, group=None, min_size=1)")  # fmt: skip
    if slip is not None:
        raise slip
    c, kind = to_tensor(coord, "coord", op)
    if c.dim() != 2 or c.shape[-1] != 3:
        raise ValueError(f"pointins.{op}: coord must have shape (N, 3), got {tuple(c.shape)}.")
    if not c.is_floating_point():
        raise TypeError(f"pointins.{op}: coord must be floating point, got {c.dtype}.")
    if c.dtype in (torch.float16, torch.bfloat16):
        c = c.float()
    if radius is None or not float(radius) > 0 or not torch.isfinite(torch.tensor(float(radius))):
        raise ValueError(f"pointins.{op}: radius must be finite and > 0, got {radius}.")
    if min_size < 1:
        raise ValueError(f"pointins.{op}: min_size must be >= 1, got {min_size}.")
    n = c.shape[0]
    off, perm = _offsets_and_perm(offsets, batch, n, c.device, op)
    if off[0] != 0 or off[-1] != n or bool((off.diff() < 0).any()):
        reference.check_offsets(off, n, op)
    sample = reference.offsets_to_batch(off)
    if perm is not None:  # per-point sample ids in the caller's order
        sample = torch.empty_like(sample).index_copy_(0, perm, sample)
    if group is None:
        gid = sample
    else:
        g, _ = to_tensor(group, "group", op)
        if g.is_floating_point() or g.dtype == torch.bool:
            raise TypeError(f"pointins.{op}: group must be integer ids, got {g.dtype}.")
        if g.shape != (n,):
            raise ValueError(f"pointins.{op}: group must have shape ({n},), got {tuple(g.shape)}.")
        g = g.to(device=c.device, dtype=torch.long)
        valid = g >= 0
        # dense ids of the (sample, group) pairs: components never cross either. Groups are made dense first,
        # so the pair key stays below n^2 whatever the ids (ids near 2^62 would overflow sample * (gmax + 1)).
        gd = torch.unique(g[valid], return_inverse=True)[1]
        pair = sample[valid] * (int(gd.max()) + 1 if gd.numel() else 1) + gd
        dense = torch.unique(pair, return_inverse=True)[1]
        gid = torch.full_like(g, -1)
        gid[valid] = dense
    be = _dispatch.select(backend, c.device, op, ("cpu", "cuda", "reference"))
    if be == "reference":
        root = reference.radius_components(c, gid, float(radius))
    else:
        root = torch.ops.pointins.radius_components(c, gid, float(radius))
    inside = root >= 0
    first, inverse, counts = torch.unique(root[inside], return_inverse=True, return_counts=True)
    keep = counts >= min_size
    new_id = torch.cumsum(keep, 0) - 1
    labels = torch.full_like(root, -1)
    labels[inside] = torch.where(keep[inverse], new_id[inverse], -1)
    first = first[keep]
    cbatch = sample[first]
    num_samples = off.numel() - 1
    coffsets = torch.cat([cbatch.new_zeros(1), torch.bincount(cbatch, minlength=num_samples).cumsum(0)])
    return result_fields(Components(labels, counts[keep], cbatch, coffsets, first), kind)


def _compiled_available(device: torch.device) -> bool:
    if _ext.try_load() is None:
        return False
    return device.type == "cpu" or _ext.has_cuda()


def _assign(x, off, coff, cen, converged, accumulate, be, use_triton, max_k):
    if use_triton:
        from pointins.triton import load

        return load("kmeans").assign(x, off, coff, cen, converged, accumulate)
    if be == "reference":
        labels, dist, sums, counts = reference.kmeans_assign(x, off, coff, cen)
        if converged is not None:  # finished sets keep their work undone, as the kernels do
            done = converged[reference.offsets_to_batch(off)]
            labels, dist = torch.where(done, -1, labels), torch.where(done, 0, dist)
        return labels, dist, sums, counts
    return torch.ops.pointins.kmeans_assign(x, off, coff, cen, converged, accumulate, max_k)


def _register() -> None:
    @torch.library.register_fake("pointins::radius_components")
    def _(coord, group, radius):
        return group.new_empty(group.shape)

    @torch.library.register_fake("pointins::kmeans_init")
    def _(x, offsets, coff, method, seed, local_trials=0):
        k = torch.library.get_ctx().new_dynamic_size()
        return x.new_empty((k, x.shape[1]))

    @torch.library.register_fake("pointins::kmeans_assign")
    def _(x, offsets, coff, centroids, converged, accumulate, max_k=None):
        n, k = x.shape[0], centroids.shape[0] if accumulate else 0
        return (
            x.new_empty((n,), dtype=torch.int64),
            x.new_empty((n,)),
            x.new_empty((k, x.shape[1])),
            x.new_empty((k,), dtype=torch.int64),
        )

    @torch.library.register_fake("pointins::kmeans_update")
    def _(x, offsets, coff, labels, dist, sums, counts, centroids, tol, converged, n_iter, spherical):
        return torch.empty_like(centroids), torch.empty_like(converged), torch.empty_like(n_iter)


if _ext.try_load() is not None:
    _register()
