"""Triton implicit-GEMM sparse convolution on a kernel map (submanifold or strided).

The convolution is ``out[i] = bias + sum_k x[map[i, k]] @ W[k]`` for a kernel map ``map`` (M, K)
int64 (-1: no neighbour) and weights ``W`` (K, Cin, Cout). Nothing is gathered into memory: each
program owns a (BM rows x BN output channels) tile and, for every kernel offset k, loads the
neighbour rows ``x[map[rows, k]]`` straight into registers (masked where -1) and multiplies them
by ``W[k]`` on the tensor cores; an offset none of the tile's rows has is skipped. Points sorted
along a space-filling curve share neighbourhoods, so tiles are mostly dense or empty per offset.

- Forward: :func:`conv` with ``(map, W)``.
- Input gradient: the same kernel with the transposed map and ``W^T``
  (``dx[j] = sum_k dy[map_t[j, k]] @ W[k]^T``; for a submanifold map of unique voxels
  ``map_t = map.flip(1)``).
- Weight gradient: :func:`weight_grad`, one program per (k, Cin tile, Cout tile, row split)
  reducing ``x[map[i, k]]^T dy[i]`` over its rows; splits are combined either by fp32 atomics
  (``deterministic=False``) or through a (splits, K, Cin, Cout) fp32 workspace summed in split
  order (``deterministic=True``: bitwise reproducible; the split count depends only on the shapes).

fp16/bf16 operands accumulate in fp32; fp32 runs its dots as 3xTF32. Row indices are int64.
Loaded through ``pointins.triton.load``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from pointins.triton._device import on_tensor_device

# (BM, BN, BK, num_warps, num_stages); BN/BK shrink to the channel counts (next power of two >= 16).
CONV_BLOCKS = (64, 64, 32, 4, 3)
# (BM: rows per inner step, BC: Cin tile, BN: Cout tile, num_warps, num_stages)
WGRAD_BLOCKS = (64, 64, 64, 4, 2)
# Target number of weight-gradient programs (only shapes decide the split, so results are the
# same on every GPU).
WGRAD_TARGET_PROGRAMS = 1024


@triton.jit
def _conv_kernel(
    x_ptr, map_ptr, w_ptr, b_ptr, out_ptr, M, CIN, COUT,
    KVOL: tl.constexpr, HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m.to(tl.int64) * BM + tl.arange(0, BM)
    rmask = rows < M
    cols = pid_n * BN + tl.arange(0, BN)
    cmask = cols < COUT
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(KVOL):
        nb = tl.load(map_ptr + rows * KVOL + k, mask=rmask, other=-1)
        valid = nb >= 0
        if tl.max(valid.to(tl.int32), axis=0) > 0:
            for c0 in range(0, CIN, BK):
                ck = c0 + tl.arange(0, BK)
                kmask = ck < CIN
                a = tl.load(x_ptr + nb[:, None] * CIN + ck[None, :], mask=valid[:, None] & kmask[None, :], other=0.0)
                w_rows = (k * CIN + ck).to(tl.int64)
                b = tl.load(
                    w_ptr + w_rows[:, None] * COUT + cols[None, :], mask=kmask[:, None] & cmask[None, :], other=0.0
                )
                acc = tl.dot(a, b, acc, input_precision=PREC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    tl.store(
        out_ptr + rows[:, None] * COUT + cols[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=rmask[:, None] & cmask[None, :],
    )


@triton.jit
def _wgrad_kernel(
    x_ptr, map_ptr, g_ptr, dw_ptr, M, CIN, COUT, ROWS_PER_SPLIT,
    KVOL: tl.constexpr, BM: tl.constexpr, BC: tl.constexpr, BN: tl.constexpr, ATOMIC: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    pid_t = tl.program_id(0)
    k = tl.program_id(1)
    split = tl.program_id(2)
    n_tiles_n = tl.cdiv(COUT, BN)
    ci = (pid_t // n_tiles_n) * BC + tl.arange(0, BC)
    co = (pid_t % n_tiles_n) * BN + tl.arange(0, BN)
    cimask = ci < CIN
    comask = co < COUT
    acc = tl.zeros((BC, BN), dtype=tl.float32)
    start = split.to(tl.int64) * ROWS_PER_SPLIT
    end = tl.minimum(start + ROWS_PER_SPLIT, M)
    for r0 in range(start, end, BM):
        rows = r0 + tl.arange(0, BM)
        nb = tl.load(map_ptr + rows * KVOL + k, mask=rows < end, other=-1)
        valid = nb >= 0
        if tl.max(valid.to(tl.int32), axis=0) > 0:
            a = tl.load(x_ptr + nb[None, :] * CIN + ci[:, None], mask=valid[None, :] & cimask[:, None], other=0.0)
            g = tl.load(g_ptr + rows[:, None] * COUT + co[None, :], mask=valid[:, None] & comask[None, :], other=0.0)
            acc = tl.dot(a, g, acc, input_precision=PREC)
    base = k * CIN if ATOMIC else (split.to(tl.int64) * KVOL + k) * CIN
    ptrs = dw_ptr + (base + ci)[:, None].to(tl.int64) * COUT + co[None, :]
    m = cimask[:, None] & comask[None, :]
    if ATOMIC:
        tl.atomic_add(ptrs, acc, mask=m)
    else:
        tl.store(ptrs, acc, mask=m)


def _prec(dtype: torch.dtype) -> str | None:
    return "tf32x3" if dtype == torch.float32 else None  # 16-bit operands: Triton's default


def _tile(c: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(c)))


def _k_tile(c: int, cap: int) -> int:
    """Reduction tile: the largest power of two <= cap dividing c (no masked tail, e.g. 16 for 48)."""
    b = _tile(c, cap)
    while b > 16 and c % b:
        b //= 2
    return b if c % b == 0 else _tile(c, cap)


def _check(x: torch.Tensor, kmap: torch.Tensor, w: torch.Tensor) -> None:
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"pointins.sparse_conv (triton): features must be float16/bfloat16/float32, got {x.dtype}")
    if not (x.is_contiguous() and kmap.is_contiguous() and w.is_contiguous()):
        raise ValueError("pointins.sparse_conv (triton): features, kernel map and weight must be contiguous")


@on_tensor_device
def conv(x, kmap, w, bias=None, blocks=None):
    """``out[i] = bias + sum_k x[kmap[i, k]] @ w[k]``: x (N, Cin), kmap (M, K) int64, w (K, Cin, Cout)."""
    _check(x, kmap, w)
    m, kvol = kmap.shape
    cin, cout = w.shape[1], w.shape[2]
    out = torch.empty((m, cout), dtype=x.dtype, device=x.device)
    if m == 0 or cout == 0:
        return out
    bm, bn, bk, warps, stages = blocks or CONV_BLOCKS
    bn, bk = _tile(cout, bn), _k_tile(cin, bk)
    grid = (triton.cdiv(m, bm), triton.cdiv(cout, bn))
    _conv_kernel[grid](
        x, kmap, w, bias if bias is not None else w, out, m, cin, cout,
        KVOL=kvol, HAS_BIAS=bias is not None, BM=bm, BN=bn, BK=bk, PREC=_prec(x.dtype),
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


def wgrad_splits(m: int, kvol: int, cin: int, cout: int, blocks=None) -> tuple[int, int]:
    """(number of row splits, rows per split) of the weight-gradient launch (shapes only)."""
    bm, bc, bn = (blocks or WGRAD_BLOCKS)[:3]
    bc, bn = _tile(cin, bc), _tile(cout, bn)
    tiles = triton.cdiv(cin, bc) * triton.cdiv(cout, bn) * kvol
    want = max(1, WGRAD_TARGET_PROGRAMS // tiles)
    rows = triton.cdiv(triton.cdiv(max(m, 1), want), bm) * bm
    return triton.cdiv(max(m, 1), rows), rows


@on_tensor_device
def weight_grad(x, kmap, grad_out, deterministic: bool, blocks=None):
    """``dw[k] = sum_i x[kmap[i, k]]^T grad_out[i]`` as float32 (K, Cin, Cout)."""
    _check(x, kmap, grad_out)
    m, kvol = kmap.shape
    cin, cout = x.shape[1], grad_out.shape[1]
    bm, bc, bn, warps, stages = blocks or WGRAD_BLOCKS
    bc, bn = _tile(cin, bc), _tile(cout, bn)
    splits, rows = wgrad_splits(m, kvol, cin, cout, blocks)
    if m == 0 or cin == 0 or cout == 0:
        return torch.zeros((kvol, cin, cout), dtype=torch.float32, device=x.device)
    if deterministic:
        dw = torch.empty((splits, kvol, cin, cout), dtype=torch.float32, device=x.device)
    else:
        dw = torch.zeros((kvol, cin, cout), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(cin, bc) * triton.cdiv(cout, bn), kvol, splits)
    _wgrad_kernel[grid](
        x, kmap, grad_out, dw, m, cin, cout, rows,
        KVOL=kvol, BM=bm, BC=bc, BN=bn, ATOMIC=not deterministic, PREC=_prec(x.dtype),
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return dw.sum(0) if deterministic else dw


_CONV_SIG = {
    "x_ptr": "*bf16",
    "map_ptr": "*i64",
    "w_ptr": "*bf16",
    "b_ptr": "*bf16",
    "out_ptr": "*bf16",
    "M": "i64",
    "CIN": "i32",
    "COUT": "i32",
}
_WGRAD_SIG = {
    "x_ptr": "*bf16",
    "map_ptr": "*i64",
    "g_ptr": "*bf16",
    "dw_ptr": "*fp32",
    "M": "i64",
    "CIN": "i32",
    "COUT": "i32",
    "ROWS_PER_SPLIT": "i64",
}


def _with(sig: dict, dtype: str) -> dict:
    return {k: (f"*{dtype}" if v == "*bf16" else v) for k, v in sig.items()}


_C, _W = CONV_BLOCKS, WGRAD_BLOCKS
_CONV_OPTS = {"num_warps": _C[3], "num_stages": _C[4]}
_WGRAD_OPTS = {"num_warps": _W[3], "num_stages": _W[4]}
COMPILE_CHECKS = [
    ("_conv_kernel", _CONV_SIG, {"KVOL": 27, "HAS_BIAS": True, "BM": _C[0], "BN": 64, "BK": 16, "PREC": None},
     _CONV_OPTS),
    ("_conv_kernel", _with(_CONV_SIG, "fp16"),
     {"KVOL": 27, "HAS_BIAS": False, "BM": _C[0], "BN": _C[1], "BK": _C[2], "PREC": None}, _CONV_OPTS),
    ("_conv_kernel", _with(_CONV_SIG, "fp32"),
     {"KVOL": 125, "HAS_BIAS": True, "BM": _C[0], "BN": _C[1], "BK": _C[2], "PREC": "tf32x3"}, _CONV_OPTS),
    ("_wgrad_kernel", _WGRAD_SIG, {"KVOL": 27, "BM": _W[0], "BC": _W[1], "BN": _W[2], "ATOMIC": True, "PREC": None},
     _WGRAD_OPTS),
    ("_wgrad_kernel", _with(_WGRAD_SIG, "fp16"),
     {"KVOL": 27, "BM": _W[0], "BC": _W[1], "BN": _W[2], "ATOMIC": False, "PREC": None}, _WGRAD_OPTS),
    ("_wgrad_kernel", _with(_WGRAD_SIG, "fp32"),
     {"KVOL": 27, "BM": _W[0], "BC": 32, "BN": 32, "ATOMIC": True, "PREC": "tf32x3"}, _WGRAD_OPTS),
]  # fmt: skip
