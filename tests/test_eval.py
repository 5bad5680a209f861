"""Probes, proposals and ``python -m pointins.evaluate`` end to end on tiny checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pointins.eval import instance as inst
from pointins.eval.metrics import instance_ap, miou, panoptic_quality
from pointins.eval.probe import EvalError, ProbeHeads, Scene, load_encoder, lovasz_softmax, prepare, train_probe

# ------------------------------------------------------------------------------------------------
# losses and heads
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_lovasz_on_hard_predictions_is_one_minus_iou(seed):
    """On one-hot probabilities the Lovasz extension equals the Jaccard loss: mean over present classes of
    1 - IoU."""
    rng = np.random.default_rng(seed)
    c = 5
    gt = rng.integers(-1, c, 400)
    pred = np.where(rng.random(400) < 0.7, np.maximum(gt, 0), rng.integers(0, c, 400))
    probs = torch.nn.functional.one_hot(torch.from_numpy(pred), c).double()
    loss = lovasz_softmax(probs, torch.from_numpy(gt), ignore_index=-1)
    _, iou = miou(pred, gt, c)
    present = np.unique(gt[gt >= 0])
    assert float(loss) == pytest.approx(float(np.mean(1 - iou[present])))
    # differentiable, zero when perfect, ignores everything when all labels are ignored
    p = torch.rand(50, 3, requires_grad=True)
    lovasz_softmax(p.softmax(-1), torch.randint(0, 3, (50,))).backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()
    lab = torch.randint(0, 3, (50,))
    assert float(lovasz_softmax(torch.nn.functional.one_hot(lab, 3).float(), lab)) == 0.0
    assert float(lovasz_softmax(torch.rand(4, 3), torch.full((4,), -1))) == 0.0


def _blob_scene(seed=0, n_inst=6, per=300):
    """Instances as tight blobs of class 2 on a floor (class 0); voxels = points (inverse = identity)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 10, (n_inst, 3))
    pts = [c + rng.normal(0, 0.15, (per, 3)) for c in centres]
    floor = np.c_[rng.uniform(0, 10, (2000, 2)), np.full(2000, -1.0)]
    coord = np.concatenate([*pts, floor]).astype(np.float32)
    ins = np.concatenate([np.full(per, i) for i in range(n_inst)] + [np.full(2000, -1)])
    sem = np.where(ins >= 0, 2, 0)
    cen = np.zeros_like(coord)
    for i in range(n_inst):
        cen[ins == i] = coord[ins == i].mean(0) - coord[ins == i]
    return coord, sem, ins, cen


def test_proposals_with_perfect_offsets_recover_the_instances():
    coord, sem, ins, cen = _blob_scene()
    probs = np.eye(3, dtype=np.float32)[sem] * 0.9 + 0.05
    inv = np.arange(len(coord))
    props = inst.proposals(coord, probs, cen, inv, thing_classes=[2], radius=0.03)
    assert len(props) == 6 and all(p["label"] == 2 and p["score"] == pytest.approx(0.95) for p in props)
    r = instance_ap([{"gt_semantic": sem, "gt_instance": ins, "pred": props}], class_ids=[2])
    assert r["ap"] == 1.0
    # no offsets: blobs closer than the radius merge, far ones stay apart; nothing of 200 voxels or fewer is kept
    # (PG's cluster_propose_points)
    props = inst.proposals(coord, probs, np.zeros_like(cen), inv, [2], radius=0.03, min_cluster=1)
    assert all(p["mask"].sum() > 200 for p in props)
    # predicted classes split clusters: the same blob with two classes gives no cross-class proposal
    probs2 = probs.copy()
    probs2[:150] = np.array([0.05, 0.05, 0.0], np.float32) + np.array([0, 0.9, 0], np.float32)
    props = inst.proposals(coord, probs2, cen, inv, thing_classes=[1, 2], radius=0.03, min_cluster=10, min_proposal=100)
    first = [p for p in props if p["mask"][:300].any()]  # blob 0: 150 points of class 1, 150 of class 2
    assert sorted(p["label"] for p in first) == [1, 2] and all(p["mask"].sum() == 150 for p in first)
    assert not (first[0]["mask"] & first[1]["mask"]).any()


