"""Offset branch (METHOD.md section 5): offset head, ODR, SCR and the offset loss.

Every point predicts a 3D vector to the centre of its (unknown) instance. The teacher's offsets, mapped to
the original scene frame, become targets in two steps:

- :func:`odr` (Offset Distribution Regularization): per cloud, the magnitudes are replaced by the quantiles
  of a long-tailed prior at their ranks (probability integral transform, order preserved) and each direction
  component is rank-transformed to Uniform(-1, 1) and renormalised (directions pushed towards uniform on the
  sphere). Priors: :class:`LogNormalPrior`, :class:`WeibullPrior`, :class:`EmpiricalPrior` (quantile table
  fitted by ``python -m pointins.priors``); :func:`get_prior` resolves names and files.
- :func:`scr` (Spatial Clustering Regularization): batched K-means of the L2-normalised teacher features
  gives segments; within each segment, points whose predicted centres lie closer than ``radius`` form
  connected components (pseudo-instances); a point's target is its pseudo-instance's mean position minus
  its own; points in components under ``min_size`` keep their incoming target.

:func:`offset_loss` is ``|o - t|_1 + (1 - cos(o, t))`` per point.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pointins import ops
from pointins._timing import phase
from pointins.ops.reference import offsets_to_batch

__all__ = [
    "PRIORS",
    "EmpiricalPrior",
    "LogNormalPrior",
    "MixturePrior",
    "OffsetHead",
    "SCRResult",
    "WeibullPrior",
    "get_prior",
    "odr",
    "offset_loss",
    "rank_within",
    "scr",
]


class OffsetHead(nn.Module):
    """2-layer MLP -> a 3D offset per point (in the frame of the view the features come from)."""

    def __init__(self, in_channels: int, hidden: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.GELU(), nn.Linear(hidden, 3))
        nn.init.trunc_normal_(self.mlp[0].weight, std=0.02)
        nn.init.zeros_(self.mlp[0].bias)
        nn.init.trunc_normal_(self.mlp[2].weight, std=0.02)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


# --------------------------------------------------------------------------------------------------
# Priors on offset magnitudes (metres)
# --------------------------------------------------------------------------------------------------


@dataclass
class LogNormalPrior:
    """Magnitudes ``r = exp(mu + sigma * z)``, z ~ N(0, 1): median ``exp(mu)``."""

    mu: float
    sigma: float

    def ppf(self, u: torch.Tensor) -> torch.Tensor:
        z = math.sqrt(2.0) * torch.erfinv(2.0 * u.double() - 1.0)
        return torch.exp(self.mu + self.sigma * z).to(u.dtype)

    def to_dict(self) -> dict:
        return {"family": "lognormal", "mu": self.mu, "sigma": self.sigma}


@dataclass
class WeibullPrior:
    """Magnitudes with CDF ``1 - exp(-(r / scale)^shape)``."""

    scale: float
    shape: float

    def ppf(self, u: torch.Tensor) -> torch.Tensor:
        return (self.scale * (-torch.log1p(-u.double())).pow(1.0 / self.shape)).to(u.dtype)

    def to_dict(self) -> dict:
        return {"family": "weibull", "scale": self.scale, "shape": self.shape}


class EmpiricalPrior:
    """A quantile table: ``quantiles[i]`` is the magnitude at probability ``i / (len - 1)``; ``ppf`` interpolates
    linearly. Fitted from ground-truth instance offsets by ``python -m pointins.priors --data PATH``."""

    def __init__(self, quantiles, source: str | None = None):
        q = torch.as_tensor(quantiles, dtype=torch.float64).flatten()
        if q.numel() < 2 or not bool(torch.isfinite(q).all()) or bool((q < 0).any()) or bool((q.diff() < 0).any()):
            raise ValueError(
                "EmpiricalPrior: quantiles must be >= 2 finite, non-negative, non-decreasing values "
                "(refit with python -m pointins.priors --data PATH)."
            )
        self.quantiles, self.source = q, source

    def ppf(self, u: torch.Tensor) -> torch.Tensor:
        q = self.quantiles.to(u.device)
        x = u.double().clamp(0, 1) * (q.numel() - 1)
        i = x.floor().long().clamp(max=q.numel() - 2)
        w = x - i
        return (q[i] * (1 - w) + q[i + 1] * w).to(u.dtype)

    def to_dict(self) -> dict:
        return {"family": "empirical", "quantiles": self.quantiles.tolist(), "source": self.source}

    def __repr__(self) -> str:
        q = self.quantiles
        return f"EmpiricalPrior(n={q.numel()}, median={float(q[q.numel() // 2]):.3f}, source={self.source!r})"


@dataclass
class MixturePrior:
    """Magnitudes of *every* point of a scene, instance or not: a share ``zero`` of the points has no offset (no
    instance: walls, floors, road), the rest follows ``base``. ODR applies its prior to all points, so this is the
    prior fitted to what it is applied to (``python -m pointins.priors --all-points``): the smallest ``zero`` of a
    cloud's offsets become zero, the rest take ``base``'s quantiles."""

    zero: float
    base: LogNormalPrior | WeibullPrior

    def ppf(self, u: torch.Tensor) -> torch.Tensor:
        z = min(max(float(self.zero), 0.0), 1.0 - 1e-9)
        v = ((u.double() - z) / (1.0 - z)).clamp(1e-12, 1.0 - 1e-12)
        return torch.where(u.double() < z, torch.zeros_like(v), self.base.ppf(v).double()).to(u.dtype)

    def to_dict(self) -> dict:
        return {"family": "mixture", "zero": self.zero, "base": self.base.to_dict()}


# Defaults [ours]: log-normal fits by ``python -m pointins.priors`` to ground-truth instance offsets of the
# built-in synthetic scenes (indoor rooms grid-sampled at 4 cm: median 0.56 m; outdoor streets at 5 cm:
# median 0.95 m). For real data fit your own (the paper found several priors work about equally well).
# ``*-all``: the same scenes at the resolution ODR works at (the up-cast level, 4 x the grid: 16 / 20 cm), every
# point counted, a point of no instance as a zero offset: 76% / 91% zeros, the rest log-normal (#32: a prior fitted
# on instance points but applied to all of them pushes the object points into its upper tail).
PRIORS = {
    "indoor": LogNormalPrior(mu=-0.66, sigma=0.51),
    "outdoor": LogNormalPrior(mu=-0.08, sigma=0.57),
    "indoor-all": MixturePrior(zero=0.76, base=LogNormalPrior(mu=-0.62, sigma=0.55)),
    "outdoor-all": MixturePrior(zero=0.91, base=LogNormalPrior(mu=-0.04, sigma=0.62)),
}


def prior_from_dict(d: dict):
    fam = d.get("family")
    if fam == "lognormal":
        return LogNormalPrior(float(d["mu"]), float(d["sigma"]))
    if fam == "weibull":
        return WeibullPrior(float(d["scale"]), float(d["shape"]))
    if fam == "empirical":
        return EmpiricalPrior(d["quantiles"], d.get("source"))
    if fam == "mixture":
        base = prior_from_dict(d["base"])
        if not isinstance(base, LogNormalPrior | WeibullPrior) or not 0 <= float(d["zero"]) < 1:
            raise ValueError("prior: a mixture needs zero in [0, 1) and a lognormal or weibull base.")
        return MixturePrior(float(d["zero"]), base)
    raise ValueError(f"prior: unknown family {fam!r}; expected lognormal, weibull, empirical or mixture.")


def get_prior(spec):
    """A prior from a name (``indoor``, ``outdoor``), a JSON file written by ``python -m pointins.priors``,
    ``lognormal:MU,SIGMA`` / ``weibull:SCALE,SHAPE``, a dict, or a prior object (returned as is)."""
    if hasattr(spec, "ppf"):
        return spec
    if isinstance(spec, dict):
        return prior_from_dict(spec)
    s = str(spec)
    if s in PRIORS:
        return PRIORS[s]
    for fam in ("lognormal", "weibull"):
        if s.startswith(fam + ":"):
            try:
                a, b = (float(v) for v in s.split(":", 1)[1].split(","))
            except ValueError:
                raise ValueError(f"prior: {s!r} should look like {fam}:A,B (two numbers).") from None
            return LogNormalPrior(a, b) if fam == "lognormal" else WeibullPrior(a, b)
    p = Path(os.path.expanduser(s))
    if p.is_file():
        try:
            return prior_from_dict(json.loads(p.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"prior: {p} is not a prior file ({e}); refit with python -m pointins.priors.") from e
    raise ValueError(
        f"prior: {spec!r} is neither a preset ({', '.join(PRIORS)}), lognormal:MU,SIGMA, weibull:SCALE,SHAPE "
        "nor an existing JSON file from python -m pointins.priors."
    )


# --------------------------------------------------------------------------------------------------
# ODR
# --------------------------------------------------------------------------------------------------


def _batch_of(offsets: torch.Tensor, n: int) -> torch.Tensor:
    """Cloud of each of the n points of CSR ``offsets``."""
    return offsets_to_batch(offsets)


def rank_within(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each value within its CSR segment (ties: lower index first)."""
    n = values.shape[0]
    seg = _batch_of(offsets, n)
    o1 = torch.sort(values, stable=True).indices
    o2 = torch.sort(seg[o1], stable=True).indices
    perm = o1[o2]  # by segment, then value
    rank = torch.empty(n, dtype=torch.long, device=values.device)
    rank[perm] = torch.arange(n, device=values.device) - offsets[:-1][seg[perm]]
    return rank


