"""``python -m pointins.evaluate``: what a pretrained encoder is worth (METHOD.md section 7).

    python -m pointins.evaluate --checkpoint runs/cpu-demo --task semseg        # linear probe mIoU
    python -m pointins.evaluate --checkpoint runs/cpu-demo --task insseg        # instance AP / AP50 / AP25
    python -m pointins.evaluate --checkpoint runs/outdoor --data data/outdoor --task panoptic   # PQ
    python -m pointins.evaluate --checkpoint runs/cpu-demo --task unsupervised  # class-agnostic AP, no labels
    python -m pointins.evaluate --checkpoint scratch --data data/indoor --task semseg          # random encoder

``--checkpoint``: a run folder, its ``backbone.pt`` or a ``ckpt_*.pt``; ``scratch`` is a random encoder
(``--backbone``, ``--grid-size``). ``--data``: any labelled dataset the readers accept, with train/val splits
(else the first 80% of the scenes train the probe); default: the synthetic scenes the checkpoint was
pretrained on. ``--probe``: ``linear`` (frozen encoder, PointGroup heads on its features: the protocol),
``decoder`` (frozen, a trainable per-point MLP trunk under the same heads) or ``finetune`` (everything trains).

The protocol (Sonata's ``insseg-sonata-v1m1-0a-scannet-pg-lin.py`` with Pointcept's ``PG-v1m2``; see
:mod:`pointins.eval.probe` and :mod:`pointins.eval.instance`):

* **Classes** (:mod:`pointins.eval.benchmarks`): ``meta.json``; else ``--dataset`` or the recognised layout
  (ScanNet20: 18 instance classes, walls and floors excluded; ScanNet200; S3DIS; SemanticKITTI; nuScenes); else
  inferred from the labels with a warning. Points of non-instance classes get no instance (no offset target,
  never clustered), as ``InstanceParser(segment_ignore_index=(-1, 0, 1))``.
* **Probe**: a Linear semantic head and PG's offset head (Linear, BatchNorm1d, ReLU, Linear); CE + Lovasz,
  L1 + cosine on offsets; AdamW 0.002 / weight decay 0.05 (semseg 0.02), OneCycleLR. ``--augment``
  re-augments the training scenes every epoch with the config's transforms.
* **Clustering**: shifted voxels linked within 1.5 voxels inside their predicted class, clusters of at least
  ``--cluster-min-points`` voxels, proposals over ``--cluster-propose-points`` voxels (50 / 200 at the 2 cm
  grid, area-scaled at others), score = mean class probability; AP by the ScanNet evaluator (proposals under
  100 points dropped).
* **PQ**: SemanticKITTI's ``PanopticEval`` conventions, means over all classes with absent ones scoring 0
  (``--pq-average present`` for the occurring classes only), ``min_points`` by dataset (50; nuScenes 15).

What differs from Sonata's runs, for budget: 20 probe epochs by default on random voxel minibatches (Sonata:
800 epochs of 24-scene batches, Mix3D with ``mix_prob`` 0.8, 80% sphere crops); no augmentation unless
``--augment``; features are standardised before the heads (an affine map; the function class is the same).

Writes to ``--out`` (default ``<run>/eval-<task>``): ``results.json`` (metrics, per-class tables, settings),
``results.md``, ``probe_log.jsonl`` (losses) and ``renders/*.png`` (ground truth | prediction, top view).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pointins.eval import instance as inst
from pointins.eval.benchmarks import BENCHMARKS, ClassSet, class_set
from pointins.eval.metrics import class_agnostic_ap, instance_ap, miou, panoptic_quality
from pointins.eval.probe import EvalError, ProbeHeads, extract, load_encoder, predict, prepare, train_probe

__all__ = ["TASKS", "Settings", "cluster_sizes", "evaluate", "main", "offset_agreement"]

TASKS = ("semseg", "insseg", "panoptic", "unsupervised")


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def _open(root: Path, split: str | None):
    from pointins.data import DataError, PointCloudDataset

    try:
        return PointCloudDataset(root, split=split, on_error="skip") if split else None
    except DataError:
        return None


def _datasets(root: Path, train_split: str, val_split: str):
    from pointins.data import PointCloudDataset

    if not root.exists():
        raise EvalError(f"pointins.evaluate: --data {root} does not exist.")
    train, val = _open(root, train_split), _open(root, val_split)
    if train is not None and val is not None:
        return train, val, f"splits {train_split}/{val_split}"
    every = PointCloudDataset(root, on_error="skip")
    if len(every) < 2:
        raise EvalError(f"pointins.evaluate: {root} has {len(every)} scene(s); the probe needs at least 2 "
                        "(train + val).")  # fmt: skip
    cut = max(1, round(0.8 * len(every)))
    cut = min(cut, len(every) - 1)
    idx = list(range(len(every)))
    return (
        _Subset(every, idx[:cut]),
        _Subset(every, idx[cut:]),
        f"no {train_split}/{val_split} splits: first {cut} scenes train",
    )


class _Subset:
    def __init__(self, ds, idx):
        self.ds, self.idx, self.meta = ds, idx, getattr(ds, "meta", None)

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        return self.ds[self.idx[i]]


# ------------------------------------------------------------------------------------------------
# renders and tables
# ------------------------------------------------------------------------------------------------


def _render_pair(path: Path, coord, gt_colors, pred_colors, titles=None) -> None:
    from pointins.data.show import render, write_png

    fit = 0.98 if len(coord) and np.ptp(coord[:, 0]) > 40 else 1.0  # LiDAR: frame the bulk of the sweep
    panels = [render(coord, c, "top", (420, 420), fit=fit) for c in (gt_colors, pred_colors)]
    gap = np.full((420, 6, 3), 255, np.uint8)
    write_png(path, np.concatenate([panels[0], gap, panels[1]], 1))


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# the evaluation
# ------------------------------------------------------------------------------------------------


def offset_agreement(pred, target) -> dict:
    """How well predicted offsets point at the ground-truth instance centres, over the voxels that have one
    (``target`` finite; lists of per-scene (V, 3) arrays or single arrays): ``cosine`` = mean cosine similarity
    (0 for random directions, 1 when every offset points at its centre), ``l1_ratio`` = mean L1 error divided by
    that of predicting zero offsets (< 1: better than no offset at all), ``points``. A label-using diagnostic of
    what the self-supervised offset branch learned; the unsupervised AP itself uses no labels."""

    def stack(x):
        parts = [x] if isinstance(x, np.ndarray) and x.ndim == 2 else list(x)
        return np.concatenate([np.asarray(a, np.float64).reshape(-1, 3) for a in parts]) if parts else np.zeros((0, 3))

    p, t = stack(pred), stack(target)
    if p.shape != t.shape:
        raise ValueError(f"offset_agreement: {p.shape[0]} predicted offsets but {t.shape[0]} targets.")
    keep = np.isfinite(t).all(1)
    p, t = p[keep], t[keep]
    if len(t) == 0:
        return {"cosine": float("nan"), "l1_ratio": float("nan"), "points": 0}
    den = np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1)
    cos = np.where(den > 0, (p * t).sum(1) / np.maximum(den, 1e-12), 0.0)
    zero = np.abs(t).sum(1).mean()
    ratio = float(np.abs(p - t).sum(1).mean() / zero) if zero > 0 else float("nan")
    return {"cosine": float(cos.mean()), "l1_ratio": ratio, "points": len(t)}


def _device(pref: str) -> torch.device:
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise EvalError("pointins.evaluate: --device cuda but torch sees no GPU; use --device cpu.")
    return torch.device(pref)


@dataclass
class Settings:
    """Everything one evaluation is run with (the keyword arguments of :func:`evaluate`)."""

    task: str = "semseg"
    probe: str = "linear"
    epochs: int | None = None  # None: 20 (frozen probes), 5 (fine-tuning)
    lr: float = 2e-3  # Sonata's probes: AdamW 0.002, OneCycleLR
    weight_decay: float | None = None  # None: 0.02 semseg, 0.05 instances / panoptic (Sonata's configs)
    batch_points: int = 32768
    lovasz: bool = True  # CE + Lovasz, as Sonata's probe configs
    augment: bool = False  # re-augment + re-extract the training scenes every epoch (Sonata: on, 800 epochs)
    dataset: str = "auto"
    pq_average: str = "all"
    train_split: str = "train"
    val_split: str = "val"
    max_train_scenes: int | None = None
    max_val_scenes: int | None = None
    radius: float | None = None
    min_points: int | None = None
    cluster_min_points: int | None = None  # None: PG's 50 voxels at the protocol's 2 cm grid, area-scaled
    cluster_propose_points: int | None = None  # None: PG's 200 voxels at 2 cm, area-scaled
    kmeans_k: int = 20
    render: int = 4
    backbone: str = "tiny"
    grid_size: float | None = None
    device: str = "auto"
    seed: int = 0
    progress: bool = True

    def check(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"pointins.evaluate: task must be one of {TASKS}, got {self.task!r}.")
        if self.probe not in ("linear", "decoder", "finetune"):
            raise ValueError(f"pointins.evaluate: probe must be linear, decoder or finetune, got {self.probe!r}.")
        if self.pq_average not in ("all", "present"):
            raise ValueError(f"pointins.evaluate: pq_average must be 'all' or 'present', got {self.pq_average!r}.")
        if self.augment and self.probe == "finetune":
            raise ValueError("pointins.evaluate: --augment applies to the frozen probes (linear, decoder).")
        for k in ("cluster_min_points", "cluster_propose_points", "batch_points"):
            v = getattr(self, k)
            if v is None and k != "batch_points":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if k == "batch_points" else 0):
                raise ValueError(f"pointins.evaluate: {k} must be a non-negative integer, got {v!r}.")


@dataclass
class _Run:
    """What the steps of one evaluation share."""

    st: Settings
    enc: object
    root: Path
    out: Path
    grid: float
    outdoor: bool
    dev: torch.device
    split_note: str = ""
    classes: ClassSet | None = None
    train: list = field(default_factory=list)
    val: list = field(default_factory=list)
    heads: ProbeHeads | None = None
    result: dict = field(default_factory=dict)


# ---- step 1: the encoder and the data ------------------------------------------------------------


def _open_run(checkpoint, data, st: Settings) -> tuple[_Run, object, object]:
    """Load the encoder, find the dataset and its splits, pick the output folder."""
    from pointins.train import feature_keys

    scratch = str(checkpoint) == "scratch"
    enc = None if scratch else load_encoder(checkpoint)
    if data is None:
        if scratch or not enc.train_config:
            raise EvalError("pointins.evaluate: pass --data (a labelled dataset).")
        from pointins.config import from_dict
        from pointins.train import synthetic_root

        cfg = from_dict(enc.train_config)
        data = cfg.data or synthetic_root(cfg)
    root = Path(data).expanduser()
    train_ds, val_ds, split_note = _datasets(root, st.train_split, st.val_split)
    first = val_ds[0]
    keys = feature_keys(first)
    if scratch:
        enc = load_encoder("scratch", feat_keys=keys, backbone=st.backbone, grid_size=st.grid_size or 0.04,
                           seed=st.seed)  # fmt: skip
    missing = [k for k in enc.feat_keys if k not in first]
    if missing:
        raise EvalError(f"pointins.evaluate: the encoder takes {list(enc.feat_keys)} but {root} has no {missing}; "
                        "evaluate on data with the inputs it was pretrained on.")  # fmt: skip
    base = Path(checkpoint) if (not scratch and Path(checkpoint).is_dir()) else Path("runs") / "eval"
    out = base / f"eval-{st.task}"  # evaluate(out=...) replaces it
    outdoor = "strength" in enc.feat_keys and "color" not in enc.feat_keys
    run = _Run(st, enc, root, Path(out), float(st.grid_size or enc.grid_size), outdoor, _device(st.device), split_note)
    return run, train_ds, val_ds


def _scene_refs(ds) -> list:
    inner = getattr(ds, "ds", ds)
    return list(getattr(inner, "scenes", []))


def _read_scenes(ds, limit, desc: str, progress: bool) -> list[dict]:
    from pointins._progress import progress_bar

    n = len(ds) if limit is None else min(limit, len(ds))
    bar = progress_bar(total=n, desc=desc, enabled=progress)
    res = []
    for i in range(n):
        sc = ds[i]
        sc.setdefault("name", f"scene{i}")
        res.append(sc)
        bar.update(1)
    bar.close()
    return res


def _load_scenes(run: _Run, train_ds, val_ds) -> None:
    """Read the scenes, decide the class set (meta.json / benchmark / inference), grid-sample them."""
    st = run.st
    need_train = st.task != "unsupervised"
    raw_train = _read_scenes(train_ds, st.max_train_scenes, "train scenes", st.progress) if need_train else []
    raw_val = _read_scenes(val_ds, st.max_val_scenes, "val scenes", st.progress)
    labels = [(np.asarray(s.get("segment", np.full(len(s["coord"]), -1)), np.int64).reshape(-1),
               np.asarray(s.get("instance", np.full(len(s["coord"]), -1)), np.int64).reshape(-1))
              for s in raw_train + raw_val]  # fmt: skip
    meta = getattr(val_ds, "meta", None)
    seg_key = getattr(getattr(val_ds, "ds", val_ds), "read_kwargs", {}).get("segment_key")
    cs = class_set(meta, run.root, _scene_refs(val_ds), labels, st.dataset, seg_key)
    run.classes = cs
    ncls, ign = cs.num_classes, cs.ignore_index
    for s, (seg, _) in zip(raw_train + raw_val, labels, strict=True):
        bad = (seg != ign) & ((seg < 0) | (seg >= ncls))
        if bad.any():
            raise EvalError(f"pointins.evaluate: scene {s['name']} has labels outside [0, {ncls}) (e.g. "
                            f"{int(seg[bad][0])}); check the dataset's classes ({cs.source}).")  # fmt: skip
        s["segment"] = np.where(seg == ign, -1, seg)
    if st.task in ("insseg", "panoptic", "unsupervised") and not cs.thing_classes:
        raise EvalError(f"pointins.evaluate: task {st.task} needs thing classes (instances) but {cs.source} has "
                        "none.")  # fmt: skip
    things = cs.thing_classes if st.task != "semseg" else None

    def prep(scenes, keep):
        return [prepare(s, run.grid, run.enc.feat_keys, seed=st.seed, name=s["name"], thing_classes=things,
                        keep_source=keep) for s in scenes]  # fmt: skip

    run.train = prep(raw_train, st.augment)
    run.val = prep(raw_val, False)


# ---- step 2: features and the probe ------------------------------------------------------------


def _fit_probe(run: _Run, log) -> None:
    """Extract frozen features and train the probe (or fine-tune); the unsupervised task only extracts."""
    st = run.st
    if st.task == "unsupervised":
        extract(run.enc, run.val, run.dev, st.progress, ssl_offsets=True)
        return
    tune = st.probe == "finetune"
    if not tune:
        extract(run.enc, run.train + run.val, run.dev, st.progress)
    c = run.enc.backbone.config.full_channels
    run.heads = ProbeHeads(c, run.classes.num_classes, offsets=st.task != "semseg",
                           kind="decoder" if st.probe == "decoder" else "linear")  # fmt: skip
    ep = st.epochs if st.epochs is not None else (5 if tune else 20)
    wd = st.weight_decay if st.weight_decay is not None else (0.02 if st.task == "semseg" else 0.05)
    losses = train_probe(run.train, run.heads, epochs=ep, lr=st.lr, weight_decay=wd, batch_points=st.batch_points,
                         lovasz=st.lovasz, encoder=run.enc if (tune or st.augment) else None, finetune=tune,
                         augment_epochs=st.augment, grid_size=run.grid,
                         thing_classes=run.classes.thing_classes if st.task != "semseg" else None,
                         elastic=not run.outdoor, seed=st.seed, device=run.dev, progress=st.progress,
                         log=log)  # fmt: skip
    run.result.update(epochs=ep, lr=st.lr, weight_decay=wd, lovasz=st.lovasz, augment=st.augment,
                      probe_steps=len(losses), probe_loss_first=losses[0], probe_loss_last=losses[-1])  # fmt: skip


# ---- step 3: predictions on the val scenes ---------------------------------------------------------

#: PG-v1m2's cluster_min_points / cluster_propose_points in Sonata's probe configs, and the grid they count at.
PG_CLUSTER_POINTS, PG_GRID = (50, 200), 0.02


def cluster_sizes(grid: float, min_points: int | None = None, propose_points: int | None = None) -> tuple[int, int]:
    """PG's cluster thresholds (voxels) at ``grid``: as given, else Sonata's 50 / 200 at the protocol's 2 cm grid
    scaled by the voxel area ratio (0.02 / grid)^2, so they keep meaning the same surface area (at 4 cm: 12 and
    50). At 2 cm they are exactly the config's."""
    f = (PG_GRID / grid) ** 2
    lo = min_points if min_points is not None else max(1, round(PG_CLUSTER_POINTS[0] * f))
    hi = propose_points if propose_points is not None else max(0, round(PG_CLUSTER_POINTS[1] * f))
    return int(lo), int(hi)


