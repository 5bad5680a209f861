"""Built-in synthetic scenes: indoor rooms with furniture instances and outdoor LiDAR street sweeps.

Public datasets cannot be downloaded everywhere, so these scenes are both the out-of-the-box pretraining
data and our benchmark: they have real instance structure (several same-class instances side by side
indoors, rows of parked cars and groups of pedestrians outdoors) for an instance-aware method to find.

- :func:`indoor_scene` -- a room of 4-10 m with walls and floor (stuff, instance -1) and furniture of 8 thing
  classes (chair, table, desk, sofa, bed, cabinet, bookshelf, toilet) built from parametric parts, sampled
  at scan-like density with noise, occlusion holes, per-instance colours and normals (50k-200k points).
- :func:`outdoor_scene` -- one sweep of a spinning 64- or 32-beam LiDAR ray-cast against a street (ground,
  road, sidewalk, buildings, vegetation, poles; things: cars, pedestrians, cyclists) with occlusion, range
  falloff and intensity.

Both are deterministic by seed (scene ``i`` of a dataset is generated from ``(seed, i)``, whatever the
number of worker processes) and vectorised with NumPy.

Command line (writes Pointcept's folder format, one folder per scene, plus split files)::

    python -m pointins.data.synthetic --kind indoor --out data/indoor --scenes 100 [--seed 0]

Layout written: ``OUT/{train,val}/scene_XXXXX/{coord,color,normal,segment,instance}.npy`` (outdoors
``strength.npy`` instead of ``color.npy``: a LiDAR sees no colour), ``OUT/train.txt`` / ``OUT/val.txt``
(scene names) and ``OUT/meta.json`` (class names, thing classes, generator settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pointins.data import _indoor, _outdoor
from pointins.data._indoor import IndoorConfig
from pointins.data._outdoor import OutdoorConfig

__all__ = [
    "INDOOR_CLASSES",
    "INDOOR_THING_CLASSES",
    "OUTDOOR_CLASSES",
    "OUTDOOR_THING_CLASSES",
    "IndoorConfig",
    "OutdoorConfig",
    "generate",
    "indoor_scene",
    "outdoor_scene",
    "scene",
]

INDOOR_CLASSES = _indoor.CLASSES
INDOOR_THING_CLASSES = _indoor.THING_CLASSES
OUTDOOR_CLASSES = _outdoor.CLASSES
OUTDOOR_THING_CLASSES = _outdoor.THING_CLASSES
KINDS = ("indoor", "outdoor")


def _rng(seed: int, index: int, kind: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), KINDS.index(kind)])


def indoor_scene(seed: int = 0, index: int = 0, config: IndoorConfig | None = None) -> dict[str, np.ndarray]:
    """Room ``index`` of the dataset with ``seed``.

    Returns:
        coord (N,3) float32 [m, floor at z=0, room corner at the origin], color (N,3) uint8,
        normal (N,3) float32 unit, segment (N,) int32 indexing :data:`INDOOR_CLASSES`, instance (N,) int32
        (-1 on wall/floor, 0..I-1 on furniture; every instance has one class).

    >>> s = indoor_scene(seed=0, index=0)
    >>> sorted(s), s["coord"].dtype.name, 50_000 <= len(s["coord"]) <= 200_000
    (['color', 'coord', 'instance', 'normal', 'segment'], 'float32', True)
    """
    return _indoor.generate_room(_rng(seed, index, "indoor"), config)


def outdoor_scene(seed: int = 0, index: int = 0, config: OutdoorConfig | None = None) -> dict[str, np.ndarray]:
    """LiDAR sweep ``index`` of the dataset with ``seed``.

    Returns:
        coord (N,3) float32 [m, sensor frame: sensor at the origin, ground near z = -1.73], strength (N,1)
        float32 in [0,1], normal (N,3) float32, segment (N,) int32 indexing :data:`OUTDOOR_CLASSES`,
        instance (N,) int32 (-1 on stuff, 0..I-1 on cars / pedestrians / cyclists).
    """
    return _outdoor.generate_sweep(_rng(seed, index, "outdoor"), config)


def scene(kind: str, seed: int = 0, index: int = 0, config=None) -> dict[str, np.ndarray]:
    """:func:`indoor_scene` or :func:`outdoor_scene` by ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"pointins.data.synthetic: kind must be 'indoor' or 'outdoor', got {kind!r}.")
    return (indoor_scene if kind == "indoor" else outdoor_scene)(seed, index, config)


