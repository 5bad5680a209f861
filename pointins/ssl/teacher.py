"""EMA teacher, schedules and the layer-wise learning-rate decay of the optimiser (METHOD.md section 6)."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

__all__ = ["cosine", "ema_update", "layer_id", "linear_warmup", "param_groups"]


def cosine(start: float, end: float, progress: float) -> float:
    """Cosine from ``start`` (progress 0) to ``end`` (progress 1)."""
    p = min(max(float(progress), 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))


def linear_warmup(start: float, end: float, progress: float, warmup: float) -> float:
    """Linear from ``start`` to ``end`` over the first ``warmup`` of training, then ``end``."""
    t = 1.0 if warmup <= 0 else min(max(progress / warmup, 0.0), 1.0)
    return start + t * (end - start)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student`` for every parameter (buffers are copied)."""
    tp = [p for p in teacher.parameters()]
    sp = [p.detach() for p in student.parameters()]
    if len(tp) != len(sp):
        raise ValueError("ema_update: teacher and student have different parameter lists.")
    torch._foreach_mul_(tp, momentum)
    torch._foreach_add_(tp, sp, alpha=1.0 - momentum)
    for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
        tb.copy_(sb)


_BLOCK = re.compile(r"enc\.enc(\d+)\.(?:block(\d+)|down)")


def layer_id(name: str, depths) -> int:
    """Depth index of a backbone parameter for layer-wise lr decay: the embedding is 0, blocks count 1.. in
    order, a stage's pooling shares its first block's id; anything after the backbone (heads) gets
    ``sum(depths) + 1``."""
    if name.startswith("embedding."):
        return 0
    m = _BLOCK.search(name)
    if m is None:
        return sum(depths) + 1
    s = int(m.group(1))
    i = int(m.group(2)) if m.group(2) is not None else 0
    return 1 + sum(depths[:s]) + i


def param_groups(model: nn.Module, depths, lr: float, weight_decay: float, layer_decay: float = 0.9) -> list[dict]:
    """AdamW parameter groups: lr ``lr * layer_decay^(L - id)`` by :func:`layer_id` (L = heads' id, so heads
    get ``lr``), and weight decay only on matrices (not biases, norms, the mask token). ``model`` holds the
    backbone as ``backbone`` and anything else as heads. Each group records ``lr_scale`` and ``apply_wd``."""
    top = sum(depths) + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name[len("backbone.") :], depths) if name.startswith("backbone.") else top
        decay = p.ndim >= 2 and not name.endswith("mask_token")
        g = groups.setdefault(
            (lid, decay),
            {"params": [], "lr_scale": layer_decay ** (top - lid), "apply_wd": decay, "layer": lid},
        )
        g["params"].append(p)
    out = []
    for (_, decay), g in sorted(groups.items()):
        g["lr"] = lr * g["lr_scale"]
        g["weight_decay"] = weight_decay if decay else 0.0
        out.append(g)
    return out