def _predict(run: _Run) -> dict:
    """Per val scene: semantic predictions, instance proposals or panoptic labels."""
    from pointins._progress import progress_bar

    st, things = run.st, run.classes.thing_classes
    tune = st.probe == "finetune"
    preds = {"semantic": [], "scenes": [], "pan_sem": [], "pan_ins": [], "unsup": {}}
    if st.task == "insseg":
        radius = st.radius if st.radius is not None else 1.5 * run.grid  # PG cluster_thresh 1.5 voxels
    elif st.task == "panoptic":
        radius = st.radius if st.radius is not None else 6.0 * run.grid  # 0.3 m at 0.05 m
    elif st.task == "unsupervised":
        up = 2**run.enc.backbone.config.upcast_stage
        radius = st.radius if st.radius is not None else 2.0 * up * run.grid  # SCR's link: 2 up-cast cells
    else:
        radius = None
    preds["radius"] = radius
    preds["cluster"] = cluster_sizes(run.grid, st.cluster_min_points, st.cluster_propose_points)
    bar = progress_bar(total=len(run.val), desc="predict", enabled=st.progress)
    for s in run.val:
        if st.task == "unsupervised":
            # the grouped read-out (inside K-means segments, as SCR) and the paper's (BFS on all shifted points),
            # each also with the true centre offsets (the ceiling perfect offsets reach with that clustering)
            seg = inst.feature_segments(s.feat, k=st.kmeans_k, seed=st.seed)
            true = np.nan_to_num(s.centroid_offset, nan=0.0)  # no instance: no shift
            gt = {"gt_semantic": s.point_segment, "gt_instance": s.point_instance}
            props = inst.agnostic_proposals(s.coord, s.ssl_offsets, s.inverse, radius, group=seg)
            preds["scenes"].append({**gt, "pred": props})
            for name, off, group in (("bfs", s.ssl_offsets, None), ("ceiling", true, seg),
                                     ("bfs_ceiling", true, None)):  # fmt: skip
                p = inst.agnostic_proposals(s.coord, off, s.inverse, radius, group=group)
                preds["unsup"].setdefault(name, []).append({**gt, "pred": p})
        else:
            probs, off = predict(run.heads, s, run.dev, encoder=run.enc if tune else None)
            probs = probs.numpy()
            preds["semantic"].append(probs.argmax(1)[s.inverse])
            if st.task == "insseg":
                props = inst.proposals(s.coord, probs, off.numpy(), s.inverse, things, radius, *preds["cluster"])
                preds["scenes"].append({"gt_semantic": s.point_segment, "gt_instance": s.point_instance,
                                        "pred": props})  # fmt: skip
            elif st.task == "panoptic":
                ps, pi = inst.panoptic_labels(s.coord, probs, off.numpy(), s.inverse, things, radius, min_cluster=1)
                preds["pan_sem"].append(ps)
                preds["pan_ins"].append(pi)
        bar.update(1)
    bar.close()
    return preds


