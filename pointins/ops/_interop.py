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


def device_memory(device: torch.device) -> int:
    """Total memory of ``device`` in bytes (physical RAM for the CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        import os

        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 46


def check_alloc(count: int, row_bytes: int, what: str, op: str, device: torch.device, fix: str) -> None:
    """ValueError (naming the argument and the fix) when an output of ``count`` rows of ``row_bytes`` each could
    not fit in the device's memory: a huge id becomes a clear error instead of an allocator failure."""
    need = int(count) * max(1, int(row_bytes))
    have = device_memory(device)
    if need > have:
        raise ValueError(
            f"pointins.{op}: {what} asks for {count} output rows ({need / 2**30:.1f} GiB), more than the "
            f"{have / 2**30:.0f} GiB of {device.type} memory; {fix}"
        )


def check_seed(seed: Any, op: str, name: str = "seed") -> int:
    """``seed`` as an int in [0, 2^63) (TypeError / ValueError naming it otherwise)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"pointins.{op}: {name} must be an integer, got {type(seed).__name__}.")
    if not 0 <= int(seed) < 2**63:
        raise ValueError(f"pointins.{op}: {name} must be in [0, 2^63), got {seed}.")
    return int(seed)


def result_fields(res: Any, kind: str) -> Any:
    """A result dataclass (Voxelization, Serialization, KMeans, Components) with its tensor fields converted to the
    caller's array kind: NumPy in, NumPy fields out (the object itself for torch input)."""
    if kind == TORCH:
        return res
    import dataclasses

    return dataclasses.replace(res, **{f.name: from_tensor(getattr(res, f.name), kind)
                                       for f in dataclasses.fields(res)
                                       if isinstance(getattr(res, f.name), torch.Tensor)})  # fmt: skip
