"""Grid coordinates and packed voxel keys.

Key layout (``bits`` per axis, default 16; kernels/include/pointins/keys.h)::

    bit 63 = 0 | batch (63 - 3*bits bits) | x (bits) | y (bits) | z (bits)

Keys are non-negative int64, injective on 0 <= x, y, z < 2**bits and
0 <= batch < 2**(63 - 3*bits) (32768 samples at bits=16), and sort as (batch, x, y, z).
Pack before sorting or hashing: ``torch.unique`` on keys is far faster than on rows.

Example::

    >>> import torch, pointins.ops as ops
    >>> coord = torch.rand(1000, 3) * 4.0                      # metres
    >>> offsets = torch.tensor([0, 600, 1000])                  # two clouds
    >>> g = ops.grid_coord(coord, offsets, grid_size=0.05)      # int32 (N, 3), >= 0 per cloud
    >>> keys = ops.pack_keys(g, offsets=offsets)               # int64 (N,)
    >>> g2, batch = ops.unpack_keys(keys)
    >>> bool((g2 == g).all())
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pointins import _ext
from pointins.ops import _dispatch, reference
from pointins.ops._interop import check_alloc, results, to_tensor

DEFAULT_BITS = reference.DEFAULT_KEY_BITS

__all__ = ["DEFAULT_BITS", "grid_coord", "max_batch", "pack_keys", "unpack_keys"]


def max_batch(bits: int = DEFAULT_BITS) -> int:
    """Number of distinct batch ids a key holds at ``bits`` bits per axis."""
    return 2 ** (63 - 3 * bits)


def _grid_size(grid_size: Any) -> list[float]:
    if grid_size is None:
        raise TypeError("pointins.grid_coord: grid_size is required (e.g. 0.02 for 2 cm voxels).")
    if isinstance(grid_size, torch.Tensor):
        grid_size = grid_size.detach().cpu().reshape(-1).tolist()
    elif hasattr(grid_size, "tolist") and not isinstance(grid_size, (int, float)):
        grid_size = grid_size.tolist()
    if isinstance(grid_size, (int, float)):
        grid_size = [float(grid_size)] * 3
    gs = [float(g) for g in grid_size]
    if len(gs) == 1:
        gs = gs * 3
    if len(gs) != 3:
        raise ValueError(f"pointins.grid_coord: grid_size must be a number or 3 numbers, got {grid_size!r}.")
    return gs


def _as_index(x: Any, name: str, op: str, device: torch.device) -> torch.Tensor:
    t, _ = to_tensor(x, name, op)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"pointins.{op}: {name} must be an integer tensor, got {t.dtype}.")
    if not isinstance(x, torch.Tensor):  # lists / NumPy: follow the data's device
        t = t.to(device)
    return t.long().contiguous()


def _offsets_and_perm(
    offsets: Any, batch: Any, n: int, device: torch.device, op: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """CSR offsets for the points, and a sorting permutation when batch ids were unsorted."""
    if offsets is not None and batch is not None:
        raise ValueError(f"pointins.{op}: pass either offsets (CSR, length B+1) or batch (per point), not both.")
    if batch is None:
        if offsets is None:
            return torch.tensor([0, n], dtype=torch.long, device=device), None
        return _as_index(offsets, "offsets", op, device), None
    b = _as_index(batch, "batch", op, device)
    if b.dim() != 1 or b.numel() != n:
        raise ValueError(
            f"pointins.{op}: batch must have shape ({n},) (one sample id per point), got {tuple(b.shape)}."
        )
    if n == 0:
        return torch.zeros(1, dtype=torch.long, device=device), None
    if bool((b < 0).any()):
        raise ValueError(f"pointins.{op}: batch ids must be >= 0, got min {int(b.min())}.")
    top = int(b.max())
    check_alloc(top + 2, 8, f"batch (largest sample id {top})", op, device,
                "renumber the samples 0..B-1 (torch.unique(batch, return_inverse=True)[1]).")  # fmt: skip
    perm = None
    if not bool((b[1:] >= b[:-1]).all()):
        b, perm = torch.sort(b, stable=True)
    counts = torch.bincount(b)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)]), perm


def grid_coord(
    coord: Any,
    offsets: Any = None,
    grid_size: float | Sequence[float] | None = None,
    *,
    batch: Any = None,
    backend: str | None = None,
) -> Any:
    """Integer grid coordinates ``floor(coord / grid_size) - per-sample minimum``.

    Args:
        coord: (N, 3) float32/float64 points (float16/bfloat16 are widened to float32); a
            torch tensor, NumPy/CuPy array or any DLPack array. The result has the same kind.
        offsets: CSR offsets (B+1,) of the samples in the batch (``[0, n0, n0+n1, ...]``);
            ``None`` = one sample. Pointcept's ``offset`` (ends only) converts with
            ``torch.cat([offset.new_zeros(1), offset])``.
        grid_size: voxel size, one number or one per axis.
        batch: per-point sample ids instead of ``offsets`` (sorted or not).
        backend: ``None`` (compiled backend of the input's device), ``"cpu"``, ``"cuda"`` or
            ``"reference"``.

    Returns:
        (N, 3) int32 grid coordinates, each sample's minimum at 0.

    Raises:
        ValueError: NaN/Inf coordinates, a grid index beyond +-2**30 cells, bad offsets.
        TypeError: non-floating coordinates.
    """
    op = "grid_coord"
    c, kind = to_tensor(coord, "coord", op)
    if c.dtype in (torch.float16, torch.bfloat16):
        c = c.float()
    if c.dim() != 2 or c.shape[-1] != 3:
        raise ValueError(f"pointins.{op}: coord must have shape (N, 3), got {tuple(c.shape)}.")
    gs = _grid_size(grid_size)
    off, perm = _offsets_and_perm(offsets, batch, c.shape[0], c.device, op)
    be = _dispatch.select(backend, c.device, op, ("cpu", "cuda", "reference"))
    if perm is not None:
        c = c[perm]
    if be == "reference":
        out = reference.grid_coord(c, off, gs)
    else:
        out = torch.ops.pointins.grid_coord(c, off, gs)
    if perm is not None:
        out = torch.empty_like(out).index_copy_(0, perm, out)
    return results(out, kind)


def pack_keys(
    grid_coord: Any,
    batch: Any = None,
    *,
    offsets: Any = None,
    bits: int = DEFAULT_BITS,
    backend: str | None = None,
) -> Any:
    """Pack (batch, x, y, z) into one injective, sortable int64 key per point.

    Args:
        grid_coord: (N, 3) int32/int64 non-negative grid coordinates (see :func:`grid_coord`).
        batch: (N,) per-point sample ids, or ``None``; alternatively ``offsets`` (CSR).
        bits: bits per axis (1..21). The batch gets the remaining ``63 - 3*bits`` bits.
        backend: ``None``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``.

    Returns:
        (N,) int64 keys, same array kind as ``grid_coord``.

    Raises:
        ValueError: negative coordinates, coordinates >= 2**bits (the message gives the bits
            needed), batch ids outside [0, 2**(63 - 3*bits)).
    """
    op = "pack_keys"
    g, kind = to_tensor(grid_coord, "grid_coord", op)
    if g.dim() != 2 or g.shape[-1] != 3:
        raise ValueError(f"pointins.{op}: grid_coord must have shape (N, 3), got {tuple(g.shape)}.")
    n = g.shape[0]
    b = None
    if offsets is not None:
        if batch is not None:
            raise ValueError(f"pointins.{op}: pass either batch (per point) or offsets (CSR), not both.")
        off = _as_index(offsets, "offsets", op, g.device)
        reference.check_offsets(off, n, op)
        b = reference.offsets_to_batch(off)
    elif batch is not None:
        b = _as_index(batch, "batch", op, g.device)
    be = _dispatch.select(backend, g.device, op, ("cpu", "cuda", "triton", "reference"))
    if be == "reference":
        out = reference.pack_keys(g, b, bits)
    elif be == "triton":
        out = _pack_triton(g, b, bits)
    else:
        out = torch.ops.pointins.pack_keys(g, b, bits)
    return results(out, kind)


def unpack_keys(keys: Any, bits: int = DEFAULT_BITS, *, backend: str | None = None) -> tuple[Any, Any]:
    """Inverse of :func:`pack_keys`: ``(grid_coord (N, 3) int32, batch (N,) int64)``."""
    op = "unpack_keys"
    k, kind = to_tensor(keys, "keys", op)
    be = _dispatch.select(backend, k.device, op, ("cpu", "cuda", "triton", "reference"))
    if be == "reference":
        out = reference.unpack_keys(k, bits)
    elif be == "triton":
        out = _unpack_triton(k, bits)
    else:
        out = torch.ops.pointins.unpack_keys(k, bits)
    return results(out, kind)


# --- Triton backend --------------------------------------------------------------------------


def _pack_triton(g: torch.Tensor, b: torch.Tensor | None, bits: int) -> torch.Tensor:
    from pointins import triton as pt

    if g.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"pointins.pack_keys: grid_coord must be int32 or int64, got {g.dtype}.")
    if not reference.MIN_KEY_BITS <= bits <= reference.MAX_KEY_BITS:
        reference.pack_keys(g, b, bits)  # raises the bits error
    if b is not None and (b.shape != (g.shape[0],) or b.device != g.device):
        raise ValueError(f"pointins.pack_keys: batch must be ({g.shape[0]},) on {g.device}.")
    keys, flags = pt.load("keys").pack_keys(g.contiguous(), None if b is None else b.contiguous(), bits)
    if flags:
        reference.pack_keys(g, b, bits)  # raises the error the flags describe
    return keys


def _unpack_triton(k: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    from pointins import triton as pt

    if k.dtype != torch.int64 or k.dim() != 1:
        raise TypeError(f"pointins.unpack_keys: keys must be a 1-D int64 tensor, got {k.dtype} {tuple(k.shape)}.")
    if not reference.MIN_KEY_BITS <= bits <= reference.MAX_KEY_BITS:
        reference.unpack_keys(k, bits)
    grid, batch, flags = pt.load("keys").unpack_keys(k.contiguous(), bits)
    if flags:
        reference.unpack_keys(k, bits)
    return grid, batch


# --- fake (meta) implementations: shapes for torch.compile / FakeTensor -----------------------


def _same_device(op: str, a: torch.Tensor, an: str, b: torch.Tensor | None, bn: str) -> None:
    if b is not None and a.device != b.device:
        raise ValueError(f"pointins.{op}: {an} is on {a.device} but {bn} is on {b.device}; move both to one device.")


def _register_fakes() -> None:
    @torch.library.register_fake("pointins::grid_coord")
    def _(coord, offsets, grid_size):
        _same_device("grid_coord", coord, "coord", offsets, "offsets")
        return coord.new_empty((coord.shape[0], 3), dtype=torch.int32)

    @torch.library.register_fake("pointins::pack_keys")
    def _(grid_coord, batch=None, bits=DEFAULT_BITS):
        _same_device("pack_keys", grid_coord, "grid_coord", batch, "batch")
        return grid_coord.new_empty((grid_coord.shape[0],), dtype=torch.int64)

    @torch.library.register_fake("pointins::unpack_keys")
    def _(keys, bits=DEFAULT_BITS):
        return keys.new_empty((keys.shape[0], 3), dtype=torch.int32), keys.new_empty((keys.shape[0],))


if _ext.try_load() is not None:
    _register_fakes()