# ---- step 4: scores ------------------------------------------------------------------------------


def _score(run: _Run, preds: dict) -> tuple[list[str], list[list[str]], str]:
    """The metrics of the task into ``run.result``; returns the report table and a one-line summary."""
    st, cs, res = run.st, run.classes, run.result
    names, things, ncls = list(cs.classes), list(cs.thing_classes), cs.num_classes
    gts = [s.point_segment for s in run.val]
    rows: list[list[str]] = []
    if st.task != "unsupervised":
        m, per = miou(preds["semantic"], gts, ncls, -1)
        acc_num = sum(int(((p == g) & (g != -1)).sum()) for p, g in zip(preds["semantic"], gts, strict=True))
        acc_den = sum(int((g != -1).sum()) for g in gts)
        res.update(miou=m, accuracy=acc_num / max(acc_den, 1),
                   per_class_iou=dict(zip(names, map(float, per), strict=True)))  # fmt: skip
    if st.task == "semseg":
        header = ["class", "IoU"]
        rows = [[n, _fmt(v)] for n, v in zip(names, per, strict=True)] + [["**mean**", _fmt(m)]]
        return header, rows, f"mIoU {_fmt(m)}, accuracy {_fmt(res['accuracy'])}"
    if st.task in ("insseg", "unsupervised"):
        scenes = preds["scenes"]
        ap = instance_ap(scenes, things) if st.task == "insseg" else class_agnostic_ap(scenes, things)
        res.update(
            ap=ap["ap"],
            ap50=ap["ap50"],
            ap25=ap["ap25"],
            radius=preds["radius"],
            num_proposals=sum(len(p["pred"]) for p in scenes),
            num_gt_instances=sum(ap["num_gt"].values()),
        )
        if st.task == "insseg":
            res.update(cluster_min_points=preds["cluster"][0], cluster_propose_points=preds["cluster"][1])
        res["per_class_ap"] = {(names[c] if st.task == "insseg" else "instance"): v for c, v in ap["per_class"].items()}
        header = ["class", "AP", "AP50", "AP25"]
        rows = [[k, _fmt(v["ap"]), _fmt(v["ap50"]), _fmt(v["ap25"])] for k, v in res["per_class_ap"].items()]
        rows.append(["**mean**", _fmt(ap["ap"]), _fmt(ap["ap50"]), _fmt(ap["ap25"])])
        summary = f"AP {_fmt(ap['ap'])}, AP50 {_fmt(ap['ap50'])}, AP25 {_fmt(ap['ap25'])}"
        if st.task == "insseg":
            return header, rows, summary + f" (probe mIoU {_fmt(res['miou'])})"
        diag = offset_agreement([s.ssl_offsets for s in run.val], [s.centroid_offset for s in run.val])
        res.update({f"ssl_offset_{k}": v for k, v in diag.items()})
        for name, sc in preds["unsup"].items():
            a = class_agnostic_ap(sc, things)
            res.update({f"{name}_ap": a["ap"], f"{name}_ap50": a["ap50"], f"{name}_ap25": a["ap25"]})
        rows.append(["BFS on all shifted points (no K-means)", _fmt(res["bfs_ap"]), _fmt(res["bfs_ap50"]),
                     _fmt(res["bfs_ap25"])])  # fmt: skip
        rows.append(["ceiling: true offsets, grouped", _fmt(res["ceiling_ap"]), _fmt(res["ceiling_ap50"]),
                     _fmt(res["ceiling_ap25"])])  # fmt: skip
        rows.append(["ceiling: true offsets, BFS", _fmt(res["bfs_ceiling_ap"]), _fmt(res["bfs_ceiling_ap50"]),
                     _fmt(res["bfs_ceiling_ap25"])])  # fmt: skip
        summary += (f" (grouped in {st.kmeans_k} K-means segments; BFS without them: AP {_fmt(res['bfs_ap'])}, AP50 "
                    f"{_fmt(res['bfs_ap50'])}, AP25 {_fmt(res['bfs_ap25'])}; perfect offsets: grouped AP "
                    f"{_fmt(res['ceiling_ap'])}, BFS AP {_fmt(res['bfs_ceiling_ap'])})")  # fmt: skip
        return header, rows, summary + (f"; SSL offsets vs ground-truth centroid offsets: cosine {diag['cosine']:.3f}, "
                                        f"L1 {diag['l1_ratio']:.3f} of the zero offset's")  # fmt: skip
    min_points = st.min_points if st.min_points is not None else cs.min_points
    pq = panoptic_quality(preds["pan_sem"], preds["pan_ins"], gts, [s.point_instance for s in run.val], ncls, things,
                          -1, min_points, average=st.pq_average)  # fmt: skip
    res.update({k: v for k, v in pq.items() if k != "per_class"}, radius=preds["radius"], min_points=min_points,
               pq_average=st.pq_average)  # fmt: skip
    res["per_class_pq"] = {names[c]: v for c, v in pq["per_class"].items()}
    header = ["class", "kind", "PQ", "SQ", "RQ", "IoU"]
    absent = set(pq["absent_classes"])
    rows = [[names[c] + (" (absent)" if c in absent else ""), "thing" if c in things else "stuff", _fmt(v["pq"]),
             _fmt(v["sq"]), _fmt(v["rq"]), _fmt(v["iou"])] for c, v in pq["per_class"].items()]  # fmt: skip
    rows.append(["**mean**", "", _fmt(pq["pq"]), _fmt(pq["sq"]), _fmt(pq["rq"]), _fmt(pq["miou"])])
    summary = (f"PQ {_fmt(pq['pq'])}, SQ {_fmt(pq['sq'])}, RQ {_fmt(pq['rq'])}, PQ-dagger {_fmt(pq['pq_dagger'])}, "
               f"things {_fmt(pq['pq_things'])}, stuff {_fmt(pq['pq_stuff'])}")  # fmt: skip
    if st.pq_average == "all" and pq["absent_classes"]:
        summary += f" ({len(pq['absent_classes'])} classes absent from these scenes count 0)"
    return header, rows, summary


