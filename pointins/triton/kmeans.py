"""Triton K-means assignment with per-cluster accumulation (fused), for ragged batched sets.

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
COMPILE_CHECKS = [
    ("_assign_kernel", _SIG, {"HAS_CONV": True, "ACCUMULATE": True, "DOT": True, "BM": BM, "BN": BN, "BD": BD}),
    ("_assign_kernel", _SIG, {"HAS_CONV": False, "ACCUMULATE": False, "DOT": False, "BM": BM, "BN": BN, "BD": BD}),
    ("_assign_kernel", _SIG, {"HAS_CONV": True, "ACCUMULATE": True, "DOT": False, "BM": BM, "BN": BN, "BD": 4}),
]
