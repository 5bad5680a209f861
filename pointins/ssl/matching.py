"""Frames and cross-view correspondence (METHOD.md sections 3 and 5).

Each view records ``view = original @ T^T + shift`` (see :mod:`pointins.data.transforms`), per cloud of a
collated batch. :func:`points_to_original` / :func:`vectors_to_original` invert that for (pooled) points and
offsets; :func:`match_views` pairs student points with teacher points of the same sample: first those whose
original-frame positions fall in the same cell of a voxel hash **[ours: the fast pass]**, then, with ``radius``,
every student point still without a partner in a teacher view gets its nearest teacher point(s) of that view
within ``radius`` (Sonata's ``match_neighbour`` in ``pointcept/models/sonata/sonata_v1m1_base.py``: a k = 1
nearest-neighbour query in ``origin_coord`` kept when closer than ``match_max_r`` = 0.32 m; its
``match_max_k`` = 8 is not used by that code). The radius pass hashes teacher points into cells of side
``radius`` and scans the 27 cells around each student point.
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
    radius: float | None = None,
    k: int = 1,
    chunk: int = 1 << 22,
) -> Matches:
    """Pair every student point with, for each teacher view of its sample, the teacher point in the same
    original-frame cell of side ``cell`` (if any; the first such teacher point); with ``radius``, a student point
    that has no such partner in a view gets the ``k`` nearest teacher points of that view closer than ``radius``.

    ``*_xyz``: (N, 3) original-frame positions; ``*_sample``: (N,) sample id; ``*_view``: (N,) view id, where
    student global views and teacher views share ids and student-only (local) views are negative.
    ``same_view=False`` skips pairing a student view with the teacher's copy of the same view. ``chunk`` bounds the
    candidate pairs the radius pass holds at once.
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
    near = _RadiusIndex(t_xyz, t_sample * nv + t_vid, radius) if radius else None
    for j in range(nv):
        q = table.query(key(s_sample * nv + j, gs))
        eligible = torch.ones_like(q, dtype=torch.bool) if same_view else s_view != views[j]
        hit = (q >= 0) & eligible
        idx = torch.nonzero(hit).flatten()
        ss.append(idx)
        tt.append(q[idx])
        if near is not None:
            rest = torch.nonzero(eligible & (q < 0)).flatten()
            if rest.numel():
                a, b = near.query(s_xyz[rest], s_sample[rest] * nv + j, k, chunk)
                ss.append(rest[a])
                tt.append(b)
    s = torch.cat(ss)
    t = torch.cat(tt)
    return Matches(s, t, s_sample[s])


class _RadiusIndex:
    """Teacher points hashed by (group, cell of side ``radius``): :meth:`query` returns, for query points, the
    ``k`` nearest indexed points of the same group closer than ``radius`` (ties to the lower index)."""

    def __init__(self, xyz: torch.Tensor, group: torch.Tensor, radius: float):
        if not radius > 0:
            raise ValueError(f"match_views: radius must be > 0, got {radius}.")
        self.r = float(radius)
        self.xyz = xyz.double()
        g = torch.floor(self.xyz / self.r).long()
        # Teacher cells land in [2, M]; a query cell in [1, M + 1] = [1, span - 2] has all 27 neighbours inside
        # [0, span - 1], so keys never wrap into another row or group; farther queries cannot match.
        self.lo = g.min(0).values - 2
        g = g - self.lo
        self.span = (g.max(0).values + 3).tolist()
        self.groups = int(group.max()) + 1
        sx, sy, sz = self.span
        if self.groups * sx * sy * sz >= 2**62:
            raise ValueError(f"match_views: the batch spans {sx}x{sy}x{sz} cells of {radius} m; too large for 64-bit "
                             "keys. Crop the scenes or use a smaller radius.")  # fmt: skip
        keys = self._key(group, g)
        self.keys, self.order = torch.sort(keys, stable=True)
        uniq, counts = torch.unique_consecutive(self.keys, return_counts=True)
        self.start = torch.cumsum(counts, 0) - counts
        self.count = counts
        self.table = ops.HashTable(uniq)
        d = torch.arange(-1, 2, device=xyz.device)
        self.stencil = torch.cartesian_prod(d, d, d)  # (27, 3)

    def _key(self, group, g):
        sx, sy, sz = self.span
        return ((group * sx + g[:, 0]) * sy + g[:, 1]) * sz + g[:, 2]

    def query(self, xyz: torch.Tensor, group: torch.Tensor, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        dev = xyz.device
        x = xyz.double()
        g = torch.floor(x / self.r).long() - self.lo
        sx, sy, sz = self.span
        hi = torch.tensor([sx - 2, sy - 2, sz - 2], device=dev)
        inside = (g >= 1).all(1) & (g <= hi).all(1) & (group >= 0) & (group < self.groups)
        out_q, out_t = [], []
        rows = torch.nonzero(inside).flatten()
        per = max(1, chunk // (27 * 64))  # query points per chunk (about 64 candidates per cell)
        for c0 in range(0, rows.numel(), per):
            r = rows[c0 : c0 + per]
            cells = (g[r][:, None, :] + self.stencil[None]).reshape(-1, 3)
            cid = self.table.query(self._key(group[r].repeat_interleave(27), cells)).view(-1, 27)
            cnt = torch.where(cid >= 0, self.count[cid.clamp_min(0)], torch.zeros_like(cid))
            total = cnt.sum(1)
            qi = torch.repeat_interleave(torch.arange(r.numel(), device=dev), total)
            if qi.numel() == 0:
                continue
            # candidate j of query qi: cell slot and rank inside the cell
            flat_cnt = cnt.flatten()
            slot = torch.repeat_interleave(torch.arange(flat_cnt.numel(), device=dev), flat_cnt)
            first = torch.cumsum(flat_cnt, 0) - flat_cnt
            rank = torch.arange(slot.numel(), device=dev) - first[slot]
            pos = self.start[cid.flatten()[slot]] + rank
            t = self.order[pos]
            d2 = ((self.xyz[t] - x[r][qi]) ** 2).sum(1)
            keep = d2 < self.r * self.r
            qi, t, d2 = qi[keep], t[keep], d2[keep]
            if qi.numel() == 0:
                continue
            # k nearest per query: sort by (query, distance, teacher index)
            o = torch.argsort(t, stable=True)
            o = o[torch.argsort(d2[o], stable=True)]
            o = o[torch.argsort(qi[o], stable=True)]
            qi, t = qi[o], t[o]
            head = torch.ones_like(qi, dtype=torch.bool)
            head[1:] = qi[1:] != qi[:-1]
            start = torch.cummax(torch.where(head, torch.arange(qi.numel(), device=dev), 0), 0).values
            sel = (torch.arange(qi.numel(), device=dev) - start) < k
            out_q.append(r[qi[sel]])
            out_t.append(t[sel])
        if not out_q:
            e = torch.zeros(0, dtype=torch.long, device=dev)
            return e, e
        return torch.cat(out_q), torch.cat(out_t)
