"""Kernel maps for spconv-shaped layers, in PointINS's dense map layout (``(M, K)`` int64, -1 = no input).

The geometry is spconv 2.x's (measured against spconv 2.3.8, ``tests/test_compat_spconv.py``):

- kernel slots run over the spatial axes with the first axis slowest (``weight[:, k0, k1, k2, :]`` is slot
  ``(k0 * K1 + k1) * K2 + k2``);
- submanifold: output ``o`` (= input ``o``) reads the input at ``o + (k - K // 2) * dilation``;
- strided (regular) conv: output ``o`` reads the input at ``o * stride - padding + k * dilation``; the output
  spatial shape is ``(S + 2 * padding - dilation * (K - 1) - 1) // stride + 1``; the active outputs are the ones
  some input reaches, numbered in the order spconv's CPU build numbers them: kernel slot by slot, and within a slot
  in input order, each output at its first reach;
- inverse conv: the transpose of the paired strided conv's map.
"""

from __future__ import annotations

import itertools
import math

import torch

import pointins.ops as ops


def linear_keys(coords: torch.Tensor, batch: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """``((b * S0 + c0) * S1 + c1) * ...`` as int64 (the caller checked that coordinates are in range)."""
    key = batch.long()
    for d, s in enumerate(shape):
        key = key * int(s) + coords[:, d].long()
    return key


def slots(ksize: list[int], device: torch.device) -> torch.Tensor:
    """``(K, ndim)`` kernel positions, first axis slowest."""
    return torch.tensor(list(itertools.product(*[range(k) for k in ksize])), dtype=torch.long,
                        device=device).reshape(-1, len(ksize))  # fmt: skip


def _fits(shape: list[int], batch_size: int) -> None:
    if batch_size * math.prod(shape) >= 2**62:
        raise ValueError(
            f"pointins.compat.spconv: batch_size x spatial_shape = {batch_size} x {list(shape)} does not fit the "
            "64-bit voxel keys; use a coarser grid or smaller spatial_shape."
        )


def subm_map(indices: torch.Tensor, shape: list[int], batch_size: int, ksize: list[int],
             dilation: list[int]) -> torch.Tensor:  # fmt: skip
    """Submanifold map ``(N, prod(ksize))``: entry ``[i, k]`` = the input at ``indices[i] + (k - K // 2) * d``."""
    n, nd = indices.shape[0], len(shape)
    coords, batch = indices[:, 1:], indices[:, 0]
    k0 = ksize[0]
    cubic = nd == 3 and all(k == k0 for k in ksize) and k0 % 2 == 1 and k0 <= 7 and len(set(dilation)) == 1
    if cubic and max(shape) <= 2**16 and batch_size <= ops.max_batch():  # the compiled map (hash of packed keys)
        return ops.kernel_map(coords.int(), batch=batch.long(), kernel_size=k0, dilation=dilation[0])
    _fits(shape, batch_size)
    table = ops.HashTable(linear_keys(coords, batch, shape))
    pos = slots(ksize, indices.device)
    centre = torch.tensor([k // 2 for k in ksize], device=indices.device)
    dil = torch.tensor(dilation, device=indices.device)
    sh = torch.tensor(shape, device=indices.device)
    out = torch.full((n, pos.shape[0]), -1, dtype=torch.long, device=indices.device)
    c = coords.long()
    for k in range(pos.shape[0]):
        q = c + (pos[k] - centre) * dil
        ok = ((q >= 0) & (q < sh)).all(1)
        found = table.query(linear_keys(q[ok], batch[ok], shape))
        out[ok, k] = found
    return out


def out_shape(shape: list[int], ksize, stride, padding, dilation) -> list[int]:
    rows = zip(shape, ksize, stride, padding, dilation, strict=True)
    return [(s + 2 * p - d * (k - 1) - 1) // st + 1 for s, k, st, p, d in rows]


def conv_map(indices: torch.Tensor, shape: list[int], batch_size: int, ksize: list[int], stride: list[int],
             padding: list[int], dilation: list[int]) -> tuple[torch.Tensor, list[int], torch.Tensor]:  # fmt: skip
    """Regular (strided) conv: ``(out_indices (M, 1 + ndim) int32, out_shape, map (M, K))``."""
    oshape = out_shape(shape, ksize, stride, padding, dilation)
    if min(oshape, default=1) <= 0:
        raise ValueError(
            f"pointins.compat.spconv: the output spatial shape {oshape} is empty (input {list(shape)}, kernel "
            f"{list(ksize)}, stride {list(stride)}, padding {list(padding)}, dilation {list(dilation)})."
        )
    _fits(oshape, batch_size)
    dev = indices.device
    nd, n = len(shape), indices.shape[0]
    kvol = math.prod(ksize)
    # per axis and kernel position k_d: the output coordinate each input reaches, and whether it is one
    # (divisible by the stride, inside the output); slot validity is the AND over axes (1-D passes only)
    reach, ok = [], None
    for d in range(nd):
        c = indices[:, 1 + d].long() + padding[d]
        num = c[None, :] - torch.arange(ksize[d], device=dev)[:, None] * dilation[d]  # (K_d, N)
        o = num if stride[d] == 1 else torch.floor(num.double() / stride[d]).long()  # exact (|num| < 2^53)
        valid = (o * stride[d] == num) & (o >= 0) & (o < oshape[d])
        reach.append(o)
        shp = [1] * (nd + 1)
        shp[0], shp[1 + d] = n, ksize[d]
        v = valid.t().reshape(shp)
        ok = v if ok is None else ok & v
    # slot-major, inputs in order within a slot: spconv's CPU numbering
    slot, src_i = ok.reshape(n, kvol).t().nonzero(as_tuple=True)
    kpos = slots(ksize, dev)[slot]  # (P, nd) kernel position of each pair
    cols = [indices[:, 0].long()[src_i]] + [reach[d][kpos[:, d], src_i] for d in range(nd)]
    key = cols[0]
    for d in range(nd):
        key = key * int(oshape[d]) + cols[1 + d]
    # first reach of each output without sorting: the hash table maps every key to its first position
    first = ops.HashTable(key).query(key)
    is_first = first == torch.arange(key.numel(), device=dev)
    rank = torch.cumsum(is_first, 0) - 1
    out_id = rank[first]
    m = int(rank[-1]) + 1 if key.numel() else 0
    kmap = torch.full((m, kvol), -1, dtype=torch.long, device=dev)
    kmap[out_id, slot] = src_i
    out_idx = torch.stack([c[is_first] for c in cols], 1).to(torch.int32)
    return out_idx, oshape, kmap
