"""The PointINS pretraining model: student (backbone + semantic head + offset head), EMA teacher, and the
losses of one step (METHOD.md sections 3-6).

One step on a collated multi-view batch (:func:`pointins.data.collate.collate`):

1. The teacher (eval mode: no drop path, fixed curves) encodes the full global views; the student encodes
   the visible points of the block-masked global views and the local views in one pass.
2. Up-cast points of both are mapped to the original frame and matched by voxel hashing
   (:func:`pointins.ssl.matching.match_views`).
3. Semantic: Sinkhorn-Knopp targets from the teacher's prototype scores; cross-entropy at matched student
   points, averaged per scene then over the batch.
4. Offsets (after ``offset_warmup``): the teacher's offsets in the original frame go through ODR and SCR
   (order and side configurable for ablations); the target of a student point is the teacher's regularised
   instance centre minus the student point's own original-frame position **[ours: exact for points that
   are not at the same spot]**; loss ``L1 + (1 - cos)`` weighted by ``offset_weight``.

:data:`VARIANTS` names the ablations (``semantic-only`` is the Sonata/DOS-like baseline).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from pointins import _timing
from pointins._timing import phase
from pointins.data.masking import block_mask
from pointins.models import PointTransformerV3
from pointins.ssl.matching import match_views, points_to_original, vectors_to_original
from pointins.ssl.offsets import OffsetHead, _batch_of, get_prior, odr, offset_loss, scr
from pointins.ssl.semantic import SEMANTIC_MODES, SemanticHead, per_sample_mean, semantic_terms
from pointins.ssl.teacher import cosine, linear_warmup

__all__ = ["ORACLE_VARIANTS", "VARIANTS", "PointINS", "SSLConfig", "Student"]


_POOL = None


def _teacher_pool():
    """The one background thread the overlapped step runs teacher forwards on (made on first use)."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(1, thread_name_prefix="pointins-teacher")
    return _POOL


def _set_omp(n: int) -> None:
    """OpenMP's thread count for the calling thread only (torch.set_num_threads would change the process's)."""
    import ctypes

    try:
        ctypes.CDLL(None).omp_set_num_threads(int(n))
    except (OSError, AttributeError):  # no OpenMP runtime: nothing to set
        pass


