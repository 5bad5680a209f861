"""Sparse convolution on a kernel map: submanifold (``kernel_map`` of a voxel set onto itself, the
PTv3 CPE) or any other map (strided down-sampling, its transpose for up-sampling).

``out[i] = bias + sum_k feat[kernel_map[i, k]] @ weight[k]`` with ``kernel_map`` (M, K) int64
(-1: no neighbour, as :func:`pointins.ops.kernel_map` makes it) and ``weight`` (K, Cin, Cout).
Offset k of :func:`~pointins.ops.kernel_map` is ``((dx + r) * s + (dy + r)) * s + (dz + r)`` for a
kernel of side s, so this is a cross-correlation like ``torch.nn.functional.conv3d`` on a dense
grid; spconv/Pointcept weights (Cout, s, s, s, Cin) over (x, y, z) coordinates map onto it with
``w.reshape(Cout, K, Cin).permute(1, 2, 0)`` (:class:`pointins.models.SubMConv3d` does this).

Backends:

- ``"triton"`` (CUDA default; CPU tensors under ``TRITON_INTERPRET=1``): fused implicit GEMM, no
  gathered copy; input gradient by the same kernel on the transposed map; weight gradient with fp32
  atomics, or a workspace and a second reduction (bitwise reproducible).
- ``"cpu"`` (CPU default): for narrow layers (float32 Cout of 16, 32, 48 or 64; float64 8-32) a compiled
  implicit GEMM on the dense map, each output row's accumulators in registers (no gathered copies, no
  per-offset calls; the input gradient is the same kernel on the transposed map when one is given, the
  weight gradient by fixed row chunks up to Cin x Cout = 512); otherwise gather-GEMM-scatter per kernel
  offset over the map's pairs only (the submanifold centre as one plain matrix multiply), input gradient
  from the same pairs. Deterministic for any thread count.
- ``"reference"``: gather-GEMM-scatter per kernel offset in plain PyTorch (autograd by PyTorch).

The Triton input gradient needs the **transposed map** ``T[kernel_map[i, k], k] = i`` (the CPU path
reads it off the map's pairs). It is computed when needed; pass ``kernel_map_t=`` to reuse one (for
a submanifold map of unique voxels it is ``kernel_map.flip(1)``). Every column of the map must be
injective (no input feeds two outputs through the same offset), which holds for maps of unique voxels.

Example::

    >>> import torch, pointins.ops as ops
    >>> grid = torch.cartesian_prod(*[torch.arange(8)] * 3)[::3]   # 171 voxels of an 8^3 grid
    >>> kmap = ops.kernel_map(grid, kernel_size=3)                  # (171, 27), -1 = no neighbour
    >>> feat = torch.randn(len(grid), 8, requires_grad=True)
    >>> weight = torch.randn(27, 8, 16, requires_grad=True)
    >>> out = ops.sparse_conv(feat, kmap, weight, kernel_map_t=kmap.flip(1))
    >>> out.shape
    torch.Size([171, 16])
    >>> out.square().sum().backward(); feat.grad.shape, weight.grad.shape
    (torch.Size([171, 8]), torch.Size([27, 8, 16]))
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pointins import _ext
from pointins._timing import phase
from pointins.ops import _dispatch, reference
from pointins.ops._interop import from_tensor, to_tensor

__all__ = ["sparse_conv"]

OP = "sparse_conv"


def _select(backend: str | None, device: torch.device) -> str:
    return _dispatch.select_triton_op(backend, device, OP, "feat")


def _check(feat, kmap, weight, bias, kmap_t, backend) -> None:
    if feat.dim() != 2:
        raise ValueError(f"pointins.{OP}: feat must be (N, Cin), got shape {tuple(feat.shape)}.")
    if not feat.is_floating_point():
        raise TypeError(f"pointins.{OP}: feat must be floating point, got {feat.dtype}.")
    if weight.dim() != 3 or weight.shape[1] != feat.shape[1]:
        raise ValueError(
            f"pointins.{OP}: weight must be (K, Cin={feat.shape[1]}, Cout), got {tuple(weight.shape)} "
            "(spconv/Pointcept weights (Cout, s, s, s, Cin) convert with w.reshape(Cout, -1, Cin).permute(1, 2, 0))."
        )
    if kmap.dim() != 2 or kmap.shape[1] != weight.shape[0]:
        raise ValueError(
            f"pointins.{OP}: kernel_map must be (M, K={weight.shape[0]}) to match weight, got {tuple(kmap.shape)}."
        )
    if kmap.dtype != torch.int64:
        raise TypeError(f"pointins.{OP}: kernel_map must be int64 (pointins.ops.kernel_map), got {kmap.dtype}.")
    if kmap_t is not None and (kmap_t.dtype != torch.int64 or tuple(kmap_t.shape) != (feat.shape[0], kmap.shape[1])):
        raise ValueError(
            f"pointins.{OP}: kernel_map_t must be int64 of shape ({feat.shape[0]}, {kmap.shape[1]}), "
            f"got {kmap_t.dtype} {tuple(kmap_t.shape)}."
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != feat.dtype:
            raise TypeError(
                f"pointins.{OP}: {name} is {t.dtype} but feat is {feat.dtype}; cast one of them "
                "(under torch.autocast this happens automatically)."
            )
    if bias is not None and tuple(bias.shape) != (weight.shape[2],):
        raise ValueError(f"pointins.{OP}: bias must be ({weight.shape[2]},), got {tuple(bias.shape)}.")
    for name, t in (("kernel_map", kmap), ("weight", weight), ("bias", bias), ("kernel_map_t", kmap_t)):
        if t is not None and t.device != feat.device:
            raise ValueError(f"pointins.{OP}: {name} is on {t.device} but feat on {feat.device}; move it with .to().")
    if backend == "triton" and feat.dtype == torch.float64:
        raise TypeError(f"pointins.{OP}: the Triton kernels take float16/bfloat16/float32, got float64; cast feat.")


def _check_values(feat, kmap, need_transpose: bool, kmap_t=None) -> None:
    """Content checks (one sync): what the kernels would otherwise turn into garbage or a crash. A given
    ``kmap_t`` must be exactly the transpose of ``kmap`` (else the input gradient would be silently wrong)."""
    n = feat.shape[0]
    lo, hi = (int(v) for v in torch.aminmax(kmap)) if kmap.numel() else (-1, -1)  # one pass, no temporaries
    if lo < -1 or hi >= n:
        raise ValueError(
            f"pointins.{OP}: kernel_map entries must be -1 or row indices of feat (0..{n - 1}); got values in "
            f"[{lo}, {hi}]. Was the map built for a different voxel set?"
        )
    if need_transpose and kmap.numel():
        valid = kmap >= 0
        col = torch.arange(kmap.shape[1], device=kmap.device).expand_as(kmap)
        hits = torch.bincount((kmap * kmap.shape[1] + col)[valid], minlength=n * kmap.shape[1])
        if bool((hits > 1).any()):
            raise ValueError(
                f"pointins.{OP}: a kernel-map column sends one input row to several outputs, so the input gradient "
                "is not defined by a transposed map; this happens with duplicate voxels (voxelize / "
                "unique the grid coordinates first)."
            )
    if kmap_t is not None:
        m = kmap.shape[0]
        if kmap_t.numel() and bool(((kmap_t < -1) | (kmap_t >= m)).any()):
            raise ValueError(
                f"pointins.{OP}: kernel_map_t entries must be -1 or output rows (0..{m - 1}); got values in "
                f"[{int(kmap_t.min())}, {int(kmap_t.max())}]."
            )
        if not torch.equal(transpose_map(kmap, n), kmap_t):
            raise ValueError(
                f"pointins.{OP}: kernel_map_t is not the transpose of kernel_map (T[kernel_map[i, k], k] == i, -1 "
                "elsewhere), so the input gradient would be wrong. Build it with "
                "pointins.ops.transpose_kernel_map(kernel_map, feat.shape[0]), or pass None to have it computed."
            )
    if feat.numel() and not all(math.isfinite(float(v)) for v in torch.aminmax(feat.detach())):  # NaN, Inf show in both
        row = int(torch.nonzero(~torch.isfinite(feat).all(1))[0])
        raise ValueError(f"pointins.{OP}: feat has NaN/Inf (first at row {row}); check the layer feeding the conv.")


def transpose_map(kmap: torch.Tensor, num_inputs: int) -> torch.Tensor:
    """``T`` (num_inputs, K) with ``T[kmap[i, k], k] = i`` (-1 elsewhere); no device sync."""
    kvol = kmap.shape[1]
    t = torch.full((num_inputs * kvol + 1,), -1, dtype=torch.long, device=kmap.device)
    col = torch.arange(kvol, device=kmap.device).expand_as(kmap)
    dest = torch.where(kmap >= 0, kmap * kvol + col, num_inputs * kvol)  # misses go to a dummy slot
    t.scatter_(0, dest.reshape(-1), torch.arange(kmap.shape[0], device=kmap.device).repeat_interleave(kvol))
    return t[:-1].view(num_inputs, kvol)


def sparse_conv(
    feat: Any,
    kernel_map: Any,
    weight: Any,
    bias: Any = None,
    *,
    kernel_map_t: Any = None,
    backend: str | None = None,
    deterministic: bool | None = None,
    validate: bool = True,
) -> Any:
    """Sparse convolution ``out[i] = bias + sum_k feat[kernel_map[i, k]] @ weight[k]`` (see the module doc).

    Args:
        feat: (N, Cin) float16/bfloat16/float32 (float64: cpu/reference).
        kernel_map: (M, K) int64, entries -1 or rows of ``feat``; M = N for a submanifold conv.
        weight: (K, Cin, Cout), same dtype as ``feat``; bias: (Cout,) or None.
        kernel_map_t: the transposed map (N, K) for the input gradient; computed when None.
        backend: None (CUDA: "triton", CPU: "cpu"), "triton", "cpu" or "reference".
        deterministic: weight gradient without atomics (Triton); default follows
            ``torch.are_deterministic_algorithms_enabled()``. The CPU path is always deterministic.
        validate: check the map's contents and that feat is finite (one sync); pass False in
            training loops whose maps come from :func:`pointins.ops.kernel_map`.

    Returns:
        (M, Cout) in feat's dtype (NumPy in, NumPy out). Under ``torch.autocast`` feat, weight and
        bias are cast to the autocast dtype first, as a Linear layer would be.
    """
    feat_t, kind = to_tensor(feat, "feat", OP)
    kmap, _ = to_tensor(kernel_map, "kernel_map", OP)
    w, _ = to_tensor(weight, "weight", OP)
    b = None if bias is None else to_tensor(bias, "bias", OP)[0]
    kt = None if kernel_map_t is None else to_tensor(kernel_map_t, "kernel_map_t", OP)[0]
    dev = feat_t.device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev) and feat_t.is_floating_point():
        dt = torch.get_autocast_dtype(dev)
        feat_t, w = feat_t.to(dt), w.to(dt)
        b = None if b is None else b.to(dt)
    be = _select(backend, feat_t.device)
    _check(feat_t, kmap, w, b, kt, be)
    needs_grad = torch.is_grad_enabled() and feat_t.requires_grad
    if validate:
        _check_values(feat_t, kmap, needs_grad and kt is None and be != "reference", kt)
    if be == "reference":
        out = reference.sparse_conv(feat_t, kmap, w, b)
    else:
        if kt is None and needs_grad and be == "triton":  # the CPU path reads the input gradient off kmap's pairs
            kt = transpose_map(kmap, feat_t.shape[0])
        if deterministic is None:
            deterministic = torch.are_deterministic_algorithms_enabled()
        out = torch.ops.pointins.sparse_conv(
            feat_t.contiguous(), kmap.contiguous(), None if kt is None else kt.contiguous(),
            w.contiguous() if be == "triton" else w,  # the CPU GEMMs take a strided weight (no copy per call)
            None if b is None else b.contiguous(), be == "triton", bool(deterministic),
        )  # fmt: skip
    return from_tensor(out, kind) if kind != "torch" else out


# ---------------------------------------------------------------------------------------------
# CPU path: gather-GEMM-scatter per kernel offset over the map's pairs only (torch ops), and the
# custom op pair
# ---------------------------------------------------------------------------------------------


def _pairs(kmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The map's (output row, input row) pairs grouped by offset: ``rows``, ``src`` and the bounds of each
    offset's group (rows ascending within a group)."""
    from pointins.ops.voxel import _pairs as pairs

    src, rows, koff = pairs(kmap)
    return rows, src, koff.tolist()


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# Output widths the compiled implicit-GEMM kernel keeps in registers (csrc/cpu/sparse_conv_cpu.cpp), and the
# largest Cin x Cout for which its weight gradient beats per-offset GEMMs (measured: bench/bench_sparse_conv.py).
_IMPLICIT_COUT = {torch.float32: (16, 32, 48, 64), torch.float64: (8, 16, 24, 32)}
_IMPLICIT_WGRAD = 512


