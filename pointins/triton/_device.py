"""Device guard for Triton launches.

A Triton launch goes to the *current* CUDA device, not to the device of its tensors: with tensors on
``cuda:1`` while the current device is 0 the kernel reads foreign addresses (an illegal-address fault). The
C++ ops use ``CUDAGuard``; every Triton launcher is wrapped in :func:`on_tensor_device`, which makes the
device of its first tensor argument current for the launch (nothing on CPU tensors, e.g. the interpreter).
"""

from __future__ import annotations

import contextlib
import functools

import torch

__all__ = ["on_tensor_device"]


def _first_tensor(args, kwargs):
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a
    return None


def on_tensor_device(fn):
    """Decorator: run ``fn`` with its first tensor argument's CUDA device current."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = _first_tensor(args, kwargs)
        ctx = torch.cuda.device(t.device) if t is not None and t.is_cuda else contextlib.nullcontext()
        with ctx:
            return fn(*args, **kwargs)

    wrapper.__pointins_device_guard__ = True
    return wrapper