def test_panoptic_and_agnostic_with_perfect_offsets():
    coord, sem, ins, cen = _blob_scene(1)
    probs = np.eye(3, dtype=np.float32)[sem]
    inv = np.arange(len(coord))
    ps, pi = inst.panoptic_labels(coord, probs, cen, inv, thing_classes=[2], radius=0.05, min_cluster=1)
    r = panoptic_quality(ps, pi, sem, ins, num_classes=3, thing_classes=[2], min_points=15, average="present")
    assert r["pq"] == 1.0 and r["per_class"][2]["tp"] == 6
    # the official mean runs over all 3 classes: class 1 has no segment here and scores 0
    r = panoptic_quality(ps, pi, sem, ins, num_classes=3, thing_classes=[2], min_points=15)
    assert r["pq"] == pytest.approx(2 / 3) and r["absent_classes"] == [1]
    props = inst.agnostic_proposals(coord, cen, inv, radius=0.05, group=(sem == 2).astype(np.int64))
    assert len(props) == 6  # the sparse floor (0.2 m spacing) forms no cluster of 50
    r = instance_ap([{"gt_semantic": sem, "gt_instance": ins, "pred": props}], class_ids=[2], class_agnostic=True)
    assert r["ap"] == 1.0
    seg = inst.feature_segments(torch.randn(len(coord), 16), k=5)
    assert seg.shape == (len(coord),) and set(np.unique(seg)) <= set(range(5))


def _scene_from(coord, sem, ins, c=8, seed=0):
    rng = np.random.default_rng(seed)
    feat = torch.from_numpy(np.c_[np.eye(3)[sem] * 2, rng.normal(0, 1, (len(coord), c - 3))]).half()
    cen = np.where((ins >= 0)[:, None], inst_cen(coord, ins), np.nan).astype(np.float32)
    s = Scene("s", {}, coord, sem, ins, cen, np.arange(len(coord)), sem, ins, coord)
    s.feat = feat
    return s


def inst_cen(coord, ins):
    out = np.zeros_like(coord)
    for i in np.unique(ins[ins >= 0]):
        out[ins == i] = coord[ins == i].mean(0) - coord[ins == i]
    return out


@pytest.mark.parametrize("kind", ["linear", "decoder"])
def test_probe_training_reduces_the_loss(kind):
    torch.manual_seed(0)
    scenes = [_scene_from(*_blob_scene(i)[:3], seed=i) for i in range(2)]
    heads = ProbeHeads(8, 3, offsets=True, kind=kind)
    losses = train_probe(scenes, heads, epochs=30, lr=3e-3, batch_points=1024, progress=False, lovasz=True)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    logits, off = heads(scenes[0].feat)
    assert off.shape == (len(scenes[0]), 3)
    assert (logits.argmax(1).numpy() == scenes[0].segment).mean() > 0.95


def test_prepare_maps_every_point_and_checks_input():
    from pointins.data import synthetic

    room = synthetic.indoor_scene(0, 0, synthetic.IndoorConfig(points=(6000, 8000)))
    s = prepare(room, 0.05, ("coord", "color", "normal"))
    assert len(s.inverse) == len(room["coord"]) and s.inverse.max() == len(s) - 1
    assert s.batch["feat"].shape == (len(s), 9) and s.batch["coord"][:, 2].min() == 0  # centre-shifted like views
    # the voxel's own point is one of the points mapped to it; centroid offsets land on the centre of the
    # instance's voxels (InstanceParser runs after GridSample)
    has = np.isfinite(s.centroid_offset).all(1)
    j = np.flatnonzero(has)[0]
    members = s.coord[s.instance == s.instance[j]]
    np.testing.assert_allclose(s.coord[j] + s.centroid_offset[j], members.mean(0), atol=1e-4)
    # InstanceParser: voxels of classes that are not instance classes have no instance and no offset target
    # (ScanNet's Pointcept folders give walls and floors instance ids; so does this copy of the room)
    scan = dict(room, instance=np.where(room["segment"] <= 1, 1000 + room["segment"], room["instance"]))
    every = prepare(scan, 0.05, ("coord", "color", "normal"))
    t = prepare(scan, 0.05, ("coord", "color", "normal"), thing_classes=range(2, 10))
    stuff = t.segment <= 1
    assert stuff.any() and np.isfinite(every.centroid_offset[stuff]).all()
    assert (t.instance[stuff] == -1).all() and np.isnan(t.centroid_offset[stuff]).all()
    assert (t.instance[~stuff] == s.instance[~stuff]).all() and np.isfinite(t.centroid_offset[t.instance >= 0]).all()
    bad = dict(room, coord=room["coord"].copy())
    bad["coord"][3, 0] = np.nan
    with pytest.raises(EvalError, match="NaN"):
        prepare(bad, 0.05, ("coord",))
    with pytest.raises(EvalError, match="no points"):
        prepare({k: v[:0] for k, v in room.items()}, 0.05, ("coord",))


