"""Triton kernels for packed voxel keys (same layout as kernels/include/pointins/keys.h).

Loaded through :func:`pointins.triton.load` (``load("keys")``), never imported directly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pointins.triton._device import on_tensor_device

BLOCK = 1024
# Error bits as in kernels/include/pointins/common.h (constexpr: Triton kernels may only read
# constexpr globals).
FLAG_OVERFLOW = tl.constexpr(2)
FLAG_NEGATIVE = tl.constexpr(4)
FLAG_BATCH_RANGE = tl.constexpr(8)
FLAG_BAD_KEY = tl.constexpr(32)


@triton.jit
def _pack_kernel(
    grid_ptr, batch_ptr, keys_ptr, flags_ptr, n, BITS: tl.constexpr, HAS_BATCH: tl.constexpr, BLOCK: tl.constexpr
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(grid_ptr + 3 * offs, mask=m, other=0).to(tl.int64)
    y = tl.load(grid_ptr + 3 * offs + 1, mask=m, other=0).to(tl.int64)
    z = tl.load(grid_ptr + 3 * offs + 2, mask=m, other=0).to(tl.int64)
    if HAS_BATCH:
        b = tl.load(batch_ptr + offs, mask=m, other=0).to(tl.int64)
    else:
        b = tl.zeros([BLOCK], dtype=tl.int64)
    lim = 1 << BITS
    blim = 1 << (63 - 3 * BITS)
    neg = (x < 0) | (y < 0) | (z < 0)
    over = (x >= lim) | (y >= lim) | (z >= lim)
    bbad = (b < 0) | (b >= blim)
    flag = tl.where(neg, FLAG_NEGATIVE, 0) | tl.where(over, FLAG_OVERFLOW, 0) | tl.where(bbad, FLAG_BATCH_RANGE, 0)
    flag = tl.where(m, flag, 0)
    key = (b << (3 * BITS)) | (x << (2 * BITS)) | (y << BITS) | z
    key = tl.where(flag == 0, key, 0)
    tl.store(keys_ptr + offs, key, mask=m)
    tl.atomic_or(flags_ptr + tl.zeros([BLOCK], dtype=tl.int32), flag, mask=flag != 0)


@triton.jit
def _unpack_kernel(keys_ptr, grid_ptr, batch_ptr, flags_ptr, n, BITS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    k = tl.load(keys_ptr + offs, mask=m, other=0)
    bad = m & (k < 0)
    k = tl.where(bad, 0, k)
    mask = (1 << BITS) - 1
    tl.store(grid_ptr + 3 * offs, ((k >> (2 * BITS)) & mask).to(tl.int32), mask=m)
    tl.store(grid_ptr + 3 * offs + 1, ((k >> BITS) & mask).to(tl.int32), mask=m)
    tl.store(grid_ptr + 3 * offs + 2, (k & mask).to(tl.int32), mask=m)
    tl.store(batch_ptr + offs, k >> (3 * BITS), mask=m)
    tl.atomic_or(flags_ptr + tl.zeros([BLOCK], dtype=tl.int32), tl.where(bad, FLAG_BAD_KEY, 0), mask=bad)


@on_tensor_device
def pack_keys(grid_coord: torch.Tensor, batch: torch.Tensor | None, bits: int) -> tuple[torch.Tensor, int]:
    """Keys and the OR of the error flags (0 = fine). Inputs contiguous, on one device."""
    n = grid_coord.shape[0]
    keys = torch.empty(n, dtype=torch.int64, device=grid_coord.device)
    flags = torch.zeros(1, dtype=torch.int32, device=grid_coord.device)
    if n:
        grid = (triton.cdiv(n, BLOCK),)
        _pack_kernel[grid](
            grid_coord,
            batch if batch is not None else keys,
            keys,
            flags,
            n,
            BITS=bits,
            HAS_BATCH=batch is not None,
            BLOCK=BLOCK,
        )
    return keys, _flags(flags, "pack_keys")


def _flags(flags: torch.Tensor, op: str) -> int:
    """The flag word (one sync), or 0 when pointins.ops.deferred_checks() queues it for the step's check."""
    from pointins.ops._checks import defer

    if defer(flags != 0, f"pointins.{op} (triton): the kernel reported invalid input (flags)"):
        return 0
    return int(flags.item())


@on_tensor_device
def unpack_keys(keys: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    n = keys.shape[0]
    grid_coord = torch.empty((n, 3), dtype=torch.int32, device=keys.device)
    batch = torch.empty(n, dtype=torch.int64, device=keys.device)
    flags = torch.zeros(1, dtype=torch.int32, device=keys.device)
    if n:
        _unpack_kernel[(triton.cdiv(n, BLOCK),)](keys, grid_coord, batch, flags, n, BITS=bits, BLOCK=BLOCK)
    return grid_coord, batch, _flags(flags, "unpack_keys")


# Specialisations compiled ahead of time for sm_80/sm_90 by tools/check_triton_compile.py, so a
# kernel that the CPU interpreter accepts but the GPU compiler rejects fails CI, not a GPU run.
COMPILE_CHECKS = [
    (
        "_pack_kernel",
        {"grid_ptr": "*i32", "batch_ptr": "*i64", "keys_ptr": "*i64", "flags_ptr": "*i32", "n": "i64"},
        {"BITS": 16, "HAS_BATCH": True, "BLOCK": BLOCK},
    ),
    (
        "_pack_kernel",
        {"grid_ptr": "*i64", "batch_ptr": "*i64", "keys_ptr": "*i64", "flags_ptr": "*i32", "n": "i32"},
        {"BITS": 21, "HAS_BATCH": False, "BLOCK": BLOCK},
    ),
    (
        "_unpack_kernel",
        {"keys_ptr": "*i64", "grid_ptr": "*i32", "batch_ptr": "*i64", "flags_ptr": "*i32", "n": "i64"},
        {"BITS": 16, "BLOCK": BLOCK},
    ),
]
