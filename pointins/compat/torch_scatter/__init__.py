# ruff: noqa: UP006, UP035, UP045, RUF005  (TorchScript compiles these: typing.Optional / Tuple)
"""A stand-in for ``torch_scatter`` on PointINS kernels: ``import pointins.compat.torch_scatter as torch_scatter``,
or :func:`pointins.compat.install` so that ``import torch_scatter`` resolves here.

Same names, signatures, defaults, broadcasting, ``out=`` / ``dim_size=`` behaviour, empty-segment conventions
(value 0; the arg of an empty segment is ``src.size(dim)``) and autograd as torch_scatter 2.1 (its documentation
and test suite: ``github:rusty1s/pytorch_scatter``, ``test/``), and scriptable with ``torch.jit.script``.

The sum / mean / min / max reductions (``scatter_*``, ``segment_*_csr``, ``segment_*_coo``) run on
``torch.ops.pointins.segment_coo``, the package's segment kernel (CPU and CUDA), in float for floating inputs and in
float64 for integer inputs (exact for integers below 2**53). ``scatter_mul`` and the gathers use PyTorch's own
``scatter_reduce`` / ``gather`` (the kernel has no product). CSR offsets become per-row segment ids by a binary
search, so batched (multi-dimensional) ``indptr`` work as in torch_scatter.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

import pointins.ops  # noqa: F401  (registers torch.ops.pointins.*)

__version__ = "2.1.2"  # the torch_scatter API this mirrors

__all__ = [
    "gather_coo",
    "gather_csr",
    "scatter",
    "scatter_add",
    "scatter_log_softmax",
    "scatter_logsumexp",
    "scatter_max",
    "scatter_mean",
    "scatter_min",
    "scatter_mul",
    "scatter_softmax",
    "scatter_std",
    "scatter_sum",
    "segment_add_coo",
    "segment_add_csr",
    "segment_coo",
    "segment_csr",
    "segment_max_coo",
    "segment_max_csr",
    "segment_mean_coo",
    "segment_mean_csr",
    "segment_min_coo",
    "segment_min_csr",
    "segment_sum_coo",
    "segment_sum_csr",
]


def broadcast(src: Tensor, other: Tensor, dim: int) -> Tensor:
    """``src`` (an index) expanded to ``other``'s shape: a 1-D index runs along ``dim``; a shorter index gets
    trailing singleton dims (torch_scatter's rule)."""
    if dim < 0:
        dim = other.dim() + dim
    if src.dim() == 1:
        for _ in range(dim):
            src = src.unsqueeze(0)
    while src.dim() < other.dim():
        src = src.unsqueeze(-1)
    return src.expand(other.size())


def _size(index: Tensor, dim_size: Optional[int]) -> int:
    if dim_size is not None:
        return dim_size
    return int(index.max()) + 1 if index.numel() > 0 else 0


def _reduce(src: Tensor, index: Tensor, dim: int, size: int, reduce: str, with_arg: bool) -> Tuple[Tensor, Tensor]:
    """``reduce`` of ``src`` along ``dim`` into ``size`` segments by ``index`` (src's shape; negative ids are
    ignored). Returns the values (src's dtype for floats, float64 for integers; 0 for empty segments) and, with
    ``with_arg``, the int64 position along ``dim`` of each extremum (``src.size(dim)`` for empty segments)."""
    n = src.size(dim)
    moved = src.movedim(dim, 0)
    ids = index.movedim(dim, 0)
    rest = moved.shape[1:]
    cols = 1
    for r in rest:
        cols *= r
    x = moved.reshape(n, cols)
    if not x.is_floating_point():
        x = x.to(torch.float64)
    shape = [size] + list(rest)
    if n == 0 or cols == 0:  # nothing to reduce; still part of src's graph, so backward() works
        vals = torch.zeros(shape, dtype=x.dtype, device=src.device) + x.sum() * 0
        arg = torch.full(shape, n, dtype=torch.long, device=src.device)
        return vals.movedim(0, dim), arg.movedim(0, dim)
    # one id per row (the usual 1-D index, broadcast: stride 0 along the other dims) -> rows are segments; the
    # stride test spares a full comparison pass, which cost twice the kernel itself
    expanded = True
    for d in range(1, ids.dim()):
        if ids.stride(d) != 0 and ids.size(d) != 1:
            expanded = False
    ids = ids.reshape(n, cols)
    if expanded or bool((ids == ids[:, :1]).all()):
        vals, arg = torch.ops.pointins.segment_coo(x, ids[:, 0].contiguous(), size, reduce, 0, with_arg)
    else:  # ids differ across columns: every element is its own row, segment = id * cols + column
        col = torch.arange(cols, device=src.device)
        flat = torch.where(ids >= 0, ids * cols + col, torch.full_like(ids, -1)).reshape(n * cols)
        vals, arg = torch.ops.pointins.segment_coo(x.reshape(n * cols, 1), flat, size * cols, reduce, 0, with_arg)
        vals = vals.reshape(size, cols)
        if with_arg:
            arg = torch.where(arg >= 0, torch.div(arg, cols, rounding_mode="floor"), torch.full_like(arg, -1))
    vals = vals.reshape(shape).movedim(0, dim)
    if not with_arg:
        return vals, torch.empty(0, dtype=torch.long, device=src.device)
    arg = arg.reshape(shape).movedim(0, dim)
    return vals, arg.masked_fill(arg < 0, n)


def _cast(vals: Tensor, like: Tensor, floor: bool) -> Tensor:
    """Back to ``like``'s dtype (integers: float64 results rounded toward -inf where ``floor``)."""
    if like.is_floating_point():
        return vals.to(like.dtype)
    if floor:
        vals = torch.floor(vals)
    return vals.to(like.dtype)


def _dim(src: Tensor, dim: int) -> int:
    return src.dim() + dim if dim < 0 else dim


def scatter_sum(src: Tensor, index: Tensor, dim: int = -1, out: Optional[Tensor] = None,
                dim_size: Optional[int] = None) -> Tensor:  # fmt: skip
    """Sum of ``src``'s entries per index along ``dim`` (added into ``out`` when given)."""
    dim = _dim(src, dim)
    index = broadcast(index, src, dim)
    size = out.size(dim) if out is not None else _size(index, dim_size)
    vals = _cast(_reduce(src, index, dim, size, "sum", False)[0], src, False)
    if out is None:
        return vals
    return out.add_(vals)


def scatter_add(src: Tensor, index: Tensor, dim: int = -1, out: Optional[Tensor] = None,
                dim_size: Optional[int] = None) -> Tensor:  # fmt: skip
    """:func:`scatter_sum`."""
    return scatter_sum(src, index, dim, out, dim_size)


def scatter_mul(src: Tensor, index: Tensor, dim: int = -1, out: Optional[Tensor] = None,
                dim_size: Optional[int] = None) -> Tensor:  # fmt: skip
    """Product per index (1 for empty entries; multiplied into ``out`` when given). PyTorch's scatter_reduce."""
    dim = _dim(src, dim)
    index = broadcast(index, src, dim)
    if out is None:
        shape = list(src.size())
        shape[dim] = _size(index, dim_size)
        return torch.ones(shape, dtype=src.dtype, device=src.device).scatter_reduce(dim, index, src, "prod")
    return out.scatter_reduce_(dim, index, src, "prod")


def _count_dim(src: Tensor, index: Tensor, dim: int) -> int:
    d = _dim(src, dim)
    return index.dim() - 1 if index.dim() <= d else d


def scatter_mean(src: Tensor, index: Tensor, dim: int = -1, out: Optional[Tensor] = None,
                 dim_size: Optional[int] = None) -> Tensor:  # fmt: skip
    """Mean per index (0 where empty). With ``out``: (out + sum) / count, as torch_scatter. Integers: floored."""
    if out is None:
        d = _dim(src, dim)
        index = broadcast(index, src, d)
        return _cast(_reduce(src, index, d, _size(index, dim_size), "mean", False)[0], src, True)
    total = scatter_sum(src, index, dim, out, dim_size)
    d = _dim(src, dim)
    ones = torch.ones(index.size(), dtype=src.dtype, device=src.device)
    count = scatter_sum(ones, index, _count_dim(src, index, dim), None, total.size(d))
    count = broadcast(count.clamp(min=1), total, d)
    if total.is_floating_point():
        return total.true_divide_(count)
    return total.div_(count, rounding_mode="floor")


def _extreme(src: Tensor, index: Tensor, dim: int, out: Optional[Tensor], dim_size: Optional[int],
             reduce: str) -> Tuple[Tensor, Tensor]:  # fmt: skip
    dim = _dim(src, dim)
    index = broadcast(index, src, dim)
    size = out.size(dim) if out is not None else _size(index, dim_size)
    vals, arg = _reduce(src, index, dim, size, reduce, True)
    vals = _cast(vals, src, False)
    if out is None:
        return vals, arg
    n = src.size(dim)
    better = (arg < n) & ((vals > out) if reduce == "max" else (vals < out))  # out's values take part
    out.copy_(torch.where(better, vals, out))
    return out, arg.masked_fill(~better, n)


def scatter_min(src: Tensor, index: Tensor, dim: int = -1, out: Optional[Tensor] = None,
                dim_size: Optional[int] = None) -> Tuple[Tensor, Tensor]:  # fmt: skip
    """(minimum per index, its position along ``dim``); empty: (0, ``src.size(dim)``); ``out`` takes part."""
    return _extreme(src, index, dim, out, dim_size, "min")


def scatter_max(src: Tensor, index: Tensor, dim: int = -1, out: Optional[Tensor] = None,
                dim_size: Optional[int] = None) -> Tuple[Tensor, Tensor]:  # fmt: skip
    """(maximum per index, its position along ``dim``); empty: (0, ``src.size(dim)``); ``out`` takes part."""
    return _extreme(src, index, dim, out, dim_size, "max")


def scatter(src: Tensor, index: Tensor, dim: int = -1, out: Optional[Tensor] = None, dim_size: Optional[int] = None,
            reduce: str = "sum") -> Tensor:  # fmt: skip
    """``reduce`` in ``sum`` / ``add`` / ``mul`` / ``mean`` / ``min`` / ``max`` (values only)."""
    if reduce == "sum" or reduce == "add":
        return scatter_sum(src, index, dim, out, dim_size)
    if reduce == "mul":
        return scatter_mul(src, index, dim, out, dim_size)
    if reduce == "mean":
        return scatter_mean(src, index, dim, out, dim_size)
    if reduce == "min":
        return scatter_min(src, index, dim, out, dim_size)[0]
    if reduce == "max":
        return scatter_max(src, index, dim, out, dim_size)[0]
    raise ValueError(f"torch_scatter.scatter (pointins.compat): reduce must be sum, add, mul, mean, min or max, "
                     f"got {reduce!r}")  # fmt: skip


# ---- CSR segments ---------------------------------------------------------------------------------------


def _csr_ids(src: Tensor, indptr: Tensor) -> Tuple[Tensor, int, int]:
    """(segment id of every position along ``dim`` -- -1 outside every segment -- shaped like src's leading dims
    plus that axis, dim = indptr.dim() - 1, number of segments)."""
    dim = indptr.dim() - 1
    n = src.size(dim)
    segs = max(indptr.size(-1) - 1, 0)
    lead = list(src.shape[:dim])
    if indptr.size(-1) == 0:  # no offsets at all: no segments
        return torch.full(lead + [n], -1, dtype=torch.long, device=src.device), dim, 0
    if dim == 0 and segs > 0 and src.device.type == "cpu":  # the usual 1-D indptr over all rows: run lengths
        counts = indptr[1:] - indptr[:-1]
        if int(indptr[0]) == 0 and int(indptr[-1]) == n and bool((counts >= 0).all()):
            return torch.repeat_interleave(torch.arange(segs, device=src.device), counts, output_size=n), dim, segs
    ptr = indptr.expand(lead + [indptr.size(-1)]).contiguous()
    pos = torch.arange(n, device=src.device).expand(lead + [n]).contiguous()
    ids = torch.searchsorted(ptr[..., 1:].contiguous(), pos, right=True)
    inside = (pos >= ptr[..., :1]) & (pos < ptr[..., -1:])
    return torch.where(inside, ids, torch.full_like(ids, -1)), dim, segs


def _csr(src: Tensor, indptr: Tensor, out: Optional[Tensor], reduce: str, with_arg: bool) -> Tuple[Tensor, Tensor]:
    ids, dim, segs = _csr_ids(src, indptr)
    vals, arg = _reduce(src, broadcast(ids, src, dim), dim, segs, reduce, with_arg)
    vals = _cast(vals, src, reduce == "mean")
    if out is not None:
        out.copy_(vals)
        vals = out
    return vals, arg


def segment_sum_csr(src: Tensor, indptr: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """Sum over the CSR segments ``indptr`` along ``indptr.dim() - 1`` (``out`` is overwritten)."""
    return _csr(src, indptr, out, "sum", False)[0]


def segment_add_csr(src: Tensor, indptr: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """:func:`segment_sum_csr`."""
    return _csr(src, indptr, out, "sum", False)[0]


def segment_mean_csr(src: Tensor, indptr: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """Mean over the CSR segments (0 where empty)."""
    return _csr(src, indptr, out, "mean", False)[0]


def segment_min_csr(src: Tensor, indptr: Tensor, out: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """(minimum, its position) over the CSR segments; empty: (0, ``src.size(dim)``)."""
    return _csr(src, indptr, out, "min", True)


def segment_max_csr(src: Tensor, indptr: Tensor, out: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """(maximum, its position) over the CSR segments; empty: (0, ``src.size(dim)``)."""
    return _csr(src, indptr, out, "max", True)


def segment_csr(src: Tensor, indptr: Tensor, out: Optional[Tensor] = None, reduce: str = "sum") -> Tensor:
    """``reduce`` (sum / add / mean / min / max) over CSR segments; values only."""
    if reduce == "sum" or reduce == "add":
        return segment_sum_csr(src, indptr, out)
    if reduce == "mean":
        return segment_mean_csr(src, indptr, out)
    if reduce == "min":
        return segment_min_csr(src, indptr, out)[0]
    if reduce == "max":
        return segment_max_csr(src, indptr, out)[0]
    raise ValueError(f"torch_scatter.segment_csr (pointins.compat): reduce must be sum, add, mean, min or max, "
                     f"got {reduce!r}")  # fmt: skip


# ---- sorted COO segments ----------------------------------------------------------------------------------


def segment_sum_coo(src: Tensor, index: Tensor, out: Optional[Tensor] = None,
                    dim_size: Optional[int] = None) -> Tensor:  # fmt: skip
    """Sum by sorted ``index`` along ``index.dim() - 1`` (added into ``out``)."""
    return scatter_sum(src, index, index.dim() - 1, out, dim_size)


def segment_add_coo(src: Tensor, index: Tensor, out: Optional[Tensor] = None,
                    dim_size: Optional[int] = None) -> Tensor:  # fmt: skip
    """:func:`segment_sum_coo`."""
    return scatter_sum(src, index, index.dim() - 1, out, dim_size)


def segment_mean_coo(src: Tensor, index: Tensor, out: Optional[Tensor] = None,
                     dim_size: Optional[int] = None) -> Tensor:  # fmt: skip
    """Mean by sorted ``index`` along ``index.dim() - 1``."""
    return scatter_mean(src, index, index.dim() - 1, out, dim_size)


def segment_min_coo(src: Tensor, index: Tensor, out: Optional[Tensor] = None,
                    dim_size: Optional[int] = None) -> Tuple[Tensor, Tensor]:  # fmt: skip
    """(minimum, its position) by sorted ``index``."""
    return scatter_min(src, index, index.dim() - 1, out, dim_size)


def segment_max_coo(src: Tensor, index: Tensor, out: Optional[Tensor] = None,
                    dim_size: Optional[int] = None) -> Tuple[Tensor, Tensor]:  # fmt: skip
    """(maximum, its position) by sorted ``index``."""
    return scatter_max(src, index, index.dim() - 1, out, dim_size)


def segment_coo(src: Tensor, index: Tensor, out: Optional[Tensor] = None, dim_size: Optional[int] = None,
                reduce: str = "sum") -> Tensor:  # fmt: skip
    """``reduce`` (sum / add / mean / min / max) by sorted ``index``; values only."""
    if reduce == "sum" or reduce == "add":
        return segment_sum_coo(src, index, out, dim_size)
    if reduce == "mean":
        return segment_mean_coo(src, index, out, dim_size)
    if reduce == "min":
        return segment_min_coo(src, index, out, dim_size)[0]
    if reduce == "max":
        return segment_max_coo(src, index, out, dim_size)[0]
    raise ValueError(f"torch_scatter.segment_coo (pointins.compat): reduce must be sum, add, mean, min or max, "
                     f"got {reduce!r}")  # fmt: skip


# ---- gathers ----------------------------------------------------------------------------------------------


def gather_coo(src: Tensor, index: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """``out[..., i, ...] = src[..., index[..., i], ...]`` along ``index.dim() - 1`` (PyTorch's gather)."""
    dim = index.dim() - 1
    shape = list(src.shape)
    shape[dim] = index.size(-1)
    ids = index
    while ids.dim() < len(shape):
        ids = ids.unsqueeze(-1)
    ids = ids.expand(shape)
    if out is None:
        return torch.gather(src, dim, ids)
    return torch.gather(src, dim, ids, out=out)


def gather_csr(src: Tensor, indptr: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """Each segment's value repeated over its CSR range: ``out[..., j, ...] = src[..., s, ...]`` for
    ``indptr[s] <= j < indptr[s + 1]``."""
    dim = indptr.dim() - 1
    if out is not None:
        length = out.size(dim)
    elif indptr.numel() == 0:
        length = 0
    else:
        length = int(indptr.reshape(-1, indptr.size(-1))[:, -1].max())
    lead = list(src.shape[:dim])
    if indptr.size(-1) < 2:
        return gather_coo(src, torch.zeros(lead + [length], dtype=torch.long, device=src.device), out)
    ptr = indptr.expand(lead + [indptr.size(-1)]).contiguous()
    pos = torch.arange(length, device=src.device).expand(lead + [length]).contiguous()
    ids = (torch.searchsorted(ptr[..., 1:].contiguous(), pos, right=True)).clamp(max=max(indptr.size(-1) - 2, 0))
    return gather_coo(src, ids, out)


# ---- composites -------------------------------------------------------------------------------------------


def scatter_std(src: Tensor, index: Tensor, dim: int = -1, out: Optional[Tensor] = None,
                dim_size: Optional[int] = None, unbiased: bool = True) -> Tensor:  # fmt: skip
    """Standard deviation per index: sqrt(sum of squared deviations / (count - 1 if unbiased, at least 1)
    + 1e-6 in the divisor), torch_scatter's definition."""
    if out is not None:
        dim_size = out.size(dim)
    d = _dim(src, dim)
    ones = torch.ones(index.size(), dtype=src.dtype, device=src.device)
    count = scatter_sum(ones, index, _count_dim(src, index, d), None, dim_size)
    index = broadcast(index, src, d)
    total = scatter_sum(src, index, d, None, dim_size)
    count = broadcast(count, total, d).clamp(min=1)
    dev = src - (total / count).gather(d, index)
    sq = scatter_sum(dev * dev, index, d, out, dim_size)
    if unbiased:
        count = (count - 1).clamp(min=1)
    return (sq / (count + 1e-6)).sqrt()


def _float_only(src: Tensor, name: str) -> None:
    if not torch.is_floating_point(src):
        raise ValueError(f"torch_scatter.{name} (pointins.compat): src must be floating point, got {src.dtype}")


def scatter_logsumexp(src: Tensor, index: Tensor, dim: int = -1, out: Optional[Tensor] = None,
                      dim_size: Optional[int] = None, eps: float = 1e-12) -> Tensor:  # fmt: skip
    """log(sum(exp)) per index, computed from each index's maximum; empty entries 0 (``out``'s value where
    ``out`` is given and the result is not finite)."""
    _float_only(src, "scatter_logsumexp")
    d = _dim(src, dim)
    index = broadcast(index, src, d)
    size = out.size(d) if out is not None else _size(index, dim_size)
    shape = list(src.size())
    shape[d] = size
    top = torch.full(shape, float("-inf"), dtype=src.dtype, device=src.device)
    scatter_max(src, index, d, top, size)
    shifted = src - top.gather(d, index)
    shifted = shifted.masked_fill(torch.isnan(shifted), float("-inf"))
    start: Optional[Tensor] = None
    if out is not None:
        start = out.clone()
        out = out.sub_(top).exp_()
    total = scatter_sum(shifted.exp(), index, d, out, size)
    res = total.add_(eps).log_().add_(top)
    if start is None:
        return res.nan_to_num_(neginf=0.0)
    bad = ~res.isfinite()
    res[bad] = start[bad]
    return res


def scatter_softmax(src: Tensor, index: Tensor, dim: int = -1, dim_size: Optional[int] = None) -> Tensor:
    """Softmax of ``src`` within each index group along ``dim``."""
    _float_only(src, "scatter_softmax")
    d = _dim(src, dim)
    index = broadcast(index, src, d)
    top = scatter_max(src, index, d, None, dim_size)[0]
    e = (src - top.gather(d, index)).exp()
    return e / scatter_sum(e, index, d, None, dim_size).gather(d, index)


def scatter_log_softmax(src: Tensor, index: Tensor, dim: int = -1, eps: float = 1e-12,
                        dim_size: Optional[int] = None) -> Tensor:  # fmt: skip
    """Log-softmax of ``src`` within each index group along ``dim`` (``eps`` inside the log)."""
    _float_only(src, "scatter_log_softmax")
    d = _dim(src, dim)
    index = broadcast(index, src, d)
    top = scatter_max(src, index, d, None, dim_size)[0]
    shifted = src - top.gather(d, index)
    norm = scatter_sum(shifted.exp(), index, d, None, dim_size).add(eps).log()
    return shifted - norm.gather(d, index)