def test_load_encoder_errors(tmp_path):
    with pytest.raises(EvalError, match="does not exist"):
        load_encoder(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EvalError, match="cannot read"):
        load_encoder(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(EvalError, match="not a pointins checkpoint"):
        load_encoder(tmp_path / "other.pt")
    with pytest.raises(EvalError, match="run folder"):
        load_encoder(tmp_path)
    enc = load_encoder("scratch", feat_keys=("coord", "strength"), backbone="tiny", grid_size=0.05)
    assert enc.backbone.config.in_channels == 4 and enc.offset_head is None


# ------------------------------------------------------------------------------------------------
# end to end: tiny pretraining runs, then every task
# ------------------------------------------------------------------------------------------------


def _cli(args, _where=None):
    cwd = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, "-m", "pointins.evaluate", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)  # fmt: skip


def test_evaluate_cli_semseg_and_insseg(runs):
    for task in ("semseg", "insseg"):
        out = runs / f"ev_{task}"
        r = _cli(["--checkpoint", str(runs / "run_in"), "--data", str(runs / "indoor"), "--task", task, "--out",
                  str(out), "--epochs", "2", "--no-progress", "--render", "1"], runs)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        res = json.loads((out / "results.json").read_text())
        assert res["task"] == task and res["train_scenes"] == 3 and res["val_scenes"] == 1
        assert 0.0 <= res["miou"] <= 1.0 and len(res["per_class_iou"]) == 10
        assert res["probe_loss_last"] < res["probe_loss_first"]
        assert (out / "results.md").read_text().count("|") > 20 and len(list((out / "renders").glob("*.png"))) == 1
        if task == "insseg":
            assert "ap50" in res and res["num_gt_instances"] > 0 and "AP50" in r.stdout
        lines = (out / "probe_log.jsonl").read_text().splitlines()
        assert len(lines) == res["probe_steps"] and "ce" in json.loads(lines[0])


def test_evaluate_unsupervised_finetune_scratch_and_panoptic(runs):
    from pointins.evaluate import evaluate

    r = evaluate(runs / "run_in", runs / "indoor", "unsupervised", out=runs / "ev_u", progress=False, render=1)
    assert r["probe"] is None and r["num_proposals"] >= 0 and list(r["per_class_ap"]) == ["instance"]
    assert -1 <= r["ssl_offset_cosine"] <= 1 and r["ssl_offset_points"] > 0 and "cosine" in r["summary"]
    # the paper's read-out (BFS, no K-means) beside the grouped one, each with its perfect-offset ceiling
    for k in ("bfs_ap", "bfs_ap50", "ceiling_ap", "ceiling_ap50", "bfs_ceiling_ap", "bfs_ceiling_ap25"):
        assert 0.0 <= r[k] <= 1.0, k
    assert r["bfs_ceiling_ap50"] >= r["bfs_ap50"] and "BFS" in r["summary"]
    r = evaluate(runs / "run_in" / "backbone.pt", runs / "indoor", "semseg", out=runs / "ev_ft", probe="finetune",
                 epochs=1, progress=False, render=0)  # fmt: skip
    assert r["probe_steps"] == 3 and np.isfinite(r["miou"])
    r = evaluate("scratch", runs / "indoor", "semseg", out=runs / "ev_s", epochs=1, progress=False, render=0,
                 grid_size=0.05)  # fmt: skip
    assert r["encoder"].startswith("scratch") and r["grid_size"] == 0.05
    r = evaluate(runs / "run_out", runs / "outdoor", "panoptic", out=runs / "ev_p", epochs=2, progress=False,
                 render=1, min_points=15)  # fmt: skip
    assert r["min_points"] == 15 and 0.0 <= r["pq"] <= 1.0 and "pq_dagger" in r
    assert set(r["per_class_pq"]) == set(r["classes"]) and r["radius"] == pytest.approx(0.3)


