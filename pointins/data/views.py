"""Global and local views of a scene for self-distillation (METHOD.md section 3).

:func:`make_views` samples views as Sonata's ``MultiViewGenerator`` (Pointcept ``pointcept/datasets/transform.py``,
config ``configs/sonata/pretrain-sonata-v1m1-0-base.py``): a *major* global view of the nearest 40-100% of
``min(max_points, N)`` points around a random scene point; the other global views centred on a random point
*of the major view*; each local view (10-40%) centred on a point of the major view that no local view has
covered yet (the cover mask is reset once every point is covered). Global views share one colour
augmentation of the scene (``RandomColorJitter`` + ``ChromaticTranslation``); local views get their own.
Each view is then augmented as Sonata's config (centre shift, scale, rotation about z with p = 0.8 and tilts
about x / y through the box centre with p = 0.8, flips, jitter, elastic distortion with p = 0.95), with its map
to the original frame recorded (jitter and elastic distortion are not part of the map), and grid-sampled in
its own frame so the backbone gets one point per voxel **[ours: Sonata feeds the cropped points of the
scene-level grid sample without re-sampling]**. Every view keeps ``index``: its points' rows in the
grid-sampled scene, which is how views are matched with each other. ``ViewConfig(anchored=False)`` restores
the earlier sampler (every view centred on a random scene point) for comparisons.

:class:`ViewDataset` wraps any scene dataset (e.g. :class:`pointins.data.PointCloudDataset`); sample ``i``
of epoch ``e`` is drawn from ``numpy.random.default_rng([seed, e, i])``, so batches do not depend on the
number of DataLoader workers. :func:`make_loader` builds the seeded DataLoader. :func:`overlap_stats`
measures how much the views of a sample share.
"""

from __future__ import annotations

import math
import os
import random
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from pointins import _timing
from pointins._timing import phase
from pointins.data import transforms as T
from pointins.data.collate import collate

