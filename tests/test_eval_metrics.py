"""Evaluation metrics against hand-computed cases and plain-NumPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pointins.eval.metrics import (
    class_agnostic_ap,
    confusion_matrix,
    instance_ap,
    miou,
    panoptic_quality,
)

# ------------------------------------------------------------------------------------------------
# mIoU
# ------------------------------------------------------------------------------------------------


def _iou_reference(pred, gt, c, ignore):
    keep = gt != ignore
    p, g = pred[keep], gt[keep]
    out = []
    for k in range(c):
        inter = np.sum((p == k) & (g == k))
        union = np.sum((p == k) | (g == k))
        out.append(inter / union if union else np.nan)
    return np.array(out)


@pytest.mark.parametrize("seed", range(5))
def test_miou_matches_reference(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 12))
    gt = rng.integers(-1, c, 3000)
    pred = np.where(rng.random(3000) < 0.6, gt, rng.integers(0, c, 3000))
    pred[gt == -1] = rng.integers(0, c, int((gt == -1).sum()))
    m, per = miou(pred, gt, c, ignore_index=-1)
    ref = _iou_reference(pred, gt, c, -1)
    np.testing.assert_allclose(per, ref)
    assert m == pytest.approx(np.nanmean(ref))


def test_miou_hand_case_and_conventions():
    # class 0: tp 1, fp 1, fn 1 (the -1 prediction) -> 1/3; class 1: tp 2, fn 1 -> 2/3; class 2 absent -> nan
    m, per = miou(np.array([0, 0, 1, 1, -1]), np.array([0, 1, 1, 1, 0]), num_classes=3)
    np.testing.assert_allclose(per[:2], [1 / 3, 2 / 3])
    assert math.isnan(per[2]) and m == pytest.approx(0.5)
    # a class that is only predicted has IoU 0 (not nan)
    _, per = miou([2, 0], [0, 0], num_classes=3)
    assert per.tolist()[2] == 0.0 and per[0] == 0.5
    # ignore index: other values than -1, and those points' predictions do not count
    _, per = miou([1, 1, 0], [255, 255, 0], num_classes=2, ignore_index=255)
    assert per[0] == 1.0 and math.isnan(per[1])


def test_miou_accumulates_scenes_and_accepts_tensors():
    rng = np.random.default_rng(0)
    p = [rng.integers(0, 4, n) for n in (10, 200, 0, 50)]
    g = [rng.integers(-1, 4, n) for n in (10, 200, 0, 50)]
    m1, per1 = miou(p, g, 4)
    m2, per2 = miou(np.concatenate(p), np.concatenate(g), 4)
    assert m1 == m2 and np.array_equal(per1, per2, equal_nan=True)
    m3, _ = miou([torch.from_numpy(x) for x in p], [torch.from_numpy(x) for x in g], 4)
    assert m3 == m1
    cm = confusion_matrix(p, g, 4)
    assert cm.sum() == sum(int((x != -1).sum()) for x in g)


def test_miou_all_void_and_errors():
    m, per = miou([0, 1], [-1, -1], num_classes=2)
    assert math.isnan(m) and np.isnan(per).all()
    with pytest.raises(ValueError, match="outside"):
        miou([0, 1], [0, 5], num_classes=2)
    with pytest.raises(TypeError, match="integer"):
        miou(np.array([0.0, 1.0]), np.array([0, 1]), num_classes=2)
    with pytest.raises(ValueError, match="points"):
        miou([0, 1, 1], [0, 1], num_classes=2)


# ------------------------------------------------------------------------------------------------
# ScanNet instance AP
# ------------------------------------------------------------------------------------------------


def _mask(n, rows):
    m = np.zeros(n, bool)
    m[rows] = True
    return m


def _two_instances():
    """200 points of instance A (class 2), 200 of B (class 2), 300 of wall (class 0, void for AP)."""
    sem = np.array([2] * 400 + [0] * 300)
    ins = np.array([0] * 200 + [1] * 200 + [-1] * 300)
    return sem, ins


def test_ap_perfect_and_no_predictions():
    sem, ins = _two_instances()
    preds = [{"mask": ins == 0, "label": 2, "score": 0.9}, {"mask": ins == 1, "label": 2, "score": 0.3}]
    r = instance_ap([{"gt_semantic": sem, "gt_instance": ins, "pred": preds}], class_ids=[2, 3])
    assert (r["ap"], r["ap50"], r["ap25"]) == (1.0, 1.0, 1.0)
    assert math.isnan(r["per_class"][3]["ap"])  # no ground truth of class 3: left out of the mean
    assert r["num_gt"] == {2: 2, 3: 0} and r["num_pred"] == {2: 2, 3: 0}
    r = instance_ap([{"gt_semantic": sem, "gt_instance": ins, "pred": []}], class_ids=[2])
    assert (r["ap"], r["ap50"], r["ap25"]) == (0.0, 0.0, 0.0)


def test_ap_hand_computed_false_positive_and_miss():
    # A found (score 0.9); half of B (IoU exactly 0.5: not > 0.5) scored 0.8. At IoU >= 0.5: y = [1, 0],
    # scores [0.9, 0.8], one hard false negative -> precision [0.5, 1, 1], recall [0.5, 0.5, 0] -> AP 0.5;
    # at 0.25 both match -> AP 1.
    sem, ins = _two_instances()
    preds = [
        {"mask": ins == 0, "label": 2, "score": 0.9},
        {"mask": _mask(700, range(200, 300)), "label": 2, "score": 0.8},
    ]
    r = instance_ap([{"gt_semantic": sem, "gt_instance": ins, "pred": preds}], class_ids=[2])
    assert r["ap"] == pytest.approx(0.5) and r["ap50"] == pytest.approx(0.5) and r["ap25"] == 1.0
    # with the false positive ranked first: precision [0.5, 0, 1], recall [0.5, 0, 0] -> steps
    # [0.25, 0.25, 0] -> AP 0.5 * 0.25 = 0.125
    preds[1]["score"] = 0.95
    r = instance_ap([{"gt_semantic": sem, "gt_instance": ins, "pred": preds}], class_ids=[2])
    assert r["ap50"] == pytest.approx(0.125)


def test_ap_duplicates_void_and_ignored_regions():
    sem, ins = _two_instances()
    sem = sem.copy()
    ins = ins.copy()
    ins[350:400] = -1  # 50 points of class 2 with no instance id (ScanNet's ignored ids); B keeps 150
    scene = {"gt_semantic": sem, "gt_instance": ins}
    a, b = ins == 0, ins == 1
    preds = [
        {"mask": a, "label": 2, "score": 0.6},
        {"mask": a.copy(), "label": 2, "score": 0.9},  # duplicate of A: a false positive with the lower score
        {"mask": b, "label": 2, "score": 0.7},
        {"mask": _mask(700, range(400, 700)), "label": 2, "score": 0.99},  # all on wall (void): not an FP
        {"mask": _mask(700, range(350, 400)) | _mask(700, range(450, 550)), "label": 2, "score": 0.98},  # ignored+void
    ]
    r = instance_ap([{**scene, "pred": preds}], class_ids=[2])
    # y_true = [1 (A, 0.9), 1 (B, 0.7), 0 (dup, 0.6)]: the FP ranks last, precision is 1 up to recall 1
    assert (r["ap"], r["ap50"], r["ap25"]) == (1.0, 1.0, 1.0)
    # half on B (IoU 100 / (150 + 200 - 100) = 0.4), half on void (share 0.5 <= every threshold >= 0.5):
    # a false positive with the top score at 0.50-0.90: y = [1 (.6), 1 (.7), 0 (.99)] -> precision
    # [2/3, 1/2, 0, 1], recall [1, 1/2, 0, 0] -> AP 2/3 * 1/4 + 1/2 * 1/2 = 5/12. At 0.25 it matches B after
    # B's own prediction: a duplicate (FP at 0.7, B keeps 0.99): y = [1 (.6), 0 (.7), 1 (.99)] -> 19/24.
    half = {"mask": _mask(700, range(250, 350)) | _mask(700, range(400, 500)), "label": 2, "score": 0.99}
    r = instance_ap([{**scene, "pred": [preds[0], preds[2], half]}], class_ids=[2])
    assert r["ap"] == pytest.approx(5 / 12) and r["ap50"] == pytest.approx(5 / 12)
    assert r["ap25"] == pytest.approx(19 / 24)


def test_ap_min_region_size():
    sem = np.array([2] * 50 + [2] * 150 + [0] * 100)
    ins = np.array([0] * 50 + [1] * 150 + [-1] * 100)
    scene = {"gt_semantic": sem, "gt_instance": ins}
    small = {"mask": ins == 0, "label": 2, "score": 0.9}  # 50 points: dropped (< 100)
    big = {"mask": ins == 1, "label": 2, "score": 0.8}
    r = instance_ap([{**scene, "pred": [small, big]}], class_ids=[2])
    assert r["ap"] == 1.0 and r["num_gt"][2] == 1 and r["num_pred"][2] == 1
    # a prediction covering the small instance plus void is not a false positive (small gt counts as ignored)
    cover = {"mask": (ins == 0) | (sem == 0), "label": 2, "score": 0.95}
    r = instance_ap([{**scene, "pred": [cover, big]}], class_ids=[2])
    assert r["ap"] == 1.0
    # only small instances: the class has no ground truth -> nan
    r = instance_ap([{"gt_semantic": sem[:50], "gt_instance": ins[:50], "pred": []}], class_ids=[2])
    assert math.isnan(r["ap"]) and math.isnan(r["per_class"][2]["ap50"])
    assert instance_ap([{**scene, "pred": [big]}], class_ids=[2], min_region_size=10)["ap"] == pytest.approx(0.5)


def test_ap_all_void_scene_and_wrong_labels():
    sem = np.zeros(300, np.int64)
    ins = np.full(300, -1)
    pred = [{"mask": np.ones(300, bool), "label": 2, "score": 0.5}]
    r = instance_ap([{"gt_semantic": sem, "gt_instance": ins, "pred": pred}], class_ids=[2])
    assert math.isnan(r["ap"]) and r["num_pred"][2] == 1
    # right masks, wrong labels: class-aware AP 0, class-agnostic AP 1
    sem, ins = np.array([2] * 150 + [3] * 150), np.array([0] * 150 + [1] * 150)
    preds = [{"mask": ins == 0, "label": 3, "score": 0.9}, {"mask": ins == 1, "label": 2, "score": 0.8}]
    scene = {"gt_semantic": sem, "gt_instance": ins, "pred": preds}
    assert instance_ap([scene], class_ids=[2, 3])["ap"] == 0.0
    agn = class_agnostic_ap([scene], class_ids=[2, 3])
    assert agn["ap"] == 1.0 and agn["num_gt"] == {0: 2}


def test_ap_instances_are_per_scene_and_inputs_checked():
    sem, ins = _two_instances()
    s1 = {"gt_semantic": sem, "gt_instance": ins, "pred": [{"mask": ins == 0, "label": 2, "score": 0.9}]}
    s2 = {"gt_semantic": sem, "gt_instance": ins, "pred": [{"mask": ins == 0, "label": 2, "score": 0.8}]}
    r = instance_ap([s1, s2], class_ids=[2])
    assert r["num_gt"][2] == 4  # same ids in two scenes are four instances
    assert r["ap50"] == pytest.approx(0.5)  # recall 0.5 at precision 1
    with pytest.raises(ValueError, match="mask"):
        instance_ap([{**s1, "pred": [{"mask": np.ones(3, bool), "label": 2, "score": 1.0}]}], class_ids=[2])
    with pytest.raises(TypeError, match="boolean"):
        instance_ap([{**s1, "pred": [{"mask": np.ones(700), "label": 2, "score": 1.0}]}], class_ids=[2])
    with pytest.raises(ValueError, match="score"):
        instance_ap([{**s1, "pred": [{"mask": ins == 0, "label": 2, "score": float("nan")}]}], class_ids=[2])
    with pytest.raises(ValueError, match="class_ids"):
        instance_ap([s1], class_ids=[])


def _ap_bruteforce(y_true, y_score, hard_fn):
    """Precision-recall pairs at each distinct score threshold, integrated like ScanNet (reference)."""
    pts = []
    for t in np.unique(y_score):
        sel = y_score >= t
        tp = y_true[sel].sum()
        fp = sel.sum() - tp
        fn = y_true[~sel].sum() + hard_fn
        pts.append((tp / (tp + fp), tp / (tp + fn) if tp + fn else 0.0))
    prec = np.array([p for p, _ in pts] + [1.0])
    rec = np.array([r for _, r in pts] + [0.0])
    rc = np.concatenate([[rec[0]], rec, [0.0]])
    return float(sum(prec[i] * 0.5 * (rc[i] - rc[i + 2]) for i in range(len(prec))))


@pytest.mark.parametrize("seed", range(4))
def test_ap_random_scenes_against_bruteforce_pr(seed):
    """Random disjoint predictions (IoU is 1 or 0 per match): AP equals the brute-force PR integral."""
    from pointins.eval.metrics import _scannet_ap

    rng = np.random.default_rng(seed)
    y_true = (rng.random(40) < 0.5).astype(float)
    y_score = np.round(rng.random(40), 1)
    hard = int(rng.integers(0, 5))
    assert _scannet_ap(y_true, y_score, hard) == pytest.approx(_ap_bruteforce(y_true, y_score, hard))


# ------------------------------------------------------------------------------------------------
# panoptic quality
# ------------------------------------------------------------------------------------------------

CAR, ROAD, WALK = 6, 1, 2


def test_pq_perfect_and_hand_case():
    sem = np.array([CAR] * 100 + [ROAD] * 100)
    ins = np.array([0] * 100 + [-1] * 100)
    r = panoptic_quality(sem, ins, sem, ins, num_classes=9, thing_classes=[6, 7, 8], average="present")
    assert r["pq"] == r["sq"] == r["rq"] == r["pq_dagger"] == 1.0
    # prediction: 80 car points as the car, 20 car points as road
    ps = sem.copy()
    ps[80:100] = ROAD
    r = panoptic_quality(ps, ins, sem, ins, num_classes=9, thing_classes=[6, 7, 8], min_points=15, average="present")
    assert r["per_class"][CAR]["pq"] == pytest.approx(0.8)
    assert r["per_class"][ROAD]["pq"] == pytest.approx(100 / 120)
    assert r["pq"] == pytest.approx((0.8 + 100 / 120) / 2)
    assert r["pq_things"] == pytest.approx(0.8) and r["pq_stuff"] == pytest.approx(100 / 120)
    assert math.isnan(r["per_class"][WALK]["pq"])  # absent everywhere: not in the mean


def test_pq_dagger_uses_iou_for_stuff():
    # road predicted on 100 road + 200 sidewalk points: IoU 1/3 -> no match (fp + fn), PQ 0; PQ-dagger: 1/3
    sem = np.array([ROAD] * 100 + [WALK] * 200)
    ins = np.full(300, -1)
    ps = np.full(300, ROAD)
    r = panoptic_quality(ps, ins, sem, ins, num_classes=9, thing_classes=[6], average="present")
    assert r["per_class"][ROAD]["pq"] == 0.0 and r["per_class"][ROAD]["fp"] == 1 and r["per_class"][ROAD]["fn"] == 1
    assert r["per_class"][WALK]["fn"] == 1 and r["per_class"][WALK]["pq"] == 0.0
    assert r["pq"] == 0.0
    assert r["pq_dagger"] == pytest.approx((1 / 3 + 0.0) / 2)


def test_pq_split_instance_min_points_and_void():
    sem = np.array([CAR] * 100 + [ROAD] * 100 + [0] * 20)
    gi = np.array([0] * 100 + [-1] * 120)
    gs = sem.copy()
    gs[200:] = -1  # void
    pi = np.array([0] * 60 + [1] * 40 + [-1] * 100 + [5] * 20)
    ps = sem.copy()
    ps[200:] = CAR  # a predicted car instance entirely on void: removed with the void points
    r = panoptic_quality(ps, pi, gs, gi, num_classes=9, thing_classes=[6], min_points=15, average="present")
    car = r["per_class"][CAR]
    assert (car["tp"], car["fp"], car["fn"]) == (1, 1, 0)  # the 40-point part is a false positive
    assert car["sq"] == pytest.approx(0.6) and car["rq"] == pytest.approx(2 / 3) and car["pq"] == pytest.approx(0.4)
    # under min_points the leftover is neither FP nor FN
    r = panoptic_quality(ps, pi, gs, gi, num_classes=9, thing_classes=[6], min_points=50, average="present")
    assert r["per_class"][CAR]["fp"] == 0 and r["per_class"][CAR]["pq"] == pytest.approx(0.6)


def test_pq_lists_of_scenes_and_errors():
    sem = np.array([CAR] * 100 + [ROAD] * 100)
    ins = np.array([0] * 50 + [1] * 50 + [-1] * 100)
    r = panoptic_quality(
        [sem, sem], [ins, ins], [sem, sem], [ins, ins], num_classes=9, thing_classes=[6], average="present"
    )
    assert r["per_class"][CAR]["tp"] == 4 and r["per_class"][ROAD]["tp"] == 2 and r["pq"] == 1.0
    # instances are matched within a scene: same ids in another scene do not merge
    other = ins.copy()
    other[:100] = 0
    r = panoptic_quality(
        [sem, sem], [other, other], [sem, sem], [ins, ins], num_classes=9, thing_classes=[6], average="present"
    )
    assert r["per_class"][CAR]["tp"] == 0 and r["per_class"][CAR]["fn"] == 4 and r["per_class"][CAR]["fp"] == 2
    with pytest.raises(ValueError, match="same number"):
        panoptic_quality([sem], [ins, ins], [sem], [ins], num_classes=9, thing_classes=[6])
    with pytest.raises(ValueError, match="thing_classes"):
        panoptic_quality(sem, ins, sem, ins, num_classes=9, thing_classes=[9])
    with pytest.raises(ValueError, match="length"):
        panoptic_quality(sem[:5], ins, sem, ins, num_classes=9, thing_classes=[6])


# ------------------------------------------------------------------------------------------------
# instance AP against ScanNet's evaluate_semantic_instance.py, restated from its algorithm
# ------------------------------------------------------------------------------------------------


def _scannet_evaluator(scenes, valid, min_region=100):
    """ScanNet's benchmark evaluator on ids gt_id = label * 1000 + instance + 1 (0: unannotated): instances
    are ids >= 1000 of valid labels, predictions under ``min_region`` points are skipped, void = points whose
    label is not valid; greedy matching per overlap threshold, then ScanNet's PR integration."""
    overlaps = np.append(np.arange(0.5, 0.95, 0.05), 0.25)
    matches = []
    for gt_ids, preds in scenes:
        gt = {c: [] for c in valid}
        for i in np.unique(gt_ids):
            if i >= 1000 and i // 1000 in valid:
                gt[i // 1000].append({"id": i, "count": int((gt_ids == i).sum()), "matched": []})
        void = ~np.isin(gt_ids // 1000, valid)
        pred = {c: [] for c in valid}
        for k, (mask, label, conf) in enumerate(preds):
            num = int(mask.sum())
            if label not in valid or num < min_region:
                continue
            p = {"uid": (len(matches), k), "count": num, "conf": conf, "void": int((void & mask).sum()), "gts": []}
            for g in gt[label]:
                inter = int(((gt_ids == g["id"]) & mask).sum())
                if inter > 0:
                    g["matched"].append(dict(p, inter=inter))
                    p["gts"].append(dict(g, inter=inter))
            pred[label].append(p)
        matches.append((gt, pred))
    table = np.zeros((len(valid), len(overlaps)))
    for oi, th in enumerate(overlaps):
        visited = set()
        for li, c in enumerate(valid):
            y_true, y_score, hard_fn, has_gt, has_pred = [], [], 0, False, False
            for gt, pred in matches:
                gts = [g for g in gt[c] if g["count"] >= min_region]
                has_gt |= bool(gts)
                has_pred |= bool(pred[c])
                cur_true, cur_score, cur_match = [1] * len(gts), [-np.inf] * len(gts), [False] * len(gts)
                for gi, g in enumerate(gts):
                    found = False
                    for p in g["matched"]:
                        if p["uid"] in visited:
                            continue
                        if p["inter"] / (g["count"] + p["count"] - p["inter"]) > th:
                            if cur_match[gi]:
                                lo, hi = sorted((cur_score[gi], p["conf"]))
                                cur_score[gi] = hi
                                cur_true.append(0)
                                cur_score.append(lo)
                                cur_match.append(True)
                            else:
                                found, cur_match[gi], cur_score[gi] = True, True, p["conf"]
                                visited.add(p["uid"])
                    hard_fn += not found
                y_true += [t for t, m in zip(cur_true, cur_match, strict=True) if m]
                y_score += [s for s, m in zip(cur_score, cur_match, strict=True) if m]
                for p in pred[c]:
                    if any(g["inter"] / (g["count"] + p["count"] - g["inter"]) > th for g in p["gts"]):
                        continue
                    ignore = p["void"] + sum(g["inter"] for g in p["gts"] if g["count"] < min_region)
                    if ignore / p["count"] <= th:
                        y_true.append(0)
                        y_score.append(p["conf"])
            if has_gt and has_pred:
                yt, ys = np.asarray(y_true, float), np.asarray(y_score, float)
                order = np.argsort(ys)
                ys, yt = ys[order], yt[order]
                cum = np.cumsum(yt)
                _, uniq = np.unique(ys, return_index=True)
                n_ex, n_true = len(ys), (cum[-1] if len(cum) else 0)
                prec, rec = np.zeros(len(uniq) + 1), np.zeros(len(uniq) + 1)
                cum = np.append(cum, 0)
                for r, idx in enumerate(uniq):
                    below = cum[idx - 1]
                    tp, fp, fn = n_true - below, n_ex - idx - (n_true - below), below + hard_fn
                    prec[r], rec[r] = tp / (tp + fp), tp / (tp + fn)
                prec[-1], rec[-1] = 1.0, 0.0
                rc = np.append(np.append(rec[0], rec), 0.0)
                table[li, oi] = float(np.dot(prec, np.convolve(rc, [-0.5, 0, 0.5], "valid")))
            else:
                table[li, oi] = 0.0 if has_gt else np.nan
    return {"ap": np.nanmean(table[:, :-1]), "ap50": np.nanmean(table[:, 0]), "ap25": np.nanmean(table[:, -1])}


@pytest.mark.parametrize("seed", range(8))
def test_ap_matches_scannet_evaluator_on_random_scenes(seed):
    """Random scenes (instances of 3 valid classes, void walls / floors / unannotated points, small instances),
    random predictions (near copies, merges, splits, duplicates, wrong classes, void blobs, tiny masks):
    instance_ap equals ScanNet's evaluator."""
    rng = np.random.default_rng(seed)
    valid = [2, 3, 5]
    scenes_ours, scenes_ref = [], []
    for _ in range(3):
        n = 3000
        sem = rng.choice([0, 1, 2, 3, 5, -1], n, p=[0.2, 0.15, 0.25, 0.2, 0.15, 0.05])
        ins = np.full(n, -1)
        for c in valid:
            idx = np.flatnonzero(sem == c)
            cuts = np.sort(rng.choice(len(idx), rng.integers(1, 5), replace=False))
            for j, part in enumerate(np.split(idx, cuts)):
                ins[part] = 100 * c + j
        gt_ids = np.where(ins >= 0, np.maximum(sem, 0) * 1000 + (ins % 100) + 1, 0)
        preds = []
        for j in np.unique(ins[ins >= 0]):
            m = ins == j
            for _ in range(rng.integers(0, 3)):  # near copies and duplicates
                noisy = m ^ (rng.random(n) < rng.uniform(0, 0.08))
                preds.append((noisy, int(sem[m][0]) if rng.random() < 0.85 else int(rng.choice(valid)),
                              float(np.round(rng.random(), 2))))  # fmt: skip
        for _ in range(4):  # random blobs (on void too), merges, tiny masks
            mask = rng.random(n) < rng.uniform(0.01, 0.2)
            preds.append((mask, int(rng.choice(valid)), float(np.round(rng.random(), 2))))
        scenes_ref.append((gt_ids, preds))
        scenes_ours.append({"gt_semantic": sem, "gt_instance": ins,
                            "pred": [{"mask": m, "label": c, "score": s} for m, c, s in preds]})  # fmt: skip
    ours = instance_ap(scenes_ours, class_ids=valid)
    ref = _scannet_evaluator(scenes_ref, valid)
    for key in ("ap", "ap50", "ap25"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
