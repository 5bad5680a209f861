"""``python -m pointins.priors --data PATH``: fit the ODR magnitude prior from labelled scans.

For every scene the readers accept under ``PATH`` (split ``--split`` when it has one), each point of an
instance (``instance >= 0``) contributes the length of its offset to the instance centroid (mean of the
instance's points, optionally after grid sampling as training sees them). The result is a JSON file with a
quantile table (an :class:`pointins.ssl.EmpiricalPrior`) plus a log-normal fit; train with it through
``python -m pointins.train ssl.prior=offset_prior.json`` (or ``ssl.prior=lognormal:MU,SIGMA``).

    python -m pointins.priors --data runs/data/indoor --out offset_prior.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

__all__ = ["fit_prior", "instance_offsets", "main"]


def instance_offsets(
    scene: dict, grid_size: float | None = None, seed: int = 0, all_points: bool = False
) -> np.ndarray:
    """Lengths of the offsets from each instance point to its instance centroid (1-D float64); ``all_points``: also
    a zero for every point of no instance (the distribution ODR's prior is applied to)."""
    if "instance" not in scene:
        return np.zeros(0)
    if grid_size:
        from pointins.data.transforms import POINT_KEYS, grid_sample

        scene = grid_sample({k: v for k, v in scene.items() if k in POINT_KEYS}, grid_size, "train",
                            np.random.default_rng(seed))  # fmt: skip
    inst = np.asarray(scene["instance"], np.int64).reshape(-1)
    keep = inst >= 0
    if not keep.any():
        return np.zeros(0)
    x = np.asarray(scene["coord"], np.float64)[keep]
    ids, inv = np.unique(inst[keep], return_inverse=True)
    cnt = np.bincount(inv, minlength=len(ids)).astype(np.float64)
    cen = np.stack([np.bincount(inv, x[:, k], len(ids)) for k in range(3)], 1) / cnt[:, None]
    r = np.linalg.norm(cen[inv] - x, axis=1)
    return np.concatenate([r, np.zeros(int((~keep).sum()))]) if all_points else r


def fit_prior(radii: np.ndarray, quantiles: int = 1025, source: str | None = None) -> dict:
    """Quantile table (``quantiles`` entries at probabilities 0..1) and a log-normal MLE of ``radii``."""
    r = np.asarray(radii, np.float64)
    r = r[np.isfinite(r)]
    if r.size < 2:
        raise ValueError(
            "pointins.priors: fewer than 2 instance points found; the data needs per-point instance labels "
            "(instance.npy, a PLY 'instance' property, SemanticKITTI/nuScenes panoptic labels)."
        )
    q = np.quantile(r, np.linspace(0.0, 1.0, quantiles))
    pos = np.log(r[r > 1e-9])
    mu, sigma = float(pos.mean()), float(pos.std())
    return {
        "family": "empirical",
        "quantiles": [float(v) for v in np.maximum.accumulate(q)],
        "source": source,
        "lognormal": {"mu": mu, "sigma": sigma},
        "zero_share": float((r <= 1e-9).mean()),
        "points": int(r.size),
        "median": float(np.median(r)),
        "mean": float(r.mean()),
        "p90": float(np.quantile(r, 0.9)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pointins.priors", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset root (any layout pointins.data.read understands)")
    p.add_argument("--split", default="train", help="split to use when the dataset has splits (default train)")
    p.add_argument("--out", default="offset_prior.json", help="output JSON (default offset_prior.json)")
    p.add_argument("--grid-size", type=float, default=None, help="grid-sample scenes first (e.g. 0.02)")
    p.add_argument("--max-scenes", type=int, default=None, help="use at most this many scenes")
    p.add_argument("--quantiles", type=int, default=1025, help="entries of the quantile table")
    p.add_argument("--all-points", action="store_true",
                   help="count every point, a point of no instance as a zero offset: the prior fitted to what ODR "
                   "applies it to (use --grid-size 4x the training grid: ODR works on the up-cast level)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    from pointins._progress import progress_bar
    from pointins.data import DataError, PointCloudDataset

    try:
        try:
            ds = PointCloudDataset(a.data, split=a.split, on_error="skip")
        except DataError:
            ds = PointCloudDataset(a.data, on_error="skip")
    except (DataError, FileNotFoundError) as e:
        print(f"pointins.priors: {e}", file=sys.stderr)
        return 2
    n = len(ds) if a.max_scenes is None else min(len(ds), a.max_scenes)
    bar = progress_bar(total=n, desc="scenes", enabled=not a.no_progress)
    radii = []
    for i in range(n):
        radii.append(instance_offsets(ds[i], a.grid_size, seed=i, all_points=a.all_points))
        bar.update(1)
    bar.close()
    try:
        prior = fit_prior(np.concatenate(radii) if radii else np.zeros(0), a.quantiles, source=str(a.data))
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(prior) + "\n")
    ln = prior["lognormal"]
    if a.all_points:
        print(f"pointins.priors: {100 * prior['zero_share']:.1f}% of the points have no instance (zero offset); "
              f"mixture prior: ssl.prior={out} (its quantile table includes the zeros)")  # fmt: skip
    print(
        f"pointins.priors: {prior['points']} instance points from {n} scenes: median {prior['median']:.3f}, "
        f"mean {prior['mean']:.3f}, 90% {prior['p90']:.3f} (units of the data); log-normal mu={ln['mu']:.3f} "
        f"sigma={ln['sigma']:.3f} (median {math.exp(ln['mu']):.3f}). Wrote {out}; train with "
        f"ssl.prior={out} or ssl.prior=lognormal:{ln['mu']:.3f},{ln['sigma']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