__all__ = [
    "ThreadedBatches",
    "ViewConfig",
    "ViewDataset",
    "make_loader",
    "make_views",
    "overlap_stats",
    "prepare_scene",
    "seed_worker",
]


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
    tilt_p: float = 0.8
    flip_p: float = 0.5
    jitter_sigma: float = 0.005
    jitter_clip: float = 0.02
    color_jitter: bool = True  # Sonata's RandomColorJitter + ChromaticTranslation
    shared_global_color: bool = True  # one colour augmentation for all global views (Sonata)
    elastic: tuple | None = ((0.2, 0.4), (0.8, 1.6))  # (granularity, magnitude) pairs; not part of the map
    elastic_p: float = 0.95
    anchored: bool = True  # Sonata's view centres; False: every view around a random scene point (old sampler)
    # [ours] > 0: the views are made from the scene_points points of the grid-sampled scene nearest a random point
    # of it, not from the whole scene: views then cover a share of their "scene" like the paper's do of a whole
    # room (40-100% of min(65,536, N) points) when max_points is far below a room's size (the CPU scale)
    scene_points: int = 0

    def __post_init__(self):
        from pointins._validate import check_fields

        for name in ("global_ratio", "local_ratio", "scale"):
            setattr(self, name, tuple(getattr(self, name)))
        check_fields("ViewConfig", self, {
            "grid_size": ("float", 0, None, "lo-open"), "max_points": ("int", 16, None),
            "global_views": ("int", 1, 16), "local_views": ("int", 0, 64),
            "global_ratio": ("pair", 0, 1, "lo-open"), "local_ratio": ("pair", 0, 1, "lo-open"),
            "scale": ("pair", 0, None, "lo-open"), "rotate_z": ("float", 0, 2 * math.pi),
            "rotate_z_p": ("float", 0, 1), "tilt": ("float", 0, math.pi), "tilt_p": ("float", 0, 1),
            "flip_p": ("float", 0, 1), "jitter_sigma": ("float", 0, None), "jitter_clip": ("float", 0, None),
            "color_jitter": ("bool", 0, 0), "shared_global_color": ("bool", 0, 0), "elastic_p": ("float", 0, 1),
            "anchored": ("bool", 0, 0), "scene_points": ("int", 0, None),
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
        """LiDAR sweeps: 5 cm grid, up to 120k points, and no elastic distortion **[ours]** (its 0.2 m noise
        lattice over a 100 m sweep would take gigabytes; Sonata's distortion is an indoor-config setting)."""
        kw.setdefault("grid_size", 0.05)
        kw.setdefault("max_points", 120_000)
        kw.setdefault("elastic", None)
        return cls(**kw)


def prepare_scene(scene: dict, grid_size: float, rng: np.random.Generator, grouping: dict | None = None) -> dict:
    """Grid-sample a scene (train mode) and number its points: ``index`` = row in this sampled scene. ``grouping``:
    the scene's cached :func:`pointins.data.transforms.voxel_grouping` (same result, less work)."""
    pts = {k: v for k, v in scene.items() if k in T.POINT_KEYS}
    s = T.grid_sample(pts, grid_size, "train", rng, grouping=grouping)
    s.pop("index", None)
    s["index"] = np.arange(len(s["coord"]), dtype=np.int64)
    if "instance" in s:  # labelled data: every point's instance centroid (diagnostics, oracle controls; not a loss)
        s["centre"] = instance_centres(s["coord"], s["instance"])
    return s


def instance_centres(coord: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """(N, 3) float32: the centroid of each point's instance over all of ``coord`` (NaN for instance < 0)."""
    inst = np.asarray(instance, np.int64).reshape(-1)
    out = np.full((len(inst), 3), np.nan, np.float32)
    ok = inst >= 0
    if ok.any():
        k = int(inst[ok].max()) + 1
        cnt = np.bincount(inst[ok], minlength=k).astype(np.float64)
        c = np.asarray(coord, np.float64)[ok]
        sums = np.stack([np.bincount(inst[ok], weights=c[:, j], minlength=k) for j in range(3)], 1)
        out[ok] = (sums / np.maximum(cnt, 1)[:, None])[inst[ok]]
    return out


def _color(v: dict, rng: np.random.Generator) -> dict:
    v = T.random_color_jitter(v, rng)
    return T.chromatic_translation(v, rng)


def _augment(v: dict, cfg: ViewConfig, rng: np.random.Generator, color: bool) -> dict:
    """Sonata's ``global_transform`` / ``local_transform`` (colour only when ``color``; colour is scaled to
    [0, 1] later, when the backbone features are built)."""
    with phase("geometry"):
        if "origin" not in v:  # each point's position before any augmentation: carried through every transform
            v = dict(v, origin=np.asarray(v["coord"], np.float32))
        v = T.defer_normals(T.start_view(v))  # normals mapped once, after the last linear transform
        T.center_shift(v, apply_z=True)
        T.random_scale(v, rng, cfg.scale)
        T.random_rotate(v, rng, "z", (-cfg.rotate_z, cfg.rotate_z), p=cfg.rotate_z_p)
        if cfg.tilt > 0:
            T.random_rotate(v, rng, "x", (-cfg.tilt, cfg.tilt), p=cfg.tilt_p, about="bbox")
            T.random_rotate(v, rng, "y", (-cfg.tilt, cfg.tilt), p=cfg.tilt_p, about="bbox")
        T.random_flip(v, rng, cfg.flip_p)
        T.finish_normals(v)
        T.random_jitter(v, rng, cfg.jitter_sigma, cfg.jitter_clip)
    if cfg.elastic:
        with phase("elastic"):
            T.elastic_distortion(v, rng, cfg.elastic, p=cfg.elastic_p)
    if color and cfg.color_jitter:
        with phase("colour"):
            _color(v, rng)
    return v


def _view_size(ratio, base: int, rng: np.random.Generator) -> int:
    """``MultiViewGenerator.get_view``'s size: int(U(ratio) x base), redrawn up to 10 times while 0."""
    for _ in range(10):
        size = int(float(rng.uniform(*ratio)) * base)
        if size > 0:
            return size
    return max(10, int(ratio[1] * base))


def _finish(v: dict, cfg: ViewConfig, rng: np.random.Generator) -> dict:
    with phase("grid sample view"):
        v = T.grid_sample(v, cfg.grid_size, "train", rng)
    v["coord"] = v["coord"].astype(np.float32)
    return v


def make_views(scene: dict, cfg: ViewConfig, rng: np.random.Generator) -> dict:
    """``{"global": [view, ...], "local": [view, ...]}`` of a grid-sampled scene (see :func:`prepare_scene`).

    Each view has the scene's per-point arrays for its points plus ``grid_coord``, ``transform``, ``shift``
    and ``index`` (rows of ``scene``); ``coord`` is float32 in the view frame.
    """
    n = len(scene["coord"])
    if n == 0:
        raise ValueError("make_views: the scene has no points.")
    if cfg.scene_points and n > cfg.scene_points:  # a part of the scene stands for it (index: rows of the whole)
        if "index" not in scene:
            scene = dict(scene, index=np.arange(n))
        with phase("crop"):
            scene = T.nearest_crop(scene, cfg.scene_points, scene["coord"][int(rng.integers(n))])
    rows, n = n, len(scene["coord"])  # rows: of the whole scene (what "index" numbers); n: points to draw from
    base = min(n, cfg.max_points)
    out: dict[str, list] = {"global": [], "local": []}
    coord = scene["coord"]
    if not cfg.anchored:  # the earlier sampler: every view around a random point of the scene
        for kind, count, ratio in (("global", cfg.global_views, cfg.global_ratio),
                                   ("local", cfg.local_views, cfg.local_ratio)):  # fmt: skip
            for _ in range(count):
                k = max(1, round(float(rng.uniform(*ratio)) * base))
                v = _augment(T.nearest_crop(scene, k, coord[int(rng.integers(n))]), cfg, rng, color=True)
                out[kind].append(_finish(v, cfg, rng))
        return out
    # Global views share one colour augmentation of the scene (Sonata's global_shared_transform).
    gscene = scene
    if cfg.color_jitter and cfg.shared_global_color and "color" in scene:
        with phase("colour"):
            gscene = _color(dict(scene), rng)
    with phase("crop"):
        major = T.nearest_crop(gscene, _view_size(cfg.global_ratio, base, rng), coord[int(rng.integers(n))])
        mc = major["coord"]
        crops = [major] + [
            T.nearest_crop(gscene, _view_size(cfg.global_ratio, base, rng), mc[int(rng.integers(len(mc)))])
            for _ in range(cfg.global_views - 1)
        ]
    for v in crops:
        out["global"].append(_finish(_augment(v, cfg, rng, color=not cfg.shared_global_color), cfg, rng))
    # Local views: centred on points of the major view not yet covered by a local view.
    major_index = major["index"] if "index" in major else np.arange(len(mc))
    covered = np.zeros(len(mc), dtype=bool)
    in_view = np.zeros(rows, dtype=bool)  # scene rows of the last local view
    for _ in range(cfg.local_views):
        if covered.all():
            covered[:] = False
        free = np.flatnonzero(~covered)
        centre = mc[free[int(rng.integers(len(free)))]]
        with phase("crop"):
            v = T.nearest_crop(scene, _view_size(cfg.local_ratio, base, rng), centre)
            in_view[:] = False
            in_view[v["index"] if "index" in v else np.arange(len(v["coord"]))] = True
            covered |= in_view[major_index]  # = np.isin(major_index, v["index"])
        out["local"].append(_finish(_augment(v, cfg, rng, color=True), cfg, rng))
    return out


def overlap_stats(views: dict) -> dict:
    """How much the views of one sample share (by scene row): ``global_overlap`` = fraction of the second global
    view's points that are in the first (nan with one global view); ``local_overlap`` = per local view, the
    fraction of its points in the first global view."""
    g0 = views["global"][0]["index"]
    go = float(np.isin(views["global"][1]["index"], g0).mean()) if len(views["global"]) > 1 else float("nan")
    lo = [float(np.isin(v["index"], g0).mean()) if len(v["index"]) else 0.0 for v in views["local"]]
    return {"global_overlap": go, "local_overlap": lo}


class ViewDataset:
    """Scenes -> grid-sampled scene + views, deterministic per (seed, epoch, index).

    ``source[i]`` must return a dict with ``coord`` (and any of the other per-point keys); e.g. a
    :class:`pointins.data.PointCloudDataset`. Items: ``{"global": [...], "local": [...], "scene_points": N,
    "name": ...}``; :func:`pointins.data.collate.collate` batches them.
    """

    def __init__(self, source, config: ViewConfig | None = None, seed: int = 0, cache_mb: float = 0) -> None:
        self.source, self.cfg, self.seed, self.epoch = source, config or ViewConfig(), int(seed), 0
        # Scenes as read, kept per process (each DataLoader worker has its own) up to cache_mb: a scene is read
        # and validated once instead of once per epoch. Least recently used scenes go first.
        self.cache_bytes = int(max(0.0, float(cache_mb)) * 2**20)
        self._cache: OrderedDict = OrderedDict()
        self._cached = 0

    def _read(self, i: int) -> tuple[dict, dict | None]:
        """The scene, and its cached voxel grouping at the view grid size (None when not cached)."""
        if self.cache_bytes <= 0:
            return self.source[i], None
        hit = self._cache.get(i)
        if hit is not None:
            self._cache.move_to_end(i)
            return dict(hit[0]), hit[1]
        raw = self.source[i]
        grouping = T.voxel_grouping(raw, self.cfg.grid_size)
        size = sum(v.nbytes for v in raw.values() if isinstance(v, np.ndarray)) + 12 * len(raw["coord"])
        if size <= self.cache_bytes:
            while self._cache and self._cached + size > self.cache_bytes:
                _, (_, _, old) = self._cache.popitem(last=False)
                self._cached -= old
            self._cache[i] = (raw, grouping, size)
            self._cached += size
        return dict(raw), grouping

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i) -> dict:
        """Sample ``i`` of the current epoch, or ``(epoch, i)`` (what a resumable sampler yields, so persistent
        DataLoader workers need no epoch update)."""
        in_worker = torch.utils.data.get_worker_info() is not None
        if in_worker and _timing.enabled():
            _timing.use_cpu_clock()
        epoch = self.epoch
        if isinstance(i, tuple):
            epoch, i = i
        with phase("views"):
            rng = np.random.default_rng([self.seed, int(epoch), int(i)])
            with phase("read scene"):
                raw, grouping = self._read(i)
            with phase("grid sample scene"):
                scene = prepare_scene(raw, self.cfg.grid_size, rng, grouping)
            views = make_views(scene, self.cfg, rng)
        views["scene_points"] = len(scene["coord"])
        views["name"] = raw.get("name", str(i))
        views["dropped_points"] = int(raw.get("dropped_points", 0))  # non-finite points the reader dropped
        views["repaired_points"] = int(raw.get("repaired_points", 0))  # points whose NaN/Inf attributes were zeroed
        if in_worker and _timing.enabled():
            views["_timing"] = _timing.take()  # a worker's phases travel with its sample
        return views


def seed_worker(worker_id: int, nice: int = 0) -> None:
    """DataLoader ``worker_init_fn``: seeds NumPy's and Python's global RNGs from torch's per-worker seed
    (our own sampling uses explicit generators; this keeps third-party transforms reproducible too). ``nice``
    lowers the worker's CPU priority by that much (``functools.partial(seed_worker, nice=19)``): on a CPU run the
    workers then use the cores only when the training step leaves them idle, instead of preempting its threads."""
    if nice > 0 and hasattr(os, "nice"):
        try:
            os.nice(int(nice))
        except OSError:  # not permitted here: run at the normal priority
            pass
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # noqa: NPY002 -- the legacy global RNG is what third-party code draws from
    random.seed(s)


def _serial_openmp() -> None:
    """Make this thread's OpenMP regions single-threaded (its own setting only; torch.set_num_threads would change
    the whole process). A view thread's compiled ops are small; with the default team size every such thread keeps
    its own team of spinning OpenMP threads, which then compete with the training step's team. Also files the
    thread's phase timings under "view threads" (CPU time) when profiling."""
    import ctypes

    _timing.thread_root("view threads", cpu=True)

    try:
        ctypes.CDLL(None).omp_set_num_threads(1)
    except (OSError, AttributeError):  # no OpenMP runtime in the process: nothing to do
        pass


class ThreadedBatches:
    """In-process batches: the samples of each batch made by ``threads`` threads, then collated (no worker
    processes). On a machine whose cores the training step already keeps busy (a CPU run), worker processes
    compete with the step's threads; building the views between steps, the samples of a batch side by side, costs
    less (most of a sample's work is NumPy / compiled ops that release the GIL). Same batches as a DataLoader over
    the same sampler: samples depend only on (seed, epoch, index)."""

    def __init__(self, dataset, sampler, batch_size: int, collate_fn, threads: int = 2):
        self.dataset, self.sampler, self.batch_size, self.collate = dataset, sampler, int(batch_size), collate_fn
        self.threads = max(1, int(threads))

    def __iter__(self):
        from concurrent.futures import ThreadPoolExecutor

        pool = (ThreadPoolExecutor(self.threads, thread_name_prefix="pointins-views", initializer=_serial_openmp)
                if self.threads > 1 else None)  # fmt: skip
        try:
            idx: list = []
            for i in self.sampler:
                idx.append(i)
                if len(idx) == self.batch_size:
                    samples = list(pool.map(self.dataset.__getitem__, idx)) if pool else [self.dataset[j] for j in idx]
                    idx = []
                    yield self.collate(samples)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size


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
