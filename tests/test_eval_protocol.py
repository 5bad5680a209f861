"""The evaluation protocol: benchmark class sets, PG-v1m2 probe pieces, the official PQ averaging."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pointins.eval.benchmarks import BENCHMARKS, class_set, detect_layout
from pointins.eval.metrics import panoptic_quality
from pointins.eval.probe import ProbeHeads, augment, one_cycle, prepare
from pointins.evaluate import cluster_sizes

# ------------------------------------------------------------------------------------------------
# class sets
# ------------------------------------------------------------------------------------------------


def _scannet_like_labels(rng, n=2000):
    """ScanNet in Pointcept's layout: every segment group has an instance id, walls (0) and floors (1) too."""
    seg = rng.integers(0, 20, n)
    ins = rng.integers(0, 30, n)
    return seg, ins


def test_scannet_layout_without_meta_uses_the_benchmark_classes(tmp_path):
    rng = np.random.default_rng(0)
    labels = [_scannet_like_labels(rng) for _ in range(3)]
    refs = [type("R", (), {"name": f"scene{i:04d}_00", "kind": None})() for i in range(3)]
    assert detect_layout(tmp_path / "data", refs) == "scannet"
    warnings = []
    cs = class_set(None, tmp_path / "data", refs, labels, warn=warnings.append)
    assert cs.name == "scannet" and len(cs.thing_classes) == 18 and 0 not in cs.thing_classes
    assert 1 not in cs.thing_classes and cs.classes[0] == "wall" and not warnings
    # inference, the last resort, would make walls and floors instance classes: it warns and says what to do
    inferred = class_set(None, tmp_path / "mine", [], labels, dataset="infer", warn=warnings.append)
    assert {0, 1} <= set(inferred.thing_classes) and warnings and "meta.json" in warnings[0]
    assert "--dataset" in warnings[0]


def test_known_layouts_and_their_pq_sizes(tmp_path):
    kitti = [type("R", (), {"name": "08/000000", "kind": "kitti"})()]
    nus = [type("R", (), {"name": "tok", "kind": "nuscenes"})()]
    assert detect_layout(tmp_path, kitti) == "semantickitti" and detect_layout(tmp_path, nus) == "nuscenes"
    assert BENCHMARKS["nuscenes"].min_points == 15 and BENCHMARKS["semantickitti"].min_points == 50
    assert BENCHMARKS["semantickitti"].thing_classes == tuple(range(8))
    assert BENCHMARKS["nuscenes"].thing_classes == tuple(range(10))
    assert len(BENCHMARKS["scannet200"].classes) == 200 and len(BENCHMARKS["scannet200"].thing_classes) == 198
    assert {0, 2}.isdisjoint(BENCHMARKS["scannet200"].thing_classes)  # wall, floor in ScanNet200's order
    assert BENCHMARKS["s3dis"].thing_classes == tuple(range(13))
    area = [type("R", (), {"name": "Area_5/office_1", "kind": None})()]
    assert detect_layout(tmp_path / "x", area) == "s3dis"
    assert detect_layout(tmp_path / "scannet200", [type("R", (), {"name": "scene0000_00", "kind": None})()]) == (
        "scannet200"
    )
    assert detect_layout(tmp_path / "scans", [type("R", (), {"name": "a.ply", "kind": None})()]) is None