def _midrank_within(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """0-based rank within each CSR segment, tied values sharing the mean of their ranks (float64)."""
    n = values.shape[0]
    seg = _batch_of(offsets, n)
    rank = rank_within(values, offsets).double()
    if n == 0:
        return rank
    o1 = torch.sort(values, stable=True).indices
    perm = o1[torch.sort(seg[o1], stable=True).indices]  # by segment, then value
    v, sg = values[perm], seg[perm]
    new = torch.ones(n, dtype=torch.bool, device=values.device)
    new[1:] = (v[1:] != v[:-1]) | (sg[1:] != sg[:-1])
    run = torch.cumsum(new.long(), 0) - 1
    runs = int(run[-1]) + 1
    tot = torch.zeros(runs, dtype=torch.float64, device=values.device).index_add(0, run, rank[perm])
    cnt = torch.bincount(run, minlength=runs).double()
    out = torch.empty_like(rank)
    out[perm] = (tot / cnt)[run]
    return out


@torch.no_grad()
def odr(
    offsets_pred: torch.Tensor, offsets: torch.Tensor, prior, directions: bool = True, min_norm: float = 1e-4
) -> torch.Tensor:
    """Offset Distribution Regularization of (N, 3) offsets, cloud by cloud (CSR ``offsets``).

    Magnitudes: ``r~_i = F^-1((rank_i + 0.5) / n)`` with F the prior, so each cloud's magnitudes become exactly
    the prior's quantiles in the original order. Directions (``directions=True``): each component is
    rank-transformed to the Uniform(-1, 1) quantiles (tied components share their mean rank, so a component that
    is 0 throughout stays 0), then the vector is renormalised **[ours]**. Degenerate offsets (norm <= ``min_norm``,
    e.g. points with no instance) carry no direction: they stay zero and are left out of both rankings, so they
    neither take the prior's quantiles nor skew the others' directions.
    """
    prior = get_prior(prior)
    o = offsets_pred.detach().float()
    n = o.shape[0]
    if n == 0:
        return o.clone()
    r = o.norm(dim=1)
    valid = r > min_norm
    if not bool(valid.all()):
        out = torch.zeros_like(o)
        if bool(valid.any()):
            seg = _batch_of(offsets, n)
            cnt = torch.bincount(seg[valid], minlength=offsets.numel() - 1)
            sub = torch.cat([cnt.new_zeros(1), cnt.cumsum(0)])
            out[valid] = odr(o[valid], sub, prior, directions, min_norm=-1.0)
        return out
    cnt = offsets.diff()[_batch_of(offsets, n)].to(torch.float64)
    u = (rank_within(r, offsets).double() + 0.5) / cnt
    mag = prior.ppf(u).float()
    d = o / r.clamp_min(1e-12)[:, None]
    if directions:
        comps = [(_midrank_within(o[:, k], offsets) + 0.5) / cnt * 2.0 - 1.0 for k in range(3)]
        dd = torch.stack(comps, 1).float()
        norm = dd.norm(dim=1, keepdim=True)
        d = torch.where(norm > 1e-6, dd / norm.clamp_min(1e-12), d)
    return d * mag[:, None]


# --------------------------------------------------------------------------------------------------
# SCR
# --------------------------------------------------------------------------------------------------


@dataclass
class SCRResult:
    target: torch.Tensor  # (N, 3) offset targets: pseudo-instance mean - x (or the incoming offset)
    segments: torch.Tensor  # (N,) K-means segment within each cloud
    instances: torch.Tensor  # (N,) pseudo-instance id (unique over the batch), -1: none
    centres: torch.Tensor  # (N, 3) predicted centres x + o
    num_instances: int


@torch.no_grad()
def scr(
    feat: torch.Tensor,
    coord: torch.Tensor,
    offsets_pred: torch.Tensor,
    offsets: torch.Tensor,
    *,
    k: int | torch.Tensor = 20,
    iters: int = 5,
    radius: float = 0.16,
    min_size: int | torch.Tensor = 8,
    seed: int = 0,
) -> SCRResult:
    """Spatial Clustering Regularization on one batch of teacher clouds (CSR ``offsets``).

    ``feat``: (N, C) teacher features; ``coord``: (N, 3) positions in the original frame; ``offsets_pred``:
    (N, 3) offsets in the same frame (after ODR in the default order). Returns the targets and what produced
    them (segments, pseudo-instances, centres), using :func:`pointins.ops.kmeans` and
    :func:`pointins.ops.connected_components`.
    """
    f = F.normalize(feat.detach().float(), dim=1)
    x = coord.detach().float()
    o = offsets_pred.detach().float()
    with phase("kmeans"):
        km = ops.kmeans(f, offsets, k=k, iters=iters, metric="cosine", seed=seed)
    centres = x + o
    per_cloud = isinstance(min_size, torch.Tensor)
    with phase("components"):
        cc = ops.connected_components(centres, offsets, radius=radius, group=km.labels,
                                      min_size=1 if per_cloud else min_size)  # fmt: skip
    labels, ncomp = cc.labels, cc.num_components
    if per_cloud and ncomp:  # each cloud's own minimum size
        size = torch.bincount(labels[labels >= 0], minlength=ncomp)
        cloud = offsets_to_batch(offsets)
        small = (labels >= 0) & (size[labels.clamp_min(0)] < min_size.to(labels.device)[cloud])
        labels = torch.where(small, -1, labels)
        kept = torch.unique(labels[labels >= 0])  # renumber the survivors 0..n-1, in order
        remap = torch.full((ncomp,), -1, dtype=torch.long, device=labels.device)
        remap[kept] = torch.arange(kept.numel(), device=labels.device)
        labels, ncomp = torch.where(labels >= 0, remap[labels.clamp_min(0)], -1), int(kept.numel())
    target = o.clone()
    keep = labels >= 0
    if bool(keep.any()):
        lab = labels[keep]
        mean = ops.segment_reduce(x[keep], index=lab, reduce="mean", num_segments=ncomp)
        target[keep] = mean[lab] - x[keep]
    return SCRResult(target, km.labels, labels, centres, ncomp)


def offset_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """Per point ``|pred - target|_1 + (1 - cos(pred, target))`` (N,), the paper's loss, with the cosine guarded
    **[ours]**: ``cos = pred . target / (max(|pred|, eps) max(|target|, eps))``. Unguarded, the cosine's gradient
    grows as 1 / |pred| (a prediction near zero, as every prediction is when the offset loss switches on, gets a
    huge, direction-only gradient); with the guard it is at most 1 / eps per unit (eps in metres, 1 cm by default:
    far below any instance's offset, so the term is the paper's wherever a direction is defined) and the term
    vanishes smoothly as either vector does."""
    p, t = pred.float(), target.float()
    l1 = (p - t).abs().sum(-1)
    cos = (p * t).sum(-1) / (p.norm(dim=-1).clamp_min(eps) * t.norm(dim=-1).clamp_min(eps))
    return l1 + (1.0 - cos)
