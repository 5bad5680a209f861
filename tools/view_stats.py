#!/usr/bin/env python3
"""How much the pretraining views share, and how many student points find a teacher partner.

    python tools/view_stats.py [--data DIR] [--scenes 8] [--epochs 3] [--pairs-batches 4]

For the anchored sampler (Sonata's ``MultiViewGenerator``, the default) and the earlier one
(``anchored=False``: every view around a random scene point) it prints, over ``--scenes`` synthetic rooms
(generated into a temporary folder unless ``--data``) and ``--epochs`` draws each:

* global-global overlap: the fraction of the second global view's points that are in the first;
* local views overlapping the first global view by more than 10%, and their mean overlap;
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
    a = ap.parse_args()
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