def test_meta_json_wins_and_is_validated(tmp_path):
    labels = [(np.array([0, 1, 2]), np.array([0, 1, 2]))]
    refs = [type("R", (), {"name": "scene0000_00", "kind": None})()]
    cs = class_set({"classes": ["a", "b", "c"], "thing_classes": [2]}, tmp_path, refs, labels)
    assert cs.classes == ("a", "b", "c") and cs.thing_classes == (2,) and cs.stuff_classes == (0, 1)
    cs = class_set({"classes": ["a", "b", "c"], "stuff_classes": [0]}, tmp_path, refs, labels)
    assert cs.thing_classes == (1, 2)
    assert class_set({"benchmark": "nuscenes"}, tmp_path, refs, labels).min_points == 15
    for bad, word in (({"classes": "abc"}, "classes"), ({"classes": ["a"], "thing_classes": [3]}, "outside"),
                      ({"benchmark": "kitty"}, "benchmark"), ({"classes": ["a", "b", "c"], "min_points": -1},
                                                               "min_points")):  # fmt: skip
        with pytest.raises(ValueError, match=word):
            class_set(bad, tmp_path, refs, labels)
    with pytest.raises(ValueError, match="labels go up to 25"):
        class_set(None, tmp_path, [], [(np.array([25]), np.array([0]))], dataset="s3dis")
    with pytest.raises(ValueError, match="--dataset"):
        class_set(None, tmp_path, [], labels, dataset="imagenet")


def test_evaluate_on_a_scannet_layout_scores_18_classes(runs, tmp_path):
    """A Pointcept ScanNet folder (no meta.json, walls and floors with instance ids): AP runs over the
    benchmark's instance classes, never wall or floor."""
    from pointins.data import PointCloudDataset
    from pointins.data.writers import write_pointcept
    from pointins.evaluate import evaluate

    src = PointCloudDataset(runs / "indoor")
    root = tmp_path / "scannet"
    for i in range(len(src)):
        sc = src[i]
        keep = {k: sc[k] for k in ("coord", "color", "normal", "segment", "instance")}
        seg = keep["segment"]
        keep["instance"] = np.where(seg <= 1, 500 + seg, keep["instance"])  # ScanNet: every group has an id
        write_pointcept(root / ("train" if i < 3 else "val") / f"scene{i:04d}_00", keep)
    r = evaluate(runs / "run_in", root, "insseg", out=tmp_path / "ev", epochs=1, progress=False, render=0)
    assert r["class_set"]["name"] == "scannet" and len(r["per_class_ap"]) == 18
    assert "wall" not in r["per_class_ap"] and "floor" not in r["per_class_ap"]
    g = r["grid_size"]
    assert (r["cluster_min_points"], r["cluster_propose_points"]) == cluster_sizes(g)
    assert r["radius"] == pytest.approx(1.5 * g)
    md = (tmp_path / "ev" / "results.md").read_text()
    assert "ScanNet20" in md


# ------------------------------------------------------------------------------------------------
# the PG-v1m2 probe
# ------------------------------------------------------------------------------------------------


def test_cluster_sizes_are_pgs_at_the_protocol_grid():
    assert cluster_sizes(0.02) == (50, 200) and cluster_sizes(0.04) == (12, 50) and cluster_sizes(0.01) == (200, 800)
    assert cluster_sizes(0.04, 7, 9) == (7, 9)


def test_probe_heads_are_pointgroups():
    h = ProbeHeads(32, 20, offsets=True)
    assert isinstance(h.semantic, torch.nn.Linear) and h.semantic.in_features == 32
    kinds = [type(m).__name__ for m in h.offset]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear"] and h.offset[0].out_features == 32
    assert h.offset[1].eps == 1e-3 and h.offset[1].momentum == 0.01 and h.offset[3].out_features == 3
    logits, off = h(torch.randn(10, 32))
    assert logits.shape == (10, 20) and off.shape == (10, 3)
    d = ProbeHeads(32, 20, offsets=True, kind="decoder", hidden=16)
    assert d.semantic.in_features == 16 and d(torch.randn(5, 32))[1].shape == (5, 3)


@pytest.mark.parametrize("total", [1, 2, 19, 137, 1000])
def test_one_cycle_is_torchs(total):
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(m.parameters(), lr=0.002)
    sch = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.002, total_steps=total, pct_start=0.05,
                                              div_factor=10.0, final_div_factor=1000.0)  # fmt: skip
    for i in range(total):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.002 * one_cycle(i, total), rel=1e-9, abs=1e-15)
        opt.step()
        sch.step()


