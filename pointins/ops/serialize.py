"""Space-filling-curve serialization (Point Transformer V3 codes) and patch partition.

Codes are bit-exact with Pointcept's PTv3 (so its weights stay usable):

- ``"z"``: bit i of x goes to code bit 3i+2, of y to 3i+1, of z to 3i;
- ``"hilbert"``: Skilling's Hilbert curve, x most significant in each bit triplet;
- ``"z-trans"`` / ``"hilbert-trans"``: x and y swapped;
- the batch index sits above the ``3 * depth`` curve bits.

Example::

    >>> import torch, pointins.ops as ops
    >>> grid = torch.randint(0, 64, (1000, 3))
    >>> s = ops.serialize(grid, offsets=torch.tensor([0, 400, 1000]))   # 4 orders, depth from data
    >>> s.code.shape, s.order.shape, s.depth
    (torch.Size([4, 1000]), torch.Size([4, 1000]), 7)
    >>> bool((s.code[0][s.order[0]].diff() > 0).all())                # sorted along the curve
    True
    >>> pad, unpad, cu_seqlens = ops.patch_partition(torch.tensor([0, 400, 1000]), patch_size=128)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pointins import _ext
from pointins.ops import _dispatch, reference
from pointins.ops._interop import result_fields, results, to_tensor
from pointins.ops.keys import _as_index

ORDERS = reference.ORDERS
MAX_DEPTH = 21

__all__ = ["ORDERS", "Serialization", "auto_depth", "decode", "encode", "patch_partition", "serialize"]


def _order_id(order: str, op: str) -> int:
    try:
        return ORDERS.index(order)
    except ValueError:
        raise ValueError(f"pointins.{op}: unknown order {order!r}; choose from {ORDERS}.") from None


def _batch_arg(batch: Any, offsets: Any, n: int, device: torch.device, op: str) -> torch.Tensor | None:
    if offsets is not None:
        if batch is not None:
            raise ValueError(f"pointins.{op}: pass either batch (per point) or offsets (CSR), not both.")
        off = _as_index(offsets, "offsets", op, device)
        reference.check_offsets(off, n, op)
        return reference.offsets_to_batch(off)
    return None if batch is None else _as_index(batch, "batch", op, device)


def auto_depth(grid_coord: torch.Tensor) -> int:
    """PTv3's depth: the bit length of ``max(grid_coord) + 1`` (at least 1)."""
    if grid_coord.numel() == 0:
        return 1
    return max(1, int(grid_coord.max()) + 1).bit_length()


def encode(
    grid_coord: Any,
    batch: Any = None,
    order: str | Sequence[str] = "z",
    depth: int = 16,
    *,
    offsets: Any = None,
    backend: str | None = None,
) -> Any:
    """Curve codes of integer grid coordinates.

    Args:
        grid_coord: (N, 3) int32/int64, each coordinate in ``[0, 2**depth)``.
        batch: (N,) sample ids placed above the curve bits (or ``offsets=`` CSR).
        order: one of ``ORDERS`` -> (N,) codes; a sequence of them -> (len(order), N).
        depth: bits per axis, 1..21 (PTv3 uses <= 16).
        backend: ``None``, ``"cpu"``, ``"cuda"`` or ``"reference"``.
    """
    op = "serialize"
    if isinstance(order, int) or isinstance(depth, str):  # Pointcept's order: encode(grid_coord, batch, depth, order)
        raise TypeError(f"pointins.encode: got order={order!r}, depth={depth!r}; the signature is pointins.ops."
                        "encode(grid_coord, batch=None, order='z', depth=16) (order before depth). Pointcept's "
                        "encode(grid_coord, batch, depth, order) is pointins.compat.pointcept.encode.")  # fmt: skip
    g, kind = to_tensor(grid_coord, "grid_coord", op)
    if g.dim() != 2 or g.shape[-1] != 3:
        raise ValueError(f"pointins.{op}: grid_coord must have shape (N, 3), got {tuple(g.shape)}.")
    single = isinstance(order, str)
    names = [order] if single else list(order)
    ids = [_order_id(o, op) for o in names]
    b = _batch_arg(batch, offsets, g.shape[0], g.device, op)
    be = _dispatch.select(backend, g.device, op, ("cpu", "cuda", "reference"))
    if be == "reference":
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"pointins.{op}: depth must be in [1, {MAX_DEPTH}], got {depth}.")
        out = torch.stack([reference.serialize_encode(g, b, depth, o) for o in names]) if names else None
    else:
        out = torch.ops.pointins.serialize_encode(g, b, depth, ids)
    return results(out[0] if single else out, kind)


def decode(code: Any, depth: int = 16, order: str = "z", *, backend: str | None = None) -> tuple[Any, Any]:
    """Inverse of :func:`encode` for one order: ``(grid_coord (N, 3) int32, batch (N,) int64)``."""
    op = "deserialize"
    c, kind = to_tensor(code, "code", op)
    oid = _order_id(order, op)
    be = _dispatch.select(backend, c.device, op, ("cpu", "cuda", "reference"))
    if be == "reference":
        out = reference.serialize_decode(c, depth, order)
    else:
        out = torch.ops.pointins.serialize_decode(c, depth, oid)
    return results(out, kind)


