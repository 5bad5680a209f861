"""Semantic branch (METHOD.md section 4): projection head + prototypes, Sinkhorn-Knopp targets, cross-entropy.

The head maps backbone features to ``bottleneck``-dim unit vectors and scores them against ``prototypes``
weight-normalised prototypes (cosine similarity, no bias). The teacher's scores become soft assignments with
a few Sinkhorn-Knopp iterations that balance prototype usage over the whole (global) batch, optionally
towards a Zipf marginal instead of a uniform one; the student's log-softmax is pulled towards them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["SemanticHead", "semantic_loss", "sinkhorn_knopp", "zipf_marginal"]


class SemanticHead(nn.Module):
    """MLP (in -> hidden -> bottleneck, GELU), L2-normalise, then prototypes (weight-normalised Linear, no bias).

    ``forward(x)`` returns (N, prototypes) cosine similarities in [-1, 1] (divide by a temperature for logits).
    """

    def __init__(self, in_channels: int, prototypes: int = 1024, hidden: int = 4096, bottleneck: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.GELU(), nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Linear(bottleneck, prototypes, bias=False)
        nn.init.trunc_normal_(self.prototypes.weight, std=0.02)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1)
        w = F.normalize(self.prototypes.weight, dim=-1)
        return z @ w.to(z.dtype).t()


def zipf_marginal(k: int, alpha: float = 1.3, device=None) -> torch.Tensor:
    """Zipf weights ``w_r ∝ r^-alpha`` for ranks r = 1..k, summing to 1 (alpha = 0: uniform)."""
    r = torch.arange(1, k + 1, dtype=torch.float64, device=device)
    w = r.pow(-float(alpha))
    return w / w.sum()


def _all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, temperature: float, iters: int = 3, zipf_alpha: float = 0.0) -> torch.Tensor:
    """Balanced soft assignments (N, K) from teacher ``scores`` (N, K): each row sums to 1.

    Alternates normalising prototype totals to the marginal (uniform 1/K, or Zipf by current usage rank when
    ``zipf_alpha > 0`` **[ours: DOS's Zipf-Sinkhorn ranks prototypes by their mass]**) and point totals to 1/N.
    Under ``torch.distributed`` the sums over points (and N) are all-reduced, so every rank gets the
    assignment of the global batch. Computed in float64 after subtracting the global maximum score.
    """
    if scores.dim() != 2:
        raise ValueError(f"sinkhorn_knopp: scores must be (N, K), got {tuple(scores.shape)}.")
    if not temperature > 0:
        raise ValueError(f"sinkhorn_knopp: temperature must be > 0, got {temperature}.")
    s = scores.detach().double() / temperature
    k = s.shape[1]
    top = s.max() if s.numel() else s.new_zeros(())
    top = _all_reduce(top.clone(), dist.ReduceOp.MAX if dist.is_available() else None)
    q = torch.exp(s - top)  # (N, K)
    n = _all_reduce(torch.tensor(float(s.shape[0]), dtype=torch.float64, device=s.device))
    if n.item() == 0:
        return q.float()
    q /= _all_reduce(q.sum()).clamp_min(1e-300)
    for _ in range(iters):
        col = _all_reduce(q.sum(0))  # mass per prototype
        if zipf_alpha > 0:
            rank = torch.empty_like(col, dtype=torch.long)
            rank[torch.argsort(col, descending=True, stable=True)] = torch.arange(k, device=col.device)
            target = zipf_marginal(k, zipf_alpha, s.device)[rank]
        else:
            target = torch.full_like(col, 1.0 / k)
        q *= (target / col.clamp_min(1e-300))[None]
        q /= q.sum(1, keepdim=True).clamp_min(1e-300) * n
    q *= n
    return q.to(scores.dtype if scores.is_floating_point() else torch.float32)


def semantic_loss(
    student_scores: torch.Tensor,
    teacher_probs: torch.Tensor,
    sample: torch.Tensor,
    temperature: float = 0.1,
    num_samples: int | None = None,
) -> torch.Tensor:
    """Cross-entropy ``-sum_k q_k log softmax(s / T)_k`` per matched pair, averaged per sample, then over the
    samples that have pairs. ``sample``: (M,) sample id of each pair."""
    logp = F.log_softmax(student_scores.float() / temperature, dim=-1)
    ce = -(teacher_probs.float() * logp).sum(-1)
    return per_sample_mean(ce, sample, num_samples)


def per_sample_mean(values: torch.Tensor, sample: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
    """Mean of ``values`` within each sample, then over the samples that have values (0 when none do)."""
    if values.numel() == 0:
        return values.sum()
    b = int(num_samples) if num_samples is not None else int(sample.max()) + 1
    tot = values.new_zeros(b).index_add(0, sample, values)
    cnt = torch.bincount(sample, minlength=b).to(values.dtype)
    have = cnt > 0
    return (tot[have] / cnt[have]).mean()