def test_evaluate_clean_errors(runs, tmp_path):
    r = _cli(["--checkpoint", str(tmp_path / "missing"), "--data", str(runs / "indoor"), "--task", "semseg"], runs)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = _cli(["--checkpoint", str(runs / "run_out"), "--data", str(runs / "indoor"), "--task", "semseg"], runs)
    assert r.returncode == 2 and "strength" in r.stderr  # an outdoor encoder on indoor data
    r = _cli(["--checkpoint", "scratch", "--data", str(tmp_path / "nowhere"), "--task", "semseg"], runs)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_ablation_smoke(tmp_path):
    """Every variant pretrains, evaluates and lands in the table, plots and JSON (numbers meaningless here)."""
    from pointins.experiments.ablation import ORDER, main, ordering, svg_bars

    variants = ["scratch", "semantic-only", "pointins", "oracle-offset"]
    assert main(["--scale", "smoke", "--out", str(tmp_path), "--no-progress", "--skip-outdoor",
                 "--variants", *variants]) == 0  # fmt: skip
    res = json.loads((tmp_path / "ablation.json").read_text())
    assert set(res["runs"]) == {f"indoor/{v}/seed0" for v in variants}
    assert all(0 <= r["miou"] <= 1 for r in res["runs"].values())
    md = (tmp_path / "ablation.md").read_text()
    assert "| pointins |" in md and "Ordering by AP" in md
    assert (tmp_path / "ablation_indoor.svg").read_text().startswith("<svg")
    assert (tmp_path / "indoor" / "pointins" / "seed0" / "backbone.pt").exists()
    # each run records the thread count it pretrained with, and the report gives those (not its own)
    import torch

    done = json.loads((tmp_path / "indoor" / "pointins" / "seed0" / "done.json").read_text())
    assert done["threads"] == torch.get_num_threads() and done["finished"]
    assert f"Pretraining threads per run (each run's `done.json`): {torch.get_num_threads()} (3 runs)." in md
    # the offset head alone: unsupervised AP and agreement with the true centres, for offset variants only
    assert "offset cosine" in md and "| pointins |" in md.split("offset head alone")[1]
    assert -1 <= res["runs"]["indoor/pointins/seed0"]["offset_cos"] <= 1
    assert "offset_cos" not in res["runs"]["indoor/semantic-only/seed0"]
    # the label-using control is marked as such; every offset run reports its BFS read-out, ceilings and the
    # pretraining diagnostics
    assert "| oracle-offset (control: uses labels) |" in md and "label diagnostics at the end of pretraining" in md
    run = res["runs"]["indoor/pointins/seed0"]
    assert {"unsup_bfs_ap", "unsup_bfs_ceiling_ap", "unsup_ceiling_ap"} <= set(run)
    assert res["runs"]["indoor/oracle-offset/seed0"]["pre_teacher_cos"] == pytest.approx(1.0, abs=1e-4)
    # a repeated command reuses finished pretraining and evaluations
    ev = tmp_path / "indoor" / "pointins" / "seed0" / "eval-unsupervised" / "results.json"
    stamp = ev.stat().st_mtime_ns
    assert main(["--scale", "smoke", "--out", str(tmp_path), "--no-progress", "--skip-outdoor",
                 "--variants", *variants]) == 0  # fmt: skip
    assert ev.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "ablation.json").read_text())["runs"] == res["runs"]
    # --report-only tabulates the finished runs of a wider command and runs nothing: no folder for the variant and
    # the seed never run, the finished ones untouched, the report says so
    assert main(["--scale", "smoke", "--out", str(tmp_path), "--no-progress", "--skip-outdoor", "--report-only",
                 "--seeds", "0", "1", "--variants", *variants, "offset"]) == 0  # fmt: skip
    part = json.loads((tmp_path / "ablation.json").read_text())
    assert part["runs"] == res["runs"] and part["report_only"] is True
    assert not (tmp_path / "indoor" / "offset").exists() and not (tmp_path / "indoor" / "pointins" / "seed1").exists()
    assert ev.stat().st_mtime_ns == stamp
    md = (tmp_path / "ablation.md").read_text()
    assert "Report only" in md and "| offset | … |" in md and md.count("| 1 |") >= len(variants)
    # on an empty folder it generates no scenes and reports no run
    empty = tmp_path / "empty"
    assert main(["--scale", "smoke", "--out", str(empty), "--no-progress", "--report-only"]) == 0
    assert not (empty / "data").exists() or not any((empty / "data").iterdir())
    assert json.loads((empty / "ablation.json").read_text())["runs"] == {}
    assert ordering(["a", "b", "c"], [0.2, 0.2, 0.1]) == "c < a = b"
    assert svg_bars("t", list(ORDER), {"AP": [0.1] * len(ORDER)}, {"AP": [0.01] * len(ORDER)}).count("<rect") == 10
    with pytest.raises(SystemExit):
        main(["--variants", "nonsense"])
    md = (tmp_path / "ablation.md").read_text()
    assert "PointINS − semantic-only" in md and "Paper's ordering" in md and "Machine:" in md


