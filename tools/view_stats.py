#!/usr/bin/env python3
"""How much the pretraining views share, and how many student points find a teacher partner.

    python tools/view_stats.py [--data DIR] [--scenes 8] [--epochs 3] [--pairs-batches 4]

For the anchored sampler (Sonata's ``MultiViewGenerator``, the default) and the earlier one
(``anchored=False``: every view around a random scene point) it prints, over ``--scenes`` synthetic rooms
(generated into a temporary folder unless ``--data``) and ``--epochs`` draws each:

* global-global overlap: the fraction of the second global view's points that are in the first;
* local views overlapping the first global view by more than 10%, and their mean overlap;
* with ``--shares``: the share of the grid-sampled scene's points each global and local view covers (the paper's
  views are 40-100% / 10-40% of min(65,536, N) points: the whole share of a room of up to 65,536 points at 2 cm);
  ``--kind outdoor`` and ``--split`` pick the data;
* with ``--pairs-batches N``: matched pairs per student point at the up-cast level in N batches of the
  cpu-demo configuration (random weights: matching depends only on positions), for exact-cell matching and for
  Sonata's radius matching (up to 8 teacher points within 0.32 m).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def view_overlaps(data: Path, scenes: int, epochs: int, anchored: bool, grid: float, max_points: int, local: int):
    from pointins.data import PointCloudDataset
    from pointins.data.views import ViewConfig, ViewDataset, overlap_stats

    src = PointCloudDataset(data, split="train")
    cfg = ViewConfig(grid_size=grid, max_points=max_points, local_views=local, anchored=anchored)
    ds = ViewDataset(src, cfg, seed=0)
    go, lo = [], []
    for e in range(epochs):
        for i in range(min(scenes, len(ds))):
            st = overlap_stats(ds[(e, i)])
            go.append(st["global_overlap"])
            lo.extend(st["local_overlap"])
    go, lo = np.array(go), np.array(lo)
    return {
        "global_overlap_mean": float(go.mean()),
        "global_disjoint": float((go == 0).mean()),
        "local_over_10pct": float((lo > 0.10).mean()),
        "local_overlap_mean": float(lo.mean()),
        "views": len(go),
    }


def view_shares(
    data: Path, scenes: int, epochs: int, grid: float, max_points: int, local: int, split: str, outdoor: bool
) -> dict:
    """Mean, 10th and 90th percentile of the share of the grid-sampled scene's points in each view, and the
    grid-sampled scenes' sizes."""
    from pointins.data import PointCloudDataset
    from pointins.data.views import ViewConfig, make_views, prepare_scene

    src = PointCloudDataset(data, split=split)
    make = ViewConfig.outdoor if outdoor else ViewConfig
    cfg = make(grid_size=grid, max_points=max_points, local_views=local)
    rng = np.random.default_rng(0)
    shares: dict[str, list] = {"global": [], "local": []}
    sizes = []
    for _ in range(epochs):
        for i in range(min(scenes, len(src))):
            s = prepare_scene(src[i], grid, rng)
            n = len(s["coord"])
            sizes.append(n)
            for kind, views in make_views(s, cfg, rng).items():
                shares[kind].extend(len(np.unique(v["index"])) / n for v in views)
    out = {"scene_points": (float(np.mean(sizes)), float(np.min(sizes)), float(np.max(sizes)))}
    for kind, v in shares.items():
        if v:
            out[kind] = (float(np.mean(v)), float(np.quantile(v, 0.1)), float(np.quantile(v, 0.9)))
    return out


def matched_pairs(data: Path, batches: int, anchored: bool, radius: float | None) -> float:
    import torch

    from pointins.config import resolve
    from pointins.data import PointCloudDataset
    from pointins.data.views import ViewDataset, make_loader
    from pointins.models import build_backbone
    from pointins.ssl.model import PointINS
    from pointins.train import _channels, feature_keys

    over = [f"data={data}", f"views.anchored={anchored}"]
    if radius is not None:
        over += [f"ssl.match_radius={radius}"]
    else:
        over += ["ssl.match_radius=0"]
    cfg = resolve("cpu-demo", over)
    torch.manual_seed(0)
    src = PointCloudDataset(data, split="train")
    in_ch = _channels(feature_keys(src[0]))
    bb = build_backbone(cfg.backbone, in_channels=in_ch, grid_size=cfg.views.grid_size)
    model = PointINS(bb, cfg.ssl)
    ds = ViewDataset(src, cfg.views, seed=0)
    loader = make_loader(ds, batch_size=2, seed=0, num_workers=0)
    ratios = []
    with torch.no_grad():
        for b, batch in enumerate(loader):
            if b >= batches:
                break
            out = model.step_losses(batch, 0.5, step=b)
            ratios.append(out.stats["pairs"] / max(out.stats["student_upcast_points"], 1.0))
    return float(np.mean(ratios))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="a dataset folder (default: 8 generated rooms)")
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--grid", type=float, default=0.02)
    ap.add_argument("--max-points", type=int, default=65536)
    ap.add_argument("--local-views", type=int, default=4)
    ap.add_argument("--pairs-batches", type=int, default=0)
    ap.add_argument("--shares", action="store_true", help="only the share of the scene each view covers")
    ap.add_argument("--kind", choices=("indoor", "outdoor"), default="indoor", help="with --shares: view settings")
    ap.add_argument("--split", default="train", help="with --shares and --data: the split to read")
    a = ap.parse_args()
    if a.shares:
        if a.data is None:
            ap.error("--shares needs --data (a dataset folder)")
        s = view_shares(a.data, a.scenes, a.epochs, a.grid, a.max_points, a.local_views, a.split, a.kind == "outdoor")
        m, lo, hi = s["scene_points"]
        print(
            f"{a.kind} views of {a.scenes} scenes x {a.epochs} draws (grid {a.grid} m, max {a.max_points} points): "
            f"scenes {m:,.0f} points after the grid ({lo:,.0f}-{hi:,.0f})"
        )
        for kind in ("global", "local"):
            if kind in s:
                m, lo, hi = s[kind]
                print(
                    f"  {kind:6s} views: {m:6.1%} of the scene's points on average "
                    f"(10th-90th percentile {lo:.1%}-{hi:.1%})"
                )
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data
        if data is None:
            from pointins.data.synthetic import generate

            data = Path(tmp) / "rooms"
            generate("indoor", data, a.scenes, seed=0, val_fraction=0.0, progress=False)
        print(f"views of {a.scenes} rooms x {a.epochs} draws (grid {a.grid} m, max {a.max_points} points)")
        print("sampler              global overlap  disjoint globals  locals >10% in global 1  mean local overlap")
        for anchored in (False, True):
            s = view_overlaps(data, a.scenes, a.epochs, anchored, a.grid, a.max_points, a.local_views)
            name = "anchored (Sonata)" if anchored else "random centres (old)"
            print(f"{name:20s} {s['global_overlap_mean']:14.1%}  {s['global_disjoint']:16.1%}  "
                  f"{s['local_over_10pct']:23.1%}  {s['local_overlap_mean']:18.1%}")  # fmt: skip
        if a.pairs_batches:
            print(f"\nmatched pairs per student up-cast point, cpu-demo, {a.pairs_batches} batches of 2")
            for anchored in (False, True):
                for radius in (None, 0.32):
                    r = matched_pairs(data, a.pairs_batches, anchored, radius)
                    what = "exact cell only" if radius is None else f"+ nearest within {radius} m"
                    print(f"  {'anchored' if anchored else 'random centres':15s} {what:22s} {r:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