@dataclass
class SSLConfig:
    """Method hyper-parameters (defaults: METHOD.md; **[ours]** where the paper is silent)."""

    # semantic branch
    prototypes: int = 1024
    head_hidden: int = 4096
    head_dim: int = 256
    student_temp: float = 0.1
    teacher_temp: tuple[float, float] = (0.04, 0.07)
    teacher_temp_warmup: float = 0.05  # fraction of training over which teacher_temp rises (Sonata)
    sinkhorn_iters: int = 3
    semantic_loss: str = "dos"  # dos (softmaps + Zipf-Sinkhorn) | sonata (mask / roll / unmask) | pooled
    zipf_alpha: float = 1.3  # Zipf-Sinkhorn marginal k^-alpha (DOS: 1.3-1.6 best; 0: uniform); "dos" and "pooled"
    # teacher
    ema: tuple[float, float] = (0.994, 1.0)
    # masking (student global views)
    mask_size: tuple[float, float] = (0.1, 0.4)
    mask_ratio: tuple[float, float] = (0.3, 0.7)
    mask_warmup: float = 0.05
    mask_local: bool = False  # [ours] local views are small crops already
    # offset branch
    offset: bool = True
    odr: bool = True
    scr: bool = True
    scr_before_odr: bool = False
    odr_side: str = "teacher"  # or "student" (ablation)
    # [ours] re-rank each offset component toward a uniform direction: off by default, the label diagnostics of the
    # training views show it does not help (docs/results/scale-rules/)
    odr_directions: bool = False
    # the prior ODR maps magnitudes to, fitted to the points it is applied to (all up-cast points, those of no
    # instance as zero offsets: indoor-all / outdoor-all); indoor | outdoor: fitted on instance points only
    prior: str = "indoor-all"  # indoor[-all] | outdoor[-all] | lognormal:MU,SIGMA | weibull:SCALE,SHAPE | prior.json
    offset_hidden: int = 256
    offset_weight: float = 0.25
    offset_warmup: float = 0.1
    offset_cos_eps: float = 0.01  # [ours] metres: the (1 - cos) term's lengths are clamped here (see offset_loss)
    # label-using CONTROLS of the ablation (never PointINS itself): "offset" replaces the teacher's offset targets by
    # the true instance-centre offsets, "scr" feeds SCR the true offsets instead of the teacher's; needs labelled data
    oracle: str = "none"
    kmeans_k: int = 20  # K-means segments of a global view at the paper's scale (see scale_ref_points)
    kmeans_iters: int = 5
    scr_radius: float | None = None  # None: 2 up-cast cells [ours]
    scr_min_size: int = 8  # smallest pseudo-instance (up-cast points) at the paper's scale
    # [ours] scale rules (METHOD.md: the paper's constants belong to its scale). scale_ref_points > 0: the up-cast
    # points of a global view at the paper's scale (Sonata's 40-100% of 65,536 points at 2 cm: about 2,800 at 8 cm);
    # a view of n up-cast points then gets K = clamp(round(kmeans_k * n / ref), 2, kmeans_k) segments and minimum
    # pseudo-instance size max(2, round(scr_min_size * n / ref)): the paper's values at the paper's view size, the
    # same points per segment and the same share of a view per minimum instance at ours. 0: the constants as given.
    scale_ref_points: int = 2800  # chosen from the label diagnostics (docs/results/scale-rules/)
    # ema_ref_steps > 0: the run length the EMA schedule was made for (the paper's 100k); a run of S steps starts at
    # momentum 1 - (1 - ema[0]) * ema_ref_steps / S (at least ema_floor, at most ema[0]): the teacher's averaging
    # window keeps the same share of the run. 0: ema as given whatever the run length.
    ema_ref_steps: int = 0
    ema_floor: float = 0.0
    # classes whose points ODR / SCR leave out when the data has labels (e.g. (0, 1): wall, floor); empty: all
    # points, label-free (the default)
    stuff_classes: tuple[int, ...] = ()
    # matching
    match_cell: float | None = None  # None: one up-cast cell (the exact-cell first pass)
    match_radius: float | None = 0.32  # then the nearest teacher point(s) within this (Sonata); None/0: off
    match_k: int = 1  # teacher points per student point in the radius pass (Sonata's code queries 1)
    same_view: bool = True  # also distil a global view into its own masked copy (DOS)

    def __post_init__(self):
        if self.semantic_loss not in SEMANTIC_MODES:
            raise ValueError(f"SSLConfig: semantic_loss must be one of {SEMANTIC_MODES}, got {self.semantic_loss!r}.")
        if self.oracle not in ("none", "offset", "scr"):
            raise ValueError(f"SSLConfig: oracle must be none, offset or scr, got {self.oracle!r}.")
        if self.odr_side not in ("teacher", "student"):
            raise ValueError(f"SSLConfig: odr_side must be 'teacher' or 'student', got {self.odr_side!r}.")
        st = self.stuff_classes
        if isinstance(st, int | str):
            st = [st]
        try:
            self.stuff_classes = tuple(int(x) for x in st)
        except (TypeError, ValueError):
            raise ValueError(f"SSLConfig: stuff_classes must be class ids, e.g. (0, 1); got {st!r}.") from None
        for name in ("teacher_temp", "ema", "mask_size", "mask_ratio"):
            v = tuple(getattr(self, name))
            if len(v) != 2:
                raise ValueError(f"SSLConfig: {name} needs (start, end), got {v}.")
            setattr(self, name, v)
        from pointins._validate import check_fields

        check_fields("SSLConfig", self, {
            "prototypes": ("int", 1, 1 << 20), "head_hidden": ("int", 1, 1 << 16), "head_dim": ("int", 1, 1 << 16),
            "student_temp": ("float", 0, None, "lo-open"), "teacher_temp": ("two", 0, None, "lo-open"),
            "teacher_temp_warmup": ("float", 0, 1), "sinkhorn_iters": ("int", 1, 1000),
            "zipf_alpha": ("float", 0, 10), "ema": ("two", 0, 1), "mask_size": ("pair", 0, None, "lo-open"),
            "mask_ratio": ("two", 0, 1, "hi-open"), "mask_warmup": ("float", 0, 1), "mask_local": ("bool", 0, 0),
            "offset": ("bool", 0, 0), "odr": ("bool", 0, 0), "scr": ("bool", 0, 0), "scr_before_odr": ("bool", 0, 0),
            "odr_directions": ("bool", 0, 0), "offset_hidden": ("int", 1, 1 << 16),
            "offset_weight": ("float", 0, None), "offset_warmup": ("float", 0, 1),
            "offset_cos_eps": ("float", 0, None, "lo-open"), "kmeans_k": ("int", 1, 1 << 16),
            "kmeans_iters": ("int", 1, 1000), "scr_radius": ("opt-float", 0, None, "lo-open"),
            "scr_min_size": ("int", 1, None), "match_cell": ("opt-float", 0, None, "lo-open"),
            "scale_ref_points": ("int", 0, None), "ema_ref_steps": ("int", 0, None), "ema_floor": ("float", 0, 1),
            "match_radius": ("opt-float", 0, None), "match_k": ("int", 1, 64), "same_view": ("bool", 0, 0),
        })  # fmt: skip
        if not isinstance(self.prior, str) or not self.prior:
            raise ValueError(f"SSLConfig: prior must be indoor, outdoor, lognormal:MU,SIGMA, weibull:SCALE,SHAPE or a "
                             f"prior.json path; got {self.prior!r}.")  # fmt: skip


