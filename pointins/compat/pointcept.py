"""Pointcept's serialization calls with Pointcept's argument order (``pointcept/models/utils/serialization``):
``encode(grid_coord, batch=None, depth=16, order="z")`` and ``decode(code, depth=16, order="z")`` on the package's
curve kernels. The codes are Pointcept's (z-order and Hilbert, ``-trans`` swapping x and y, the batch above
``3 * depth`` bits): ``tests/test_pointcept_interop.py`` checks them against Pointcept's own functions."""

from __future__ import annotations

from typing import Any

from pointins import ops

__all__ = ["decode", "encode"]


def encode(grid_coord: Any, batch: Any = None, depth: int = 16, order: str = "z") -> Any:
    """Pointcept's ``encode``: (N,) int64 codes of (N, 3) grid coordinates, the batch id above the curve bits."""
    return ops.encode(grid_coord, batch, order=order, depth=depth)


def decode(code: Any, depth: int = 16, order: str = "z") -> tuple[Any, Any]:
    """Pointcept's ``decode``: (grid_coord, batch) from codes."""
    return ops.decode(code, depth=depth, order=order)
