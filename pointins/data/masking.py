"""Block masking (DOS style): cubes of points are hidden from the student until a target ratio is reached.

:func:`block_mask` works on a whole collated batch at once (CSR offsets): it hashes every point into a
cube of side ``size`` (a random grid offset per cloud), visits each cloud's cubes in random order and
masks a cube when the middle of its points still falls under ``ratio`` x the cloud's points, so each
cloud's masked share lands within half a cube of the target. :class:`MaskSchedule` ramps cube size and
ratio over the warm-up (METHOD.md: 0.1 -> 0.4 m, 0.3 -> 0.7 over the first 5% of steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MaskSchedule", "block_mask"]


@dataclass
class MaskSchedule:
    """Cube side and mask ratio as a function of training progress in [0, 1]."""

    size: tuple[float, float] = (0.1, 0.4)
    ratio: tuple[float, float] = (0.3, 0.7)
    warmup: float = 0.05  # fraction of training over which both ramp linearly from start to end

    def at(self, progress: float) -> tuple[float, float]:
        """(cube size, ratio) at ``progress`` (step / total steps)."""
        t = 1.0 if self.warmup <= 0 else min(max(progress / self.warmup, 0.0), 1.0)
        return (
            self.size[0] + t * (self.size[1] - self.size[0]),
            self.ratio[0] + t * (self.ratio[1] - self.ratio[0]),
        )


def block_mask(coord, offsets=None, *, size: float, ratio: float, generator: torch.Generator | None = None):
    """Boolean mask (True = hidden from the student) of cubes covering about ``ratio`` of each cloud.

    Args:
        coord: (N, 3) points (torch or NumPy; the result has the same kind).
        offsets: CSR offsets of the clouds (default: one cloud).
        size: cube side in the units of ``coord``.
        ratio: target share of masked points per cloud, in [0, 1].
        generator: torch generator for the grid offsets and the cube order.
    """
    from pointins import ops

    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"block_mask: ratio must be in [0, 1], got {ratio}.")
    if not size > 0:
        raise ValueError(f"block_mask: size must be > 0, got {size}.")
    is_np = isinstance(coord, np.ndarray)
    c = torch.as_tensor(coord).float()
    n = c.shape[0]
    off = torch.as_tensor(offsets if offsets is not None else [0, n], dtype=torch.long, device=c.device)
    if n == 0:
        out = torch.zeros(0, dtype=torch.bool, device=c.device)
        return out.numpy() if is_np else out
    b = off.numel() - 1
    counts = off.diff()
    batch = torch.repeat_interleave(torch.arange(b, device=c.device), counts)
    shift = torch.rand(b, 3, generator=generator).to(c.device) * size
    vox = ops.voxelize(c + shift[batch], off, size, mode="all")
    nv = vox.counts.shape[0]
    key = vox.batch.double() + torch.rand(nv, generator=generator, dtype=torch.float64).to(c.device)
    order = torch.argsort(key)
    cnt = vox.counts[order]
    cum = torch.cumsum(cnt, 0) - cnt  # points before this cube over the whole batch
    vb = vox.batch[order]
    before = cum - (off[:-1])[vb]  # ... within its own cloud
    target = ratio * counts[vb].double()
    chosen = (before.double() + cnt.double() / 2) < target
    masked = torch.zeros(nv, dtype=torch.bool, device=c.device)
    masked[order] = chosen
    out = masked[vox.inverse]
    return out.numpy() if is_np else out