def test_ablation_outdoor_probes_score_more_sweeps_than_pretraining_saw(tmp_path, monkeypatch):
    """outdoor_eval_scenes: the probes train and score on a larger set from the same generator and seed (the
    scored sweeps unseen by pretraining); pretraining keeps its own data; the table splits PQ into things / stuff."""
    from pointins.experiments import ablation

    monkeypatch.setitem(ablation.SCALES, "smoke", {**ablation.SCALES["smoke"], "outdoor_eval_scenes": 8})
    assert ablation.main(["--scale", "smoke", "--out", str(tmp_path), "--no-progress", "--skip-indoor",
                          "--variants", "semantic-only"]) == 0  # fmt: skip
    run = tmp_path / "outdoor" / "semantic-only" / "seed0"
    pre = json.loads((run / "done.json").read_text())["config"]["data"]
    probe = json.loads((run / "eval-panoptic" / "results.json").read_text())["data"]
    assert Path(pre).name == "outdoor-n4-seed100" and Path(probe).name == "outdoor-n8-seed100"
    val = (Path(probe) / "val.txt").read_text().split()
    assert val == ["scene_00006", "scene_00007"]  # beyond the 4 sweeps pretraining drew from
    md = (tmp_path / "ablation.md").read_text()
    assert "| PQ | SQ | RQ | PQ† | PQ^Th | PQ^St | mIoU |" in md
    assert {"pq_things", "pq_stuff"} <= set(
        json.loads((tmp_path / "ablation.json").read_text())["runs"]["outdoor/semantic-only/seed0"]
    )


def test_ablation_report_partial_and_gap(tmp_path):
    """An interrupted ablation reports what it finished (missing cells marked, seed counts), the paper's
    ordering and the PointINS gain with its spread."""
    from pointins.experiments.ablation import _report, gap

    runs = {}
    vals = {"semantic-only": [0.05, 0.06, 0.04], "offset": [0.06, 0.07, 0.05], "pointins": [0.10, 0.09, 0.11]}
    for v, xs in vals.items():
        for s, x in enumerate(xs):
            runs[f"indoor/{v}/seed{s}"] = {"miou": 0.4, "ap": x, "ap50": 2 * x, "ap25": 3 * x}
            if v != "semantic-only":
                runs[f"indoor/{v}/seed{s}"].update(unsup_ap=x / 2, unsup_ap50=x, unsup_ap25=x, offset_cos=0.3,
                                                   offset_l1=0.9)  # fmt: skip
    del runs["indoor/offset/seed2"]
    g = gap(runs, "indoor", "ap", "semantic-only", "pointins", [0, 1, 2])
    assert g["mean"] == pytest.approx(0.05) and g["seeds"] == 3 and g["std_a"] == pytest.approx(0.01)
    assert g["std_diff"] == pytest.approx(np.std([0.05, 0.03, 0.07], ddof=1))
    assert gap(runs, "indoor", "ap", "offset+odr", "pointins", [0, 1, 2]) is None
    res = {"scale": "cpu", "steps": 600, "seeds": [0, 1, 2], "runs": runs,
           "variants": ["scratch", "semantic-only", "offset", "offset+odr", "pointins"]}  # fmt: skip
    _report(tmp_path, res, ["indoor"])
    md = (tmp_path / "ablation.md").read_text()
    assert "| scratch | … | … | … | … | 0 |" in md and "| offset | 6.0 ± 1.4 |" not in md
    assert "| offset | 40.0 ± 0.0 | 6.5 ± 0.7 |" in md and "| 2 |" in md
    assert "**holds**" in md and "pointins − offset +3.0 (2 seed(s))" in md and "+5.0 AP over 3 seed(s)" in md
    assert "means over different numbers of seeds" in md
    assert "by the per-seed differences: ahead by more than 2 std" in md and "**met**" in md
    assert "still running or interrupted" in md
    assert json.loads((tmp_path / "ablation.json").read_text())["paper_order_holds"] == {"indoor": True}