# ---- step 5: renders and the report ----------------------------------------------------------------


def _renders(run: _Run, preds: dict) -> None:
    from pointins.data.show import instance_colors, label_colors

    task = run.st.task
    for k, s in enumerate(run.val[: max(0, run.st.render)]):
        if task == "semseg":
            gt_c, pr_c = label_colors(s.point_segment), label_colors(preds["semantic"][k])
        elif task == "panoptic":
            pi, ps = preds["pan_ins"][k], preds["pan_sem"][k]
            gt_c = np.where((s.point_instance >= 0)[:, None], instance_colors(s.point_instance),
                            label_colors(s.point_segment))  # fmt: skip
            pr_c = np.where((pi >= 0)[:, None], instance_colors(pi), label_colors(ps))
        else:
            lab = np.full(len(s.point_coord), -1, np.int64)
            for j, p in enumerate(sorted(preds["scenes"][k]["pred"], key=lambda p: -p["score"])):
                lab[p["mask"] & (lab < 0)] = j
            gt_c, pr_c = instance_colors(s.point_instance), instance_colors(lab)
        _render_pair(run.out / "renders" / f"{k:03d}_{Path(s.name).name}.png", s.point_coord, gt_c, pr_c)


def _write_report(run: _Run, checkpoint, header, rows, summary) -> None:
    st, res = run.st, run.result
    md = [f"# pointins.evaluate: {st.task}", "", f"- checkpoint: `{checkpoint}` ({run.enc.source})",
          f"- data: `{run.root}` ({run.split_note}; {len(run.train)} train / {len(run.val)} val scenes, grid "
          f"{run.grid} m)", f"- classes: {run.classes.source}; {len(run.classes.thing_classes)} instance classes",
          f"- probe: {res['probe']}" + (f", {res.get('epochs')} epochs" if st.task != "unsupervised" else ""),
          f"- result: **{summary}**", "", _table(header, rows), ""]  # fmt: skip
    (run.out / "results.md").write_text("\n".join(md))
    tmp = run.out / ".results.json.tmp"
    tmp.write_text(json.dumps(res, indent=2, default=float) + "\n")
    tmp.replace(run.out / "results.json")


