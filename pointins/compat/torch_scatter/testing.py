"""What torch_scatter's own tests import from ``torch_scatter.testing`` (reductions, dtypes, devices, tensor()),
so its test suite runs unchanged against :mod:`pointins.compat.torch_scatter`."""

from __future__ import annotations

from typing import Any

import torch

reductions = ["sum", "add", "mean", "min", "max"]
dtypes = [torch.half, torch.bfloat16, torch.float, torch.double, torch.int, torch.long]
grad_dtypes = [torch.float, torch.double]
devices = [torch.device("cpu")] + ([torch.device("cuda:0")] if torch.cuda.is_available() else [])


def tensor(x: Any, dtype: torch.dtype, device: torch.device):
    return None if x is None else torch.tensor(x, device=device).to(dtype)
