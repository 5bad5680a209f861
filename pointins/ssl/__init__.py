"""The PointINS method: semantic self-distillation plus the instance-aware offset branch (METHOD.md).

- :mod:`pointins.ssl.semantic`: projection head + prototypes, Sinkhorn-Knopp, cross-entropy.
- :mod:`pointins.ssl.offsets`: offset head, priors, ODR, SCR, offset loss.
- :mod:`pointins.ssl.matching`: view <-> original frame maps and cross-view matching.
- :mod:`pointins.ssl.teacher`: EMA, schedules, layer-wise lr decay.
- :mod:`pointins.ssl.model`: :class:`PointINS` (student + teacher + the loss of one step), ablation variants.
"""

from pointins.ssl.matching import Matches, match_views, points_to_original, vectors_to_original, vectors_to_view
from pointins.ssl.model import VARIANTS, PointINS, SSLConfig, Student
from pointins.ssl.offsets import (
    PRIORS,
    EmpiricalPrior,
    LogNormalPrior,
    OffsetHead,
    WeibullPrior,
    get_prior,
    odr,
    offset_loss,
    rank_within,
    scr,
)
from pointins.ssl.semantic import SemanticHead, semantic_loss, sinkhorn_knopp, zipf_marginal
from pointins.ssl.teacher import cosine, ema_update, linear_warmup, param_groups

__all__ = [
    "PRIORS",
    "VARIANTS",
    "EmpiricalPrior",
    "LogNormalPrior",
    "Matches",
    "OffsetHead",
    "PointINS",
    "SSLConfig",
    "SemanticHead",
    "Student",
    "WeibullPrior",
    "cosine",
    "ema_update",
    "get_prior",
    "linear_warmup",
    "match_views",
    "odr",
    "offset_loss",
    "param_groups",
    "points_to_original",
    "rank_within",
    "scr",
    "semantic_loss",
    "sinkhorn_knopp",
    "vectors_to_original",
    "vectors_to_view",
    "zipf_marginal",
]
