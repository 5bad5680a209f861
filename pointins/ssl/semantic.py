"""Semantic branch (METHOD.md section 4): projection head + prototypes, and three losses on matched pairs.

The head maps backbone features to ``bottleneck``-dim unit vectors and scores them against ``prototypes``
weight-normalised prototypes (cosine similarity, no bias). :func:`semantic_terms` computes the loss selected
by ``mode``:

* ``"dos"`` (DOS, the paper's baseline; the default): teacher targets by **Zipf-Sinkhorn** (prototype
  marginals w_k ∝ k^-alpha by current mass rank, every point weighted equally) over the term's pairs, then each
  prototype's column normalised over the sample's pairs: a **softmap** (a distribution over points per
  prototype). The student's softmap is its softmax over the same points, per prototype; the loss is
  KL(teacher || student) averaged over prototypes, per sample, with the same-view and cross-view pairs as two
  halves. DOS's code is not public: the domain of the softmaps (one sample's matched pairs of one term) is
  **[ours]**.
* ``"sonata"`` (``pointcept/models/sonata/sonata_v1m1_base.py``): three terms weighted 2/8 (mask: a masked
  global view against the teacher's same view), 2/8 (rolled mask: against the other global view) and 4/8
  (unmask: local views against the teacher's first global view); each with Sinkhorn-Knopp on the matched
  teacher points of that term, cross-entropy with the student's log-softmax over prototypes, a mean per student
  view, then over views.
* ``"pooled"`` (the earlier loss of this package): one Sinkhorn over all teacher points, cross-entropy over all
  pairs, mean per sample.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SEMANTIC_MODES",
    "SemanticHead",
    "semantic_loss",
    "semantic_terms",
    "sinkhorn_knopp",
    "softmap_loss",
    "zipf_marginal",
]

SEMANTIC_MODES = ("dos", "sonata", "pooled")


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
def sinkhorn_knopp(
    scores: torch.Tensor, temperature: float, iters: int = 3, zipf_alpha: float = 0.0, rows: str = "assign"
) -> torch.Tensor:
    """Balanced soft assignments (N, K) from teacher ``scores`` (N, K): each row sums to 1.

    Alternates normalising prototype totals to the marginal (uniform 1/K, or Zipf by current usage rank when
    ``zipf_alpha > 0`` **[ours: DOS's Zipf-Sinkhorn ranks prototypes by their mass]**) and point totals to 1/N.
    Under ``torch.distributed`` the sums over points (and N) are all-reduced, so every rank gets the
    assignment of the global batch. Computed in float64 after subtracting the global maximum score.
    ``rows="plan"`` returns the balanced plan itself (rows sum to 1/N, prototype columns to the marginal) instead
    of per-point assignments.
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
    if rows != "plan":
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


def softmap_loss(
    student_scores: torch.Tensor,
    teacher_plan: torch.Tensor,
    group: torch.Tensor,
    temperature: float = 0.1,
    num_groups: int | None = None,
) -> torch.Tensor:
    """DOS's softmap distillation: within each ``group`` (M,) of rows, every prototype's column of the teacher
    plan is normalised over the rows (the teacher softmap) and the student's softmax over the same rows of
    ``scores / temperature`` (the student softmap); the loss is KL(teacher || student) summed over rows, averaged
    over prototypes, then over the groups that have rows."""
    if student_scores.shape[0] == 0:
        return student_scores.sum() * 0.0
    b = int(num_groups) if num_groups is not None else int(group.max()) + 1
    # rows grouped into contiguous slices (stable sort), so each group is a plain slice: log-softmax over its rows
    # per prototype, no scatter into (groups, prototypes) tensors (their backward is a slow serial index_put)
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group, minlength=b).tolist()
    dt = torch.float64 if student_scores.dtype == torch.float64 else torch.float32  # float32 at least
    logits = torch.index_select(student_scores, 0, order).to(dt) / temperature
    t = torch.index_select(teacher_plan, 0, order).to(dt)
    total, have, start = logits.new_zeros(()), 0, 0
    for n in counts:
        if n == 0:
            continue
        logp = torch.log_softmax(logits[start : start + n], dim=0)  # the student softmap of each prototype
        tg = t[start : start + n]
        q = tg / tg.sum(0, keepdim=True).clamp_min(1e-30)  # the teacher softmap
        kl = torch.where(q > 0, q * (torch.log(q.clamp_min(1e-30)) - logp), torch.zeros_like(q))
        total = total + kl.sum(0).mean()
        have += 1
        start += n
    return total / max(have, 1)


def semantic_terms(
    mode: str,
    student_scores: torch.Tensor,
    teacher_scores: torch.Tensor,
    pair_student: torch.Tensor,
    pair_teacher: torch.Tensor,
    pair_sample: torch.Tensor,
    student_view: torch.Tensor,
    teacher_view: torch.Tensor,
    student_cloud: torch.Tensor,
    *,
    teacher_temp: float,
    student_temp: float = 0.1,
    sinkhorn_iters: int = 3,
    zipf_alpha: float = 0.0,
    num_samples: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The semantic loss of matched pairs under ``mode`` (see the module docstring) and its terms.

    ``pair_*``: (M,) student point, teacher point and sample of each pair; ``student_view`` / ``teacher_view``:
    (M,) view id of each side (student local views negative, global views 0..G-1 on both sides);
    ``student_cloud``: (M,) the student view cloud of each pair (Sonata averages per view).
    """
    if mode not in SEMANTIC_MODES:
        raise ValueError(f"semantic loss: mode must be one of {SEMANTIC_MODES}, got {mode!r}.")
    zero = student_scores.sum() * 0.0
    stats: dict[str, float] = {}
    if mode == "pooled":
        q = sinkhorn_knopp(teacher_scores.float(), teacher_temp, sinkhorn_iters, zipf_alpha)
        s_rows = torch.index_select(student_scores, 0, pair_student)  # index_select: a fast backward
        loss = semantic_loss(s_rows, q[pair_teacher], pair_sample, student_temp, num_samples)
        return loss, stats
    if mode == "sonata":
        local = student_view < 0
        terms = (
            ("mask", 2 / 8, ~local & (teacher_view == student_view)),
            ("roll", 2 / 8, ~local & (teacher_view != student_view)),
            ("unmask", 4 / 8, local & (teacher_view == 0)),
        )
        loss = zero
        for name, w, sel in terms:
            idx = torch.nonzero(sel).flatten()
            if idx.numel() == 0:
                stats[f"loss_{name}"] = 0.0
                continue
            q = sinkhorn_knopp(teacher_scores[pair_teacher[idx]].float(), teacher_temp, sinkhorn_iters)
            logp = F.log_softmax(
                torch.index_select(student_scores, 0, pair_student[idx]).float() / student_temp, dim=-1
            )
            ce = -(q * logp).sum(-1)
            _, cloud = torch.unique(student_cloud[idx], return_inverse=True)
            term = per_sample_mean(ce, cloud)
            stats[f"loss_{name}"] = float(term.detach())
            loss = loss + w * term
        return loss, stats
    # DOS: same-view and cross-view halves of softmap distillation with Zipf-Sinkhorn targets
    loss = zero
    for name, sel in (("same", teacher_view == student_view), ("cross", teacher_view != student_view)):
        idx = torch.nonzero(sel).flatten()
        if idx.numel() == 0:
            stats[f"loss_{name}"] = 0.0
            continue
        plan = sinkhorn_knopp(teacher_scores[pair_teacher[idx]].float(), teacher_temp, sinkhorn_iters, zipf_alpha,
                              rows="plan")  # fmt: skip
        s_rows = torch.index_select(student_scores, 0, pair_student[idx])
        term = softmap_loss(s_rows, plan, pair_sample[idx], student_temp, num_samples)
        stats[f"loss_{name}"] = float(term.detach())
        loss = loss + 0.5 * term
    return loss, stats
