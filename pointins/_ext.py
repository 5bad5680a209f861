"""Loading of the compiled extension ``pointins._C``, with clear errors instead of fallbacks.

The extension registers the ``torch.ops.pointins.*`` operators. It is loaded once, on first
import of :mod:`pointins.ops`. A missing, stale (sources changed since the build) or ABI-
mismatched (built against another torch) extension is reported with the command that fixes
it, and every compiled op raises :class:`ExtensionError` until then; nothing silently falls
back to a slow path. ``POINTINS_SKIP_STALE_CHECK=1`` skips the staleness check (for working
on the Python side while the C++ sources are mid-edit).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import torch

BUILD_COMMAND = "pip install --no-build-isolation -e ."
_ROOT = Path(__file__).resolve().parent.parent


class ExtensionError(RuntimeError):
    """The compiled extension pointins._C is missing, stale or was built for another torch."""


_module: ModuleType | None = None
_error: str | None = None
_tried = False


def _checkout_root() -> Path | None:
    """The source checkout this package runs from (editable install), if any."""
    if (_ROOT / "setup.py").is_file() and (_ROOT / "csrc").is_dir():
        return _ROOT
    return None


def _load() -> tuple[ModuleType | None, str | None]:
    try:
        mod = importlib.import_module("pointins._C")
    except ImportError as e:
        text = str(e)
        if "undefined symbol" in text or "symbol not found" in text:
            return None, (
                f"pointins._C does not match the installed torch {torch.__version__} ({text}). "
                f"Rebuild it against this torch: {BUILD_COMMAND}"
            )
        return None, (
            f"the compiled extension pointins._C is not built ({text}). Build it from the repository "
            f"root with: {BUILD_COMMAND}"
        )
    if mod.torch_version != torch.__version__:
        return None, (
            f"pointins._C was built against torch {mod.torch_version} but torch {torch.__version__} is "
            f"installed. Rebuild it: {BUILD_COMMAND}"
        )
    root = _checkout_root()
    if root is not None and os.environ.get("POINTINS_SKIP_STALE_CHECK", "0") in ("", "0"):
        from pointins._sources import source_hash

        current = source_hash(root)
        if current != mod.source_hash:
            return None, (
                f"pointins._C is stale: the C++/CUDA sources in {root} changed since it was built "
                f"(built {mod.source_hash}, sources now {current}). Rebuild it: {BUILD_COMMAND}"
            )
    return mod, None


def try_load() -> ModuleType | None:
    """Load the extension once; return it, or None (the reason is in :func:`error`)."""
    global _module, _error, _tried
    if not _tried:
        _tried = True
        _module, _error = _load()
    return _module


def error() -> str | None:
    try_load()
    return _error


def require(op: str = "this op") -> ModuleType:
    """The loaded extension, or an :class:`ExtensionError` that names the fix."""
    mod = try_load()
    if mod is None:
        raise ExtensionError(f"pointins: {op} needs {_error}")
    return mod


def has_cuda() -> bool:
    """Whether the extension was compiled with its CUDA part."""
    mod = try_load()
    return bool(mod is not None and mod.with_cuda)