def test_augment_keeps_labels_with_their_points():
    from pointins.data import synthetic

    room = synthetic.indoor_scene(0, 0, synthetic.IndoorConfig(points=(6000, 8000)))
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(4):
        a = augment(room, rng, 0.05)
        assert set(a) == {"coord", "color", "normal", "segment", "instance"}
        assert len({len(v) for v in a.values()}) == 1 and np.isfinite(a["coord"]).all()
        assert 0 <= a["color"].min() and a["color"].max() <= 255
        # every augmented instance is still one class (labels travelled with their points)
        for i in np.unique(a["instance"][a["instance"] >= 0]):
            assert len(np.unique(a["segment"][a["instance"] == i])) == 1
        sizes.append(len(a["coord"]))
        s = prepare(a, 0.05, ("coord", "color", "normal"), thing_classes=range(2, 10))
        assert 0.9 * len(a["coord"]) <= len(s) <= len(a["coord"])  # about one point per voxel already
    full = len(prepare(room, 0.05, ("coord",)))
    assert all(n <= 0.8 * full * 1.3 for n in sizes) and len(set(sizes)) > 1


def test_augmented_probe_trains(runs, tmp_path):
    from pointins.evaluate import evaluate

    r = evaluate(runs / "run_in", runs / "indoor", "insseg", out=tmp_path / "ev", epochs=2, augment=True,
                 progress=False, render=0)  # fmt: skip
    assert r["augment"] and np.isfinite(r["probe_loss_last"]) and r["weight_decay"] == 0.05 and r["lovasz"]
    lines = [json.loads(x) for x in (tmp_path / "ev" / "probe_log.jsonl").read_text().splitlines()]
    assert {x["epoch"] for x in lines} == {0, 1} and "offset" in lines[0]
    with pytest.raises(TypeError, match="unexpected"):
        evaluate(runs / "run_in", runs / "indoor", "insseg", epochz=2)


# ------------------------------------------------------------------------------------------------
# PQ: the official averaging (PanopticEval), checked against a plain re-statement of its algorithm
# ------------------------------------------------------------------------------------------------


def _panoptic_eval_reference(scenes, n, things, min_points, ignore=-1):
    """SemanticKITTI's PanopticEval as its docs state it: void points out; per included class, instance ids
    + 1 (stuff and thing points without an instance share id 1 = one segment), a match is IoU > 0.5, unmatched
    segments of at least min_points are FP / FN; PQ = mean over all classes of SQ x RQ, x / max(d, eps)."""
    eps = 1e-15
    tp, fp, fn, iou_sum = (np.zeros(n) for _ in range(4))
    for ps, pi, gs, gi in scenes:
        keep = gs != ignore
        ps, pi, gs, gi = ps[keep], pi[keep], gs[keep], gi[keep]
        p_id = np.where(np.isin(ps, things) & (pi >= 0), pi + 1, 0) + 1
        g_id = np.where(np.isin(gs, things) & (gi >= 0), gi + 1, 0) + 1
        for cl in range(n):
            p_seg = {i: set(np.flatnonzero((ps == cl) & (p_id == i))) for i in np.unique(p_id[ps == cl])}
            g_seg = {i: set(np.flatnonzero((gs == cl) & (g_id == i))) for i in np.unique(g_id[gs == cl])}
            mp, mg = set(), set()
            for gk, gv in g_seg.items():
                for pk, pv in p_seg.items():
                    inter = len(gv & pv)
                    if inter and inter / len(gv | pv) > 0.5:
                        tp[cl] += 1
                        iou_sum[cl] += inter / len(gv | pv)
                        mp.add(pk)
                        mg.add(gk)
            fn[cl] += sum(1 for k, v in g_seg.items() if k not in mg and len(v) >= min_points)
            fp[cl] += sum(1 for k, v in p_seg.items() if k not in mp and len(v) >= min_points)
    sq = iou_sum / np.maximum(tp, eps)
    rq = tp / np.maximum(tp + 0.5 * fp + 0.5 * fn, eps)
    return float((sq * rq).mean()), float(sq.mean()), float(rq.mean())


