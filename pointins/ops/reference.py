"""Plain-PyTorch reference implementations ("oracles") of the pointins ops.

Readable, device-agnostic and slow on purpose: every compiled or Triton kernel is tested
against these, and ``backend="reference"`` runs them through the public API. They validate
their inputs too, so the error behaviour is part of what the kernels are compared with.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

GRID_LIMIT = 2**30  # |floor(coord / grid_size)| must stay below this (kernels/include/pointins/common.h)
MIN_KEY_BITS, MAX_KEY_BITS, DEFAULT_KEY_BITS = 1, 21, 16


def check_offsets(offsets: torch.Tensor, n: int, op: str) -> None:
    """CSR offsets: 1-D, offsets[0] == 0, non-decreasing, offsets[-1] == n."""
    if offsets.dim() != 1 or offsets.numel() < 1:
        raise ValueError(f"pointins.{op}: offsets must be 1-D CSR offsets of length B+1, got {tuple(offsets.shape)}")
    bad = offsets[0] != 0 or offsets[-1] != n or bool((offsets.diff() < 0).any())
    if bad:
        raise ValueError(
            f"pointins.{op}: offsets are not valid CSR offsets for N = {n} points: they must start at 0, "
            f"never decrease and end at N; got {offsets[:8].tolist()}... ending at {int(offsets[-1])}"
        )


def offsets_to_batch(offsets: torch.Tensor) -> torch.Tensor:
    """Per-point sample ids from CSR offsets."""
    counts = offsets.diff()
    return torch.repeat_interleave(torch.arange(counts.numel(), device=offsets.device), counts)


def grid_coord(coord: torch.Tensor, offsets: torch.Tensor, grid_size: Sequence[float]) -> torch.Tensor:
    """floor(coord / grid_size) minus its per-sample minimum, as int32 (N, 3)."""
    if not coord.is_floating_point():
        raise TypeError(f"pointins.grid_coord: coord must be floating point, got {coord.dtype}")
    n = coord.shape[0]
    check_offsets(offsets, n, "grid_coord")
    if not bool(torch.isfinite(coord).all()):
        raise ValueError("pointins.grid_coord: coord contains NaN or Inf")
    g = torch.as_tensor(list(grid_size), dtype=coord.dtype, device=coord.device)
    f = torch.floor(coord / g)
    if not bool(((f >= -GRID_LIMIT) & (f < GRID_LIMIT)).all()):
        raise ValueError("pointins.grid_coord: coord / grid_size exceeds the supported range of +-2^30 cells")
    batch = offsets_to_batch(offsets)
    num_samples = offsets.numel() - 1
    mins = torch.full((num_samples, 3), float("inf"), dtype=coord.dtype, device=coord.device)
    mins = mins.scatter_reduce(0, batch[:, None].expand(-1, 3), f, reduce="amin")
    return (f - mins[batch]).to(torch.int32)


def pack_keys(
    grid_coord: torch.Tensor, batch: torch.Tensor | None = None, bits: int = DEFAULT_KEY_BITS
) -> torch.Tensor:
    """key = batch << 3*bits | x << 2*bits | y << bits | z (int64)."""
    if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
        raise ValueError(f"pointins.pack_keys: bits must be in [{MIN_KEY_BITS}, {MAX_KEY_BITS}], got {bits}")
    g = grid_coord.long()
    b = torch.zeros(g.shape[0], dtype=torch.long, device=g.device) if batch is None else batch.long()
    if bool((g < 0).any()):
        raise ValueError("pointins.pack_keys: grid_coord has negative values")
    if bool((g >= 2**bits).any()):
        raise ValueError(f"pointins.pack_keys: grid_coord does not fit {bits} bits per axis")
    if bool(((b < 0) | (b >= 2 ** (63 - 3 * bits))).any()):
        raise ValueError(f"pointins.pack_keys: batch ids do not fit the {63 - 3 * bits} batch bits")
    return (b << (3 * bits)) | (g[:, 0] << (2 * bits)) | (g[:, 1] << bits) | g[:, 2]


def unpack_keys(keys: torch.Tensor, bits: int = DEFAULT_KEY_BITS) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_keys`: (grid_coord int32 (N, 3), batch int64 (N,))."""
    if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
        raise ValueError(f"pointins.unpack_keys: bits must be in [{MIN_KEY_BITS}, {MAX_KEY_BITS}], got {bits}")
    if bool((keys < 0).any()):
        raise ValueError("pointins.unpack_keys: keys contains negative values")
    mask = (1 << bits) - 1
    grid = torch.stack([(keys >> (2 * bits)) & mask, (keys >> bits) & mask, keys & mask], dim=1)
    return grid.to(torch.int32), keys >> (3 * bits)
