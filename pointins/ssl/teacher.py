"""EMA teacher, schedules and the layer-wise learning-rate decay of the optimiser (METHOD.md section 6)."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

__all__ = ["block_index", "cosine", "ema_tensors", "ema_update", "linear_warmup", "param_groups"]


def cosine(start: float, end: float, progress: float) -> float:
    """Cosine from ``start`` (progress 0) to ``end`` (progress 1)."""
    p = min(max(float(progress), 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))


def linear_warmup(start: float, end: float, progress: float, warmup: float) -> float:
    """Linear from ``start`` to ``end`` over the first ``warmup`` of training, then ``end``."""
    t = 1.0 if warmup <= 0 else min(max(progress / warmup, 0.0), 1.0)
    return start + t * (end - start)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float, *, tensors=None) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student`` for every parameter (buffers are copied), as
    one multi-tensor lerp ``teacher += (1 - momentum) * (student - teacher)``. ``tensors``: the
    ``(teacher params, student params, teacher buffers, student buffers)`` lists, when the caller keeps them (walking
    the module tree every step costs more than the update of a small model)."""
    if tensors is None:
        tensors = ema_tensors(teacher, student)
    tp, sp, tb, sb = tensors
    torch._foreach_lerp_(tp, sp, 1.0 - momentum)
    for t, s in zip(tb, sb, strict=True):
        t.copy_(s)


def ema_tensors(teacher: nn.Module, student: nn.Module) -> tuple[list, list, list, list]:
    """The tensor lists :func:`ema_update` walks (parameters and buffers, teacher and student, in module order)."""
    tp = list(teacher.parameters())
    sp = [p.detach() for p in student.parameters()]
    if len(tp) != len(sp):
        raise ValueError("ema_update: teacher and student have different parameter lists.")
    return tp, sp, list(teacher.buffers()), list(student.buffers())


_BLOCK = re.compile(r"(?:^|\.)enc(\d+)\.block(\d+)\.")


def block_index(name: str, depths) -> int | None:
    """Index of the encoder block a parameter belongs to, counted over all stages from 0
    (``enc.enc1.block0.`` -> ``depths[0]``), or None for everything else (embedding, pooling, heads)."""
    m = _BLOCK.search(name)
    if m is None:
        return None
    s, b = int(m.group(1)), int(m.group(2))
    return sum(depths[:s]) + b


def param_groups(model: nn.Module, depths, lr: float, weight_decay: float, layer_decay: float = 0.9) -> list[dict]:
    """AdamW parameter groups as Sonata's (``configs/sonata/pretrain-sonata-v1m1-0-base.py`` ``param_dicts``, grouped
    by ``pointcept/utils/optimizer.py`` ``build_optimizer``): encoder block i (counted over all stages from 0) gets
    ``lr * layer_decay^(total - i - 1)``, so the last block gets ``lr``; every other parameter (embedding, pooling,
    norms outside blocks, heads, the mask token) gets ``lr``; weight decay on every parameter (Pointcept applies
    the optimiser's and the weight-decay schedule's value to all groups). Each group records ``lr_scale``,
    ``apply_wd`` and ``block`` (-1: not a block)."""
    total = sum(depths)
    groups: dict[int, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        i = block_index(name, depths)
        key = -1 if i is None else i
        scale = 1.0 if i is None else layer_decay ** (total - i - 1)
        g = groups.setdefault(key, {"params": [], "lr_scale": scale, "apply_wd": True, "block": key})
        g["params"].append(p)
    out = []
    for _, g in sorted(groups.items()):
        g["lr"] = lr * g["lr_scale"]
        g["weight_decay"] = weight_decay
        out.append(g)
    return out