def _implicit(x: torch.Tensor, cout: int) -> bool:
    return cout in _IMPLICIT_COUT.get(x.dtype, ())


def _cpu_conv(x, kmap, w, bias, transposed_rows: int | None = None):
    """``out[i] = bias + sum_k x[kmap[i, k]] @ w[k]``. With ``transposed_rows`` it is the input gradient of that
    conv instead, for ``x`` = the output gradient and ``w`` (K, Cout, Cin): ``out[kmap[i, k]] += x[i] @ w[k]`` over
    ``transposed_rows`` output rows (the conv's inputs), from the same pairs (no transposed map needed).

    One offset at a time: gather its pairs' rows, one matrix multiply, add into the output rows (an offset whose
    pairs are the identity, the submanifold centre, multiplies ``x`` directly). Only the map's pairs are computed
    (a submanifold map of a scan holds about 5-10 of 27), accumulated in float32 (float64 for float64) in a fixed
    order: deterministic for any thread count."""
    kvol, _cin, cout = w.shape
    transposed = transposed_rows is not None
    m = transposed_rows if transposed else kmap.shape[0]
    if x.dtype in (torch.float32, torch.float64) and x.device.type == "cpu":  # the same loop, compiled
        from pointins.ops.voxel import _pairs as pairs

        src, rows, koff = pairs(kmap)
        if transposed:
            src, rows = rows, src
        return torch.ops.pointins.sparse_conv_pairs(x, src, rows, koff, w, bias, m)
    rows, src, bounds = _pairs(kmap)
    if transposed:
        rows, src = src, rows
    acc = _acc_dtype(x.dtype)
    out = torch.zeros((m, cout), dtype=acc, device=x.device)
    if bias is not None:
        out += bias.to(acc)
    widest = max((bounds[k + 1] - bounds[k] for k in range(kvol)), default=0)
    gathered = x.new_empty((widest, x.shape[1]))
    product = x.new_empty((widest, cout))
    for k in range(kvol):
        s, e = bounds[k], bounds[k + 1]
        n = e - s
        if n == 0:
            continue
        if n == m == x.shape[0] and torch.equal(src[s:e], rows[s:e]):  # identity pairs: rows 0..m-1 in order
            out.addmm_(x.to(acc), w[k].to(acc))
            continue
        torch.index_select(x, 0, src[s:e], out=gathered[:n])
        torch.mm(gathered[:n], w[k], out=product[:n])
        out.index_add_(0, rows[s:e], product[:n].to(acc))
    return out.to(x.dtype)


