"""Array interop: accept torch tensors, NumPy arrays, CuPy arrays and any DLPack-capable array,
and hand results back as the same kind the caller passed (zero-copy where DLPack allows)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

TORCH, NUMPY, CUPY, DLPACK = "torch", "numpy", "cupy", "dlpack"


def array_kind(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return TORCH
    if isinstance(x, np.ndarray):
        return NUMPY
    root = type(x).__module__.split(".")[0]
    if root == "cupy":
        return CUPY
    if hasattr(x, "__dlpack__"):
        return DLPACK
    return TORCH  # lists, tuples, scalars: converted by torch.as_tensor, returned as tensors


def to_tensor(x: Any, name: str, op: str) -> tuple[torch.Tensor, str]:
    """``x`` as a torch tensor (sharing memory where possible) and the kind it came as."""
    kind = array_kind(x)
    if kind == TORCH and isinstance(x, torch.Tensor):
        return x, kind
    try:
        if kind == NUMPY:
            if x.dtype == object:
                raise TypeError("object arrays cannot be converted")
            if not x.dtype.isnative:  # big-endian files (e.g. some PLY/PCD readers)
                x = x.astype(x.dtype.newbyteorder("="))
            if not x.flags.writeable:  # torch cannot share read-only memory without a warning
                x = x.copy()
            return torch.from_numpy(np.ascontiguousarray(x)), kind
        if kind in (CUPY, DLPACK):
            return torch.from_dlpack(x), kind
        return torch.as_tensor(x), kind
    except (TypeError, ValueError, RuntimeError, BufferError) as e:
        raise TypeError(
            f"pointins.{op}: cannot use {name} of type {type(x).__name__} ({e}). Pass a torch tensor, a "
            "NumPy/CuPy array or any array supporting DLPack."
        ) from e


def from_tensor(t: torch.Tensor, kind: str) -> Any:
    """Convert a result back to the caller's array kind."""
    if kind == NUMPY:
        return t.detach().cpu().numpy()
    if kind == CUPY:
        cupy = sys.modules.get("cupy")
        if cupy is None:  # pragma: no cover - a CuPy input implies cupy is imported
            import cupy
        return cupy.from_dlpack(t.detach())
    return t


def results(out: Any, kind: str) -> Any:
    if isinstance(out, tuple):
        return tuple(from_tensor(t, kind) for t in out)
    return from_tensor(out, kind)
