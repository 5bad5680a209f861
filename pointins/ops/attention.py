"""Serialized patch attention (Point Transformer V3): attention inside patches of K points taken
along a serialization order, with PTv3's padding, without materialising a permuted copy of qkv.

Inputs are what :func:`pointins.ops.serialize` and :func:`pointins.ops.patch_partition` give:

- ``qkv`` (N, 3C) or (N, 3, H, d) in **point order** (the output of the block's qkv Linear);
- ``order`` (N,): ``order[s]`` is the point at serialized position s;
- ``pad`` (P,), ``unpad`` (N,), ``cu_seqlens`` (num_patches + 1,) from ``patch_partition``: padded
  slot j reads serialized position ``pad[j]``; position s's own slot is ``unpad[s]``.

Semantics (METHOD.md §2): a cloud with n > K points is padded to a multiple of K by repeating the
points K slots earlier, a cloud with n <= K is one short patch, and attention runs inside each
patch only. Duplicated slots act as **keys and values** of their patch (and their gradients add
onto the original point); only a point's own slot produces its output. The output (N, C) is in
point order, ready for the out projection.

Backends: ``"triton"`` (CUDA default; CPU tensors under ``TRITON_INTERPRET=1``) gathers rows
inside the kernels; ``"cpu"`` (CPU default) gathers each patch length's patches, runs PyTorch's
fused CPU attention and scatters back; ``"reference"`` is the plain patch-by-patch oracle.
On CUDA the backward's dQ uses float atomics unless ``torch.use_deterministic_algorithms(True)``
is on, which switches to a bitwise-reproducible second kernel (twice the exponentials).

Example::

    >>> import torch, pointins.ops as ops
    >>> n, heads, c = 3000, 2, 32
    >>> ser = ops.serialize(torch.randint(0, 64, (n, 3)), offsets=torch.tensor([0, 1800, n]))
    >>> pad, unpad, cu = ops.patch_partition(torch.tensor([0, 1800, n]), patch_size=1024)
    >>> cu.tolist()  # cloud 0: 1800 -> 2 patches of 1024; cloud 1: 1200 -> 2 patches
    [0, 1024, 2048, 3072, 4096]
    >>> qkv = torch.randn(n, 3 * c, requires_grad=True)
    >>> out = ops.patch_attention(qkv, ser.order[0], pad, unpad, cu, num_heads=heads)
    >>> out.shape
    torch.Size([3000, 32])
    >>> out.sum().backward(); qkv.grad.shape
    torch.Size([3000, 96])
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from typing import Any, NamedTuple

import torch

from pointins._timing import phase
from pointins.ops import _dispatch, reference
from pointins.ops._interop import from_tensor, to_tensor

__all__ = ["PatchIndex", "patch_attention", "patch_index"]

OP = "patch_attention"
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_FLASH_CPU_BWD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


class PatchIndex(NamedTuple):
    """Per-slot indices the kernels read through (see :func:`patch_index`)."""

    rows: torch.Tensor  # (P,) int64: the qkv row slot j reads, order[pad[j]]
    dst: torch.Tensor  # (P,) int64: the point whose output slot j is (< N), else N + r for the r-th duplicate
    dup_src: torch.Tensor  # (P - N,) int64: the point duplicate r repeats


def patch_index(order: torch.Tensor, pad: torch.Tensor, unpad: torch.Tensor) -> PatchIndex:
    """Compose the serialization order with PTv3's padding into per-slot row indices (no sync).

    Cache it when several blocks attend with the same order; pass it as ``index=``.
    """
    n, p = order.numel(), pad.numel()
    rows = order[pad]
    own = unpad[pad] == torch.arange(p, device=pad.device)
    dst = torch.where(own, rows, n + torch.cumsum(~own, 0) - 1)
    return PatchIndex(rows, dst, _dup_sources(rows, dst, n))


def _dup_sources(rows: torch.Tensor, dst: torch.Tensor, n: int) -> torch.Tensor:
    """(P - N,) the point each duplicate slot repeats (no sync: P - N is known from the shapes)."""
    p = rows.numel()
    dup = torch.empty(p - n + 1, dtype=torch.long, device=rows.device)
    dup.scatter_(0, torch.where(dst < n, p - n, dst - n), rows)  # own slots all land on the dummy last entry
    return dup[: p - n]


def _check_shapes(qkv, order, pad, unpad, cu, num_heads, backend) -> int:
    if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads < 1:
        raise ValueError(f"pointins.{OP}: num_heads must be a positive int, got {num_heads!r}.")
    if qkv.dim() != 2 or qkv.shape[1] % (3 * num_heads):
        raise ValueError(
            f"pointins.{OP}: qkv must be (N, 3*C) or (N, 3, H, d) with C divisible by num_heads={num_heads}, "
            f"got {tuple(qkv.shape)}."
        )
    if not qkv.is_floating_point():
        raise TypeError(f"pointins.{OP}: qkv must be floating point, got {qkv.dtype}.")
    if backend == "triton" and qkv.dtype == torch.float64:
        raise TypeError(f"pointins.{OP}: the Triton kernels take float16/bfloat16/float32, got float64; cast qkv.")
    n = qkv.shape[0]
    for name, t, size in (("order", order, n), ("unpad", unpad, n), ("pad", pad, None), ("cu_seqlens", cu, None)):
        if t.dim() != 1 or (size is not None and t.numel() != size):
            want = f"({size},)" if size is not None else "1-D"
            raise ValueError(f"pointins.{OP}: {name} must be {want} to match qkv's {n} rows, got {tuple(t.shape)}.")
        if t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"pointins.{OP}: {name} must be an integer tensor, got {t.dtype}.")
        if t.device != qkv.device:
            raise ValueError(f"pointins.{OP}: {name} is on {t.device} but qkv on {qkv.device}; move it with .to().")
    if cu.numel() < 1:
        raise ValueError(f"pointins.{OP}: cu_seqlens needs at least one entry (0), got an empty tensor.")
    if pad.numel() < n:
        raise ValueError(f"pointins.{OP}: pad has {pad.numel()} slots for {n} points; every point needs a slot.")
    return n


def _check_values(qkv, order, pad, unpad, cu, max_seqlen) -> None:
    """Content checks (one sync): what the kernels would otherwise turn into garbage."""
    n, p = qkv.shape[0], pad.numel()
    lengths = cu.long().diff()
    problems = {
        "cu_seqlens must start at 0, never decrease and end at the number of padded slots (pad.numel())": (
            int(cu[0]) != 0 or int(cu[-1]) != p or bool((lengths < 0).any())
        ),
        f"a patch is longer than max_seqlen={max_seqlen}": bool((lengths > max_seqlen).any()),
        "order must be a permutation of 0..N-1": bool(((order < 0) | (order >= n)).any())
        or bool(torch.bincount(order.clamp(0, max(n - 1, 0)), minlength=n).ne(1).any()),
        "pad entries must lie in 0..N-1": bool(((pad < 0) | (pad >= n)).any()),
        "unpad must point into pad with pad[unpad[s]] == s (use patch_partition's pad/unpad as a pair)": bool(
            ((unpad < 0) | (unpad >= p)).any()
        )
        or bool((pad[unpad.clamp(0, max(p - 1, 0))] != torch.arange(n, device=pad.device)).any()),
    }
    bad = [msg for msg, hit in problems.items() if hit]
    if bad:
        raise ValueError(f"pointins.{OP}: invalid patch indices: {'; '.join(bad)}.")
    if not bool(torch.isfinite(qkv).all()):
        row = int(torch.nonzero(~torch.isfinite(qkv).all(1))[0])
        raise ValueError(f"pointins.{OP}: qkv has NaN/Inf (first at row {row}); check the features feeding the block.")


def _select(backend: str | None, device: torch.device) -> str:
    return _dispatch.select_triton_op(backend, device, OP, "qkv")


def patch_attention(
    qkv: Any,
    order: Any,
    pad: Any,
    unpad: Any,
    cu_seqlens: Any,
    num_heads: int,
    scale: float | None = None,
    *,
    max_seqlen: int | None = None,
    index: PatchIndex | None = None,
    return_lse: bool = False,
    backend: str | None = None,
    validate: bool = True,
) -> Any:
    """Attention inside serialized patches; output (N, C) in point order (see the module doc).

    Args:
        qkv: (N, 3C) or (N, 3, H, d) float16/bfloat16/float32 (float64: cpu/reference) in point
            order; columns ``[q | k | v]``, each ``[head 0 | head 1 | ...]``.
        order, pad, unpad, cu_seqlens: serialization order and ``patch_partition`` output.
        num_heads: H; the head dim is d = C / H (Triton: 16, 32, 64 or 128).
        scale: softmax scale, default ``d ** -0.5``.
        max_seqlen: the longest patch (the patch size K); computed from cu_seqlens (one sync) if None.
        index: a cached :func:`patch_index` of (order, pad, unpad).
        return_lse: also return the log-sum-exp (N, H) float32 (natural log; not differentiable).
        backend: None (CUDA: "triton", CPU: "cpu"), "triton", "cpu" or "reference".
        validate: check index contents and that qkv is finite (one sync). Pass False in training
            loops whose indices come from ``patch_partition``.
    """
    qkv_t, kind = to_tensor(qkv, "qkv", OP)
    order, pad, unpad, cu = (
        to_tensor(t, name, OP)[0]
        for t, name in ((order, "order"), (pad, "pad"), (unpad, "unpad"), (cu_seqlens, "cu_seqlens"))
    )
    if qkv_t.dim() == 4:
        if qkv_t.shape[1] != 3 or qkv_t.shape[2] != num_heads:
            raise ValueError(f"pointins.{OP}: a 4-D qkv must be (N, 3, H={num_heads}, d), got {tuple(qkv_t.shape)}.")
        qkv_t = qkv_t.reshape(qkv_t.shape[0], -1)
    be = _select(backend, qkv_t.device)
    _check_shapes(qkv_t, order, pad, unpad, cu, num_heads, be)
    d = qkv_t.shape[1] // 3 // num_heads
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int | float)
                              or not math.isfinite(scale) or scale <= 0):  # fmt: skip
        raise ValueError(f"pointins.{OP}: scale must be a finite number > 0 (default head_dim ** -0.5), got {scale!r}.")
    scale = float(d**-0.5 if scale is None else scale)
    order, pad, unpad = order.long(), pad.long(), unpad.long()
    cu = cu.to(torch.int32)
    if max_seqlen is None:
        max_seqlen = int(cu.diff().max()) if cu.numel() > 1 else 0
    if validate:
        _check_values(qkv_t, order, pad, unpad, cu, max_seqlen)
    if be == "reference":
        out, lse = reference.patch_attention(qkv_t, order, pad, unpad, cu, num_heads, scale)
    else:
        idx = index if index is not None else patch_index(order, pad, unpad)
        if qkv_t.stride(-1) != 1:
            qkv_t = qkv_t.contiguous()
        out, lse = torch.ops.pointins.patch_attention(
            qkv_t, idx.rows, idx.dst, cu, num_heads, int(max_seqlen), scale, be == "triton"
        )
    if kind != "torch":
        out, lse = from_tensor(out, kind), from_tensor(lse, kind)
    return (out, lse) if return_lse else out


# ---------------------------------------------------------------------------------------------
# The custom op pair (autograd-aware; register_fake for torch.compile)
# ---------------------------------------------------------------------------------------------


def _qkv_heads(qkv: torch.Tensor, slots: torch.Tensor, rows: torch.Tensor, num_heads: int):
    nb, length = slots.shape
    d = qkv.shape[1] // 3 // num_heads
    x = qkv[rows[slots]].view(nb, length, 3, num_heads, d).permute(2, 0, 3, 1, 4)
    return x[0], x[1], x[2]  # (nb, H, L, d) each


def _attend(q, k, v, scale):
    """(out, lse) of softmax(q k^T * scale) v over the last two dims."""
    if _FLASH_CPU is not None and q.device.type == "cpu":
        return _FLASH_CPU(q, k, v, 0.0, False, scale=scale)
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    s = torch.matmul(q.to(work), k.to(work).transpose(-1, -2)) * scale
    lse = torch.logsumexp(s, -1)
    return torch.matmul(torch.exp(s - lse[..., None]), v.to(work)).to(q.dtype), lse.to(torch.float32)


def _attend_backward(go, q, k, v, o, lse, scale):
    if _FLASH_CPU_BWD is not None and q.device.type == "cpu":
        return _FLASH_CPU_BWD(go.contiguous(), q, k, v, o, lse, 0.0, False, scale=scale)
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, k, v, go, o = (t.to(work) for t in (q, k, v, go, o))
    p = torch.exp(torch.matmul(q, k.transpose(-1, -2)) * scale - lse.to(work)[..., None])
    dv = torch.matmul(p.transpose(-1, -2), go)
    ds = p * (torch.matmul(go, v.transpose(-1, -2)) - (go * o).sum(-1, keepdim=True))
    dq, dk = torch.matmul(ds, k) * scale, torch.matmul(ds.transpose(-1, -2), q) * scale
    return dq, dk, dv


class _Plan(NamedTuple):
    """The CPU path's layout of one call: slots regrouped by patch length (one (patches, L) batch per length),
    concatenated; every index is over that concatenation ("positions")."""

    buckets: list  # [(L, number of patches)] in concatenation order
    rows: torch.Tensor  # (P,) qkv row each position reads
    own: torch.Tensor  # (N,) position of each point's own slot (where its output is produced)
    src: torch.Tensor  # (P,) the point whose output a position produces, N for a padding duplicate
    dup: torch.Tensor  # (P - N,) positions of the padding duplicates
    dup_rows: torch.Tensor  # (P - N,) the qkv row each duplicate repeats


_PLANS: OrderedDict = OrderedDict()  # id triple -> (weak refs, versions, plan): blocks sharing a curve, and backward


def _plan(rows: torch.Tensor, dst: torch.Tensor, cu: torch.Tensor, n: int) -> _Plan:
    """:func:`_make_plan`, kept while its index tensors live: the blocks of a stage that attend along the same curve
    and their backward passes get the same ``rows`` / ``dst`` / ``cu_seqlens`` objects (a level's cached
    :func:`patch_index`), so the plan is made once per level and curve. Entries are checked by weak reference and
    version counter, never by id alone."""
    key = (id(rows), id(dst), id(cu), n)
    hit = _PLANS.get(key)
    if hit is not None:
        refs, versions, plan = hit
        if all(r() is t for r, t in zip(refs, (rows, dst, cu), strict=True)) and versions == (
            rows._version, dst._version, cu._version):  # fmt: skip
            _PLANS.move_to_end(key)
            return plan
    plan = _make_plan(rows, dst, cu, n)
    _PLANS[key] = ((weakref.ref(rows), weakref.ref(dst), weakref.ref(cu)),
                   (rows._version, dst._version, cu._version), plan)  # fmt: skip
    while len(_PLANS) > 64:
        _PLANS.popitem(last=False)
    return plan


def _make_plan(rows: torch.Tensor, dst: torch.Tensor, cu: torch.Tensor, n: int) -> _Plan:
    """Integer bookkeeping only (one sync, for the patch lengths): the float work then needs one gather in, one
    gather out and, in the backward, a scatter-add of the duplicates only."""
    buckets = reference.patch_buckets(cu)
    slots = torch.cat([sl.reshape(-1) for _, sl in buckets]) if buckets else rows.new_zeros(0)
    pos_dst = dst[slots]
    is_own = pos_dst < n
    own = torch.empty(n, dtype=torch.long, device=rows.device)
    own[pos_dst[is_own]] = torch.nonzero(is_own).flatten()
    dup = torch.nonzero(~is_own).flatten()
    pos_rows = rows[slots]
    src = torch.where(is_own, pos_dst, n)
    return _Plan([(length, sl.shape[0]) for length, sl in buckets], pos_rows, own, src, dup, pos_rows[dup])


def _heads(x: torch.Tensor, start: int, nb: int, length: int, num_heads: int):
    """Views (nb, H, L, d) of q, k, v for the positions start .. start + nb * L of the gathered (P, 3C) rows."""
    d = x.shape[1] // 3 // num_heads
    y = x[start : start + nb * length].view(nb, length, 3, num_heads, d).permute(2, 0, 3, 1, 4)
    return y[0], y[1], y[2]


def _torch_forward(qkv, rows, dst, cu, num_heads, scale):
    n, c = qkv.shape[0], qkv.shape[1] // 3
    plan = _plan(rows, dst, cu, n)
    x = torch.index_select(qkv, 0, plan.rows)
    outs, lses, start = [], [], 0
    for length, nb in plan.buckets:
        o, lse_b = _attend(*_heads(x, start, nb, length, num_heads), scale)  # (nb, H, L, d), (nb, H, L)
        outs.append(o.transpose(1, 2).reshape(nb * length, c))
        lses.append(lse_b.transpose(1, 2).reshape(nb * length, num_heads))
        start += nb * length
    if not outs:
        lse_dt = torch.float64 if qkv.dtype == torch.float64 else torch.float32
        return qkv.new_empty(0, c), qkv.new_empty(0, num_heads, dtype=lse_dt)
    o_all = outs[0] if len(outs) == 1 else torch.cat(outs)
    l_all = lses[0] if len(lses) == 1 else torch.cat(lses)
    lse_dt = torch.float64 if qkv.dtype == torch.float64 else torch.float32
    return torch.index_select(o_all, 0, plan.own), torch.index_select(l_all, 0, plan.own).to(lse_dt)


def _torch_backward(grad_out, qkv, out, lse, rows, dst, cu, num_heads, scale):
    n, c = qkv.shape[0], qkv.shape[1] // 3
    d = c // num_heads
    plan = _plan(rows, dst, cu, n)
    if not plan.buckets:
        return torch.zeros_like(qkv)
    x = torch.index_select(qkv, 0, plan.rows)
    # A duplicate slot's query asks nothing: dO = 0 and lse = +inf make its probabilities 0 (row N of the padded
    # copies below).
    go = torch.index_select(torch.cat([grad_out.to(qkv.dtype), grad_out.new_zeros(1, c).to(qkv.dtype)]), 0, plan.src)
    o = torch.index_select(torch.cat([out, out.new_zeros(1, c)]), 0, plan.src)
    lse_p = torch.index_select(torch.cat([lse, lse.new_full((1, num_heads), float("inf"))]), 0, plan.src)
    flats, start = [], 0
    for length, nb in plan.buckets:
        sl = slice(start, start + nb * length)
        shape = (nb, length, num_heads, d)
        grads = _attend_backward(go[sl].view(shape).transpose(1, 2), *_heads(x, start, nb, length, num_heads),
                                 o[sl].view(shape).transpose(1, 2).contiguous(),
                                 lse_p[sl].view(nb, length, num_heads).transpose(1, 2).contiguous(), scale)  # fmt: skip
        flats.append(torch.cat([g.transpose(1, 2).reshape(nb * length, c) for g in grads], 1))
        start += nb * length
    flat = flats[0] if len(flats) == 1 else torch.cat(flats)
    dqkv = torch.index_select(flat, 0, plan.own).to(qkv.dtype)  # each row's own slot ...
    if plan.dup.numel():  # ... plus the padding slots that repeat it (as keys and values)
        dqkv.index_add_(0, plan.dup_rows, torch.index_select(flat, 0, plan.dup).to(qkv.dtype))
    return dqkv


@torch.library.custom_op("pointins::patch_attention", mutates_args=())
def _patch_attention_op(
    qkv: torch.Tensor,
    rows: torch.Tensor,
    dst: torch.Tensor,
    cu_seqlens: torch.Tensor,
    num_heads: int,
    max_seqlen: int,
    scale: float,
    use_triton: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    if use_triton:
        from pointins.triton import load

        return load("attention").forward(qkv, rows, dst, cu_seqlens, num_heads, max_seqlen, scale)
    return _torch_forward(qkv, rows, dst, cu_seqlens, num_heads, scale)


@torch.library.custom_op("pointins::patch_attention_backward", mutates_args=())
def _patch_attention_backward_op(
    grad_out: torch.Tensor,
    qkv: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    rows: torch.Tensor,
    dst: torch.Tensor,
    cu_seqlens: torch.Tensor,
    num_heads: int,
    max_seqlen: int,
    scale: float,
    use_triton: bool,
    deterministic: bool,
) -> torch.Tensor:
    if use_triton:
        from pointins.triton import load

        dup = _dup_sources(rows, dst, qkv.shape[0])
        return load("attention").backward(
            grad_out, qkv, out, lse, rows, dst, dup, cu_seqlens, num_heads, max_seqlen, scale, deterministic
        )
    return _torch_backward(grad_out, qkv, out, lse, rows, dst, cu_seqlens, num_heads, scale)


@_patch_attention_op.register_fake
def _(qkv, rows, dst, cu_seqlens, num_heads, max_seqlen, scale, use_triton):
    n, c = qkv.shape[0], qkv.shape[1] // 3
    lse_dtype = torch.float64 if qkv.dtype == torch.float64 else torch.float32
    return qkv.new_empty((n, c)), qkv.new_empty((n, num_heads), dtype=lse_dtype)


@_patch_attention_backward_op.register_fake
def _(grad_out, qkv, out, lse, rows, dst, cu_seqlens, num_heads, max_seqlen, scale, use_triton, deterministic):
    return torch.empty_like(qkv)


def _setup_context(ctx, inputs, output):
    qkv, rows, dst, cu, num_heads, max_seqlen, scale, use_triton = inputs
    out, lse = output
    ctx.save_for_backward(qkv, rows, dst, cu, out, lse)
    ctx.args = (num_heads, max_seqlen, scale, use_triton)
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out, _grad_lse):
    qkv, rows, dst, cu, out, lse = ctx.saved_tensors
    num_heads, max_seqlen, scale, use_triton = ctx.args
    deterministic = torch.are_deterministic_algorithms_enabled()
    with phase("attention"):
        dqkv = torch.ops.pointins.patch_attention_backward(
            grad_out, qkv, out, lse, rows, dst, cu, num_heads, max_seqlen, scale, use_triton, deterministic
        )
    return dqkv, None, None, None, None, None, None, None


_patch_attention_op.register_autograd(_backward, setup_context=_setup_context)
