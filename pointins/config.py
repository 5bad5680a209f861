"""Training configuration: dataclasses, named presets and ``key=value`` command-line overrides.

:class:`TrainConfig` holds the run (data, model size, optimiser, schedule, logging) with two nested parts,
``views`` (:class:`pointins.data.views.ViewConfig`) and ``ssl`` (:class:`pointins.ssl.SSLConfig`).
Overrides address fields by dotted name (``ssl.prototypes=4096``, ``views.grid_size=0.05``, ``lr=0.002``);
a bare name that exists in exactly one part works too (``prototypes=4096``). Values are parsed as Python
literals (numbers, ``true``/``false``, ``none``; comma-separated lists for tuple fields) and checked
against the field's current type.

>>> cfg = resolve("cpu-demo", ["steps=20", "ssl.kmeans_k=10", "global_ratio=0.5,1.0"])
>>> cfg.steps, cfg.ssl.kmeans_k, cfg.views.global_ratio
(20, 10, (0.5, 1.0))
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pointins.data.views import ViewConfig
from pointins.ssl.model import VARIANTS, SSLConfig

__all__ = ["PRESETS", "TrainConfig", "apply_overrides", "from_dict", "resolve"]


@dataclass
class TrainConfig:
    """One pretraining run (``python -m pointins.train``)."""

    preset: str = "custom"
    variant: str = "pointins"  # method variant / ablation: see pointins.ssl.VARIANTS
    # data
    data: str | None = None  # a dataset the readers accept; None: built-in synthetic scenes of ``kind``
    kind: str = "indoor"  # indoor | outdoor: synthetic scenes to generate when data is None
    synthetic_scenes: int = 32
    split: str | None = "train"  # split of ``data`` to train on (falls back to every scene if it has none)
    out: str = "runs/pointins"
    # model
    backbone: str = "tiny"  # pointins.models preset
    drop_path: float | None = None  # None: the preset's
    # optimisation
    steps: int = 600
    batch_size: int = 2  # scenes per process and step
    num_workers: int = 2
    seed: int = 0
    lr: float = 0.004  # peak lr at a total batch of lr_batch scenes (scaled linearly)
    lr_batch: int = 96
    layer_decay: float = 0.9
    weight_decay: tuple[float, float] = (0.04, 0.2)
    warmup: float = 0.05  # one-cycle warm-up fraction
    div_factor: float = 10.0  # one-cycle: start lr = peak / div_factor
    final_div_factor: float = 1000.0  # end lr = start lr / final_div_factor
    clip_grad: float = 3.0
    amp: str = "auto"  # auto (bf16 on CUDA) | bf16 | off
    device: str = "auto"
    deterministic: bool = False
    # bookkeeping
    log_every: int = 10
    ckpt_every: int = 100
    keep_checkpoints: int = 2
    vis_every: int = 200  # 0: never; PNG/PLY of the teacher's segments, pseudo-instances and centres
    diagnostics: bool = True  # label diagnostics every log step when the data has instances (logging only)
    max_bad_steps: int = 5  # consecutive non-finite losses before aborting
    tensorboard: bool = True  # when the tensorboard package is installed
    init: str | None = None  # start student and teacher from this encoder (Pointcept / Sonata / pointins checkpoint)
    data_nan: str = "drop"  # drop (and count) points with NaN/Inf values | raise: skip such scans
    min_scene_points: int = 100  # a scan with fewer points (after dropping) is skipped
    scene_cache_mb: int = 512  # scenes kept in memory as read, per data-loading process (0: read every time)
    worker_nice: int | None = None  # CPU priority drop of the data workers; None: 19 on CPU runs, 0 with a GPU
    view_threads: int = 2  # num_workers=0: threads making a batch's samples in the training process
    threads: int | None = None  # intra-op threads of the training process; None: torch's default (physical cores)
    overlap_teacher: bool = True  # CPU with >1 thread: teacher and student forwards side by side, one thread each
    views: ViewConfig = field(default_factory=ViewConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)

    def __post_init__(self):
        from pointins._validate import check_fields
        from pointins.models import PRESETS as BACKBONES

        self.weight_decay = tuple(self.weight_decay)
        check_fields("TrainConfig", self, {
            "synthetic_scenes": ("int", 1, None), "steps": ("int", 1, None), "batch_size": ("int", 1, None),
            "num_workers": ("int", 0, 256), "seed": ("int", 0, 2**63 - 1), "lr": ("float", 0, None, "lo-open"),
            "lr_batch": ("int", 1, None), "layer_decay": ("float", 0, 1, "lo-open"),
            "weight_decay": ("two", 0, None), "warmup": ("float", 0, 1, "hi-open"),
            "div_factor": ("float", 1, None), "final_div_factor": ("float", 1, None),
            "clip_grad": ("float", 0, None, "lo-open"), "deterministic": ("bool", 0, 0),
            "drop_path": ("opt-float", 0, 1, "hi-open"), "log_every": ("int", 1, None),
            "ckpt_every": ("int", 0, None), "keep_checkpoints": ("int", 0, None), "vis_every": ("int", 0, None),
            "max_bad_steps": ("int", 1, None), "tensorboard": ("bool", 0, 0), "min_scene_points": ("int", 1, None),
            "diagnostics": ("bool", 0, 0),
            "scene_cache_mb": ("int", 0, None), "worker_nice": ("opt-int", 0, 19), "view_threads": ("int", 1, 256),
            "threads": ("opt-int", 1, 4096), "overlap_teacher": ("bool", 0, 0),
        })  # fmt: skip
        if self.data_nan not in ("drop", "raise"):
            raise ValueError(f"TrainConfig: data_nan must be 'drop' or 'raise', got {self.data_nan!r}.")
        if self.backbone not in BACKBONES:
            raise ValueError(f"TrainConfig: backbone must be one of {list(BACKBONES)}, got {self.backbone!r}.")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise ValueError(f"TrainConfig: device must be auto, cpu, cuda or cuda:N, got {self.device!r}.")
        if not isinstance(self.out, str) or not self.out.strip():
            raise ValueError(f"TrainConfig: out must be a folder path, got {self.out!r}.")
        if self.variant not in VARIANTS:
            raise ValueError(f"TrainConfig: unknown variant {self.variant!r}; choose from {list(VARIANTS)}.")
        if self.kind not in ("indoor", "outdoor"):
            raise ValueError(f"TrainConfig: kind must be 'indoor' or 'outdoor', got {self.kind!r}.")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"TrainConfig: amp must be auto, bf16 or off, got {self.amp!r}.")

    def to_dict(self) -> dict:
        return asdict(self)


def _cpu_demo() -> TrainConfig:
    """A tiny encoder on 40 synthetic rooms: about 5 minutes on 2 CPU cores. Views are made in the training process
    on two threads between steps (num_workers=0): on a 2-core machine worker processes compete with the step's own
    threads (bench/profile_step.py measures both)."""
    views = ViewConfig(grid_size=0.04, max_points=16000, local_views=2)
    ssl = SSLConfig(prototypes=256, head_hidden=512, head_dim=64, offset_hidden=128)
    return TrainConfig(preset="cpu-demo", synthetic_scenes=40, steps=600, lr=0.002, lr_batch=2, num_workers=0,
                       view_threads=2, views=views, ssl=ssl)  # fmt: skip


_GPU = dict(synthetic_scenes=1200, backbone="base", steps=100_000, num_workers=8, log_every=20, ckpt_every=1000,
            vis_every=5000)  # fmt: skip


def _indoor_base() -> TrainConfig:
    """Sonata-size encoder, METHOD.md defaults (per-GPU batch 8; lr scales with the total batch)."""
    return TrainConfig(preset="indoor-base", kind="indoor", batch_size=8, **_GPU)


def _outdoor_base() -> TrainConfig:
    """LiDAR: 5 cm grid, larger crops, the outdoor prior; [ours] bigger mask cubes (instances are larger)."""
    ssl = SSLConfig(prior="outdoor-all", mask_size=(0.4, 1.6))
    return TrainConfig(preset="outdoor-base", kind="outdoor", batch_size=4, views=ViewConfig.outdoor(), ssl=ssl, **_GPU)


PRESETS = {"cpu-demo": _cpu_demo, "indoor-base": _indoor_base, "outdoor-base": _outdoor_base}


def _parse_scalar(text: str):
    t = text.strip()
    low = t.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t


def _coerce(name: str, current: Any, text: str):
    if isinstance(current, tuple) or (current is None and "," in text):
        parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
        vals = tuple(_parse_scalar(p) for p in parts)
        if current is not None and len(current) and len(vals) != len(current):
            raise ValueError(f"override {name}: expected {len(current)} comma-separated values, got {text!r}.")
        if current and all(isinstance(c, float) for c in current):
            vals = tuple(float(v) for v in vals)
        return vals
    v = _parse_scalar(text)
    if v is None or current is None:
        return v
    if isinstance(current, bool):
        if not isinstance(v, bool):
            raise ValueError(f"override {name}: expected true/false, got {text!r}.")
        return v
    if isinstance(current, int):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"override {name}: expected an integer, got {text!r}.")
        return v
    if isinstance(current, float):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"override {name}: expected a number, got {text!r}.")
        return float(v)
    return text if isinstance(current, str) else v


_PARTS = ("views", "ssl")


def _locate(cfg: TrainConfig, key: str):
    if "." in key:
        part, name = key.split(".", 1)
        if part not in _PARTS:
            raise KeyError(f"override {key!r}: unknown section {part!r}; sections are {list(_PARTS)}.")
        obj = getattr(cfg, part)
    else:
        top = {f.name for f in dataclasses.fields(cfg)} - set(_PARTS)
        owners = [p for p in _PARTS if name_in(getattr(cfg, p), key)]
        if key in top:
            obj, name = cfg, key
        elif len(owners) == 1:
            obj, name = getattr(cfg, owners[0]), key
        elif len(owners) > 1:
            raise KeyError(f"override {key!r} is ambiguous; write one of {[f'{o}.{key}' for o in owners]}.")
        else:
            obj, name = cfg, key
    if not name_in(obj, name):
        names = sorted(f.name for f in dataclasses.fields(obj))
        raise KeyError(f"override {key!r}: no such setting; {type(obj).__name__} has {names}.")
    return obj, name


def name_in(obj, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(obj))


def apply_overrides(cfg: TrainConfig, pairs: list[str]) -> TrainConfig:
    """A copy of ``cfg`` with ``key=value`` overrides applied (see the module docstring)."""
    cfg = copy.deepcopy(cfg)
    touched = set()
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"override {pair!r}: expected key=value (e.g. steps=100 or ssl.prototypes=4096).")
        key, text = pair.split("=", 1)
        obj, name = _locate(cfg, key.strip())
        setattr(obj, name, _coerce(key, getattr(obj, name), text))
        touched.add(id(obj))
    # re-validate what changed
    for part in (cfg.views, cfg.ssl):
        if id(part) in touched and hasattr(part, "__post_init__"):
            part.__post_init__()
    cfg.__post_init__()
    return cfg


def resolve(preset: str = "cpu-demo", overrides: list[str] | None = None, variant: str | None = None) -> TrainConfig:
    """A preset with a method ``variant`` (its SSL overrides) and ``key=value`` overrides applied last."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {list(PRESETS)}.")
    cfg = PRESETS[preset]()
    rest = []
    for pair in overrides or []:  # variant=NAME works like --variant NAME
        if pair.split("=", 1)[0].strip() == "variant":
            variant = pair.split("=", 1)[1].strip()
        else:
            rest.append(pair)
    if variant is not None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANTS)}.")
        cfg.variant = variant
    for k, v in VARIANTS[cfg.variant].items():
        setattr(cfg.ssl, k, v)
    return apply_overrides(cfg, rest)


def from_dict(d: dict) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` from :meth:`TrainConfig.to_dict` (e.g. a checkpoint's config)."""
    d = json.loads(json.dumps(d))  # deep copy, lists for tuples
    views = ViewConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("views").items()})
    ssl = SSLConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("ssl").items()})
    top = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return TrainConfig(**top, views=views, ssl=ssl)