def test_ablation_paper_ordering_uses_per_seed_differences(tmp_path):
    """While a seed is partial, the paper's ordering compares each step over the seeds both variants finished:
    here ``offset`` has only seed 0, on which it beats semantic-only, while semantic-only's 3-seed mean is above
    offset's 1-seed mean (a comparison of means over different seeds read it as "does not hold")."""
    from pointins.experiments.ablation import _report

    runs = {}
    for v, xs in {"semantic-only": [0.02, 0.08, 0.08], "offset": [0.03], "pointins": [0.05, 0.10, 0.11]}.items():
        for s, x in enumerate(xs):
            runs[f"indoor/{v}/seed{s}"] = {"miou": 0.4, "ap": x, "ap50": x, "ap25": x, "offset_cos": 0.3,
                                           "offset_l1": 0.9}  # fmt: skip
    res = {"scale": "cpu", "steps": 600, "seeds": [0, 1, 2], "runs": runs,
           "variants": ["semantic-only", "offset", "offset+odr", "pointins"]}  # fmt: skip
    _report(tmp_path, res, ["indoor"])
    md = (tmp_path / "ablation.md").read_text()
    assert "**holds**" in md and "offset − semantic-only +1.0 (1 seed(s))" in md
    assert "pointins − offset +2.0 (1 seed(s))" in md
    assert json.loads((tmp_path / "ablation.json").read_text())["paper_order_holds"] == {"indoor": True}
    # a step no seed has both sides of leaves the ordering undecided, not "holds"
    runs["indoor/offset+odr/seed2"] = {"miou": 0.4, "ap": 0.2, "ap50": 0.2, "ap25": 0.2, "offset_cos": 0.3,
                                       "offset_l1": 0.9}  # fmt: skip
    _report(tmp_path, res, ["indoor"])
    md = (tmp_path / "ablation.md").read_text()
    assert "**undecided**" in md and "offset+odr − offset no seed has both" in md
    assert "paper_order_holds" not in json.loads((tmp_path / "ablation.json").read_text())


def test_ablation_gap_verdict_negative(tmp_path):
    """A PointINS deficit larger than the spread is reported as behind, not as "within 2 std" (the 600-step
    outdoor table once read "-3.4 PQ ... within 2 std" for a gap of 4 std of the per-seed differences)."""
    from pointins.experiments.ablation import _report

    runs = {}
    for v, xs in {"semantic-only": [0.28, 0.30, 0.32], "pointins": [0.257, 0.259, 0.286]}.items():
        for s, x in enumerate(xs):
            runs[f"outdoor/{v}/seed{s}"] = {"pq": x, "sq": x, "rq": x, "pq_dagger": x, "miou": 0.4, "unsup_ap": 0.01,
                                            "unsup_ap50": 0.02, "unsup_ap25": 0.03, "offset_cos": 0.3,
                                            "offset_l1": 0.9}  # fmt: skip
    res = {"scale": "cpu", "steps": 600, "seeds": [0, 1, 2], "runs": runs, "variants": ["semantic-only", "pointins"]}
    _report(tmp_path, res, ["outdoor"])
    md = (tmp_path / "ablation.md").read_text()
    assert "-3.3 PQ over 3 seed(s)" in md
    assert "by the variants' std: within 2 std" in md.lower()
    assert "by the per-seed differences: behind by more than 2 std" in md and "**not met**" in md


