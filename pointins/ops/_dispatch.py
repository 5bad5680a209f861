"""Backend selection shared by every op wrapper.

Backends: ``"cpu"`` and ``"cuda"`` (the compiled extension), ``"triton"`` (Triton kernels:
CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``) and ``"reference"`` (plain
PyTorch, :mod:`pointins.ops.reference`). ``backend=None`` picks the compiled backend of the
input's device and raises (naming the fix) when it is unavailable: no silent slow path.
"""

from __future__ import annotations

import os
from functools import cache

import torch

from pointins import _ext

BACKENDS = ("cpu", "cuda", "triton", "reference")


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@cache
def _triton_import_error() -> str | None:
    try:
        import triton
        import triton.language  # noqa: F401
    except Exception as e:  # ImportError, or a broken install raising at import
        return f"triton is not importable ({e}); pip install triton"
    return None


def triton_stdlib_interpreted() -> bool:
    """Whether Triton's own ``@jit`` library (tl.zeros, tl.max, ...) was decorated for the
    interpreter. Triton decides this when it is first imported, so ``TRITON_INTERPRET=1`` must
    be set before that import (in the shell, or before importing torch/triton)."""
    import triton.language as tl
    from triton.runtime.jit import JITFunction

    std = getattr(tl, "standard", tl)
    return not isinstance(getattr(std, "zeros", None), JITFunction)


def triton_status(device: torch.device | None = None) -> str | None:
    """None when Triton can run on ``device`` (default: any), else the reason it cannot."""
    err = _triton_import_error()
    if err:
        return err
    if triton_interpret() and not triton_stdlib_interpreted():
        return (
            "TRITON_INTERPRET=1 was set after triton was imported, so Triton's own library is "
            "compiled-mode; set TRITON_INTERPRET=1 before the first import of triton (e.g. in the shell)"
        )
    if device is not None and device.type == "cpu" and not triton_interpret():
        return "Triton runs CPU tensors only under the interpreter: set TRITON_INTERPRET=1"
    if device is None and not (torch.cuda.is_available() or triton_interpret()):
        return "no CUDA GPU (set TRITON_INTERPRET=1 to run Triton kernels on the CPU interpreter)"
    return None


def select(backend: str | None, device: torch.device, op: str, supported: tuple[str, ...]) -> str:
    """Resolve ``backend`` for a tensor on ``device``; raise a clear error if it cannot run."""
    if backend is None or backend == "auto":
        if device.type in ("cpu", "meta"):
            backend = "cpu"
        elif device.type == "cuda":
            backend = "cuda"
        else:
            raise ValueError(
                f"pointins.{op}: tensors on {device} are not supported; use CPU or CUDA tensors "
                "(or backend='reference')."
            )
    if backend not in BACKENDS:
        raise ValueError(f"pointins.{op}: unknown backend {backend!r}; choose one of {BACKENDS}.")
    if backend not in supported:
        raise ValueError(f"pointins.{op}: backend {backend!r} is not implemented; available: {supported}.")
    if backend == "cpu":
        if device.type not in ("cpu", "meta"):
            raise ValueError(f"pointins.{op}: backend='cpu' but the input is on {device}; move it with .cpu().")
        _ext.require(f"pointins.{op} (backend 'cpu')")
    elif backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"pointins.{op}: backend='cuda' but the input is on {device}; move it with .cuda().")
        _ext.require(f"pointins.{op} (backend 'cuda')")
        if not _ext.has_cuda():
            raise _ext.ExtensionError(
                f"pointins.{op}: the input is on {device} but pointins._C was built without CUDA "
                f"(torch.version.cuda={torch.version.cuda}). Rebuild on the CUDA machine with "
                f"{_ext.BUILD_COMMAND} (set POINTINS_FORCE_CUDA=1 to make a missing nvcc an error), "
                "or pass backend='triton' / backend='reference'."
            )
    elif backend == "triton":
        why = triton_status(device)
        if why:
            raise RuntimeError(f"pointins.{op}: backend='triton' unavailable: {why}.")
    return backend


def select_triton_op(backend: str | None, device: torch.device, op: str, arg: str) -> str:
    """Backend of an op whose CUDA implementation is a Triton kernel set (patch attention, sparse
    conv): ``"cpu"`` (PyTorch-level CPU path), ``"triton"`` (``"cuda"`` is an alias) or ``"reference"``.
    ``arg`` names the input whose device decides, for the error messages."""
    if backend in (None, "auto"):
        backend = "triton" if device.type == "cuda" else "cpu"
    if backend == "cuda":
        backend = "triton"
    if backend not in ("cpu", "triton", "reference"):
        raise ValueError(f"pointins.{op}: unknown backend {backend!r}; choose 'cpu', 'triton' or 'reference'.")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"pointins.{op}: backend='cpu' but {arg} is on {device}; use backend='triton' or .cpu().")
    if backend == "triton":
        why = triton_status(device)
        if why:
            raise RuntimeError(f"pointins.{op}: backend='triton' unavailable: {why}. backend='reference' always runs.")
    return backend