@dataclass
class Serialization:
    """Codes of several orders, with the sorting permutation and its inverse per order.

    ``order[k]`` lists the points along curve k (``x[order[k]]`` is serialized); ``inverse[k]``
    maps back (``x_serialized[inverse[k]] == x``)."""

    code: torch.Tensor  # (O, N) int64
    order: torch.Tensor  # (O, N) int64
    inverse: torch.Tensor  # (O, N) int64
    depth: int
    orders: tuple[str, ...]


def serialize(
    grid_coord: Any,
    offsets: Any = None,
    *,
    batch: Any = None,
    orders: Sequence[str] = ORDERS,
    depth: int | None = None,
    shuffle_orders: bool = False,
    generator: torch.Generator | None = None,
    backend: str | None = None,
) -> Serialization:
    """PTv3 serialization: codes for ``orders`` (shuffled if asked), sort order and inverse.

    ``depth=None`` uses :func:`auto_depth` (PTv3's rule). Sorting is stable, so equal codes
    (duplicate voxels) keep their input order. Returns torch tensors.
    """
    op = "serialize"
    g, kind = to_tensor(grid_coord, "grid_coord", op)
    names = list(orders)
    if not names:
        raise ValueError(f"pointins.{op}: orders must name at least one of {ORDERS}.")
    if shuffle_orders:
        perm = torch.randperm(len(names), generator=generator).tolist()
        names = [names[i] for i in perm]
    if depth is None:
        depth = auto_depth(g)
        if depth > 16:
            raise ValueError(
                f"pointins.{op}: grid coordinates up to {int(g.max())} need depth {depth} > 16 bits per axis "
                "(PTv3's limit); use a larger grid_size or crop the cloud, or pass depth explicitly."
            )
    code = encode(g, batch, names, depth, offsets=offsets, backend=backend)
    if code.device.type == "cpu" and backend != "reference" and _ext.try_load() is not None:
        order = torch.ops.pointins.sort_keys(code)[1]  # stable radix sort: codes are non-negative
    else:
        order = torch.sort(code, dim=1, stable=True).indices
    arange = torch.arange(code.shape[1], device=code.device).expand_as(order)
    inverse = torch.empty_like(order).scatter_(1, order, arange)
    return result_fields(Serialization(code, order, inverse, depth, tuple(names)), kind)


def patch_partition(offsets: Any, patch_size: int = 1024, *, backend: str | None = None) -> tuple[Any, Any, Any]:
    """PTv3 patch padding for attention in patches of ``patch_size`` points.

    A sample of n > patch_size points is padded to a multiple of patch_size, padding slot j
    repeating the point patch_size slots earlier; a sample of n <= patch_size points is one
    short patch.

    Returns:
        pad (P,) int64: the point (in serialized order) each padded slot reads;
        unpad (N,) int64: the slot of each point;
        cu_seqlens (num_patches + 1,) int32: patch starts in the padded array, then P.
    """
    op = "patch_partition"
    off, kind = to_tensor(offsets, "offsets", op)
    if off.is_floating_point() or off.dtype == torch.bool:
        raise TypeError(f"pointins.{op}: offsets must be an integer tensor, got {off.dtype}.")
    off = off.long().contiguous()
    if patch_size < 1:
        raise ValueError(f"pointins.{op}: patch_size must be >= 1, got {patch_size}.")
    be = _dispatch.select(backend, off.device, op, ("cpu", "cuda", "reference"))
    if be == "reference":
        reference.check_offsets(off, int(off[-1]) if off.numel() else 0, op)
        out = reference.patch_partition(off, patch_size)
    else:
        out = torch.ops.pointins.patch_partition(off, patch_size)
    return results(out, kind)


def _register_fakes() -> None:
    @torch.library.register_fake("pointins::serialize_encode")
    def _(grid_coord, batch, depth, orders):
        return grid_coord.new_empty((len(orders), grid_coord.shape[0]), dtype=torch.int64)

    @torch.library.register_fake("pointins::serialize_decode")
    def _(code, depth, order):
        return code.new_empty((code.shape[0], 3), dtype=torch.int32), code.new_empty((code.shape[0],))

    @torch.library.register_fake("pointins::sort_keys")
    def _(keys):
        return torch.empty_like(keys), torch.empty_like(keys)

    @torch.library.register_fake("pointins::patch_partition")
    def _(offsets, patch_size):
        ctx = torch.library.get_ctx()
        padded, n, cu_len = ctx.new_dynamic_size(), ctx.new_dynamic_size(), ctx.new_dynamic_size(min=1)
        return offsets.new_empty((padded,)), offsets.new_empty((n,)), offsets.new_empty((cu_len,), dtype=torch.int32)


if _ext.try_load() is not None:
    _register_fakes()
