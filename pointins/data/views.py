"""Global and local views of a scene for self-distillation (METHOD.md section 3).

:func:`make_views` crops each view around a random centre (the nearest 40-100% / 10-40% of up to 65,536
points), augments it while recording its map to the original frame (centre shift, rotation about z, small
tilts, scale, flips; then jitter and colour jitter, which are not part of the map), and grid-samples it in
its own frame so the backbone gets one point per voxel. Every view keeps ``index``: its points' rows in the
grid-sampled scene, which is how views are matched with each other.

:class:`ViewDataset` wraps any scene dataset (e.g. :class:`pointins.data.PointCloudDataset`); sample ``i``
of epoch ``e`` is drawn from ``numpy.random.default_rng([seed, e, i])``, so batches do not depend on the
number of DataLoader workers. :func:`make_loader` builds the seeded DataLoader.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from pointins.data import transforms as T
from pointins.data.collate import collate

__all__ = ["ViewConfig", "ViewDataset", "make_loader", "make_views", "prepare_scene", "seed_worker"]


@dataclass
class ViewConfig:
    """How views are made (defaults: METHOD.md section 3, indoor; :meth:`outdoor` for LiDAR)."""

    grid_size: float = 0.02
    max_points: int = 65536
    global_views: int = 2
    global_ratio: tuple[float, float] = (0.4, 1.0)
    local_views: int = 4
    local_ratio: tuple[float, float] = (0.1, 0.4)
    scale: tuple[float, float] = (0.9, 1.1)
    rotate_z: float = math.pi
    rotate_z_p: float = 0.8
    tilt: float = math.pi / 64
    flip_p: float = 0.5
    jitter_sigma: float = 0.005
    jitter_clip: float = 0.02
    color_jitter: bool = True
    elastic: tuple | None = None  # e.g. ((0.2, 0.4), (0.8, 1.6)); not part of the recorded map

    def __post_init__(self):
        from pointins._validate import check_fields

        for name in ("global_ratio", "local_ratio", "scale"):
            setattr(self, name, tuple(getattr(self, name)))
        check_fields("ViewConfig", self, {
            "grid_size": ("float", 0, None, "lo-open"), "max_points": ("int", 16, None),
            "global_views": ("int", 1, 16), "local_views": ("int", 0, 64),
            "global_ratio": ("pair", 0, 1, "lo-open"), "local_ratio": ("pair", 0, 1, "lo-open"),
            "scale": ("pair", 0, None, "lo-open"), "rotate_z": ("float", 0, 2 * math.pi),
            "rotate_z_p": ("float", 0, 1), "tilt": ("float", 0, math.pi), "flip_p": ("float", 0, 1),
            "jitter_sigma": ("float", 0, None), "jitter_clip": ("float", 0, None), "color_jitter": ("bool", 0, 0),
        })  # fmt: skip
        if self.elastic is not None:
            el = self.elastic
            ok = isinstance(el, tuple | list) and all(
                isinstance(p, tuple | list) and len(p) == 2 and all(isinstance(x, int | float) and not isinstance(
                    x, bool) and math.isfinite(x) and x > 0 for x in p) for p in el)  # fmt: skip
            if not ok:
                raise ValueError(f"ViewConfig: elastic must be None or (granularity, magnitude) pairs of positive "
                                 f"numbers, e.g. ((0.2, 0.4), (0.8, 1.6)); got {el!r}.")  # fmt: skip
            self.elastic = tuple(tuple(p) for p in el)

    @classmethod
    def outdoor(cls, **kw) -> ViewConfig:
        kw.setdefault("grid_size", 0.05)
        kw.setdefault("max_points", 120_000)
        return cls(**kw)


def prepare_scene(scene: dict, grid_size: float, rng: np.random.Generator) -> dict:
    """Grid-sample a scene (train mode) and number its points: ``index`` = row in this sampled scene."""
    s = T.grid_sample({k: v for k, v in scene.items() if k in T.POINT_KEYS}, grid_size, "train", rng)
    s.pop("index", None)
    s["index"] = np.arange(len(s["coord"]), dtype=np.int64)
    return s


def _augment(v: dict, cfg: ViewConfig, rng: np.random.Generator) -> dict:
    v = T.start_view(v)
    T.center_shift(v, apply_z=True)
    T.random_rotate(v, rng, "z", (-cfg.rotate_z, cfg.rotate_z), p=cfg.rotate_z_p)
    if cfg.tilt > 0:
        T.random_rotate(v, rng, "x", (-cfg.tilt, cfg.tilt))
        T.random_rotate(v, rng, "y", (-cfg.tilt, cfg.tilt))
    T.random_scale(v, rng, cfg.scale)
    T.random_flip(v, rng, cfg.flip_p)
    T.random_jitter(v, rng, cfg.jitter_sigma, cfg.jitter_clip)
    if cfg.elastic:
        T.elastic_distortion(v, rng, cfg.elastic)
    if cfg.color_jitter:
        T.color_jitter(v, rng)
    return v


def make_views(scene: dict, cfg: ViewConfig, rng: np.random.Generator) -> dict:
    """``{"global": [view, ...], "local": [view, ...]}`` of a grid-sampled scene (see :func:`prepare_scene`).

    Each view has the scene's per-point arrays for its points plus ``grid_coord``, ``transform``, ``shift``
    and ``index`` (rows of ``scene``); ``coord`` is float32 in the view frame.
    """
    n = len(scene["coord"])
    if n == 0:
        raise ValueError("make_views: the scene has no points.")
    base = min(n, cfg.max_points)
    out: dict[str, list] = {"global": [], "local": []}
    for kind, count, ratio in (
        ("global", cfg.global_views, cfg.global_ratio),
        ("local", cfg.local_views, cfg.local_ratio),
    ):
        for _ in range(count):
            k = max(1, round(float(rng.uniform(*ratio)) * base))
            centre = scene["coord"][int(rng.integers(n))]
            v = _augment(T.nearest_crop(scene, k, centre), cfg, rng)
            v = T.grid_sample(v, cfg.grid_size, "train", rng)
            v["coord"] = v["coord"].astype(np.float32)
            out[kind].append(v)
    return out


class ViewDataset:
    """Scenes -> grid-sampled scene + views, deterministic per (seed, epoch, index).

    ``source[i]`` must return a dict with ``coord`` (and any of the other per-point keys); e.g. a
    :class:`pointins.data.PointCloudDataset`. Items: ``{"global": [...], "local": [...], "scene_points": N,
    "name": ...}``; :func:`pointins.data.collate.collate` batches them.
    """

    def __init__(self, source, config: ViewConfig | None = None, seed: int = 0) -> None:
        self.source, self.cfg, self.seed, self.epoch = source, config or ViewConfig(), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i) -> dict:
        """Sample ``i`` of the current epoch, or ``(epoch, i)`` (what a resumable sampler yields, so persistent
        DataLoader workers need no epoch update)."""
        epoch = self.epoch
        if isinstance(i, tuple):
            epoch, i = i
        rng = np.random.default_rng([self.seed, int(epoch), int(i)])
        raw = self.source[i]
        scene = prepare_scene(raw, self.cfg.grid_size, rng)
        views = make_views(scene, self.cfg, rng)
        views["scene_points"] = len(scene["coord"])
        views["name"] = raw.get("name", str(i))
        views["dropped_points"] = int(raw.get("dropped_points", 0))  # non-finite points the reader dropped
        return views


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seeds NumPy's and Python's global RNGs from torch's per-worker seed
    (our own sampling uses explicit generators; this keeps third-party transforms reproducible too)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # noqa: NPY002 -- the legacy global RNG is what third-party code draws from
    random.seed(s)


def make_loader(
    dataset,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_workers: int | None = None,
    drop_last: bool = True,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A seeded DataLoader with :func:`collate` (shuffle order from ``seed``; workers seeded by :func:`seed_worker`).
    Call ``dataset.set_epoch(e)`` and ``loader.generator.manual_seed(seed + e)`` for a new epoch's order."""
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1)
    g = torch.Generator().manual_seed(int(seed))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate,
        worker_init_fn=seed_worker,
        generator=g,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
