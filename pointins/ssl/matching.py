"""Frames and cross-view correspondence (METHOD.md sections 3 and 5).

Each view records ``view = original @ T^T + shift`` (see :mod:`pointins.data.transforms`), per cloud of a
collated batch. :func:`points_to_original` / :func:`vectors_to_original` invert that for (pooled) points and
offsets; :func:`match_views` pairs student points with teacher points of the same sample whose
original-frame positions fall in the same cell of a voxel hash **[ours]**.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pointins import ops

__all__ = ["Matches", "match_views", "points_to_original", "vectors_to_original", "vectors_to_view"]


def _inv_t(transform: torch.Tensor, cloud: torch.Tensor, dtype) -> torch.Tensor:
    return torch.linalg.inv(transform.double()).to(dtype)[cloud]  # (N, 3, 3)


def points_to_original(coord, transform, shift, cloud) -> torch.Tensor:
    """Original-frame positions of view-frame ``coord`` (N, 3); ``cloud``: (N,) cloud of each point."""
    x = (coord.double() - shift.double()[cloud]).unsqueeze(1)  # (N, 1, 3)
    return (x @ _inv_t(transform, cloud, torch.float64).transpose(1, 2)).squeeze(1).to(coord.dtype)


def vectors_to_original(vec, transform, cloud) -> torch.Tensor:
    """Original-frame vectors of view-frame offsets (N, 3) (the shift does not apply); differentiable."""
    m = _inv_t(transform, cloud, vec.dtype)
    return (vec.unsqueeze(1) @ m.transpose(1, 2)).squeeze(1)


def vectors_to_view(vec, transform, cloud) -> torch.Tensor:
    """View-frame vectors of original-frame offsets (N, 3)."""
    m = transform.to(vec.dtype)[cloud]
    return (vec.unsqueeze(1) @ m.transpose(1, 2)).squeeze(1)


@dataclass
class Matches:
    student: torch.Tensor  # (M,) student point of each pair
    teacher: torch.Tensor  # (M,) teacher point of each pair
    sample: torch.Tensor  # (M,) sample of each pair

    def __len__(self) -> int:
        return int(self.student.shape[0])


def match_views(
    s_xyz: torch.Tensor,
    s_sample: torch.Tensor,
    s_view: torch.Tensor,
    t_xyz: torch.Tensor,
    t_sample: torch.Tensor,
    t_view: torch.Tensor,
    cell: float,
    *,
    same_view: bool = True,
) -> Matches:
    """Pair every student point with, for each teacher view of its sample, the teacher point in the same
    original-frame cell of side ``cell`` (if any; the first such teacher point).

    ``*_xyz``: (N, 3) original-frame positions; ``*_sample``: (N,) sample id; ``*_view``: (N,) view id, where
    student global views and teacher views share ids and student-only (local) views are negative.
    ``same_view=False`` skips pairing a student view with the teacher's copy of the same view.
    """
    dev = s_xyz.device
    empty = torch.zeros(0, dtype=torch.long, device=dev)
    if s_xyz.shape[0] == 0 or t_xyz.shape[0] == 0:
        return Matches(empty, empty, empty)
    if not cell > 0:
        raise ValueError(f"match_views: cell must be > 0, got {cell}.")
    gs = torch.floor(s_xyz.double() / cell).long()  # absolute cells: matches do not depend on the batch
    gt = torch.floor(t_xyz.double() / cell).long()
    lo = torch.minimum(gs.min(0).values, gt.min(0).values)
    gs, gt = gs - lo, gt - lo
    span = torch.maximum(gs.max(0).values, gt.max(0).values) + 1
    views = torch.unique(t_view)
    nv = int(views.numel())
    t_vid = torch.searchsorted(views, t_view)
    groups = (int(torch.maximum(s_sample.max(), t_sample.max())) + 1) * nv
    sx, sy, sz = (int(v) for v in span.tolist())
    if groups * sx * sy * sz >= 2**62:
        raise ValueError(
            f"match_views: the batch spans {sx}x{sy}x{sz} cells of {cell} m; too large for 64-bit keys. Crop the "
            "scenes or use a larger cell."
        )

    def key(grp, g):
        return ((grp * sx + g[:, 0]) * sy + g[:, 1]) * sz + g[:, 2]

    table = ops.HashTable(key(t_sample * nv + t_vid, gt))
    ss, tt = [], []
    for j in range(nv):
        q = table.query(key(s_sample * nv + j, gs))
        hit = q >= 0
        if not same_view:
            hit &= s_view != views[j]
        idx = torch.nonzero(hit).flatten()
        ss.append(idx)
        tt.append(q[idx])
    s = torch.cat(ss)
    t = torch.cat(tt)
    return Matches(s, t, s_sample[s])