# Ablations of METHOD.md (overrides of SSLConfig).
VARIANTS: dict[str, dict] = {
    "pointins": {},
    "semantic-only": {"offset": False},
    "offset": {"odr": False, "scr": False},
    "offset+odr": {"scr": False},
    "offset+scr": {"odr": False},
    "scr-before-odr": {"scr_before_odr": True},
    "odr-student": {"odr_side": "student"},
    # controls that use labels (the ceiling of what instance-aware pretraining can add at a given budget)
    "oracle-offset": {"oracle": "offset", "odr": False, "scr": False},
    "oracle-scr": {"oracle": "scr", "odr": False},
}
ORACLE_VARIANTS = ("oracle-offset", "oracle-scr")


class Student(nn.Module):
    """Backbone + heads; ``forward(batch)`` -> (encoder output, prototype scores, offsets in the view frame)."""

    def __init__(self, backbone: PointTransformerV3, cfg: SSLConfig):
        super().__init__()
        c = backbone.config.upcast_channels
        self.backbone = backbone
        self.semantic = SemanticHead(c, cfg.prototypes, cfg.head_hidden, cfg.head_dim)
        self.offset = OffsetHead(c, cfg.offset_hidden) if cfg.offset else None

    def forward(self, batch: dict, levels=None):
        with phase("encoder"):
            out = self.backbone(batch, levels=levels, return_full=False)
        with phase("heads"):
            scores = self.semantic(out.feat)
            off = self.offset(out.feat) if self.offset is not None else None
        return out, scores, off


@dataclass
class StepOutput:
    loss: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)
    details: dict | None = None


def _cloud_of(offsets: torch.Tensor, n: int) -> torch.Tensor:
    return _batch_of(offsets, n)


def _original_positions(out, transform, shift, cloud) -> torch.Tensor:
    """Original-frame positions of the encoder's up-cast points: the carried original coordinates pooled as the
    points are (Sonata's ``origin_coord``), exact whatever non-linear augmentation moved the points (elastic
    distortion, jitter); the recorded linear map's inverse only for batches that carry none."""
    if out.origin is not None:
        return out.origin.float()
    return points_to_original(out.coord.float(), transform, shift, cloud)


