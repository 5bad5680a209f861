"""Triton serialized patch attention (PTv3): forward with log-sum-exp, backward for q, k and v.

Rows are read **through index arrays inside the kernels**; no permuted copy of ``qkv`` is made:

- ``rows[j]`` (P,): the ``qkv`` row that padded slot ``j`` reads (``order[pad[j]]``);
- ``dst[j]`` (P,): where slot ``j``'s results go: its point's row (< N) when ``j`` is that point's
  own slot, else ``N + r`` for the r-th duplicate slot (PTv3 padding repeats points K slots
  earlier, so duplicates sit in the last patch of a cloud);
- ``cu_seqlens`` (num_patches + 1,) int32: patch starts in slot space, then P.

Duplicated slots act as keys/values only: their queries produce nothing (forward skips the store;
backward loads ``lse = +inf`` and ``dO = 0`` for them, so their probabilities are exactly 0). Their
key/value gradients go to side rows ``dkv_side[r]`` that the caller adds onto the original points.

Layout: ``qkv`` (N, 3C) with column ``s*C + h*D + d`` for s in (q, k, v), head h, channel d (the
PTv3 ``qkv`` Linear); the output (N, C) and ``lse`` (N, H, natural log) are in point order.

Forward: one program per (patch x head, query block), online softmax in base 2 (the scale is folded
into one FMA), full key blocks unmasked and one masked tail. Backward: one program per (patch x
head, key block) accumulating dK, dV in registers over the patch's query blocks; dQ either by fp32
atomics from the same programs (``deterministic=False``: one exponential per score) or by a second
kernel per query block (``deterministic=True``: bitwise reproducible, two exponentials per score).
fp16/bf16 operands with fp32 accumulation; fp32 runs its dots as 3xTF32. Loaded through
``pointins.triton.load``.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from pointins.triton._device import on_tensor_device

LN2 = tl.constexpr(0.6931471805599453)
LOG2E = tl.constexpr(1.4426950408889634)

HEAD_DIMS = (16, 32, 64, 128)
# (BM, BN, num_warps, num_stages) per kernel, operand width (16: fp16/bf16; 32: fp32, whose dots run as 3xTF32
# and need about twice the registers and shared memory) and head dim. One table for every dtype was wrong: fp32
# at D=64/128 needed up to 525 KB of shared memory (H100/H200 allow 232,448 B) and spilled. Every entry below was
# compiled for sm_90 with triton 3.6 (tools/check_triton_compile.py prints the table): all fit sm_80's 166,912 B
# and sm_90's 232,448 B, none spills registers. In bwd_kv, BM is the query block of the inner loop and BN the key
# block per program. bench/tune_attention.py sweeps alternatives on a GPU.
BLOCKS = {
    "fwd": {
        16: {16: (128, 64, 4, 2), 32: (128, 64, 4, 2), 64: (128, 64, 8, 2), 128: (64, 32, 8, 2)},
        32: {16: (128, 64, 8, 2), 32: (128, 64, 8, 2), 64: (32, 32, 4, 2), 128: (16, 32, 4, 2)},
    },
    "bwd_kv": {
        16: {16: (64, 128, 8, 2), 32: (64, 128, 8, 2), 64: (64, 64, 8, 2), 128: (32, 32, 8, 2)},
        32: {16: (32, 128, 8, 2), 32: (32, 64, 8, 2), 64: (16, 32, 4, 2), 128: (16, 16, 8, 2)},
    },
    "bwd_q": {
        16: {16: (128, 64, 8, 2), 32: (128, 64, 8, 2), 64: (128, 64, 8, 2), 128: (32, 32, 8, 2)},
        32: {16: (128, 64, 8, 2), 32: (128, 64, 8, 2), 64: (32, 32, 8, 2), 128: (16, 16, 8, 2)},
    },
}
# Overrides of the table for every dtype and head dim (tests, bench/tune_attention.py); None: use BLOCKS.
FWD_BLOCKS = None
BWD_KV_BLOCKS = None
BWD_Q_BLOCKS = None


def blocks_for(kernel: str, dtype: torch.dtype, d: int) -> tuple[int, int, int, int]:
    """(BM, BN, num_warps, num_stages) of ``kernel`` (fwd, bwd_kv, bwd_q) for operands of ``dtype`` and head dim
    ``d``: the module-level override when set, else :data:`BLOCKS`."""
    override = {"fwd": FWD_BLOCKS, "bwd_kv": BWD_KV_BLOCKS, "bwd_q": BWD_Q_BLOCKS}[kernel]
    if override is not None:
        return tuple(override)
    return BLOCKS[kernel][32 if dtype == torch.float32 else 16][d]


# Software exp2 for every EXP2_EMULATION-th key block (0 = off): a cubic on the FMA units instead
# of the special-function unit, which at head dim 16 is the bottleneck (as FlashAttention-4 does on
# Blackwell). Relative error 7.5e-5, below bf16/fp16 rounding of P; never used for float32.
# Off until a GPU benchmark shows it pays (bench_attention.py times 1/4 and 1/2).
EXP2_EMULATION = {torch.float16: 0, torch.bfloat16: 0}
# 2^f on [0, 1): minimax (relative error) cubic, fitted here.
_C0 = tl.constexpr(0.99992512)
_C1 = tl.constexpr(0.69583408)
_C2 = tl.constexpr(0.22606686)
_C3 = tl.constexpr(0.07802418)


@triton.jit
def _exp2_poly(x):
    """2^x for x <= 0 in FMA/integer arithmetic: 2^floor(x) by the exponent bits, 2^frac by a cubic.
    x < -126 (incl. -inf) gives exactly 0."""
    xc = tl.maximum(x, -126.0)
    j = tl.floor(xc)
    f = xc - j
    p = _C0 + f * (_C1 + f * (_C2 + f * _C3))
    y = (p.to(tl.int32, bitcast=True) + (j.to(tl.int32) << 23)).to(tl.float32, bitcast=True)
    return tl.where(x < -126.0, 0.0, y)


@triton.jit
def _exp2(x, it, EMU: tl.constexpr):
    """exp2 on the special-function unit, or every EMU-th block (by ``it``) in software."""
    if EMU > 0:
        if it % EMU == 0:
            y = _exp2_poly(x)
        else:
            y = tl.math.exp2(x)
    else:
        y = tl.math.exp2(x)
    return y


@triton.jit
def _locate(cu_ptr, H: tl.constexpr, BLOCK: tl.constexpr):
    """Program (patch x head, block) -> (patch*H + head, head, patch start, patch end, block start)."""
    ph = tl.program_id(0)
    start = tl.load(cu_ptr + ph // H)
    end = tl.load(cu_ptr + ph // H + 1)
    return ph, ph % H, start, end, start + tl.program_id(1) * BLOCK


@triton.jit
def _fwd_inner(
    acc,
    l_i,
    m_i,
    q,
    qkv_ptr,
    rows_ptr,
    stride,
    k_col,
    v_col,
    lo,
    hi,
    end,
    qk_scale,
    BN: tl.constexpr,
    D: tl.constexpr,
    phase,
    MASKED: tl.constexpr,
    PREC: tl.constexpr,
    EMU: tl.constexpr,
):
    dd = tl.arange(0, D)
    for n0 in range(lo, hi, BN):
        ks = n0 + tl.arange(0, BN)
        if MASKED:
            km = ks < end
            kr = tl.load(rows_ptr + ks, mask=km, other=0).to(tl.int64) * stride
            kt = tl.load(qkv_ptr + kr[None, :] + k_col + dd[:, None], mask=km[None, :], other=0.0)
            v = tl.load(qkv_ptr + kr[:, None] + v_col + dd[None, :], mask=km[:, None], other=0.0)
        else:
            kr = tl.load(rows_ptr + ks).to(tl.int64) * stride
            kt = tl.load(qkv_ptr + kr[None, :] + k_col + dd[:, None])
            v = tl.load(qkv_ptr + kr[:, None] + v_col + dd[None, :])
        s = tl.dot(q, kt, input_precision=PREC) * qk_scale
        if MASKED:
            s = tl.where(km[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = _exp2(s - m_new[:, None], n0 // BN + phase, EMU)
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fwd_kernel(
    qkv_ptr,
    rows_ptr,
    dst_ptr,
    cu_ptr,
    out_ptr,
    lse_ptr,
    stride_qkv,
    stride_out,
    N,
    qk_scale,
    H: tl.constexpr,
    D: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    PREC: tl.constexpr,
    EMU: tl.constexpr,
):
    ph, head, start, end, m0 = _locate(cu_ptr, H, BM)
    if m0 < end:
        C = H * D
        dd = tl.arange(0, D)
        qs = m0 + tl.arange(0, BM)
        qm = qs < end
        qr = tl.load(rows_ptr + qs, mask=qm, other=0).to(tl.int64) * stride_qkv
        q = tl.load(qkv_ptr + qr[:, None] + head * D + dd[None, :], mask=qm[:, None], other=0.0)
        phase = tl.program_id(1) + ph  # programs emulate on different blocks: both units stay busy
        acc = tl.zeros([BM, D], dtype=tl.float32)
        l_i = tl.zeros([BM], dtype=tl.float32)
        m_i = tl.full([BM], float("-inf"), dtype=tl.float32)
        full = start + ((end - start) // BN) * BN
        k_col = C + head * D
        v_col = 2 * C + head * D
        acc, l_i, m_i = _fwd_inner(
            acc, l_i, m_i, q, qkv_ptr, rows_ptr, stride_qkv, k_col, v_col,
            start, full, end, qk_scale, BN, D, phase, False, PREC, EMU,
        )  # fmt: skip
        acc, l_i, m_i = _fwd_inner(
            acc, l_i, m_i, q, qkv_ptr, rows_ptr, stride_qkv, k_col, v_col,
            full, end, end, qk_scale, BN, D, phase, True, PREC, EMU,
        )  # fmt: skip
        out = acc / l_i[:, None]
        qd = tl.load(dst_ptr + qs, mask=qm, other=N)
        ok = qm & (qd < N)
        qd = qd.to(tl.int64)
        tl.store(
            out_ptr + qd[:, None] * stride_out + head * D + dd[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=ok[:, None],
        )
        tl.store(lse_ptr + qd * H + head, (m_i + tl.math.log2(l_i)) * LN2, mask=ok)


@triton.jit
def _bwd_kv_inner(
    dk,
    dv,
    k,
    v,
    qkv_ptr,
    do_ptr,
    rows_ptr,
    dst_ptr,
    lse_ptr,
    delta_ptr,
    dq_ptr,
    stride_qkv,
    stride_do,
    N,
    head,
    lo,
    hi,
    end,
    qk_scale,
    sm_scale,
    H: tl.constexpr,
    D: tl.constexpr,
    BM: tl.constexpr,
    phase,
    MASKED: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
    PREC: tl.constexpr,
    EMU: tl.constexpr,
):
    C = H * D
    dd = tl.arange(0, D)
    for m0 in range(lo, hi, BM):
        qs = m0 + tl.arange(0, BM)
        if MASKED:
            qm = qs < end
            qd = tl.load(dst_ptr + qs, mask=qm, other=N)
            qr = tl.load(rows_ptr + qs, mask=qm, other=0)
        else:
            qd = tl.load(dst_ptr + qs)
            qr = tl.load(rows_ptr + qs)
        ok = qd < N  # duplicated slots (and the masked tail) ask nothing: P = 0 through lse = +inf
        qd = qd.to(tl.int64)
        qr = qr.to(tl.int64) * stride_qkv
        qt = tl.load(qkv_ptr + qr[None, :] + head * D + dd[:, None], mask=ok[None, :], other=0.0)
        do = tl.load(do_ptr + qd[:, None] * stride_do + head * D + dd[None, :], mask=ok[:, None], other=0.0)
        lse = tl.load(lse_ptr + qd * H + head, mask=ok, other=float("inf")) * LOG2E
        di = tl.load(delta_ptr + qd * H + head, mask=ok, other=0.0)
        pt = _exp2(tl.dot(k, qt, input_precision=PREC) * qk_scale - lse[None, :], m0 // BM + phase, EMU)
        dv += tl.dot(pt.to(do.dtype), do, input_precision=PREC)
        dpt = tl.dot(v, tl.trans(do), input_precision=PREC)
        ds_t = pt * (dpt - di[None, :])
        dk += tl.dot(ds_t.to(qt.dtype), tl.trans(qt), input_precision=PREC)
        if ATOMIC_DQ:
            dq = tl.dot(tl.trans(ds_t).to(k.dtype), k, input_precision=PREC) * sm_scale
            tl.atomic_add(dq_ptr + qd[:, None] * C + head * D + dd[None, :], dq, mask=ok[:, None])
    return dk, dv


@triton.jit
def _bwd_kv_kernel(
    qkv_ptr,
    do_ptr,
    rows_ptr,
    dst_ptr,
    cu_ptr,
    lse_ptr,
    delta_ptr,
    dqkv_ptr,
    side_ptr,
    dq_ptr,
    stride_qkv,
    stride_do,
    stride_dqkv,
    N,
    qk_scale,
    sm_scale,
    H: tl.constexpr,
    D: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
    PREC: tl.constexpr,
    EMU: tl.constexpr,
):
    ph, head, start, end, n0 = _locate(cu_ptr, H, BN)
    if n0 < end:
        C = H * D
        dd = tl.arange(0, D)
        ks = n0 + tl.arange(0, BN)
        km = ks < end
        # Keys past the patch's end load as zeros: they add nothing to dQ and are not stored.
        kr = tl.load(rows_ptr + ks, mask=km, other=0).to(tl.int64) * stride_qkv
        k = tl.load(qkv_ptr + kr[:, None] + C + head * D + dd[None, :], mask=km[:, None], other=0.0)
        v = tl.load(qkv_ptr + kr[:, None] + 2 * C + head * D + dd[None, :], mask=km[:, None], other=0.0)
        dk = tl.zeros([BN, D], dtype=tl.float32)
        dv = tl.zeros([BN, D], dtype=tl.float32)
        full = start + ((end - start) // BM) * BM
        dk, dv = _bwd_kv_inner(
            dk, dv, k, v, qkv_ptr, do_ptr, rows_ptr, dst_ptr, lse_ptr, delta_ptr, dq_ptr, stride_qkv, stride_do,
            N, head, start, full, end, qk_scale, sm_scale, H, D, BM, ph + tl.program_id(1), False, ATOMIC_DQ, PREC, EMU,
        )  # fmt: skip
        dk, dv = _bwd_kv_inner(
            dk, dv, k, v, qkv_ptr, do_ptr, rows_ptr, dst_ptr, lse_ptr, delta_ptr, dq_ptr, stride_qkv, stride_do,
            N, head, full, end, end, qk_scale, sm_scale, H, D, BM, ph + tl.program_id(1), True, ATOMIC_DQ, PREC, EMU,
        )  # fmt: skip
        kd = tl.load(dst_ptr + ks, mask=km, other=0).to(tl.int64)
        own = km & (kd < N)
        dup = km & (kd >= N)
        dk = (dk * sm_scale).to(dqkv_ptr.dtype.element_ty)
        dv = dv.to(dqkv_ptr.dtype.element_ty)
        col = head * D + dd[None, :]
        tl.store(dqkv_ptr + kd[:, None] * stride_dqkv + C + col, dk, mask=own[:, None])
        tl.store(dqkv_ptr + kd[:, None] * stride_dqkv + 2 * C + col, dv, mask=own[:, None])
        side = (kd - N) * (2 * C)
        tl.store(side_ptr + side[:, None] + col, dk, mask=dup[:, None])
        tl.store(side_ptr + side[:, None] + C + col, dv, mask=dup[:, None])


@triton.jit
def _bwd_q_inner(
    dq,
    q,
    do,
    lse,
    di,
    qkv_ptr,
    rows_ptr,
    stride_qkv,
    k_col,
    v_col,
    lo,
    hi,
    end,
    qk_scale,
    BN: tl.constexpr,
    D: tl.constexpr,
    phase,
    MASKED: tl.constexpr,
    PREC: tl.constexpr,
    EMU: tl.constexpr,
):
    dd = tl.arange(0, D)
    for n0 in range(lo, hi, BN):
        ks = n0 + tl.arange(0, BN)
        if MASKED:
            km = ks < end
            kr = tl.load(rows_ptr + ks, mask=km, other=0).to(tl.int64) * stride_qkv
            k = tl.load(qkv_ptr + kr[:, None] + k_col + dd[None, :], mask=km[:, None], other=0.0)
            vt = tl.load(qkv_ptr + kr[None, :] + v_col + dd[:, None], mask=km[None, :], other=0.0)
        else:
            kr = tl.load(rows_ptr + ks).to(tl.int64) * stride_qkv
            k = tl.load(qkv_ptr + kr[:, None] + k_col + dd[None, :])
            vt = tl.load(qkv_ptr + kr[None, :] + v_col + dd[:, None])
        p = _exp2(tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale - lse[:, None], n0 // BN + phase, EMU)
        dp = tl.dot(do, vt, input_precision=PREC)
        ds = p * (dp - di[:, None])  # masked keys: k = v = 0, so they add 0 to dq
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PREC)
    return dq


@triton.jit
def _bwd_q_kernel(
    qkv_ptr,
    do_ptr,
    rows_ptr,
    dst_ptr,
    cu_ptr,
    lse_ptr,
    delta_ptr,
    dqkv_ptr,
    stride_qkv,
    stride_do,
    stride_dqkv,
    N,
    qk_scale,
    sm_scale,
    H: tl.constexpr,
    D: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    PREC: tl.constexpr,
    EMU: tl.constexpr,
):
    ph, head, start, end, m0 = _locate(cu_ptr, H, BM)
    if m0 < end:
        C = H * D
        dd = tl.arange(0, D)
        qs = m0 + tl.arange(0, BM)
        qm = qs < end
        qd = tl.load(dst_ptr + qs, mask=qm, other=N)
        ok = qm & (qd < N)
        qd = qd.to(tl.int64)
        qr = tl.load(rows_ptr + qs, mask=qm, other=0).to(tl.int64) * stride_qkv
        q = tl.load(qkv_ptr + qr[:, None] + head * D + dd[None, :], mask=ok[:, None], other=0.0)
        do = tl.load(do_ptr + qd[:, None] * stride_do + head * D + dd[None, :], mask=ok[:, None], other=0.0)
        lse = tl.load(lse_ptr + qd * H + head, mask=ok, other=float("inf")) * LOG2E
        di = tl.load(delta_ptr + qd * H + head, mask=ok, other=0.0)
        dq = tl.zeros([BM, D], dtype=tl.float32)
        full = start + ((end - start) // BN) * BN
        k_col = C + head * D
        v_col = 2 * C + head * D
        dq = _bwd_q_inner(
            dq, q, do, lse, di, qkv_ptr, rows_ptr, stride_qkv, k_col, v_col,
            start, full, end, qk_scale, BN, D, ph + tl.program_id(1), False, PREC, EMU,
        )  # fmt: skip
        dq = _bwd_q_inner(
            dq, q, do, lse, di, qkv_ptr, rows_ptr, stride_qkv, k_col, v_col,
            full, end, end, qk_scale, BN, D, ph + tl.program_id(1), True, PREC, EMU,
        )  # fmt: skip
        tl.store(
            dqkv_ptr + qd[:, None] * stride_dqkv + head * D + dd[None, :],
            (dq * sm_scale).to(dqkv_ptr.dtype.element_ty),
            mask=ok[:, None],
        )


def _prec(dtype: torch.dtype) -> str | None:
    return "tf32x3" if dtype == torch.float32 else None  # 16-bit operands: Triton's default


def _emu(dtype: torch.dtype) -> int:
    return int(EXP2_EMULATION.get(dtype, 0))


def _check(qkv: torch.Tensor, num_heads: int) -> tuple[int, int, int]:
    n, c3 = qkv.shape
    c = c3 // 3
    d = c // num_heads
    if d not in HEAD_DIMS:
        raise ValueError(f"pointins.patch_attention (triton): head dim {d} unsupported; use one of {HEAD_DIMS}.")
    if qkv.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"pointins.patch_attention (triton): qkv must be float16/bfloat16/float32, got {qkv.dtype}.")
    if qkv.stride(1) != 1:
        raise ValueError("pointins.patch_attention (triton): qkv needs unit column stride")
    return n, c, d


@on_tensor_device
def forward(qkv, rows, dst, cu_seqlens, num_heads, max_seqlen, scale, blocks=None):
    """-> ``out`` (N, C) in qkv's dtype and ``lse`` (N, H) float32 (natural log), in point order."""
    n, c, d = _check(qkv, num_heads)
    out = torch.empty((n, c), dtype=qkv.dtype, device=qkv.device)
    lse = torch.empty((n, num_heads), dtype=torch.float32, device=qkv.device)
    num_patches = cu_seqlens.numel() - 1
    if n == 0 or num_patches == 0:
        return out, lse
    bm, bn, warps, stages = blocks or blocks_for("fwd", qkv.dtype, d)
    grid = (num_patches * num_heads, triton.cdiv(max_seqlen, bm))
    _fwd_kernel[grid](
        qkv, rows, dst, cu_seqlens, out, lse, qkv.stride(0), out.stride(0), n, scale * math.log2(math.e),
        H=num_heads, D=d, BM=bm, BN=bn, PREC=_prec(qkv.dtype), EMU=_emu(qkv.dtype), num_warps=warps,
        num_stages=stages,
    )  # fmt: skip
    return out, lse