def _random_panoptic_scene(rng, n_cls, things, n=600, present=None):
    present = np.asarray(present if present is not None else np.arange(n_cls))
    gs = rng.choice(present, n)
    gs[rng.random(n) < 0.05] = -1
    gi = np.where(np.isin(gs, things), rng.integers(0, 4, n), -1)
    ps = np.where(rng.random(n) < 0.85, gs, rng.choice(present, n))
    ps[ps < 0] = present[0]
    pi = np.where(np.isin(ps, things), np.where(rng.random(n) < 0.9, gi, rng.integers(0, 6, n)), -1)
    pi[np.isin(ps, things) & (pi < 0)] = 7
    return ps, pi, gs, gi


@pytest.mark.parametrize("seed", range(6))
def test_pq_matches_panoptic_eval_on_random_scenes(seed):
    rng = np.random.default_rng(seed)
    n_cls, things = 6, [0, 1, 2]
    present = None if seed % 2 == 0 else [0, 2, 3, 5]  # odd seeds: two classes never occur
    scenes = [_random_panoptic_scene(rng, n_cls, things, present=present) for _ in range(3)]
    mp = int(rng.choice([1, 15, 50]))
    ref_pq, ref_sq, ref_rq = _panoptic_eval_reference(scenes, n_cls, things, mp)
    r = panoptic_quality(*[[s[k] for s in scenes] for k in range(4)], num_classes=n_cls, thing_classes=things,
                         min_points=mp)  # fmt: skip
    assert r["pq"] == pytest.approx(ref_pq, abs=1e-12) and r["sq"] == pytest.approx(ref_sq, abs=1e-12)
    assert r["rq"] == pytest.approx(ref_rq, abs=1e-12)


def test_pq_three_scenes_official_vs_present_only():
    """Three small scenes that lack 2 of the 6 classes: the official mean counts them as 0, the
    occurring-classes mean leaves them out and reads higher."""
    rng = np.random.default_rng(7)
    things = [0, 1, 2]
    scenes = [_random_panoptic_scene(rng, 6, things, present=[0, 2, 3, 5]) for _ in range(3)]
    args = [[s[k] for s in scenes] for k in range(4)]
    off = panoptic_quality(*args, num_classes=6, thing_classes=things, min_points=15)
    pres = panoptic_quality(*args, num_classes=6, thing_classes=things, min_points=15, average="present")
    assert off["absent_classes"] == [1, 4] and off["average"] == "all"
    assert pres["pq"] == pytest.approx(off["pq"] * 6 / 4) and pres["pq"] > off["pq"]
    assert off["per_class"][1]["pq"] == 0.0 and np.isnan(pres["per_class"][1]["pq"])
    assert off["pq"] == pytest.approx(_panoptic_eval_reference(scenes, 6, things, 15)[0], abs=1e-12)
    with pytest.raises(ValueError, match="average"):
        panoptic_quality(*args, num_classes=6, thing_classes=things, average="mean")


def test_nuscenes_min_points_by_default(runs, tmp_path):
    """min_points follows the class set: a meta.json naming nuScenes gives 15 without --min-points."""
    import shutil

    from pointins.evaluate import evaluate

    data = tmp_path / "out"
    shutil.copytree(runs / "outdoor", data)
    meta = json.loads((data / "meta.json").read_text())
    meta["min_points"] = 15
    (data / "meta.json").write_text(json.dumps(meta))
    r = evaluate(runs / "run_out", data, "panoptic", out=tmp_path / "ev", epochs=1, progress=False, render=0)
    assert r["min_points"] == 15 and r["pq_average"] == "all"
    r = evaluate(runs / "run_out", runs / "outdoor", "panoptic", out=tmp_path / "ev2", epochs=1, progress=False,
                 render=0, pq_average="present")  # fmt: skip
    assert r["min_points"] == 50 and r["pq_average"] == "present"
    assert Path(tmp_path / "ev2" / "results.json").exists()