def _cpu_weight_grad(x, kmap, g):
    """``dw[k] = x[kmap[:, k]]^T @ g`` over the pairs of offset k."""
    kvol, cin, cout = kmap.shape[1], x.shape[1], g.shape[1]
    if x.dtype in (torch.float32, torch.float64) and x.device.type == "cpu":  # the same loop, compiled
        from pointins.ops.voxel import _pairs as pairs

        src, rows, koff = pairs(kmap)
        return torch.ops.pointins.sparse_conv_pairs_wgrad(x, g.contiguous(), src, rows, koff)
    acc = _acc_dtype(x.dtype)
    dw = torch.zeros((kvol, cin, cout), dtype=acc, device=x.device)
    rows, src, bounds = _pairs(kmap)
    for k in range(kvol):
        s, e = bounds[k], bounds[k + 1]
        if e > s:
            a = torch.index_select(x, 0, src[s:e]).to(acc)
            b = torch.index_select(g, 0, rows[s:e]).to(acc)
            torch.mm(a.t(), b, out=dw[k])
    return dw


@torch.library.custom_op("pointins::sparse_conv", mutates_args=())
def _sparse_conv_op(
    feat: torch.Tensor,
    kmap: torch.Tensor,
    kmap_t: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    use_triton: bool,
    deterministic: bool,
) -> torch.Tensor:
    if use_triton:
        from pointins.triton import load

        return load("sparse_conv").conv(feat, kmap, weight, bias)
    if _implicit(feat, weight.shape[2]):  # narrow layers: compiled implicit GEMM, no per-offset calls
        return torch.ops.pointins.sparse_conv_implicit(feat, kmap, weight, bias, False)
    return _cpu_conv(feat, kmap, weight, bias)


