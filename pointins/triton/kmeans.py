"""Triton K-means for ragged batched sets: greedy k-means++ initialisation (:func:`plusplus`, one program per
set, one launch) and the assignment with per-cluster accumulation (fused, :func:`assign`).

Each program takes BM points of one set and scans that set's centroids BN at a time: the
point-centroid dot products are a ``tl.dot`` (tensor cores; fp32 runs as 3xTF32 for fp32
accuracy) when ``DOT``, the distance is ``|c|^2 - 2 x.c`` (+ ``|x|^2`` for the reported
distance), ties go to the lowest centroid. With ``ACCUMULATE`` the program then atomically adds
its points to the sums and counts of their clusters (float atomics: not bitwise reproducible).

Tiles never straddle sets: set b owns tile slots ``offsets[b] // BM + b + j`` (no prefix sum
needed, as in kernels/include/pointins/segment.h). Loaded through ``pointins.triton.load``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pointins.triton._device import on_tensor_device

BM = 64
BN = 32
BD = 32  # feature block of the tensor-core path (D >= 16)


def feature_block(d: int) -> int:
    """Feature block for D: 32 on the ``tl.dot`` path (D >= 16); below that the next power of two >= D (at least
    2), so D = 3 uses 4 lanes instead of masking 29 of 32, and the CUDA-core path's (BM, BD, BN) product stays
    small (64 x 4 x 32 rather than 64 x 32 x 32)."""
    if d >= 16:
        return BD
    return max(2, 1 << max(0, int(d) - 1).bit_length())


@triton.jit
def _assign_kernel(
    x_ptr,
    off_ptr,
    coff_ptr,
    cen_ptr,
    tile_set_ptr,
    conv_ptr,
    labels_ptr,
    dist_ptr,
    sums_ptr,
    counts_ptr,
    D,
    HAS_CONV: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    DOT: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BD: tl.constexpr,
):
    q = tl.program_id(0).to(tl.int64)
    s = tl.load(tile_set_ptr + q)
    start = tl.load(off_ptr + s)
    end = tl.load(off_ptr + s + 1)
    lo = start + (q - (start // BM + s)) * BM
    skip = lo >= end
    if HAS_CONV:
        skip = skip | (tl.load(conv_ptr + s) != 0)
    c0 = tl.load(coff_ptr + s)
    kb = tl.load(coff_ptr + s + 1) - c0
    # a set with points but no clusters keeps label -1 / distance 0 (as the CPU op): without this its points
    # would take label 0 and be added into the next set's first centroid (past sums' end for the last set)
    skip = skip | (kb <= 0)
    if not skip:
        rows = lo + tl.arange(0, BM).to(tl.int64)
        rmask = rows < end
        best = tl.full([BM], float("inf"), tl.float32)
        arg = tl.zeros([BM], dtype=tl.int64)
        for n0 in range(0, kb, BN):
            cols = n0 + tl.arange(0, BN).to(tl.int64)
            cmask = cols < kb
            acc = tl.zeros([BM, BN], dtype=tl.float32)
            cn = tl.zeros([BN], dtype=tl.float32)
            for d0 in range(0, D, BD):
                dd = d0 + tl.arange(0, BD)
                dmask = dd < D
                xt = tl.load(x_ptr + rows[:, None] * D + dd[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
                ct = tl.load(
                    cen_ptr + (c0 + cols)[None, :] * D + dd[:, None], mask=cmask[None, :] & dmask[:, None], other=0.0
                )
                if DOT:
                    acc += tl.dot(xt, ct, input_precision="tf32x3")
                else:
                    acc += tl.sum(xt[:, :, None].to(tl.float32) * ct[None, :, :].to(tl.float32), axis=1)
                cf = ct.to(tl.float32)
                cn += tl.sum(cf * cf, axis=0)
            score = cn[None, :] - 2.0 * acc
            score = tl.where(cmask[None, :], score, float("inf"))
            tbest = tl.min(score, axis=1)
            targ = tl.argmin(score, axis=1, tie_break_left=True).to(tl.int64) + n0
            upd = tbest < best
            best = tl.where(upd, tbest, best)
            arg = tl.where(upd, targ, arg)
        xn = tl.zeros([BM], dtype=tl.float32)
        for d0 in range(0, D, BD):
            dd = d0 + tl.arange(0, BD)
            m2 = rmask[:, None] & (dd < D)[None, :]
            xt = tl.load(x_ptr + rows[:, None] * D + dd[None, :], mask=m2, other=0.0).to(tl.float32)
            xn += tl.sum(xt * xt, axis=1)
            if ACCUMULATE:
                tl.atomic_add(sums_ptr + (c0 + arg)[:, None] * D + dd[None, :], xt, mask=m2)
        tl.store(labels_ptr + rows, arg, mask=rmask)
        tl.store(dist_ptr + rows, tl.maximum(xn + best, 0.0), mask=rmask)
        if ACCUMULATE:
            tl.atomic_add(counts_ptr + c0 + arg, tl.full([BM], 1, tl.int64), mask=rmask)


@on_tensor_device
def assign(x, offsets, coff, centroids, converged, accumulate):
    """Same contract as ``torch.ops.pointins.kmeans_assign`` (float32 x): labels (-1 for sets
    skipped as converged), squared distances, and the cluster sums/counts when accumulating."""
    if x.dtype != torch.float32:
        raise TypeError(f"pointins.kmeans (triton): x must be float32, got {x.dtype}; use backend='cuda'/'cpu'.")
    n, d = x.shape
    k = centroids.shape[0]
    num_sets = offsets.numel() - 1
    x, centroids = x.contiguous(), centroids.contiguous()
    labels = torch.full((n,), -1, dtype=torch.int64, device=x.device)
    dist = torch.zeros(n, dtype=x.dtype, device=x.device)
    sums = torch.zeros((k if accumulate else 0, d), dtype=x.dtype, device=x.device)
    counts = torch.zeros(k if accumulate else 0, dtype=torch.int64, device=x.device)
    if n == 0 or k == 0:
        return labels, dist, sums, counts
    sets = torch.arange(num_sets, device=x.device)
    tile_base = offsets[:-1] // BM + sets
    slots = n // BM + num_sets + 1
    tile_set = torch.searchsorted(tile_base, torch.arange(slots, device=x.device), right=True) - 1
    conv = converged.to(torch.int8) if converged is not None else labels
    _assign_kernel[(slots,)](
        x,
        offsets,
        coff,
        centroids,
        tile_set.clamp(min=0),
        conv,
        labels,
        dist,
        sums if accumulate else dist,
        counts if accumulate else labels,
        d,
        HAS_CONV=converged is not None,
        ACCUMULATE=accumulate,
        DOT=d >= 16,
        BM=BM,
        BN=BN,
        BD=feature_block(d),
    )
    return labels, dist, sums, counts


@triton.jit
def _sqdist_tile(x_ptr, rows, rmask, c_ptr, D, BLOCK: tl.constexpr, BD: tl.constexpr):
    """float64 squared distances of the points ``rows`` to the point at ``c_ptr``."""
    acc = tl.zeros([BLOCK], dtype=tl.float64)
    for d0 in range(0, D, BD):
        dd = d0 + tl.arange(0, BD)
        dmask = dd < D
        xt = tl.load(x_ptr + rows[:, None] * D + dd[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
        ct = tl.load(c_ptr + dd, mask=dmask, other=0.0)
        diff = xt.to(tl.float64) - ct.to(tl.float64)[None, :]
        acc += tl.sum(diff * diff, axis=1)
    return acc


@triton.jit
def _plusplus_kernel(
    x_ptr, off_ptr, coff_ptr, uoff_ptr, u_ptr, trials_ptr, d2_ptr, cen_ptr, D,
    BLOCK: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    lo = tl.load(off_ptr + b)
    n = tl.load(off_ptr + b + 1) - lo
    c0 = tl.load(coff_ptr + b)
    kb = tl.load(coff_ptr + b + 1) - c0
    if (kb > 0) & (n > 0):
        xs = x_ptr + lo * D
        ds = d2_ptr + lo
        u0 = tl.load(uoff_ptr + b)
        L = tl.load(trials_ptr + b)
        first = tl.minimum((tl.load(u_ptr + u0) * n.to(tl.float64)).to(tl.int64), n - 1)
        for d0 in range(0, D, BD):
            dd = d0 + tl.arange(0, BD)
            tl.store(cen_ptr + c0 * D + dd, tl.load(xs + first * D + dd, mask=dd < D), mask=dd < D)
        for i0 in range(0, n, BLOCK):
            rows = i0 + tl.arange(0, BLOCK).to(tl.int64)
            rmask = rows < n
            tl.store(ds + rows, _sqdist_tile(xs, rows, rmask, xs + first * D, D, BLOCK, BD), mask=rmask)
        for r in range(1, kb):
            total = tl.zeros([], dtype=tl.float64)
            for i0 in range(0, n, BLOCK):
                rows = i0 + tl.arange(0, BLOCK).to(tl.int64)
                total += tl.sum(tl.load(ds + rows, mask=rows < n, other=0.0))
            best = tl.full([], -1, tl.int64)
            best_pot = tl.full([], float("inf"), tl.float64)
            for t in range(0, L):
                u = tl.load(u_ptr + u0 + 1 + (r - 1) * L + t)
                pick = tl.minimum((u * n.to(tl.float64)).to(tl.int64), n - 1)  # every d2 is 0
                if total > 0:
                    target = u * total
                    carry = tl.zeros([], dtype=tl.float64)
                    hit_i = tl.full([], 1 << 62, tl.int64)
                    last = tl.full([], -1, tl.int64)
                    for i0 in range(0, n, BLOCK):
                        rows = i0 + tl.arange(0, BLOCK).to(tl.int64)
                        rmask = rows < n
                        v = tl.load(ds + rows, mask=rmask, other=0.0)
                        cum = tl.cumsum(v, axis=0) + carry
                        pos = rmask & (v > 0)
                        hit_i = tl.minimum(hit_i, tl.min(tl.where(pos & (cum > target), rows, 1 << 62), axis=0))
                        last = tl.maximum(last, tl.max(tl.where(pos, rows, -1), axis=0))
                        carry += tl.sum(v, axis=0)
                    pick = tl.where(hit_i < n, hit_i, last)
                pot = tl.zeros([], dtype=tl.float64)
                for i0 in range(0, n, BLOCK):
                    rows = i0 + tl.arange(0, BLOCK).to(tl.int64)
                    rmask = rows < n
                    dist = _sqdist_tile(xs, rows, rmask, xs + pick * D, D, BLOCK, BD)
                    pot += tl.sum(tl.where(rmask, tl.minimum(tl.load(ds + rows, mask=rmask, other=0.0), dist), 0.0))
                better = pot < best_pot
                best = tl.where(better, pick, best)
                best_pot = tl.where(better, pot, best_pot)
            for d0 in range(0, D, BD):
                dd = d0 + tl.arange(0, BD)
                tl.store(cen_ptr + (c0 + r) * D + dd, tl.load(xs + best * D + dd, mask=dd < D), mask=dd < D)
            for i0 in range(0, n, BLOCK):
                rows = i0 + tl.arange(0, BLOCK).to(tl.int64)
                rmask = rows < n
                dist = _sqdist_tile(xs, rows, rmask, xs + best * D, D, BLOCK, BD)
                tl.store(ds + rows, tl.minimum(tl.load(ds + rows, mask=rmask, other=0.0), dist), mask=rmask)


PP_BLOCK = 256


@on_tensor_device
def plusplus(x, offsets, coff, seed: int, local_trials: int = 0):
    """Greedy k-means++ centroids (``pointins/kmeans.h``: the same draws and rules as the CPU and CUDA kernels;
    distances and potentials in float64, potentials summed in a different order, so a near-tie between two
    candidates may resolve differently). One program per set, one launch."""
    from pointins.ops import reference

    d = x.shape[1]
    x = x.contiguous()
    num_sets = offsets.numel() - 1
    k_host = coff.diff().tolist()
    trials = [reference.kmeans_local_trials(local_trials, k) for k in k_host]
    need = [1 + max(0, k - 1) * t if k > 0 else 0 for k, t in zip(k_host, trials, strict=True)]
    uoff = torch.tensor([0, *torch.tensor(need).cumsum(0).tolist()][:-1] or [0], dtype=torch.long)
    sets = torch.repeat_interleave(torch.arange(num_sets), torch.tensor(need, dtype=torch.long))
    draws = torch.arange(len(sets)) - torch.repeat_interleave(uoff[:num_sets], torch.tensor(need, dtype=torch.long))
    u = reference.kmeans_uniforms(seed, sets, draws).to(x.device)
    cen = torch.empty((int(coff[-1]), d), dtype=x.dtype, device=x.device)
    if num_sets == 0 or cen.numel() == 0:
        return cen
    d2 = torch.empty(max(1, x.shape[0]), dtype=torch.float64, device=x.device)
    _plusplus_kernel[(num_sets,)](
        x, offsets, coff, uoff.to(x.device), u if len(u) else d2, torch.tensor(trials, dtype=torch.long,
        device=x.device), d2, cen, d, BLOCK=PP_BLOCK, BD=feature_block(d) if d < 16 else 16,
    )  # fmt: skip
    return cen


_SIG = {
    "x_ptr": "*fp32",
    "off_ptr": "*i64",
    "coff_ptr": "*i64",
    "cen_ptr": "*fp32",
    "tile_set_ptr": "*i64",
    "conv_ptr": "*i8",
    "labels_ptr": "*i64",
    "dist_ptr": "*fp32",
    "sums_ptr": "*fp32",
    "counts_ptr": "*i64",
    "D": "i32",
}
_PP_SIG = {"x_ptr": "*fp32", "off_ptr": "*i64", "coff_ptr": "*i64", "uoff_ptr": "*i64", "u_ptr": "*fp64",
           "trials_ptr": "*i64", "d2_ptr": "*fp64", "cen_ptr": "*fp32", "D": "i32"}  # fmt: skip
COMPILE_CHECKS = [
    ("_plusplus_kernel", _PP_SIG, {"BLOCK": PP_BLOCK, "BD": 16}),
    ("_plusplus_kernel", _PP_SIG, {"BLOCK": PP_BLOCK, "BD": 4}),
    ("_assign_kernel", _SIG, {"HAS_CONV": True, "ACCUMULATE": True, "DOT": True, "BM": BM, "BN": BN, "BD": BD}),
    ("_assign_kernel", _SIG, {"HAS_CONV": False, "ACCUMULATE": False, "DOT": False, "BM": BM, "BN": BN, "BD": BD}),
    ("_assign_kernel", _SIG, {"HAS_CONV": True, "ACCUMULATE": True, "DOT": False, "BM": BM, "BN": BN, "BD": 4}),
]
