"""Evaluation metrics with the conventions of the public benchmarks (METHOD.md section 7).

* :func:`miou` -- semantic IoU per class from a confusion matrix, ignore index removed.
* :func:`instance_ap` -- the ScanNet benchmark's instance AP (``evaluate_semantic_instance``): AP averaged
  over IoU 0.50:0.05:0.90, AP50, AP25; a match needs IoU strictly above the threshold; ground-truth
  instances and predictions under ``min_region_size`` points are left out; an unmatched prediction that
  lies mostly (more than the threshold's share) on void / ignored ground truth is not a false positive; a
  second prediction of an already matched instance is a false positive with the lower score; per-class AP
  from ScanNet's precision-recall integration, then the mean over classes that have ground truth.
  ``class_agnostic=True`` (or :func:`class_agnostic_ap`) treats every instance as one class.
* :func:`panoptic_quality` -- PQ / SQ / RQ as SemanticKITTI's and nuScenes' panoptic evaluators compute
  them (void points removed, a match needs IoU > 0.5, unmatched segments under ``min_points`` are neither
  false positives nor false negatives, stuff classes are one segment per scene), plus PQ-dagger (stuff
  classes scored by their semantic IoU) and the things / stuff splits.

All functions take NumPy arrays or torch tensors, one scene or a list of scenes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "AP_THRESHOLDS",
    "class_agnostic_ap",
    "confusion_matrix",
    "instance_ap",
    "iou_from_confusion",
    "miou",
    "panoptic_quality",
]

#: IoU thresholds of the ScanNet benchmark's AP (0.50, 0.55, ..., 0.90).
AP_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))


def _np(a, name: str, dtype=None) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if dtype is not None:
        if dtype is bool:
            if a.dtype != bool:
                raise TypeError(f"{name} must be a boolean mask, got dtype {a.dtype}.")
        elif not np.issubdtype(a.dtype, np.integer):
            raise TypeError(
                f"{name} must hold integer labels, got dtype {a.dtype}; cast predictions with .astype(int)."
            )
        a = a.astype(dtype, copy=False) if dtype is not bool else a
    return a.reshape(-1)


def _scenes(x) -> list:
    """One scene (an array, or a flat list of labels) or a list/tuple of per-scene arrays."""
    if isinstance(x, (list, tuple)) and len(x) and np.ndim(x[0]) >= 1:
        return list(x)
    return [x]


# ------------------------------------------------------------------------------------------------
# semantic segmentation
# ------------------------------------------------------------------------------------------------


def _confusion(pred, gt, num_classes: int, ignore_index: int) -> np.ndarray:
    """(C, C + 1) counts: rows = ground truth, columns = prediction, the last column = predictions outside
    ``[0, num_classes)`` (e.g. -1 for "no prediction"): false negatives of the row's class, nobody's false
    positive."""
    preds, gts = _scenes(pred), _scenes(gt)
    if len(preds) != len(gts):
        raise ValueError(f"confusion_matrix: {len(preds)} prediction arrays but {len(gts)} ground-truth arrays.")
    c = num_classes
    cm = np.zeros((c, c + 1), np.int64)
    for p, g in zip(preds, gts, strict=True):
        p, g = _np(p, "pred", np.int64), _np(g, "gt", np.int64)
        if p.shape != g.shape:
            raise ValueError(f"confusion_matrix: pred has {p.size} points but gt has {g.size}.")
        keep = g != ignore_index
        p, g = p[keep], g[keep]
        if g.size and (g.min() < 0 or g.max() >= c):
            bad = int(g.min() if g.min() < 0 else g.max())
            raise ValueError(
                f"confusion_matrix: ground-truth label {bad} is outside [0, {c}) and is not the ignore index "
                f"{ignore_index}; check num_classes / ignore_index."
            )
        p = np.where((p >= 0) & (p < c), p, c)
        cm += np.bincount(g * (c + 1) + p, minlength=c * (c + 1)).reshape(c, c + 1)
    return cm


def confusion_matrix(pred, gt, num_classes: int, ignore_index: int = -1) -> np.ndarray:
    """(C, C) int64 counts, rows = ground truth, columns = prediction; points with ``gt == ignore_index`` are
    left out, predictions outside ``[0, num_classes)`` are not counted. ``pred``/``gt``: arrays of one scene or
    lists of per-scene arrays."""
    return _confusion(pred, gt, num_classes, ignore_index)[:, :num_classes]


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN) from a (C, C) or (C, C + 1) confusion matrix (rows = ground
    truth); NaN for a class with neither ground truth nor predictions."""
    c = cm.shape[0]
    tp = np.diag(cm[:, :c]).astype(np.float64)
    fn = cm.sum(1) - tp
    fp = cm[:, :c].sum(0) - tp
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def miou(pred, gt, num_classes: int, ignore_index: int = -1) -> tuple[float, np.ndarray]:
    """Mean IoU over classes and the per-class IoU (NumPy, NaN where a class has neither ground truth nor
    predictions; the mean skips those). ``pred``/``gt``: one scene's labels or lists of per-scene labels
    (accumulated into one confusion matrix, as the benchmarks do).

    >>> m, per_class = miou([0, 0, 1, 1, -1], [0, 1, 1, 1, 0], num_classes=3, ignore_index=-1)
    >>> round(m, 4), per_class.round(3).tolist()
    (0.5, [0.333, 0.667, nan])
    """
    iou = iou_from_confusion(_confusion(pred, gt, num_classes, ignore_index))
    return (float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")), iou


# ------------------------------------------------------------------------------------------------
# instance segmentation: ScanNet benchmark AP
# ------------------------------------------------------------------------------------------------


def _scan_instances(sc: dict, class_ids: Sequence[int], agnostic: bool, min_region_size: int):
    """Ground-truth instances of one scene and each prediction's overlaps (ScanNet's assign_instances)."""
    sem = _np(sc["gt_semantic"], "gt_semantic", np.int64)
    ins = _np(sc["gt_instance"], "gt_instance", np.int64)
    if sem.shape != ins.shape:
        raise ValueError(f"instance_ap: gt_semantic has {sem.size} points but gt_instance has {ins.size}.")
    n = sem.size
    valid_cls = np.isin(sem, np.asarray(class_ids, np.int64))
    void = ~valid_cls  # points of classes that are not evaluated (stuff, unlabelled)
    # points of an evaluated class without an instance id: ScanNet's "id < 1000" ignore regions
    no_inst = valid_cls & (ins < 0)
    gts = []  # (label, mask, size)
    inst_idx = np.full(n, -1, np.int64)
    if (valid_cls & (ins >= 0)).any():
        ids, inv = np.unique(ins[valid_cls & (ins >= 0)], return_inverse=True)
        rows = np.flatnonzero(valid_cls & (ins >= 0))
        inst_idx[rows] = inv
        for j in range(len(ids)):
            m = inst_idx == j
            labels = sem[m]
            lab = int(np.bincount(labels - labels.min()).argmax() + labels.min())
            gts.append({"label": 0 if agnostic else lab, "mask": m, "size": int(m.sum())})
    preds = []
    for k, p in enumerate(sc.get("pred", [])):
        mask = _np(p["mask"], "pred mask", bool)
        if mask.size != n:
            raise ValueError(f"instance_ap: a prediction mask has {mask.size} points but the scene has {n}.")
        size = int(mask.sum())
        if size < min_region_size:
            continue
        label = 0 if agnostic else int(p["label"])
        score = float(p["score"])
        if not np.isfinite(score):
            raise ValueError(f"instance_ap: prediction {k} has a non-finite score {score}.")
        inter = np.bincount(inst_idx[mask & (inst_idx >= 0)], minlength=len(gts))
        matched = [(j, int(inter[j])) for j in range(len(gts)) if inter[j] > 0 and gts[j]["label"] == label]
        preds.append({"label": label, "score": score, "size": size, "void": int((mask & (void | no_inst)).sum()),
                      "matched": matched})  # fmt: skip
    return gts, preds


def _scannet_ap(y_true: np.ndarray, y_score: np.ndarray, hard_fn: int) -> float:
    """ScanNet's precision-recall integration of one class at one threshold."""
    order = np.argsort(y_score, kind="stable")
    score_sorted, true_sorted = y_score[order], y_true[order]
    cum = np.cumsum(true_sorted)
    _, unique_idx = np.unique(score_sorted, return_index=True)
    n_pr = len(unique_idx) + 1
    n_examples = len(score_sorted)
    n_true = cum[-1] if len(cum) else 0
    precision, recall = np.zeros(n_pr), np.zeros(n_pr)
    cum = np.append(cum, 0)
    for r, idx in enumerate(unique_idx):
        below = cum[idx - 1]  # true examples scored below this threshold (cum[-1] = 0 for idx 0)
        tp = n_true - below
        fp = n_examples - idx - tp
        fn = below + hard_fn
        precision[r] = tp / (tp + fp)
        recall[r] = tp / (tp + fn) if tp + fn > 0 else 0.0
    precision[-1], recall[-1] = 1.0, 0.0
    rc = np.concatenate([[recall[0]], recall, [0.0]])
    steps = np.convolve(rc, [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, steps))


def instance_ap(
    scenes: list[dict],
    class_ids: Sequence[int],
    min_region_size: int = 100,
    thresholds: Sequence[float] = AP_THRESHOLDS,
    class_agnostic: bool = False,
) -> dict:
    """ScanNet-benchmark instance AP over ``scenes`` (see the module docstring).

    ``scenes``: ``[{"gt_semantic": (N,), "gt_instance": (N,), "pred": [{"mask": (N,) bool, "label": int,
    "score": float}, ...]}, ...]``; ground-truth instance ids are per scene (-1 = none), an instance's class
    is its points' (majority) semantic label, only ``class_ids`` are evaluated (points of other classes are
    void). Returns ``{"ap", "ap50", "ap25", "per_class": {cls: {"ap", "ap50", "ap25"}}, "thresholds",
    "num_gt", "num_pred"}``; a class with ground truth but no prediction scores 0, a class without ground
    truth is NaN and left out of the means.

    >>> gt_sem, gt_ins = [2] * 200 + [0] * 100, [0] * 200 + [-1] * 100
    >>> hit = {"mask": [True] * 180 + [False] * 120, "label": 2, "score": 0.9}
    >>> instance_ap([{"gt_semantic": gt_sem, "gt_instance": gt_ins, "pred": [hit]}], class_ids=[2])["ap50"]
    1.0
    """
    if isinstance(scenes, dict):
        scenes = [scenes]
    class_ids = [int(c) for c in class_ids]
    if not class_ids:
        raise ValueError("instance_ap: class_ids is empty; pass the thing classes to evaluate.")
    ths = np.asarray([*thresholds, 0.25], np.float64)
    labels = [0] if class_agnostic else class_ids
    per = [_scan_instances(sc, class_ids, class_agnostic, min_region_size) for sc in scenes]
    aps = np.full((len(labels), len(ths)), np.nan)
    num_gt = {c: 0 for c in labels}
    num_pred = {c: 0 for c in labels}
    for gts, preds in per:
        for g in gts:
            if g["size"] >= min_region_size and g["label"] in num_gt:
                num_gt[g["label"]] += 1
        for p in preds:
            if p["label"] in num_pred:
                num_pred[p["label"]] += 1
    for li, lab in enumerate(labels):
        for ti, th in enumerate(ths):
            y_true, y_score, hard_fn = [], [], 0
            has_gt = has_pred = False
            for gts, preds in per:
                g_idx = [j for j, g in enumerate(gts) if g["label"] == lab and g["size"] >= min_region_size]
                p_idx = [k for k, p in enumerate(preds) if p["label"] == lab]
                has_gt |= bool(g_idx)
                has_pred |= bool(p_idx)
                # predictions overlapping each gt instance, in prediction order (as ScanNet's lists)
                overlaps_of = {j: [] for j in g_idx}
                for k in p_idx:
                    for j, inter in preds[k]["matched"]:
                        if j in overlaps_of:
                            overlaps_of[j].append((k, inter))
                visited = set()
                cur_true = [1] * len(g_idx)
                cur_score = [-np.inf] * len(g_idx)
                cur_match = [False] * len(g_idx)
                for gi, j in enumerate(g_idx):
                    found = False
                    for k, inter in overlaps_of[j]:
                        if k in visited:
                            continue
                        iou = inter / (gts[j]["size"] + preds[k]["size"] - inter)
                        if iou > th:
                            conf = preds[k]["score"]
                            if cur_match[gi]:  # a second prediction of a matched instance: false positive
                                lo = min(cur_score[gi], conf)
                                cur_score[gi] = max(cur_score[gi], conf)
                                cur_true.append(0)
                                cur_score.append(lo)
                                cur_match.append(True)
                            else:
                                found = True
                                cur_match[gi] = True
                                cur_score[gi] = conf
                                visited.add(k)
                    if not found:
                        hard_fn += 1
                keep = np.asarray(cur_match, bool)
                y_true.extend(np.asarray(cur_true)[keep].tolist())
                y_score.extend(np.asarray(cur_score, np.float64)[keep].tolist())
                for k in p_idx:
                    p = preds[k]
                    if any(inter / (gts[j]["size"] + p["size"] - inter) > th for j, inter in p["matched"]):
                        continue
                    ignored = p["void"]
                    for j, inter in p["matched"]:
                        if gts[j]["size"] < min_region_size:
                            ignored += inter
                    if ignored / p["size"] <= th:  # not mostly on void: a false positive
                        y_true.append(0)
                        y_score.append(p["score"])
            if has_gt and has_pred:
                aps[li, ti] = _scannet_ap(np.asarray(y_true, np.float64), np.asarray(y_score, np.float64), hard_fn)
            elif has_gt:
                aps[li, ti] = 0.0
    main_cols = np.arange(len(ths) - 1)
    i50 = int(np.flatnonzero(np.isclose(ths, 0.5))[0]) if np.isclose(ths, 0.5).any() else None

    def _mean(a):
        a = np.asarray(a, np.float64)
        return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")

    per_class = {
        lab: {
            "ap": _mean(aps[li, main_cols]),
            "ap50": float(aps[li, i50]) if i50 is not None else float("nan"),
            "ap25": float(aps[li, -1]),
        }
        for li, lab in enumerate(labels)
    }
    return {
        "ap": _mean(aps[:, main_cols]),
        "ap50": _mean(aps[:, i50]) if i50 is not None else float("nan"),
        "ap25": _mean(aps[:, -1]),
        "per_class": per_class,
        "thresholds": [float(t) for t in ths[:-1]],
        "num_gt": num_gt,
        "num_pred": num_pred,
    }


def class_agnostic_ap(scenes: list[dict], class_ids: Sequence[int], min_region_size: int = 100, **kw) -> dict:
    """:func:`instance_ap` with every instance of ``class_ids`` in one class and prediction labels ignored (the
    metric of unsupervised instance discovery)."""
    return instance_ap(scenes, class_ids, min_region_size=min_region_size, class_agnostic=True, **kw)


# ------------------------------------------------------------------------------------------------
# panoptic segmentation: SemanticKITTI / nuScenes PQ
# ------------------------------------------------------------------------------------------------


def _segment_ids(sem: np.ndarray, ins: np.ndarray, things: np.ndarray) -> np.ndarray:
    """Panoptic segment id per point within its class: stuff classes are one segment, thing points carry their
    instance (+2; points of a thing class without an instance id form segment 1, as SemanticKITTI's id 0)."""
    is_thing = np.isin(sem, things)
    return np.where(is_thing, np.where(ins >= 0, ins + 2, 1), 1).astype(np.int64)


def panoptic_quality(
    pred_semantic,
    pred_instance,
    gt_semantic,
    gt_instance,
    num_classes: int,
    thing_classes: Sequence[int],
    ignore_index: int = -1,
    min_points: int = 50,
    average: str = "all",
) -> dict:
    """PQ, SQ, RQ and PQ-dagger (see the module docstring); arguments are one scene's arrays or lists of
    per-scene arrays (instances are matched within a scene). ``min_points``: 50 for SemanticKITTI, 15 for
    nuScenes. Returns ``{"pq", "sq", "rq", "pq_dagger", "miou", "pq_things", "sq_things", "rq_things",
    "pq_stuff", "sq_stuff", "rq_stuff", "per_class": {cls: {"pq", "sq", "rq", "iou", "tp", "fp", "fn"}},
    "average", "absent_classes"}``.

    ``average="all"`` (the official evaluators: SemanticKITTI's ``PanopticEval``, nuScenes' panoptic
    evaluation): the means run over all ``num_classes`` classes; a class with no segment in either prediction
    or ground truth scores 0 (its per-class entries too). ``average="present"``: such classes are NaN and left
    out of the means (reads higher on small evaluation sets that lack some classes).

    >>> sem = [6] * 100 + [1] * 50
    >>> ins = [0] * 60 + [1] * 40 + [-1] * 50
    >>> r = panoptic_quality(sem, ins, sem, ins, num_classes=9, thing_classes=[6], min_points=15)
    >>> round(r["pq"], 4), r["absent_classes"]  # 2 of 9 classes perfect, 7 absent ones count 0
    (0.2222, [0, 2, 3, 4, 5, 7, 8])
    >>> r = panoptic_quality(sem, ins, sem, ins, 9, [6], min_points=15, average="present")
    >>> r["pq"], r["pq_dagger"]
    (1.0, 1.0)
    """
    if average not in ("all", "present"):
        raise ValueError(f"panoptic_quality: average must be 'all' (official) or 'present', got {average!r}.")
    ps, pi, gs, gi = (_scenes(a) for a in (pred_semantic, pred_instance, gt_semantic, gt_instance))
    if not (len(ps) == len(pi) == len(gs) == len(gi)):
        raise ValueError("panoptic_quality: pass the same number of scenes for all four arguments.")
    things = np.asarray([int(c) for c in thing_classes], np.int64)
    if ((things < 0) | (things >= num_classes)).any():
        raise ValueError(f"panoptic_quality: thing_classes {things.tolist()} must lie in [0, {num_classes}).")
    tp = np.zeros(num_classes, np.int64)
    fp = np.zeros(num_classes, np.int64)
    fn = np.zeros(num_classes, np.int64)
    iou_sum = np.zeros(num_classes, np.float64)
    sem_p, sem_g = [], []
    off = np.int64(1) << np.int64(32)
    for a, b, c, d in zip(ps, pi, gs, gi, strict=True):
        a, b = _np(a, "pred_semantic", np.int64), _np(b, "pred_instance", np.int64)
        c, d = _np(c, "gt_semantic", np.int64), _np(d, "gt_instance", np.int64)
        if not (a.size == b.size == c.size == d.size):
            raise ValueError(
                f"panoptic_quality: scene arrays differ in length ({a.size}, {b.size}, {c.size}, {d.size})."
            )
        keep = c != ignore_index  # void removed from prediction and ground truth alike
        a, b, c, d = a[keep], b[keep], c[keep], d[keep]
        sem_p.append(a)
        sem_g.append(c)
        seg_p, seg_g = _segment_ids(a, b, things), _segment_ids(c, d, things)
        for cl in range(num_classes):
            in_p, in_g = a == cl, c == cl
            if not (in_p.any() or in_g.any()):
                continue
            xp = np.where(in_p, seg_p, 0)
            yg = np.where(in_g, seg_g, 0)
            up, cp = np.unique(xp[xp > 0], return_counts=True)
            ug, cg = np.unique(yg[yg > 0], return_counts=True)
            both = (xp > 0) & (yg > 0)
            combo, cc = np.unique(xp[both] + off * yg[both], return_counts=True)
            g_of, p_of = combo // off, combo % off
            area_g = cg[np.searchsorted(ug, g_of)]
            area_p = cp[np.searchsorted(up, p_of)]
            ious = cc / (area_g + area_p - cc)
            hit = ious > 0.5
            tp[cl] += int(hit.sum())
            iou_sum[cl] += float(ious[hit].sum())
            matched_g = np.isin(ug, g_of[hit])
            matched_p = np.isin(up, p_of[hit])
            fn[cl] += int(((cg >= min_points) & ~matched_g).sum())
            fp[cl] += int(((cp >= min_points) & ~matched_p).sum())
    seen = (tp + fp + fn) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        sq = np.where(seen, iou_sum / np.maximum(tp, 1), np.nan)
        rq = np.where(seen, tp / np.maximum(tp + 0.5 * fp + 0.5 * fn, 1e-15), np.nan)
    sq = np.where(seen & (tp == 0), 0.0, sq)
    pq = sq * rq
    _, iou = miou(sem_p, sem_g, num_classes, ignore_index)
    absent = [int(c) for c in np.flatnonzero(~seen)]
    if average == "all":  # PanopticEval: x / max(d, eps) makes every absent class 0, then a plain mean
        sq, rq, pq, iou = (np.nan_to_num(x, nan=0.0) for x in (sq, rq, pq, iou))
    is_thing = np.isin(np.arange(num_classes), things)
    dagger = np.where(is_thing, pq, iou)

    def _m(x, sel=None):
        x = x if sel is None else x[sel]
        return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")

    return {
        "pq": _m(pq),
        "sq": _m(sq),
        "rq": _m(rq),
        "pq_dagger": _m(dagger),
        "miou": _m(iou),
        "pq_things": _m(pq, is_thing),
        "sq_things": _m(sq, is_thing),
        "rq_things": _m(rq, is_thing),
        "pq_stuff": _m(pq, ~is_thing),
        "sq_stuff": _m(sq, ~is_thing),
        "rq_stuff": _m(rq, ~is_thing),
        "per_class": {
            cl: {
                "pq": float(pq[cl]),
                "sq": float(sq[cl]),
                "rq": float(rq[cl]),
                "iou": float(iou[cl]),
                "tp": int(tp[cl]),
                "fp": int(fp[cl]),
                "fn": int(fn[cl]),
            }
            for cl in range(num_classes)
        },
        "average": average,
        "absent_classes": absent,
    }