def meta(kind: str, config=None) -> dict:
    """Class names, thing classes and generator settings of a synthetic dataset (saved as meta.json)."""
    cfg = config or (IndoorConfig() if kind == "indoor" else OutdoorConfig())
    classes = INDOOR_CLASSES if kind == "indoor" else OUTDOOR_CLASSES
    things = INDOOR_THING_CLASSES if kind == "indoor" else OUTDOOR_THING_CLASSES
    return {
        "format": "pointcept",
        "generator": f"pointins.data.synthetic ({kind})",
        "kind": kind,
        "classes": list(classes),
        "thing_classes": list(things),
        "stuff_classes": [i for i in range(len(classes)) if i not in things],
        "ignore_index": -1,
        "config": dataclasses.asdict(cfg),
    }


def _write_one(args) -> tuple[str, int, int]:
    from pointins.data.writers import write_pointcept

    kind, seed, index, folder, config = args
    data = scene(kind, seed, index, config)
    write_pointcept(folder, data)
    return str(folder), len(data["coord"]), int(data["instance"].max()) + 1


def generate(
    kind: str,
    out: str | os.PathLike,
    scenes: int,
    seed: int = 0,
    val_fraction: float = 0.2,
    workers: int | None = None,
    config=None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Write ``scenes`` synthetic scenes to ``out`` in Pointcept's folder format; returns a summary dict.

    The last ``round(scenes * val_fraction)`` scenes form the ``val`` split. ``workers`` processes
    (default: the CPU count, at most 8) generate scenes in parallel; the result does not depend on it.

    The dataset is written to a temporary folder beside ``out`` and renamed into place when complete, so a
    failure or an interruption leaves nothing half-written. A non-empty ``out`` is refused unless
    ``overwrite=True`` (then it is replaced as a whole, never mixed with the new scenes).
    """
    if kind not in KINDS:
        raise ValueError(f"pointins.data.synthetic: --kind must be 'indoor' or 'outdoor', got {kind!r}.")
    if isinstance(scenes, bool) or not isinstance(scenes, int) or scenes < 1:
        raise ValueError(f"pointins.data.synthetic: --scenes must be an integer >= 1, got {scenes!r}.")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"pointins.data.synthetic: --val-fraction must be in [0, 1), got {val_fraction}.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"pointins.data.synthetic: --workers must be an integer >= 1, got {workers!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"pointins.data.synthetic: --seed must be an integer in [0, 2^63), got {seed!r}.")
    if config is not None and not isinstance(config, IndoorConfig if kind == "indoor" else OutdoorConfig):
        raise ValueError(f"pointins.data.synthetic: config must be an {'Indoor' if kind == 'indoor' else 'Outdoor'}"
                         f"Config for kind={kind!r}, got {type(config).__name__}.")  # fmt: skip
    final = Path(out)
    if final.exists() and not final.is_dir():
        raise ValueError(f"pointins.data.synthetic: --out {final} exists and is not a folder; pass another --out.")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise ValueError(f"pointins.data.synthetic: --out {final} is not empty; pass --overwrite to replace it, or "
                         "another --out.")  # fmt: skip
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp", dir=final.parent))
        mask = os.umask(0)
        os.umask(mask)
        out.chmod(0o777 & ~mask)  # mkdtemp makes it private; the dataset gets the usual permissions
    except OSError as e:
        raise ValueError(f"pointins.data.synthetic: cannot create {final} ({e.strerror or e}); pass a writable "
                         "--out.") from None  # fmt: skip
    try:
        summary = _generate_into(kind, out, scenes, seed, val_fraction, workers, config, progress)
        if final.is_dir() and any(final.iterdir()):  # overwrite: swap the new dataset in, then drop the old one
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old", dir=final.parent))
            final.rename(old / "data")
            out.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if final.is_dir():
                final.rmdir()
            out.rename(final)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    summary["out"] = str(final)
    return summary


def _generate_into(kind, out: Path, scenes, seed, val_fraction, workers, config, progress) -> dict:
    n_val = round(scenes * val_fraction) if scenes > 1 else 0
    names = [f"scene_{i:05d}" for i in range(scenes)]
    splits = {"train": names[: scenes - n_val], "val": names[scenes - n_val :]}
    jobs = []
    for split, members in splits.items():
        for name in members:
            jobs.append((kind, seed, int(name[6:]), out / split / name, config))
    workers = workers or min(8, os.cpu_count() or 1)
    from pointins._progress import progress_bar

    t0 = time.perf_counter()
    points, instances = [], []
    bar = progress_bar(total=len(jobs), desc=f"{kind} scenes", enabled=progress)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for _, n, k in pool.map(_write_one, jobs, chunksize=1):
                points.append(n)
                instances.append(k)
                bar.update(1)
    else:
        for job in jobs:
            _, n, k = _write_one(job)
            points.append(n)
            instances.append(k)
            bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    for split, members in splits.items():
        (out / f"{split}.txt").write_text("".join(f"{m}\n" for m in members))
    info = meta(kind, config)
    info.update(seed=seed, scenes=scenes, splits={k: len(v) for k, v in splits.items()})
    (out / "meta.json").write_text(json.dumps(info, indent=2) + "\n")
    return {
        "out": str(out),
        "scenes": scenes,
        "seconds": seconds,
        "points_mean": float(np.mean(points)),
        "points_range": (int(np.min(points)), int(np.max(points))),
        "instances_mean": float(np.mean(instances)),
        "workers": workers,
    }


def _config_overrides(kind: str, pairs: list[str]):
    cfg = IndoorConfig() if kind == "indoor" else OutdoorConfig()
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in fields:
            raise SystemExit(
                f"pointins.data.synthetic: bad override {pair!r}; use key=value with key one of {sorted(fields)}."
            )
        current = getattr(cfg, key)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as e:
            raise SystemExit(f"pointins.data.synthetic: cannot parse the value of {key}: {value!r} ({e}).") from e
        setattr(cfg, key, tuple(parsed) if isinstance(current, tuple | list) and isinstance(parsed, list) else parsed)
    cfg.__post_init__()  # range-check the overridden values
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pointins.data.synthetic",
        description="Generate synthetic indoor rooms or outdoor LiDAR sweeps in Pointcept's folder format.",
    )
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--out", required=True, help="output folder (created; must be empty unless --overwrite)")
    p.add_argument("--scenes", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 8)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (as a whole)")
    p.add_argument("overrides", nargs="*", help="generator settings, e.g. points=[30000,60000] beams=32")
    a = p.parse_args(argv)
    try:
        cfg = _config_overrides(a.kind, a.overrides)
        s = generate(a.kind, a.out, a.scenes, a.seed, a.val_fraction, a.workers, cfg, progress=not a.quiet,
                     overwrite=a.overwrite)  # fmt: skip
    except (ValueError, TypeError) as e:
        print(e, file=sys.stderr)
        return 2
    print(
        f"wrote {s['scenes']} {a.kind} scenes to {s['out']} in {s['seconds']:.1f} s ({s['workers']} workers): "
        f"{s['points_mean']:.0f} points on average (range {s['points_range'][0]}-{s['points_range'][1]}), "
        f"{s['instances_mean']:.1f} instances"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