def test_offset_agreement():
    from pointins.evaluate import offset_agreement

    rng = np.random.default_rng(0)
    t = rng.normal(size=(200, 3))
    t[:20] = np.nan  # voxels without an instance are left out
    ok = t[20:]
    r = offset_agreement(t.copy(), t)
    assert r["cosine"] == pytest.approx(1.0) and r["l1_ratio"] == 0.0 and r["points"] == 180
    r = offset_agreement(np.zeros_like(t), t)
    assert r["cosine"] == 0.0 and r["l1_ratio"] == pytest.approx(1.0)
    r = offset_agreement([-t[:100], -t[100:]], [t[:100], t[100:]])  # lists of scenes
    assert r["cosine"] == pytest.approx(-1.0) and r["l1_ratio"] == pytest.approx(2.0)
    half = ok * 0.5
    r = offset_agreement(half, ok)
    assert r["cosine"] == pytest.approx(1.0) and r["l1_ratio"] == pytest.approx(0.5)
    assert abs(offset_agreement(rng.normal(size=ok.shape), ok)["cosine"]) < 0.15  # random directions
    assert np.isnan(offset_agreement(np.zeros((3, 3)), np.full((3, 3), np.nan))["cosine"])
    with pytest.raises(ValueError, match="targets"):
        offset_agreement(np.zeros((3, 3)), np.zeros((4, 3)))


