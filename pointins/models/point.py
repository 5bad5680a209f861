"""The batch structure the encoder reads and the per-resolution structure it caches.

:class:`Point` is what goes in: a batch of clouds in CSR form (``offsets``), one row per point (a
grid-sampled point, i.e. one per voxel). :class:`Level` is what the encoder derives once per
resolution and shares between the blocks of a stage: grid coordinates, serialization (codes,
sort order and inverse per curve), PTv3's patch padding, the 3x3x3 kernel map of the CPE and,
for pooled levels, the ``parent`` index that maps the finer level's points onto this one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pointins.ops import PatchIndex, Serialization

__all__ = ["Level", "Point"]


@dataclass
class Point:
    """A batch of point clouds.

    Attributes:
        coord: (N, 3) float coordinates.
        feat: (N, C_in) input features (e.g. xyz + rgb + normal indoors, xyz + intensity outdoors).
        offsets: (B+1,) int64 CSR offsets: cloud b is rows ``offsets[b]:offsets[b+1]``.
        grid_coord: (N, 3) int32 voxel coordinates (>= 0 per cloud), or None to compute them from
            ``coord`` with the model's ``grid_size``. Points must occupy distinct voxels (grid-sample
            first: :func:`pointins.ops.voxelize`).
        mask: (N,) bool, True where the stem output is replaced by the learnable mask token.
        origin: (N, 3) float, optional: each point's position in a common frame (the scene's original coordinates
            before a view's augmentations, Sonata's ``origin_coord``); pooled by segment mean at every level
            like ``coord`` and returned with the encoder output.
    """

    coord: torch.Tensor
    feat: torch.Tensor
    offsets: torch.Tensor
    grid_coord: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    origin: torch.Tensor | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Point:
        """Build from a collated dict (``coord``, ``feat``, ``offsets`` or ``batch``, optional
        ``grid_coord``, ``mask``); NumPy arrays are converted."""
        t = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in d.items()}
        missing = [k for k in ("coord", "feat") if k not in t]
        if missing:
            raise KeyError(f"pointins.models.Point: the batch lacks {missing}; it needs coord, feat and offsets/batch.")
        if "offsets" in t:
            offsets = t["offsets"]
        elif "offset" in t:  # Pointcept's name: cumulative counts without the leading 0
            offsets = torch.cat([t["offset"].new_zeros(1), t["offset"]])
        elif "batch" in t:
            b = t["batch"].long()
            counts = torch.bincount(b) if b.numel() else b.new_zeros(0)
            offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            if b.numel() and bool((b.diff() < 0).any()):
                raise ValueError("pointins.models.Point: batch ids must be sorted (points grouped by cloud).")
        else:
            offsets = torch.tensor([0, t["coord"].shape[0]])
        return cls(t["coord"], t["feat"], offsets.long(), t.get("grid_coord"), t.get("mask"), t.get("origin"))

    def __len__(self) -> int:
        return int(self.coord.shape[0])

    @property
    def num_clouds(self) -> int:
        return int(self.offsets.numel()) - 1

    def to(self, device: Any) -> Point:
        move = lambda t: None if t is None else t.to(device)
        return Point(move(self.coord), move(self.feat), move(self.offsets), move(self.grid_coord), move(self.mask),
                     move(self.origin))  # fmt: skip


@dataclass
class Level:
    """One resolution of the encoder (stage s works on level s)."""

    coord: torch.Tensor  # (N_s, 3) float: input coords (level 0) or segment means of the children
    grid_coord: torch.Tensor  # (N_s, 3) int32
    offsets: torch.Tensor  # (B+1,) int64
    depth: int  # serialization bits per axis: bit length of (max grid coord + 1) of this level, as Pointcept
    # recomputes it at every level (not "input depth minus one per pooling": they differ when a pooled max + 1
    # is a power of two)
    serialization: Serialization  # codes / order / inverse per (shuffled) curve
    pad: torch.Tensor  # patch padding (pointins.ops.patch_partition)
    unpad: torch.Tensor
    cu_seqlens: torch.Tensor
    patch_size: int
    kernel_map: torch.Tensor  # (N_s, 27) CPE neighbours
    kernel_map_t: torch.Tensor | None  # its transpose (unique voxels: the flipped map); None: made when needed
    parent: torch.Tensor | None = None  # (N_{s-1},) this level's point of each finer point
    max_coord: int = 0  # largest grid coordinate of this level (any axis, any cloud); max_{s+1} = max_s // 2
    origin: torch.Tensor | None = None  # (N_s, 3) the points' common-frame positions (Point.origin), pooled as coord
    _patch_index: dict[int, PatchIndex] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.coord.shape[0])

    def transposed_map(self) -> torch.Tensor:
        """The transposed kernel map (the input gradient's map), made on first use and kept."""
        if self.kernel_map_t is None:
            self.kernel_map_t = self.kernel_map.flip(1)
        return self.kernel_map_t

    def patch_index(self, k: int) -> PatchIndex:
        """Cached :func:`pointins.ops.patch_index` of curve k (shared by the blocks using it)."""
        idx = self._patch_index.get(k)
        if idx is None:
            from pointins.ops import patch_index

            idx = patch_index(self.serialization.order[k], self.pad, self.unpad)
            self._patch_index[k] = idx
        return idx
