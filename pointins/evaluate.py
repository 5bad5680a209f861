"""``python -m pointins.evaluate``: what a pretrained encoder is worth (METHOD.md section 7).

    python -m pointins.evaluate --checkpoint runs/cpu-demo --task semseg        # linear probe mIoU
    python -m pointins.evaluate --checkpoint runs/cpu-demo --task insseg        # instance AP / AP50 / AP25
    python -m pointins.evaluate --checkpoint runs/outdoor --data data/outdoor --task panoptic   # PQ
    python -m pointins.evaluate --checkpoint runs/cpu-demo --task unsupervised  # class-agnostic AP, no labels
    python -m pointins.evaluate --checkpoint scratch --data data/indoor --task semseg          # random encoder

``--checkpoint``: a run folder, its ``backbone.pt`` or a ``ckpt_*.pt``; ``scratch`` is a random encoder
(``--backbone``, ``--grid-size``). ``--data``: any labelled dataset the readers accept, with train/val splits
(else the first 80% of the scenes train the probe); default: the synthetic scenes the checkpoint was
pretrained on. ``--probe``: ``linear`` (frozen encoder, one Linear per head: the protocol), ``decoder``
(frozen, 2-layer MLP heads) or ``finetune`` (everything trains).

Writes to ``--out`` (default ``<run>/eval-<task>``): ``results.json`` (metrics, per-class tables, settings),
``results.md``, ``probe_log.jsonl`` (losses) and ``renders/*.png`` (ground truth | prediction, top view).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pointins.eval import instance as inst
from pointins.eval.metrics import class_agnostic_ap, instance_ap, miou, panoptic_quality
from pointins.eval.probe import EvalError, ProbeHeads, extract, load_encoder, predict, prepare, train_probe

__all__ = ["TASKS", "evaluate", "main", "offset_agreement"]

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


def _classes(meta: dict | None, scenes: list, kind: str) -> tuple[list[str], list[int], int]:
    """Class names, thing classes and the ignore index: from meta.json, else from the labels."""
    if meta and "classes" in meta:
        return list(meta["classes"]), [int(c) for c in meta.get("thing_classes", [])], int(meta.get("ignore_index", -1))
    top = max(int(s.point_segment.max()) for s in scenes)
    if top < 0:
        raise EvalError("pointins.evaluate: the scenes have no semantic labels (segment); the probes need them.")
    things = sorted({int(c) for s in scenes for c in np.unique(s.point_segment[s.point_instance >= 0]) if c >= 0})
    return [f"class{c}" for c in range(top + 1)], things, -1


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


def evaluate(
    checkpoint,
    data=None,
    task: str = "semseg",
    *,
    out=None,
    probe: str = "linear",
    epochs: int | None = None,
    lr: float = 1e-3,
    batch_points: int = 32768,
    lovasz: bool = False,
    train_split: str = "train",
    val_split: str = "val",
    max_train_scenes: int | None = None,
    max_val_scenes: int | None = None,
    radius: float | None = None,
    min_points: int | None = None,
    kmeans_k: int = 20,
    render: int = 4,
    backbone: str = "tiny",
    grid_size: float | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Run one evaluation task (see the module docstring); returns the results dict written to results.json."""
    from pointins._progress import progress_bar
    from pointins.train import feature_keys

    if task not in TASKS:
        raise ValueError(f"pointins.evaluate: task must be one of {TASKS}, got {task!r}.")
    if probe not in ("linear", "decoder", "finetune"):
        raise ValueError(f"pointins.evaluate: probe must be linear, decoder or finetune, got {probe!r}.")
    t0 = time.perf_counter()
    dev = _device(device)
    torch.manual_seed(seed)
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
    train_ds, val_ds, split_note = _datasets(root, train_split, val_split)
    first = val_ds[0]
    keys = feature_keys(first)
    if scratch:
        enc = load_encoder("scratch", feat_keys=keys, backbone=backbone, grid_size=grid_size or 0.04, seed=seed)
    missing = [k for k in enc.feat_keys if k not in first]
    if missing:
        raise EvalError(f"pointins.evaluate: the encoder takes {list(enc.feat_keys)} but {root} has no {missing}; "
                        "evaluate on data with the inputs it was pretrained on.")  # fmt: skip
    grid = float(grid_size or enc.grid_size)
    outdoor = "strength" in enc.feat_keys and "color" not in enc.feat_keys
    if out is None:
        base = Path(checkpoint) if (not scratch and Path(checkpoint).is_dir()) else Path("runs") / "eval"
        out = base / f"eval-{task}"
    out = Path(out)
    (out / "renders").mkdir(parents=True, exist_ok=True)

    def load(ds, limit, desc):
        n = len(ds) if limit is None else min(limit, len(ds))
        bar = progress_bar(total=n, desc=desc, enabled=progress)
        res = []
        for i in range(n):
            sc = ds[i]
            res.append(prepare(sc, grid, enc.feat_keys, seed=seed, name=sc.get("name", f"scene{i}")))
            bar.update(1)
        bar.close()
        return res

    need_train = task != "unsupervised"
    train = load(train_ds, max_train_scenes, "train scenes") if need_train else []
    val = load(val_ds, max_val_scenes, "val scenes")
    meta = getattr(val_ds, "meta", None)
    names, things, ignore = _classes(meta, train + val, "outdoor" if outdoor else "indoor")
    ncls = len(names)
    for s in train + val:
        bad = (s.point_segment != ignore) & ((s.point_segment < 0) | (s.point_segment >= ncls))
        if bad.any():
            example = int(s.point_segment[bad][0])
            raise EvalError(f"pointins.evaluate: scene {s.name} has labels outside [0, {ncls}) (e.g. {example}); "
                            "check the dataset's meta.json classes.")  # fmt: skip
        s.segment = np.where(s.segment == ignore, -1, s.segment)
    if task in ("insseg", "panoptic", "unsupervised") and not things:
        raise EvalError(f"pointins.evaluate: task {task} needs thing classes (instances) but none were found.")

    result: dict = {
        "task": task, "checkpoint": str(checkpoint), "encoder": enc.source, "pretrain_step": enc.step,
        "data": str(root), "split": split_note, "train_scenes": len(train), "val_scenes": len(val),
        "grid_size": grid, "probe": probe if need_train else None, "classes": names, "thing_classes": things,
        "device": str(dev),
    }  # fmt: skip
    log_f = open(out / "probe_log.jsonl", "w")
    try:
        heads = None
        tune = probe == "finetune"
        if need_train:
            if not tune:
                extract(enc, train + val, dev, progress)
            c = enc.backbone.config.full_channels
            heads = ProbeHeads(c, ncls, offsets=task != "semseg", kind="decoder" if probe == "decoder" else "linear")
            ep = epochs if epochs is not None else (5 if tune else 20)
            losses = train_probe(train, heads, epochs=ep, lr=lr, batch_points=batch_points, lovasz=lovasz,
                                 encoder=enc if tune else None, seed=seed, device=dev, progress=progress,
                                 log=lambda r: log_f.write(json.dumps(r) + "\n"))  # fmt: skip
            result.update(epochs=ep, lr=lr, lovasz=lovasz, probe_steps=len(losses),
                          probe_loss_first=losses[0], probe_loss_last=losses[-1])  # fmt: skip
        else:
            extract(enc, val, dev, progress, ssl_offsets=True)
    finally:
        log_f.close()

    # ---- inference on the val scenes
    sem_pred, per_scene, pan_p_sem, pan_p_ins = [], [], [], []
    if task == "insseg":
        radius = radius if radius is not None else 1.5 * grid  # 0.03 m at the protocol's 0.02 m grid
        min_cluster = 50
    elif task == "panoptic":
        radius = radius if radius is not None else 6.0 * grid  # 0.3 m at 0.05 m
        min_points = min_points if min_points is not None else 50
    elif task == "unsupervised":
        up = 2**enc.backbone.config.upcast_stage
        radius = radius if radius is not None else 2.0 * up * grid  # SCR's link distance: 2 up-cast cells
    bar = progress_bar(total=len(val), desc="predict", enabled=progress)
    for s in val:
        if task == "unsupervised":
            seg = inst.feature_segments(s.feat, k=kmeans_k, seed=seed)
            props = inst.agnostic_proposals(s.coord, s.ssl_offsets, s.inverse, radius, group=seg)
            per_scene.append({"gt_semantic": s.point_segment, "gt_instance": s.point_instance, "pred": props})
        else:
            probs, off = predict(heads, s, dev, encoder=enc if tune else None)
            probs = probs.numpy()
            pred_p = probs.argmax(1)[s.inverse]
            sem_pred.append(pred_p)
            if task == "insseg":
                props = inst.proposals(s.coord, probs, off.numpy(), s.inverse, things, radius, min_cluster)
                per_scene.append({"gt_semantic": s.point_segment, "gt_instance": s.point_instance, "pred": props})
            elif task == "panoptic":
                ps, pi = inst.panoptic_labels(s.coord, probs, off.numpy(), s.inverse, things, radius, min_cluster=1)
                pan_p_sem.append(ps)
                pan_p_ins.append(pi)
        bar.update(1)
    bar.close()

    gts = [s.point_segment for s in val]
    rows: list[list[str]] = []
    if task != "unsupervised":
        m, per = miou(sem_pred, gts, ncls, ignore)
        acc_num = sum(int(((p == g) & (g != ignore)).sum()) for p, g in zip(sem_pred, gts, strict=True))
        acc_den = sum(int((g != ignore).sum()) for g in gts)
        result.update(
            miou=m, accuracy=acc_num / max(acc_den, 1), per_class_iou=dict(zip(names, map(float, per), strict=True))
        )
    if task == "semseg":
        header = ["class", "IoU"]
        rows = [[n, _fmt(v)] for n, v in zip(names, per, strict=True)] + [["**mean**", _fmt(m)]]
        summary = f"mIoU {_fmt(m)}, accuracy {_fmt(result['accuracy'])}"
    elif task in ("insseg", "unsupervised"):
        ap = instance_ap(per_scene, things) if task == "insseg" else class_agnostic_ap(per_scene, things)
        n_prop = sum(len(p["pred"]) for p in per_scene)
        result.update(ap=ap["ap"], ap50=ap["ap50"], ap25=ap["ap25"], radius=radius, num_proposals=n_prop,
                      num_gt_instances=sum(ap["num_gt"].values()))  # fmt: skip
        result["per_class_ap"] = {(names[c] if task == "insseg" else "instance"): v for c, v in ap["per_class"].items()}
        header = ["class", "AP", "AP50", "AP25"]
        rows = [[k, _fmt(v["ap"]), _fmt(v["ap50"]), _fmt(v["ap25"])] for k, v in result["per_class_ap"].items()]
        rows.append(["**mean**", _fmt(ap["ap"]), _fmt(ap["ap50"]), _fmt(ap["ap25"])])
        summary = f"AP {_fmt(ap['ap'])}, AP50 {_fmt(ap['ap50'])}, AP25 {_fmt(ap['ap25'])}"
        if task == "insseg":
            summary += f" (probe mIoU {_fmt(result['miou'])})"
        else:
            diag = offset_agreement([s.ssl_offsets for s in val], [s.centroid_offset for s in val])
            result.update({f"ssl_offset_{k}": v for k, v in diag.items()})
            summary += (f"; SSL offsets vs ground-truth centroid offsets: cosine {diag['cosine']:.3f}, "
                        f"L1 {diag['l1_ratio']:.3f} of the zero offset's")  # fmt: skip
    else:
        pq = panoptic_quality(pan_p_sem, pan_p_ins, gts, [s.point_instance for s in val], ncls, things, ignore,
                              min_points)  # fmt: skip
        result.update({k: v for k, v in pq.items() if k != "per_class"}, radius=radius, min_points=min_points)
        result["per_class_pq"] = {names[c]: v for c, v in pq["per_class"].items()}
        header = ["class", "kind", "PQ", "SQ", "RQ", "IoU"]
        rows = [[names[c], "thing" if c in things else "stuff", _fmt(v["pq"]), _fmt(v["sq"]), _fmt(v["rq"]),
                 _fmt(v["iou"])] for c, v in pq["per_class"].items()]  # fmt: skip
        rows.append(["**mean**", "", _fmt(pq["pq"]), _fmt(pq["sq"]), _fmt(pq["rq"]), _fmt(pq["miou"])])
        summary = (f"PQ {_fmt(pq['pq'])}, SQ {_fmt(pq['sq'])}, RQ {_fmt(pq['rq'])}, PQ-dagger "
                   f"{_fmt(pq['pq_dagger'])}, things {_fmt(pq['pq_things'])}, "
                   f"stuff {_fmt(pq['pq_stuff'])}")  # fmt: skip

    # ---- renders: ground truth | prediction (classes for semseg, instances otherwise)
    from pointins.data.show import instance_colors, label_colors

    for k, s in enumerate(val[: max(0, render)]):
        if task == "semseg":
            gt_c, pr_c = label_colors(s.point_segment), label_colors(sem_pred[k])
        elif task == "panoptic":
            gt_c = np.where(
                (s.point_instance >= 0)[:, None], instance_colors(s.point_instance), label_colors(s.point_segment)
            )
            pr_c = np.where((pan_p_ins[k] >= 0)[:, None], instance_colors(pan_p_ins[k]), label_colors(pan_p_sem[k]))
        else:
            lab = np.full(len(s.point_coord), -1, np.int64)
            for j, p in enumerate(sorted(per_scene[k]["pred"], key=lambda p: -p["score"])):
                lab[p["mask"] & (lab < 0)] = j
            gt_c, pr_c = instance_colors(s.point_instance), instance_colors(lab)
        _render_pair(out / "renders" / f"{k:03d}_{Path(s.name).name}.png", s.point_coord, gt_c, pr_c)

    result["seconds"] = time.perf_counter() - t0
    result["summary"] = summary
    md = [f"# pointins.evaluate: {task}", "", f"- checkpoint: `{checkpoint}` ({enc.source})", f"- data: `{root}` "
          f"({split_note}; {len(train)} train / {len(val)} val scenes, grid {grid} m)",
          f"- probe: {result['probe']}" + (f", {result.get('epochs')} epochs" if need_train else ""),
          f"- result: **{summary}**", "", _table(header, rows), ""]  # fmt: skip
    (out / "results.md").write_text("\n".join(md))
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=float) + "\n")
    tmp.replace(out / "results.json")
    result["table"] = _table(header, rows)
    result["out"] = str(out)
    return result


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pointins.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="run folder, backbone.pt, ckpt_*.pt, or 'scratch'")
    p.add_argument("--data", default=None, help="labelled dataset root (default: the checkpoint's synthetic scenes)")
    p.add_argument("--task", default="semseg", choices=TASKS)
    p.add_argument("--out", default=None, help="output folder (default <run>/eval-<task>)")
    p.add_argument("--probe", default="linear", choices=("linear", "decoder", "finetune"))
    p.add_argument("--epochs", type=int, default=None, help="probe epochs (default 20; finetune 5)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-points", type=int, default=32768, help="voxels per probe step")
    p.add_argument("--lovasz", action="store_true", help="add the Lovasz-softmax loss to CE")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--max-train-scenes", type=int, default=None)
    p.add_argument("--max-val-scenes", type=int, default=None)
    p.add_argument("--radius", type=float, default=None,
                   help="clustering radius in metres (default: 1.5 x grid indoors = 0.03 m at 0.02 m; 6 x grid for "
                   "panoptic; 2 up-cast cells unsupervised)")  # fmt: skip
    p.add_argument(
        "--min-points", type=int, default=None, help="PQ minimum segment size (50 SemanticKITTI, 15 nuScenes)"
    )
    p.add_argument("--kmeans-k", type=int, default=20, help="unsupervised: K-means segments per scene (as SCR)")
    p.add_argument("--render", type=int, default=4, help="PNG renders of the first N val scenes")
    p.add_argument("--backbone", default="tiny", help="preset of the 'scratch' encoder")
    p.add_argument("--grid-size", type=float, default=None, help="voxel size (default: the pretraining grid)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from pointins.data import DataError

    try:
        r = evaluate(a.checkpoint, a.data, a.task, out=a.out, probe=a.probe, epochs=a.epochs, lr=a.lr,
                     batch_points=a.batch_points, lovasz=a.lovasz, train_split=a.train_split, val_split=a.val_split,
                     max_train_scenes=a.max_train_scenes, max_val_scenes=a.max_val_scenes, radius=a.radius,
                     min_points=a.min_points, kmeans_k=a.kmeans_k, render=a.render, backbone=a.backbone,
                     grid_size=a.grid_size, device=a.device, seed=a.seed, progress=not a.no_progress)  # fmt: skip
    except (EvalError, DataError, ValueError) as e:
        print(f"{e}", file=sys.stderr)
        return 2
    print(r["table"])
    print(f"pointins.evaluate ({a.task}): {r['summary']}; {r['val_scenes']} val scenes in {r['seconds']:.0f} s; "
          f"results in {r['out']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