def test_ablation_pretraining_resumes_an_interrupted_run(tmp_path, monkeypatch, capsys):
    """A run cut short after a checkpoint continues from it on the next command (and lands where an uninterrupted
    run lands); a finished run made with other bookkeeping settings (ckpt_every, log_every...) is reused."""
    import torch

    from pointins.experiments import ablation
    from pointins.train import load_checkpoint

    data = ablation._data(tmp_path / "data", "indoor", 4, (8_000, 12_000), 0, False)
    over = [*ablation.SCALES["smoke"]["indoor"], "ckpt_every=2"]
    ref = ablation._pretrain("indoor", "pointins", 0, 5, data, tmp_path / "ref", over, False)
    # the same run, stopped by an error after its step-4 checkpoint
    import pointins.train as train

    real = train.PointINS.step_losses

    def crash(self, batch, progress, **kw):
        if kw.get("step", 0) >= 4:  # 0-based: the fifth step, after the step-4 checkpoint
            raise KeyboardInterrupt("cut")
        return real(self, batch, progress, **kw)

    monkeypatch.setattr(train.PointINS, "step_losses", crash)
    with pytest.raises(KeyboardInterrupt):
        ablation._pretrain("indoor", "pointins", 0, 5, data, tmp_path / "cut", over, False)
    monkeypatch.setattr(train.PointINS, "step_losses", real)
    assert load_checkpoint(tmp_path / "cut")["step"] == 4 and not (tmp_path / "cut" / "done.json").exists()
    capsys.readouterr()
    ablation._pretrain("indoor", "pointins", 0, 5, data, tmp_path / "cut", over, False)
    err = capsys.readouterr().err
    assert "ablation: resuming" in err and "from step 4" in err
    a = torch.load(ref / "backbone.pt", weights_only=True)["backbone"]
    b = torch.load(tmp_path / "cut" / "backbone.pt", weights_only=True)["backbone"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    stamp = (ref / "done.json").stat().st_mtime_ns
    ablation._pretrain("indoor", "pointins", 0, 5, data, ref, [*over[:-1], "ckpt_every=3", "log_every=2"], False)
    assert (ref / "done.json").stat().st_mtime_ns == stamp  # bookkeeping differs only: reused, not redone


def test_ablation_reuses_runs_made_before_a_setting_existed():
    """A finished run's config written before a setting was added (views.scene_points) counts as that setting's
    default: reused; a run with another value is not the same run."""
    import json

    from pointins.config import resolve
    from pointins.experiments import ablation

    now = json.loads(json.dumps(resolve("cpu-demo", []).to_dict()))
    before = json.loads(json.dumps(now))
    del before["views"]["scene_points"]
    assert ablation._same_run(before, now) and ablation._same_run(now, before)
    other = json.loads(json.dumps(now))
    other["views"]["scene_points"] = 8000
    assert not ablation._same_run(before, other) and not ablation._same_run(other, now)
    assert now["views"]["scene_points"] == 0  # the default the old runs ran with


def test_budget_curve_runs_each_budget_once_and_reuses_an_earlier_ablation(tmp_path):
    """The budget curve (#32 7c) pretrains semantic-only and PointINS at each budget, shares one set of scenes,
    reads a budget an earlier ablation ran instead of redoing it, and tabulates the gain per budget."""
    from pointins.experiments import ablation, budget

    old = tmp_path / "abl"
    assert ablation.main(["--scale", "smoke", "--out", str(old), "--no-progress", "--skip-outdoor", "--steps", "1",
                          "--variants", "semantic-only", "pointins"]) == 0  # fmt: skip
    ckpt = old / "indoor" / "pointins" / "seed0" / "backbone.pt"
    stamp = ckpt.stat().st_mtime_ns
    out = tmp_path / "budget"
    argv = ["--scale", "smoke", "--out", str(out), "--no-progress", "--skip-outdoor", "--steps", "2", "1",
            "--reuse", f"1={old}"]  # fmt: skip
    assert budget.main(argv) == 0
    assert ckpt.stat().st_mtime_ns == stamp  # the reused budget was read, not pretrained again
    assert (out / "data").resolve() == (old / "data").resolve()  # its scenes are shared, not regenerated
    assert (out / "steps2" / "indoor" / "pointins" / "seed0" / "backbone.pt").exists()
    assert not (out / "steps1").exists()
    res = json.loads((out / "budget.json").read_text())
    assert res["steps"] == [1, 2] and set(res["budgets"]) == {"1", "2"}
    assert set(res["budgets"]["2"]) == {"indoor/semantic-only/seed0", "indoor/pointins/seed0"}
    done = json.loads((out / "steps2" / "indoor" / "pointins" / "seed0" / "done.json").read_text())
    assert done["step"] == 2 and done["config"]["steps"] == 2
    md = (out / "budget.md").read_text()
    rows = [x for x in md.splitlines() if x.startswith("| 1 |") or x.startswith("| 2 |")]
    assert len(rows) == 2 and all("n/a" not in r and r.endswith("| 1/1 |") for r in rows)
    g = res["pointins_gain"]["indoor"]["2"]
    r2 = res["budgets"]["2"]
    assert g["mean"] == pytest.approx(r2["indoor/pointins/seed0"]["ap"] - r2["indoor/semantic-only/seed0"]["ap"])
    assert "**not met**" in md  # one seed cannot meet a target stated against the spread over seeds
    assert (out / "budget_indoor.svg").read_text().startswith("<svg")
    # a repeated command reuses every finished run
    stamp2 = (out / "steps2" / "indoor" / "pointins" / "seed0" / "backbone.pt").stat().st_mtime_ns
    assert budget.main(argv) == 0
    assert (out / "steps2" / "indoor" / "pointins" / "seed0" / "backbone.pt").stat().st_mtime_ns == stamp2
    # --report-only with a budget not run yet: tabulated as missing, nothing pretrained for it
    assert budget.main([*argv[:5], "--skip-outdoor", "--steps", "1", "2", "3", "--reuse", f"1={old}",
                        "--report-only"]) == 0  # fmt: skip
    assert not (out / "steps3").exists()  # (no folder or data link made for it either)
    res3 = json.loads((out / "budget.json").read_text())
    assert res3["budgets"]["3"] == {} and res3["budgets"]["2"] == res["budgets"]["2"]
    assert "Report only" in (out / "budget.md").read_text()
    assert budget.main([*argv[:-2], "--reuse", "1"]) == 2  # not STEPS=DIR
    assert budget.main([*argv[:-2], "--reuse", f"1={tmp_path / 'missing'}"]) == 2
