"""Triton kernels.

Triton decides at decoration time (``@triton.jit``) whether a kernel is compiled for the GPU
or run by its CPU interpreter (``TRITON_INTERPRET=1``). :func:`load` therefore imports each
kernel module separately per mode, so the test-suite can run the same kernels under the
interpreter on CPU tensors while GPU code keeps the compiled ones.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent
_cache: dict[tuple[str, bool], ModuleType] = {}


def interpret_mode() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def load(name: str) -> ModuleType:
    """The kernel module ``pointins/triton/<name>.py``, decorated for the current mode."""
    interp = interpret_mode()
    key = (name, interp)
    mod = _cache.get(key)
    if mod is None:
        modname = f"pointins.triton._{'interpreted' if interp else 'compiled'}_{name}"
        spec = importlib.util.spec_from_file_location(modname, _HERE / f"{name}.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"no Triton kernel module {name!r} in {_HERE}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod  # Triton looks kernels' globals up through their module
        spec.loader.exec_module(mod)
        _cache[key] = mod
    return mod