def evaluate(checkpoint, data=None, task: str = "semseg", *, out=None, **settings) -> dict:
    """Run one evaluation task (see the module docstring); returns the results dict written to results.json.

    Keyword arguments are the fields of :class:`Settings`. The steps: load the encoder and find the data
    (:func:`_open_run`), read the scenes and decide the classes (:func:`_load_scenes`), extract features and
    train the probe (:func:`_fit_probe`), predict on the val scenes (:func:`_predict`), score
    (:func:`_score`), write renders and the report."""
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(Settings)})
    if unknown:
        raise TypeError(f"evaluate() got unexpected keyword arguments {unknown}.")
    st = Settings(task=task, **settings)
    st.check()
    t0 = time.perf_counter()
    torch.manual_seed(st.seed)
    run, train_ds, val_ds = _open_run(checkpoint, data, st)
    if out is not None:
        run.out = Path(out)
    (run.out / "renders").mkdir(parents=True, exist_ok=True)
    _load_scenes(run, train_ds, val_ds)
    cs = run.classes
    run.result.update({
        "task": st.task, "checkpoint": str(checkpoint), "encoder": run.enc.source, "pretrain_step": run.enc.step,
        "data": str(run.root), "split": run.split_note, "train_scenes": len(run.train), "val_scenes": len(run.val),
        "grid_size": run.grid, "probe": st.probe if st.task != "unsupervised" else None, "classes": list(cs.classes),
        "thing_classes": list(cs.thing_classes), "class_set": cs.to_dict(), "device": str(run.dev),
    })  # fmt: skip
    with open(run.out / "probe_log.jsonl", "w") as log_f:
        _fit_probe(run, lambda r: log_f.write(json.dumps(r) + "\n"))
    preds = _predict(run)
    header, rows, summary = _score(run, preds)
    _renders(run, preds)
    run.result["seconds"] = time.perf_counter() - t0
    run.result["summary"] = summary
    _write_report(run, checkpoint, header, rows, summary)
    return {**run.result, "table": _table(header, rows), "out": str(run.out)}


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m pointins.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="run folder, backbone.pt, ckpt_*.pt, or 'scratch'")
    p.add_argument("--data", default=None, help="labelled dataset root (default: the checkpoint's synthetic scenes)")
    p.add_argument("--task", default="semseg", choices=TASKS)
    p.add_argument("--out", default=None, help="output folder (default <run>/eval-<task>)")
    p.add_argument("--dataset", default="auto", choices=["auto", "infer", *sorted(BENCHMARKS)],
                   help="class set: auto (meta.json, else the recognised benchmark layout, else inferred from the "
                   "labels with a warning), a benchmark name, or infer")  # fmt: skip
    p.add_argument("--probe", default="linear", choices=("linear", "decoder", "finetune"))
    p.add_argument("--epochs", type=int, default=None, help="probe epochs (default 20; finetune 5; Sonata: 800)")
    p.add_argument("--lr", type=float, default=d.lr, help="peak lr of the OneCycle schedule (Sonata 0.002)")
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default 0.05; semseg 0.02)")
    p.add_argument("--batch-points", type=int, default=d.batch_points, help="voxels per probe step")
    p.add_argument("--lovasz", action=argparse.BooleanOptionalAction, default=True,
                   help="add the Lovasz-softmax loss to CE (default on, as Sonata's probes)")  # fmt: skip
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                   help="re-augment the training scenes every epoch (Sonata's probe transforms) and re-extract "
                   "their features; Sonata's configs train 800 augmented epochs")  # fmt: skip
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--max-train-scenes", type=int, default=None)
    p.add_argument("--max-val-scenes", type=int, default=None)
    p.add_argument("--radius", type=float, default=None,
                   help="clustering radius in metres (default: 1.5 x grid for insseg = PG's cluster_thresh 1.5; "
                   "6 x grid for panoptic; 2 up-cast cells unsupervised)")  # fmt: skip
    p.add_argument("--cluster-min-points", type=int, default=None,
                   help="insseg: smallest cluster in voxels (PG cluster_min_points; default 50 at a 2 cm grid, "
                   "scaled by the voxel area at other grids)")  # fmt: skip
    p.add_argument("--cluster-propose-points", type=int, default=None,
                   help="insseg: a proposal needs more voxels than this (PG cluster_propose_points; default 200 "
                   "at a 2 cm grid, area-scaled)")  # fmt: skip
    p.add_argument(
        "--min-points",
        type=int,
        default=None,
        help="PQ minimum segment size (default by dataset: 50 SemanticKITTI and others, 15 nuScenes)",
    )
    p.add_argument(
        "--pq-average",
        default="all",
        choices=("all", "present"),
        help="PQ means over all classes, absent ones 0 (official), or over the classes present",
    )
    p.add_argument("--kmeans-k", type=int, default=d.kmeans_k, help="unsupervised: K-means segments per scene")
    p.add_argument("--render", type=int, default=d.render, help="PNG renders of the first N val scenes")
    p.add_argument("--backbone", default="tiny", help="preset of the 'scratch' encoder")
    p.add_argument("--grid-size", type=float, default=None, help="voxel size (default: the pretraining grid)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from pointins.data import DataError

    kw = {f.name: getattr(a, f.name) for f in dataclasses.fields(Settings) if f.name not in ("task", "progress")}
    try:
        r = evaluate(a.checkpoint, a.data, a.task, out=a.out, progress=not a.no_progress, **kw)
    except (EvalError, DataError, ValueError) as e:
        print(f"{e}", file=sys.stderr)
        return 2
    print(r["table"])
    print(f"pointins.evaluate ({a.task}): {r['summary']}; {r['val_scenes']} val scenes in {r['seconds']:.0f} s; "
          f"results in {r['out']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