class PointINS(nn.Module):
    """Student + EMA teacher. :meth:`step_losses` computes the loss of one batch; :meth:`update_teacher`
    applies the EMA after the optimiser step."""

    def __init__(self, backbone: PointTransformerV3, cfg: SSLConfig | None = None):
        super().__init__()
        self.cfg = cfg or SSLConfig()
        self.student = Student(backbone, self.cfg)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        self.prior = get_prior(self.cfg.prior)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # always: no drop path, deterministic curves
        return self

    # --- schedules -------------------------------------------------------------------------------

    total_steps: int | None = None  # the run's length (train.py sets it): the EMA rule needs it

    def ema_start(self) -> float:
        """The teacher momentum at the start of the run: ``ema[0]``, or the EMA rule's value (``ema_ref_steps``)."""
        c = self.cfg
        if c.ema_ref_steps <= 0 or not self.total_steps:
            return c.ema[0]
        start = 1.0 - (1.0 - c.ema[0]) * c.ema_ref_steps / self.total_steps
        return min(c.ema[0], max(c.ema_floor, start))

    def scr_sizes(self, offsets: torch.Tensor):
        """Per view (cloud of CSR ``offsets``): (K, minimum pseudo-instance size) by the scale rule, or the
        constants (``scale_ref_points`` = 0)."""
        c = self.cfg
        if c.scale_ref_points <= 0:
            return c.kmeans_k, c.scr_min_size
        n = offsets.diff().double()
        k = torch.clamp(torch.round(c.kmeans_k * n / c.scale_ref_points), 2, c.kmeans_k).long()
        m = torch.clamp(torch.round(c.scr_min_size * n / c.scale_ref_points), min=2).long()
        return k, m

    def schedule(self, progress: float) -> dict[str, float]:
        c = self.cfg
        size = linear_warmup(c.mask_size[0], c.mask_size[1], progress, c.mask_warmup)
        ratio = linear_warmup(c.mask_ratio[0], c.mask_ratio[1], progress, c.mask_warmup)
        return {
            "teacher_temp": linear_warmup(c.teacher_temp[0], c.teacher_temp[1], progress, c.teacher_temp_warmup),
            "momentum": cosine(self.ema_start(), c.ema[1], progress),
            "mask_size": size,
            "mask_ratio": ratio,
            "offset_on": float(c.offset and progress >= c.offset_warmup),
        }

    @torch.no_grad()
    def update_teacher(self, momentum: float, student: nn.Module | None = None) -> None:
        from pointins.ssl.teacher import ema_tensors, ema_update

        src = student if student is not None else self.student
        key = (id(src), id(self.teacher))  # parameter objects live as long as the modules (loads copy into them)
        cached = self.__dict__.get("_ema_lists")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_ema_lists"] = (key, ema_tensors(self.teacher, src))
        ema_update(self.teacher, src, momentum, tensors=cached[1])

    # --- one step --------------------------------------------------------------------------------

    def _student_batch(self, g: dict, loc: dict | None, mask_size: float, mask_ratio: float, gen) -> dict:
        """Visible points of the masked global views + the local views, as one batch."""
        keep = ~block_mask(g["coord"], g["offsets"], size=mask_size, ratio=mask_ratio, generator=gen)
        cloud = _cloud_of(g["offsets"], g["coord"].shape[0])
        nclouds = g["offsets"].numel() - 1
        vis = torch.bincount(cloud[keep], minlength=nclouds)
        if bool((vis == 0).any()):  # a fully masked cloud: show it whole
            keep |= (vis == 0)[cloud]
        keys = tuple(k for k in ("coord", "feat", "grid_coord", "origin", "instance", "centre") if k in g)
        parts = [{k: g[k][keep] for k in keys}]
        counts = [torch.bincount(cloud[keep], minlength=nclouds)]
        per_cloud = [{"transform": g["transform"], "shift": g["shift"], "sample": g["cloud_sample"],
                      "view": g["cloud_view"]}]  # fmt: skip
        if loc is not None:
            lk = torch.ones(loc["coord"].shape[0], dtype=torch.bool, device=loc["coord"].device)
            if self.cfg.mask_local:
                lk = ~block_mask(loc["coord"], loc["offsets"], size=mask_size, ratio=mask_ratio, generator=gen)
                lc = _cloud_of(loc["offsets"], loc["coord"].shape[0])
                lv = torch.bincount(lc[lk], minlength=loc["offsets"].numel() - 1)
                lk |= (lv == 0)[lc]
            parts.append({k: loc[k][lk] for k in keys})
            lc = _cloud_of(loc["offsets"], lk.numel())
            counts.append(torch.bincount(lc[lk], minlength=loc["offsets"].numel() - 1))
            per_cloud.append({"transform": loc["transform"], "shift": loc["shift"], "sample": loc["cloud_sample"],
                              "view": -1 - loc["cloud_view"]})  # fmt: skip
        out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        cnt = torch.cat(counts)
        out["offsets"] = torch.cat([cnt.new_zeros(1), cnt.cumsum(0)])
        for k in per_cloud[0]:
            out[k] = torch.cat([p[k] for p in per_cloud])
        out["visible"] = keep
        return out

    def _overlapped(self, g, loc, sched, generator, run, device_type: str, autocast: bool):
        """Teacher forward on the teacher thread, masking + student forward here, both single-threaded (OpenMP's
        thread count is per thread; MKL follows it); this thread's count is restored after. The teacher draws no
        random numbers (eval mode), so the global RNG sees the student's draws in the same order as without
        overlap; results differ from the sequential step only in float summation order (fewer threads)."""

        def teacher():
            _set_omp(1)
            _timing.thread_root("teacher thread", cpu=False)
            with torch.no_grad(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
                with phase("teacher"):
                    return self.teacher(g)

        fut = _teacher_pool().submit(teacher)
        n = torch.get_num_threads()
        _set_omp(1)
        try:
            with phase("masking"):
                sb = self._student_batch(g, loc, sched["mask_size"], sched["mask_ratio"], generator)
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast), phase("student"):
                s_res = run(sb)
        finally:
            _set_omp(n)
        with phase("wait for teacher"):
            t_res = fut.result()
        return t_res, sb, s_res

    def step_losses(
        self,
        batch: dict,
        progress: float,
        *,
        step: int = 0,
        student: nn.Module | None = None,
        generator: torch.Generator | None = None,
        autocast: bool = False,
        details: bool = False,
        diagnose: bool = False,
        overlap: bool = False,
    ) -> StepOutput:
        """Loss of one collated multi-view batch at training ``progress`` in [0, 1].

        ``student``: the module to run (e.g. its DistributedDataParallel wrapper; default ``self.student``).
        ``generator`` draws the masks. ``details=True`` also returns the teacher's SCR results (for the
        visualisation) and the matches. ``diagnose=True`` adds the label diagnostics of
        :mod:`pointins.ssl.diagnostics` to the stats (``diag_*``) when the batch has instance labels; labels are
        never read for a loss except by the oracle controls (``cfg.oracle``). ``overlap=True`` (CPU) runs the
        teacher's forward on a second thread while this one masks and runs the student, each with one OpenMP
        thread: the small ops of a forward scale poorly across threads, two independent forwards do not.
        """
        c = self.cfg
        sched = self.schedule(progress)
        run = student if student is not None else self.student
        g, loc = batch["global"], batch.get("local")
        dev = g["coord"].device
        num_samples = int(batch["num_samples"])
        amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast)

        if overlap:  # teacher and student side by side, one OpenMP thread each (see _overlapped)
            (t_out, t_scores, t_off), sb, (s_out, s_scores, s_off) = self._overlapped(
                g, loc, sched, generator, run, dev.type, autocast
            )
        else:
            # teacher on the full global views
            with torch.no_grad(), amp, phase("teacher"):
                t_out, t_scores, t_off = self.teacher(g)
            # student on visible global points + local views
            with phase("masking"):
                sb = self._student_batch(g, loc, sched["mask_size"], sched["mask_ratio"], generator)
            with amp, phase("student"):
                s_out, s_scores, s_off = run(sb)
        t_cloud = _cloud_of(t_out.offsets, t_out.coord.shape[0])
        t_xyz = _original_positions(t_out, g["transform"], g["shift"], t_cloud)
        s_cloud = _cloud_of(s_out.offsets, s_out.coord.shape[0])
        s_xyz = _original_positions(s_out, sb["transform"], sb["shift"], s_cloud)

        bc = self.student.backbone.config  # its grid_size must be the views' grid size
        cell_u = bc.grid_size * 2**bc.upcast_stage
        with phase("matching"):
            m = match_views(
                s_xyz, sb["sample"][s_cloud], sb["view"][s_cloud], t_xyz, g["cloud_sample"][t_cloud],
                g["cloud_view"][t_cloud], c.match_cell or cell_u, same_view=c.same_view,
                radius=c.match_radius or None, k=c.match_k,
            )  # fmt: skip

        s_view = sb["view"][s_cloud]
        with phase("semantic loss"):
            l_sem, sem_stats = semantic_terms(
                c.semantic_loss, s_scores, t_scores, m.student, m.teacher, m.sample, s_view[m.student],
                g["cloud_view"][t_cloud][m.teacher], s_cloud[m.student], teacher_temp=sched["teacher_temp"],
                student_temp=c.student_temp, sinkhorn_iters=c.sinkhorn_iters, zipf_alpha=c.zipf_alpha,
                num_samples=num_samples,
            )  # fmt: skip
        stats = {"pairs": float(len(m)), "student_points": float(sb["coord"].shape[0]),
                 "student_upcast_points": float(s_out.coord.shape[0]), **sem_stats}  # fmt: skip
        stats.update({k: v for k, v in sched.items() if k != "offset_on"})

        labelled = "instance" in g and "centre" in g
        truth = None
        if c.oracle != "none" and not labelled:
            raise ValueError(f"PointINS: the oracle-{c.oracle} control needs instance labels in the data (the views' "
                             "'instance' and 'centre'); use data with instances or a non-oracle variant.")  # fmt: skip
        if labelled and (diagnose or c.oracle != "none"):
            truth = self._truth(g, t_out, t_xyz, sb, s_out, s_xyz)
        l_off = torch.zeros((), device=dev)
        info = None
        with phase("offset branch"):
            l_off, info, extra = self._offset_branch(g, t_out, t_off, t_xyz, t_cloud, s_out, s_off, s_xyz, s_cloud,
                                                     sb, m, sched, step, cell_u, num_samples, stats, l_off,
                                                     truth)  # fmt: skip
        w = c.offset_weight * sched["offset_on"]
        loss = l_sem + w * l_off
        stats.update({"loss_sem": float(l_sem.detach()), "loss_off": float(l_off.detach()) + 0.0})
        if diagnose and truth is not None:
            with phase("diagnostics"):
                stats.update(self._diagnostics(truth, extra, info, t_cloud, l_sem, w * l_off, s_out))
        det = None
        if details:
            det = {"teacher": t_out, "t_xyz": t_xyz, "s_xyz": s_xyz, "scr": info, "matches": m, "student_batch": sb}
        return StepOutput(loss, stats, det)

    def _offset_branch(self, g, t_out, t_off, t_xyz, t_cloud, s_out, s_off, s_xyz, s_cloud, sb, m, sched, step,
                       cell_u, num_samples, stats, l_off, truth=None):  # fmt: skip
        """The offset loss (teacher targets through ODR / SCR, matched student predictions); fills ``stats``.
        Returns (loss, SCR result, intermediates for the diagnostics)."""
        c = self.cfg
        info = None
        extra: dict = {}
        if s_off is None:
            return l_off, info, extra
        so = vectors_to_original(s_off.float(), sb["transform"], s_cloud)
        extra.update(so=so.detach(), matches=m)
        if sched["offset_on"]:
            to = vectors_to_original(t_off.float(), g["transform"], t_cloud)
            thing = self._thing_points(g, t_out)
            if c.oracle != "none":  # label-using controls: targets from (or SCR on) the true centre offsets
                true_t = truth["t_true"]
                known = torch.isfinite(true_t).all(1)
                if c.oracle == "offset":
                    target = torch.where(known[:, None], true_t, torch.zeros_like(true_t))
                    keep = known[m.teacher]  # pairs at points of no instance carry no offset loss
                else:
                    target, info = self._targets(t_out.feat, t_xyz, torch.where(known[:, None], true_t, 0.0),
                                                 t_out.offsets, step, cell_u)  # fmt: skip
                    keep = torch.ones_like(m.teacher, dtype=torch.bool)
                ms, mt, msample = m.student[keep], m.teacher[keep], m.sample[keep]
            elif thing is None:
                target, info = self._targets(t_out.feat, t_xyz, to, t_out.offsets, step, cell_u)
                ms, mt, msample = m.student, m.teacher, m.sample
            else:  # ODR and SCR on the thing points only; pairs at stuff points carry no offset loss
                sub = self._sub_offsets(thing, t_out.offsets)
                target = torch.zeros_like(to)
                target[thing], info = self._targets(t_out.feat[thing], t_xyz[thing], to[thing], sub, step, cell_u)
                keep = thing[m.teacher]
                ms, mt, msample = m.student[keep], m.teacher[keep], m.sample[keep]
                stats["stuff_fraction"] = float(1.0 - thing.float().mean()) if thing.numel() else 0.0
            centre = t_xyz + target
            s_target = centre[mt] - s_xyz[ms]
            pred = torch.index_select(so, 0, ms)  # index_select: its backward is a fast index_add, not index_put
            if c.odr and c.odr_side == "student":
                mag = odr(so, s_out.offsets, self.prior, directions=False).norm(dim=1)[ms]
                pred = pred / pred.norm(dim=1, keepdim=True).clamp_min(1e-6) * mag[:, None]
            loss_pp = offset_loss(pred, s_target, c.offset_cos_eps)
            l_off = per_sample_mean(loss_pp, msample, num_samples) + so.sum() * 0.0
            stats["pseudo_instances"] = float(info.num_instances) if info is not None else 0.0
            stats["target_norm"] = float(target.norm(dim=1).mean()) if target.numel() else 0.0
            extra.update(to=to, target=target, t_offsets=t_out.offsets)
        else:
            l_off = so.sum() * 0.0  # keeps the head in the graph (DDP)
        stats["offset_norm"] = float(so.detach().norm(dim=1).mean()) if so.numel() else 0.0
        return l_off, info, extra

    @torch.no_grad()
    def _truth(self, g, t_out, t_xyz, sb, s_out, s_xyz) -> dict:
        """True centre offsets at the teacher's and the student's up-cast points (NaN where no instance), from
        the views' labels (diagnostics and oracle controls only)."""
        from pointins.ssl.diagnostics import true_offsets, upcast_instances

        t_inst, t_cen = upcast_instances(g["instance"], g["centre"], t_out.point_to_upcast, t_out.coord.shape[0])
        out = {"t_inst": t_inst, "t_true": true_offsets(t_cen, t_xyz)}
        if "instance" in sb and "centre" in sb:
            s_inst, s_cen = upcast_instances(sb["instance"], sb["centre"], s_out.point_to_upcast, s_out.coord.shape[0])
            out.update(s_inst=s_inst, s_true=true_offsets(s_cen, s_xyz))
        return out

    def _diagnostics(self, truth, extra, info, t_cloud, l_sem, l_off_w, s_out) -> dict[str, float]:
        """The ``diag_*`` stats (:mod:`pointins.ssl.diagnostics`)."""
        from pointins.ssl.diagnostics import agreement, scr_recall

        out: dict[str, float] = {}
        if "to" in extra:
            for name, v in (("raw", extra["to"]), ("teacher", extra["target"])):
                a = agreement(v, truth["t_true"])
                out[f"diag_{name}_cos"], out[f"diag_{name}_l1"] = a["cos"], a["l1"]
        if "so" in extra and "s_true" in truth:
            ms = extra["matches"].student
            a = agreement(extra["so"][ms], truth["s_true"][ms])
            out["diag_student_cos"], out["diag_student_l1"] = a["cos"], a["l1"]
        if info is not None:
            r = scr_recall(info.instances, truth["t_inst"], t_cloud, self.cfg.scr_min_size)
            k, _ = self.scr_sizes(extra["t_offsets"]) if "t_offsets" in extra else (self.cfg.kmeans_k, None)
            r["k"] = float(k.double().mean()) if isinstance(k, torch.Tensor) else float(k)
            out.update(diag_scr_recall=r["recall"], diag_scr_kept=r["kept"], diag_scr_per_view=r["pseudo_per_view"],
                       diag_true_per_view=r["true_per_view"], diag_scr_k=r["k"])  # fmt: skip
        feats = s_out.feat
        if feats is not None and feats.requires_grad:
            for name, term in (("sem", l_sem), ("off", l_off_w)):
                if isinstance(term, torch.Tensor) and term.requires_grad:
                    (gr,) = torch.autograd.grad(term, feats, retain_graph=True, allow_unused=True)
                    out[f"diag_grad_{name}"] = float(gr.norm()) if gr is not None else 0.0
        return out

    @torch.no_grad()
    def _thing_points(self, g: dict, t_out) -> torch.Tensor | None:
        """Up-cast teacher points whose input points are mostly not of a ``stuff_classes`` class (None when the
        option is off or the batch has no ``segment`` labels: pretraining stays label-free by default)."""
        stuff = self.cfg.stuff_classes
        if not stuff or "segment" not in g:
            return None
        seg = g["segment"].to(t_out.point_to_upcast.device)
        is_stuff = torch.isin(seg, torch.tensor(list(stuff), device=seg.device)).double()
        n_u = t_out.coord.shape[0]
        tot = torch.zeros(n_u, dtype=torch.float64, device=seg.device).index_add(0, t_out.point_to_upcast, is_stuff)
        cnt = torch.bincount(t_out.point_to_upcast, minlength=n_u).double().clamp_min(1)
        return (tot / cnt) <= 0.5

    @staticmethod
    def _sub_offsets(keep: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        cloud = _cloud_of(offsets, keep.numel())
        cnt = torch.bincount(cloud[keep], minlength=offsets.numel() - 1)
        return torch.cat([cnt.new_zeros(1), cnt.cumsum(0)])

    @torch.no_grad()
    def _targets(self, feat, xyz, off, offsets, step: int, cell_u: float):
        """Teacher offset targets (original frame) in the configured order; returns (targets, SCR result)."""
        c = self.cfg
        info = None
        t = off

        k, min_size = self.scr_sizes(offsets)

        def run_scr(o):
            with phase("SCR"):
                return scr(
                    feat, xyz, o, offsets, k=k, iters=c.kmeans_iters,
                    radius=c.scr_radius or 2.0 * cell_u, min_size=min_size, seed=step,
                )  # fmt: skip

        use_odr = c.odr and c.odr_side == "teacher"
        if c.scr and c.scr_before_odr:
            info = run_scr(t)
            t = info.target
        if use_odr:
            with phase("ODR"):
                t = odr(t, offsets, self.prior, directions=c.odr_directions)
        if c.scr and not c.scr_before_odr:
            info = run_scr(t)
            t = info.target
        return t, info
