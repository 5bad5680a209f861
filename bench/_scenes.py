"""Scan-like benchmark scenes (until the synthetic data generator lands): surfaces of a room --
floor, walls and boxes of furniture size -- sampled densely, grid-sampled, and cropped to the
requested number of voxels around the room centre (like a training view)."""

from __future__ import annotations

import torch

import pointins.ops as ops


def room(num_points: int, grid: float = 0.02, in_channels: int = 6, seed: int = 0, device: str = "cpu"):
    """A dict batch (coord, feat, offsets, grid_coord) of one grid-sampled room with ``num_points`` voxels."""
    g = torch.Generator().manual_seed(seed)
    side = max(2.0, (num_points * grid * grid / 1.6) ** 0.5)  # floor + walls + furniture ~ 1.6 x floor area
    per_m2 = 4.0 / (grid * grid)  # ~4 samples per cell so every cell of a surface is hit
    parts = []

    def plane(origin, u, v):
        area = float(torch.linalg.cross(torch.tensor(u), torch.tensor(v)).norm())
        n = int(area * per_m2)
        a, b = torch.rand(n, 1, generator=g), torch.rand(n, 1, generator=g)
        parts.append(torch.tensor(origin) + a * torch.tensor(u) + b * torch.tensor(v))

    plane((0.0, 0.0, 0.0), (side, 0.0, 0.0), (0.0, side, 0.0))
    plane((0.0, 0.0, 0.0), (side, 0.0, 0.0), (0.0, 0.0, 2.5))
    plane((0.0, 0.0, 0.0), (0.0, side, 0.0), (0.0, 0.0, 2.5))
    for _ in range(int(side * side / 3)):  # furniture-sized boxes: top and four sides
        x, y = (torch.rand(2, generator=g) * (side - 1.2) + 0.1).tolist()
        w, d, h = (torch.rand(3, generator=g) * torch.tensor([0.8, 0.8, 0.9]) + 0.3).tolist()
        plane((x, y, h), (w, 0.0, 0.0), (0.0, d, 0.0))
        plane((x, y, 0.0), (w, 0.0, 0.0), (0.0, 0.0, h))
        plane((x, y + d, 0.0), (w, 0.0, 0.0), (0.0, 0.0, h))
        plane((x, y, 0.0), (0.0, d, 0.0), (0.0, 0.0, h))
        plane((x + w, y, 0.0), (0.0, d, 0.0), (0.0, 0.0, h))
    pts = torch.cat(parts)
    pts += torch.randn(pts.shape, generator=g) * grid * 0.2
    vox = ops.voxelize(pts, torch.tensor([0, len(pts)]), grid_size=grid, mode="train", seed=seed)
    coord = pts[vox.index]
    centre = torch.tensor([side / 2, side / 2, 0.5])
    keep = torch.argsort((coord - centre).norm(dim=1))[:num_points].sort().values
    coord = coord[keep]
    gc = vox.grid_coord[keep]
    gc = gc - gc.min(0).values
    feat = torch.cat([coord - coord.mean(0), torch.randn(len(keep), in_channels - 3, generator=g)], 1)
    batch = {"coord": coord, "feat": feat, "offsets": torch.tensor([0, len(keep)]), "grid_coord": gc}
    return {k: v.to(device) for k, v in batch.items()}


def peak_mb(step, device: str) -> float | None:
    """Peak device memory of one call of ``step`` above what was allocated before (CUDA only)."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20
