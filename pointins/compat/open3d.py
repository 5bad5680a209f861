"""Open3D's ``PointCloud.voxel_down_sample`` on :func:`pointins.ops.voxelize`: the mean point (and mean colour and
normal) of every occupied voxel, on Open3D's grid.

Open3D anchors its grid half a voxel below the cloud's minimum (``VoxelDownSample`` in
``cpp/open3d/geometry/PointCloud.cpp``: ``voxel_min_bound = GetMinBound() - voxel_size * 0.5``, index
``floor((p - voxel_min_bound) / voxel_size)``) and averages normals without re-normalising them; this does the same
in float64. Rows come in order of each voxel's first point (Open3D's order follows its hash map).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pointins import ops

__all__ = ["VoxelDownSample", "voxel_down_sample"]


@dataclass
class VoxelDownSample:
    points: np.ndarray  # (M, 3) float64 mean point per voxel
    colors: np.ndarray | None  # (M, 3) mean colour, when given
    normals: np.ndarray | None  # (M, 3) mean normal (not re-normalised, as Open3D), when given
    inverse: np.ndarray  # (N,) int64 row of each input point


def voxel_down_sample(points, voxel_size: float, colors=None, normals=None) -> VoxelDownSample:
    """``pcd.voxel_down_sample(voxel_size)`` for (N, 3) ``points`` (and optional per-point ``colors`` /
    ``normals``); NumPy or torch in, NumPy out."""
    p = np.asarray(points.detach().cpu() if isinstance(points, torch.Tensor) else points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"pointins.compat.open3d.voxel_down_sample: points must be (N, 3), got {p.shape}.")
    v = float(voxel_size)
    if not v > 0:
        raise ValueError(f"pointins.compat.open3d.voxel_down_sample: voxel_size must be > 0, got {voxel_size!r}.")
    extra = []
    for name, a in (("colors", colors), ("normals", normals)):
        if a is not None:
            a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
            if a.shape != p.shape:
                raise ValueError(f"pointins.compat.open3d.voxel_down_sample: {name} must be {p.shape}, got {a.shape}.")
            extra.append(a)
    if len(p) == 0:
        empty = np.zeros((0, 3))
        return VoxelDownSample(empty, empty if colors is not None else None, empty if normals is not None else None,
                               np.zeros(0, np.int64))  # fmt: skip
    shifted = torch.from_numpy(p - (p.min(0) - 0.5 * v))
    feats = torch.from_numpy(np.concatenate([p, *extra], 1))
    vox = ops.voxelize(shifted, None, grid_size=v, mode="all", feats=feats)
    f = vox.feats.numpy()
    out, k = [f[:, :3]], 3
    for a in (colors, normals):
        out.append(None if a is None else f[:, k : k + 3])
        k += 0 if a is None else 3
    return VoxelDownSample(out[0], out[1], out[2], vox.inverse.numpy())
