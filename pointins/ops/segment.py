"""Segment reductions: sum, mean, max, min (with the row of the extremum) and variance of the rows
of ``src`` grouped by segment, given as per-row segment ids (any order) or sorted CSR offsets.

Both paths are deterministic, on the CPU and the GPU: segment ids are turned into CSR by a stable
counting sort (CPU) / radix sort (CUDA), and every output element is reduced by one thread in
row order (long segments on the GPU: fixed 128-row chunks merged in order). No atomics, so the
results are bitwise reproducible run to run.

Conventions:

- **Empty segments** give 0 for every reduction, and arg -1.
- **Negative segment ids are ignored**: the row joins no segment and gets zero gradient (handy
  for ``ignore_index=-1`` labels). Ids ``>= num_segments`` are an error.
- **Ties**: ``max``/``min`` return the row with the lowest index among equal extrema; NaN
  propagates (the first NaN of a segment wins).
- **Variance**: ``sum((x - mean)^2) / (n - correction)``; ``correction=0`` (default) is the
  population variance, ``correction=1`` the unbiased one; segments with ``n <= correction`` give 0.
- float16/bfloat16 accumulate in float32, float32 in float32, float64 in float64.
- Gradients: ``sum``/``mean``/``var`` flow to every row; ``max``/``min`` only to the arg row.

Example::

    >>> import torch, pointins.ops as ops
    >>> x = torch.tensor([[1.0], [5.0], [2.0], [5.0]])
    >>> ops.segment_reduce(x, index=torch.tensor([0, 0, 1, 0]), reduce="max", return_arg=True)
    (tensor([[5.],
            [2.]]), tensor([[1],
            [2]]))
    >>> ops.segment_reduce(x, offsets=torch.tensor([0, 3, 4]), reduce="mean")
    tensor([[2.6667],
            [5.0000]])
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pointins import _ext
from pointins.ops import _dispatch, reference
from pointins.ops._interop import check_alloc, results, to_tensor

__all__ = ["REDUCTIONS", "segment_reduce"]

REDUCTIONS = ("sum", "mean", "max", "min", "var", "argmax", "argmin")


def _index_arg(x: Any, name: str, op: str, device: torch.device) -> torch.Tensor:
    t, _ = to_tensor(x, name, op)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"pointins.{op}: {name} must be integer, got {t.dtype}.")
    if t.device != device:
        raise ValueError(
            f"pointins.{op}: {name} is on {t.device} but src is on {device}; move it with .to(src.device)."
        )
    return t.long()


def segment_reduce(
    src: Any,
    index: Any = None,
    offsets: Any = None,
    reduce: str = "sum",
    num_segments: int | None = None,
    *,
    correction: int = 0,
    return_arg: bool = False,
    backend: str | None = None,
) -> Any:
    """Reduce the rows of ``src`` per segment.

    Args:
        src: (N, ...) float16/bfloat16/float32/float64; the trailing dims are reduced independently.
        index: (N,) segment id of each row, any order; negative ids are ignored. Or:
        offsets: (S+1,) sorted CSR offsets: segment s is rows ``offsets[s]:offsets[s+1]``.
        reduce: ``"sum"``, ``"mean"``, ``"max"``, ``"min"``, ``"var"``, or ``"argmax"`` /
            ``"argmin"`` (returns only the int64 row indices).
        num_segments: S (with ``index``); default ``index.max() + 1`` (one device sync).
        correction: variance divisor ``n - correction``.
        return_arg: with max/min, also return the (S, ...) int64 row of each extremum (-1: empty).

    Returns:
        (S, ...) tensor in ``src``'s dtype (or ``(values, arg)``), same array kind as ``src``.
    """
    op = "segment_reduce"
    x, kind = to_tensor(src, "src", op)
    if reduce not in REDUCTIONS:
        raise ValueError(f"pointins.{op}: reduce must be one of {REDUCTIONS}, got {reduce!r}.")
    base = {"argmax": "max", "argmin": "min"}.get(reduce, reduce)
    if return_arg and base not in ("max", "min"):
        raise ValueError(f"pointins.{op}: return_arg=True needs reduce='max' or 'min', got {reduce!r}.")
    if x.dim() < 1:
        raise ValueError(f"pointins.{op}: src must have at least one dimension (rows), got a scalar.")
    if not x.is_floating_point():
        raise TypeError(f"pointins.{op}: src must be floating point, got {x.dtype} (src.float() converts).")
    if (index is None) == (offsets is None):
        raise ValueError(f"pointins.{op}: pass exactly one of index= (segment id per row) or offsets= (CSR).")
    n, trailing = x.shape[0], x.shape[1:]
    x2 = x.reshape(n, math.prod(trailing))
    be = _dispatch.select(backend, x.device, op, ("cpu", "cuda", "reference"))
    if index is not None:
        idx = _index_arg(index, "index", op, x.device)
        if idx.dim() != 1 or idx.shape[0] != n:
            raise ValueError(f"pointins.{op}: index must have shape ({n},) (one id per row), got {tuple(idx.shape)}.")
        given = num_segments is not None
        if num_segments is None:
            num_segments = int(idx.max()) + 1 if n else 0
            num_segments = max(num_segments, 0)
        if isinstance(num_segments, bool) or not isinstance(num_segments, int):
            raise TypeError(f"pointins.{op}: num_segments must be an int, got {type(num_segments).__name__}.")
        if num_segments < 0:
            raise ValueError(f"pointins.{op}: num_segments must be >= 0, got {num_segments}.")
        check_alloc(num_segments, x2.shape[1] * x2.element_size() * (2 if base in ("max", "min") else 1),
                    "num_segments" if given else f"index (largest id {num_segments - 1})", op, x.device,
                    "pass compact segment ids (torch.unique(index, return_inverse=True)[1]) or a smaller "
                    "num_segments.")  # fmt: skip
        if be == "reference":
            out, arg = reference.segment_reduce(x2, idx, int(num_segments), base, correction)
            return _finish(out, arg, reduce, return_arg, trailing, kind)
        with_arg = _want_arg(x2, reduce, return_arg)
        out, aux = torch.ops.pointins.segment_coo(x2, idx, int(num_segments), base, correction, with_arg)
        return _finish(out, aux if base in ("max", "min") and with_arg else None, reduce, return_arg, trailing, kind)
    else:
        off = _index_arg(offsets, "offsets", op, x.device)
        if num_segments is not None and num_segments != off.numel() - 1:
            raise ValueError(f"pointins.{op}: num_segments={num_segments} but offsets define {off.numel() - 1}.")
        if be == "reference":
            reference.check_offsets(off, n, op)
            idx = reference.offsets_to_batch(off)
            out, arg = reference.segment_reduce(x2, idx, off.numel() - 1, base, correction)
            return _finish(out, arg, reduce, return_arg, trailing, kind)
    with_arg = _want_arg(x2, reduce, return_arg)
    out, aux = torch.ops.pointins.segment_csr(x2, off, None, base, correction, with_arg)
    return _finish(out, aux if base in ("max", "min") and with_arg else None, reduce, return_arg, trailing, kind)


def _want_arg(x: torch.Tensor, reduce: str, return_arg: bool) -> bool:
    """max/min record the row of each extremum only when it is returned or autograd will need it; without it
    the CPU kernel takes values only (no (S, C) int64 array to write)."""
    return return_arg or reduce in ("argmax", "argmin") or (torch.is_grad_enabled() and x.requires_grad)


def _finish(out, arg, reduce, return_arg, trailing, kind):
    s = out.shape[0]
    out = out.reshape(s, *trailing)
    arg = None if arg is None else arg.reshape(s, *trailing)
    if reduce in ("argmax", "argmin"):
        return results(arg, kind)
    if return_arg:
        return results((out, arg), kind)
    return results(out, kind)


# --- autograd ----------------------------------------------------------------------------------


def _row_segments(offsets: torch.Tensor, perm: torch.Tensor | None, n: int) -> torch.Tensor:
    """Segment of every row (S for rows in no segment), from CSR offsets and the row order."""
    pos = torch.arange(n, device=offsets.device)
    seg = torch.searchsorted(offsets, pos, right=True) - 1
    seg = seg.clamp(max=offsets.numel() - 1)
    if perm is None:
        return seg
    return torch.empty_like(seg).index_put_((perm,), seg)


def _setup_context(ctx, inputs, output):
    src, offsets, perm, reduce, correction, with_arg = inputs
    _need_arg(reduce, with_arg, src)
    _out, aux = output
    ctx.reduce, ctx.correction = reduce, correction
    ctx.mark_non_differentiable(aux)
    ctx.save_for_backward(src if reduce == "var" else None, offsets, perm, aux)
    ctx.n = src.shape[0]


def _backward(ctx, grad_out, _grad_aux):
    src, offsets, perm, aux = ctx.saved_tensors
    if ctx.reduce in ("max", "min"):
        return _arg_grad(grad_out, aux, ctx.n), None, None, None, None, None
    seg = _row_segments(offsets, perm, ctx.n)
    return _spread(ctx, grad_out, offsets.diff(), seg, src, aux), None, None, None, None, None


def _need_arg(reduce: str, with_arg: bool, src: torch.Tensor) -> None:
    if reduce in ("max", "min") and not with_arg and src.requires_grad:
        raise RuntimeError(
            "pointins.segment_reduce: max/min without with_arg have no gradient (the rows of the extrema were not "
            "recorded); call the op with with_arg=True, as pointins.ops.segment_reduce does under autograd."
        )


def _setup_context_coo(ctx, inputs, output):
    src, index, num_segments, reduce, correction, with_arg = inputs
    _need_arg(reduce, with_arg, src)
    _out, aux = output
    ctx.reduce, ctx.correction, ctx.num_segments = reduce, correction, num_segments
    ctx.mark_non_differentiable(aux)
    ctx.save_for_backward(src if reduce == "var" else None, index, aux)
    ctx.n = src.shape[0]


def _backward_coo(ctx, grad_out, _grad_aux):
    src, index, aux = ctx.saved_tensors
    s = ctx.num_segments
    if ctx.reduce in ("max", "min"):
        return _arg_grad(grad_out, aux, ctx.n), None, None, None, None, None
    seg = torch.where(index >= 0, index, s)  # row S: rows in no segment get zero gradient
    counts = torch.bincount(seg, minlength=s + 1)[:s]
    return _spread(ctx, grad_out, counts, seg, src, aux), None, None, None, None, None


def _arg_grad(grad_out, aux, n):
    c = grad_out.shape[1]
    grad = grad_out.new_zeros(n * c + 1)
    # Empty segments (arg -1) write to a dummy last slot, so no data-dependent shapes (torch.compile);
    # every real position is written once: deterministic.
    flat = torch.where(aux >= 0, aux * c + torch.arange(c, device=aux.device), n * c)
    grad.index_put_((flat.reshape(-1),), grad_out.reshape(-1))
    return grad[:-1].view(n, c)


def _spread(ctx, grad_out, counts, seg, src, aux):
    """Gradient of sum / mean / var to every row, given each row's segment (S = none)."""
    c = grad_out.shape[1]
    counts = counts.to(grad_out.dtype)[:, None]
    g = grad_out
    if ctx.reduce == "mean":
        g = g / counts.clamp(min=1)
    elif ctx.reduce == "var":
        denom = counts - ctx.correction
        g = torch.where(denom > 0, 2 * g / denom.clamp(min=1), torch.zeros_like(g))
    g = torch.cat([g, g.new_zeros(1, c)])
    grad = g[seg]
    if ctx.reduce == "var":
        mean = torch.cat([aux, aux.new_zeros(1, c)])
        grad = grad * (src - mean[seg])
    return grad


def _register() -> None:
    @torch.library.register_fake("pointins::segment_index_csr")
    def _(index, num_segments):
        return index.new_empty(index.shape), index.new_empty((num_segments + 1,))

    def outputs(src, s, reduce, with_arg=True):
        out = src.new_empty((s, src.shape[1]))
        if reduce in ("max", "min") and (with_arg or src.device.type != "cpu"):
            return out, src.new_empty(out.shape, dtype=torch.int64)
        return out, src.new_empty(out.shape if reduce == "var" else (0,))

    @torch.library.register_fake("pointins::segment_csr")
    def _(src, offsets, perm, reduce, correction=0, with_arg=True):
        return outputs(src, offsets.shape[0] - 1, reduce, with_arg)

    @torch.library.register_fake("pointins::segment_coo")
    def _(src, index, num_segments, reduce, correction=0, with_arg=True):
        return outputs(src, num_segments, reduce, with_arg)

    torch.library.register_autograd("pointins::segment_csr", _backward, setup_context=_setup_context)
    torch.library.register_autograd("pointins::segment_coo", _backward_coo, setup_context=_setup_context_coo)


if _ext.try_load() is not None:
    _register()