@torch.library.custom_op("pointins::sparse_conv_backward", mutates_args=())
def _sparse_conv_backward_op(
    grad_out: torch.Tensor,
    feat: torch.Tensor,
    kmap: torch.Tensor,
    kmap_t: torch.Tensor,
    weight: torch.Tensor,
    need_feat: bool,
    need_weight: bool,
    use_triton: bool,
    deterministic: bool,
    has_transpose: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    grad_out = grad_out.contiguous()
    wt = weight.transpose(1, 2)  # (K, Cout, Cin); the CPU kernels take it strided, Triton contiguous
    if use_triton:
        wt = wt.contiguous()
    if use_triton:
        from pointins.triton import load

        kern = load("sparse_conv")
        dfeat = kern.conv(grad_out, kmap_t, wt) if need_feat else feat.new_empty((0, feat.shape[1]))
        dw = kern.weight_grad(feat, kmap, grad_out, deterministic) if need_weight else None
    else:
        if not need_feat:
            dfeat = feat.new_empty((0, feat.shape[1]))
        elif has_transpose and _implicit(grad_out, feat.shape[1]):  # the forward kernel on the transposed map
            dfeat = torch.ops.pointins.sparse_conv_implicit(grad_out, kmap_t, wt, None, False)
        else:
            dfeat = _cpu_conv(grad_out, kmap, wt, None, feat.shape[0])
        dw = None
        if need_weight:
            narrow = feat.dtype in _IMPLICIT_COUT and feat.shape[1] * grad_out.shape[1] <= _IMPLICIT_WGRAD
            dw = (torch.ops.pointins.sparse_conv_weight_grad(feat, kmap, grad_out, False) if narrow
                  else _cpu_weight_grad(feat, kmap, grad_out))  # fmt: skip
    dw = weight.new_empty((0, *weight.shape[1:])) if dw is None else dw.to(weight.dtype)
    return dfeat, dw


@_sparse_conv_op.register_fake
def _(feat, kmap, kmap_t, weight, bias, use_triton, deterministic):
    return feat.new_empty((kmap.shape[0], weight.shape[2]))


@_sparse_conv_backward_op.register_fake
def _(grad_out, feat, kmap, kmap_t, weight, need_feat, need_weight, use_triton, deterministic, has_transpose=True):
    dfeat = feat.new_empty(feat.shape if need_feat else (0, feat.shape[1]))
    return dfeat, weight.new_empty(weight.shape if need_weight else (0, *weight.shape[1:]))


def _setup_context(ctx, inputs, output):
    feat, kmap, kmap_t, weight, bias, use_triton, deterministic = inputs
    ctx.save_for_backward(feat, kmap, kmap_t, weight)
    ctx.args = (use_triton, deterministic, bias is not None)


def _backward(ctx, grad_out):
    feat, kmap, kmap_t, weight = ctx.saved_tensors
    use_triton, deterministic, has_bias = ctx.args
    need_feat, _, _, need_weight, need_bias = ctx.needs_input_grad[:5]
    if need_feat and kmap_t is None and use_triton:
        kmap_t = transpose_map(kmap, feat.shape[0])
    dfeat = dw = db = None
    if need_feat or need_weight:
        with phase("conv"):
            dfeat, dw = torch.ops.pointins.sparse_conv_backward(
                grad_out, feat, kmap, kmap if kmap_t is None else kmap_t, weight, bool(need_feat), bool(need_weight),
                use_triton, deterministic, kmap_t is not None,
            )  # fmt: skip
    if has_bias and need_bias:
        db = grad_out.sum(0, dtype=torch.float64 if grad_out.dtype == torch.float64 else torch.float32)
        db = db.to(grad_out.dtype)
    return (dfeat if need_feat else None), None, None, (dw if need_weight else None), db, None, None


_sparse_conv_op.register_autograd(_backward, setup_context=_setup_context)


def _register_fakes() -> None:
    """Shapes of the compiled CPU kernels (they run inside the custom op above; fakes keep them traceable)."""

    @torch.library.register_fake("pointins::sparse_conv_implicit")
    def _(x, kmap, weight, bias, check=True):
        return x.new_empty((kmap.shape[0], weight.shape[2]))

    @torch.library.register_fake("pointins::sparse_conv_weight_grad")
    def _(x, kmap, grad, check=True):
        return x.new_empty((kmap.shape[1], x.shape[1], grad.shape[1]))

    @torch.library.register_fake("pointins::sparse_conv_pairs")
    def _(x, in_idx, out_idx, koff, weight, bias, num_out):
        return x.new_empty((num_out, weight.shape[2]))

    @torch.library.register_fake("pointins::sparse_conv_pairs_wgrad")
    def _(x, grad, in_idx, out_idx, koff):
        return x.new_empty((koff.shape[0] - 1, x.shape[1], grad.shape[1]))


if _ext.try_load() is not None:
    _register_fakes()