@on_tensor_device
def backward(
    grad_out, qkv, out, lse, rows, dst, dup_src, cu_seqlens, num_heads, max_seqlen, scale, deterministic,
    kv_blocks=None, q_blocks=None,
):  # fmt: skip
    """-> ``dqkv`` (N, 3C). Duplicate slots' dK/dV land in side rows, then are added onto their points."""
    n, c, d = _check(qkv, num_heads)
    num_patches = cu_seqlens.numel() - 1
    n_dup = rows.numel() - n
    dqkv = torch.empty((n, 3 * c), dtype=qkv.dtype, device=qkv.device)
    if n == 0 or num_patches == 0:
        return dqkv.zero_()
    grad_out = grad_out.contiguous() if grad_out.stride(-1) != 1 else grad_out
    delta = (grad_out.float().reshape(n, num_heads, d) * out.float().reshape(n, num_heads, d)).sum(-1)
    side = torch.empty((max(n_dup, 1), 2 * c), dtype=qkv.dtype, device=qkv.device)
    dq32 = None if deterministic else torch.zeros((n, c), dtype=torch.float32, device=qkv.device)
    qk_scale = scale * math.log2(math.e)
    prec = _prec(qkv.dtype)
    bm, bn, warps, stages = kv_blocks or blocks_for("bwd_kv", qkv.dtype, d)
    _bwd_kv_kernel[(num_patches * num_heads, triton.cdiv(max_seqlen, bn))](
        qkv, grad_out, rows, dst, cu_seqlens, lse, delta, dqkv, side, dq32 if dq32 is not None else delta,
        qkv.stride(0), grad_out.stride(0), dqkv.stride(0), n, qk_scale, scale,
        H=num_heads, D=d, BM=bm, BN=bn, ATOMIC_DQ=not deterministic, PREC=prec, EMU=_emu(qkv.dtype),
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    if deterministic:
        bm, bn, warps, stages = q_blocks or blocks_for("bwd_q", qkv.dtype, d)
        _bwd_q_kernel[(num_patches * num_heads, triton.cdiv(max_seqlen, bm))](
            qkv, grad_out, rows, dst, cu_seqlens, lse, delta, dqkv,
            qkv.stride(0), grad_out.stride(0), dqkv.stride(0), n, qk_scale, scale,
            H=num_heads, D=d, BM=bm, BN=bn, PREC=prec, EMU=_emu(qkv.dtype), num_warps=warps, num_stages=stages,
        )  # fmt: skip
    else:
        dqkv[:, :c].copy_(dq32)
    if n_dup:
        dqkv[:, c:].index_add_(0, dup_src, side[:n_dup])
    return dqkv


_FWD_SIG = {
    "qkv_ptr": "*fp16",
    "rows_ptr": "*i64",
    "dst_ptr": "*i64",
    "cu_ptr": "*i32",
    "out_ptr": "*fp16",
    "lse_ptr": "*fp32",
    "stride_qkv": "i64",
    "stride_out": "i64",
    "N": "i64",
    "qk_scale": "fp32",
}
_KV_SIG = {
    "qkv_ptr": "*bf16",
    "do_ptr": "*bf16",
    "rows_ptr": "*i64",
    "dst_ptr": "*i64",
    "cu_ptr": "*i32",
    "lse_ptr": "*fp32",
    "delta_ptr": "*fp32",
    "dqkv_ptr": "*bf16",
    "side_ptr": "*bf16",
    "dq_ptr": "*fp32",
    "stride_qkv": "i64",
    "stride_do": "i64",
    "stride_dqkv": "i64",
    "N": "i64",
    "qk_scale": "fp32",
    "sm_scale": "fp32",
}
_Q_SIG = {k: v for k, v in _KV_SIG.items() if k not in ("side_ptr", "dq_ptr")}


def _with(sig: dict, dtype: str) -> dict:
    return {k: (f"*{dtype}" if v in ("*fp16", "*bf16") else v) for k, v in sig.items()}


def _blocks(b):
    return {"BM": b[0], "BN": b[1]}


def _opts(b):
    return {"num_warps": b[2], "num_stages": b[3]}


_KERNELS = {"fwd": ("_fwd_kernel", _FWD_SIG), "bwd_kv": ("_bwd_kv_kernel", _KV_SIG), "bwd_q": ("_bwd_q_kernel", _Q_SIG)}
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _compile_checks() -> list:
    """Every kernel x dtype x head dim x mode (bwd_kv: atomic and deterministic dQ) with its table blocks, plus the
    software-exp2 variants of the 16-bit kernels."""
    checks = []
    for kernel, (name, sig) in _KERNELS.items():
        for dt, torch_dt in _DTYPES.items():
            for d in HEAD_DIMS:
                b = blocks_for(kernel, torch_dt, d)
                ce = {"H": max(1, 64 // d), "D": d, **_blocks(b), "PREC": _prec(torch_dt), "EMU": 0}
                modes = [{"ATOMIC_DQ": True}, {"ATOMIC_DQ": False}] if kernel == "bwd_kv" else [{}]
                for mode in modes:
                    checks.append((name, _with(sig, dt), {**ce, **mode}, _opts(b)))
    b = blocks_for("fwd", torch.float16, 16)
    checks.append(("_fwd_kernel", _FWD_SIG, {"H": 3, "D": 16, **_blocks(b), "PREC": None, "EMU": 4}, _opts(b)))
    b = blocks_for("bwd_kv", torch.bfloat16, 16)
    checks.append(("_bwd_kv_kernel", _KV_SIG, {"H": 3, "D": 16, **_blocks(b), "ATOMIC_DQ": True, "PREC": None,
                                                "EMU": 2}, _opts(b)))  # fmt: skip
    return checks


NO_SPILLS = True  # tools/check_triton_compile.py fails on a spill
COMPILE_CHECKS = _compile_checks()
