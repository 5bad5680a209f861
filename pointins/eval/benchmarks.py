"""Which classes a benchmark evaluates: names, thing (instance) classes, ignore label, PQ segment size.

Numbers only mean what the papers' numbers mean when they are computed over the benchmark's own class sets.
:func:`class_set` decides them for a dataset, in this order:

1. ``meta.json`` in the dataset root (``classes``, ``thing_classes``, optionally ``ignore_index`` and
   ``min_points``; or ``"benchmark": "<name>"`` to take a built-in set below);
2. ``dataset=`` given explicitly (``python -m pointins.evaluate --dataset scannet``);
3. a known layout recognised from the files (SemanticKITTI ``sequences/``, nuScenes tables, Pointcept ScanNet
   ``sceneXXXX_XX`` folders, S3DIS ``Area_N`` folders, or the root's name);
4. as a last resort, inferred from the labels (classes that carry instance ids are things), with a warning:
   on Pointcept's ScanNet folders every segment group has an id, walls and floors included, so inference makes
   them instance classes. Write a ``meta.json`` or pass ``dataset=`` instead.

The built-in sets follow the benchmarks' evaluators and the Pointcept / Sonata configs:

========== ====================================== =========================================================
name       things (instance / PQ-thing classes)   source
========== ====================================== =========================================================
scannet    18: all of the 20 but wall and floor   ScanNet ``evaluate_semantic_instance.py`` VALID_CLASS_IDS;
                                                  Sonata ``insseg-sonata-v1m1-0a-scannet-pg-lin.py``
                                                  ``segment_ignore_index = (-1, 0, 1)``
scannet200 198: all of the 200 but wall and floor Sonata ``insseg-sonata-v1m1-1a-scannet200-pg-lin.py``
                                                  ``segment_ignore_index = (-1, 0, 2)``
s3dis      all 13                                 Sonata ``insseg-sonata-v1m1-3a-s3dis-pg-lin.py``
                                                  ``segment_ignore_index = (-1,)``
semantickitti 8: car ... motorcyclist             ``semantic-kitti-api`` (PQ ``min_points`` 50)
nuscenes   10: barrier ... truck                  nuScenes panoptic evaluation (``min_points`` 15)
========== ====================================== =========================================================

Class orders are Pointcept's (ScanNet20 ``segment20``, ScanNet200 ``segment200``, S3DIS, SemanticKITTI and
nuScenes learning maps), which is what :func:`pointins.data.read` returns for those layouts.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pointins.data.readers import (
    NUSCENES_CLASSES,
    NUSCENES_THING_CLASSES,
    SEMANTIC_KITTI_CLASSES,
    SEMANTIC_KITTI_THING_CLASSES,
)

__all__ = ["BENCHMARKS", "ClassSet", "class_set", "detect_layout"]


@dataclass(frozen=True)
class ClassSet:
    """The classes a dataset is scored on.

    ``thing_classes`` are the instance classes: instance AP is averaged over them, PQ treats them as things,
    and (as Pointcept's ``InstanceParser``) points of every other class carry no instance for the probe: no
    offset target, never clustered. ``min_points``: the PQ evaluator's minimum segment size (SemanticKITTI 50,
    nuScenes 15)."""

    name: str
    classes: tuple[str, ...]
    thing_classes: tuple[int, ...]
    ignore_index: int = -1
    min_points: int = 50
    source: str = ""
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def stuff_classes(self) -> tuple[int, ...]:
        return tuple(c for c in range(len(self.classes)) if c not in self.thing_classes)

    def to_dict(self) -> dict:
        return {"name": self.name, "classes": list(self.classes), "thing_classes": list(self.thing_classes),
                "stuff_classes": list(self.stuff_classes), "ignore_index": self.ignore_index,
                "min_points": self.min_points, "source": self.source}  # fmt: skip


SCANNET20_CLASSES = ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
                     "picture", "counter", "desk", "curtain", "refridgerator", "shower curtain", "toilet", "sink",
                     "bathtub", "otherfurniture")  # fmt: skip

SCANNET200_CLASSES = (
    "wall", "chair", "floor", "table", "door", "couch", "cabinet", "shelf", "desk", "office chair", "bed", "pillow",
    "sink", "picture", "window", "toilet", "bookshelf", "monitor", "curtain", "book", "armchair", "coffee table",
    "box", "refrigerator", "lamp", "kitchen cabinet", "towel", "clothes", "tv", "nightstand", "counter", "dresser",
    "stool", "cushion", "plant", "ceiling", "bathtub", "end table", "dining table", "keyboard", "bag", "backpack",
    "toilet paper", "printer", "tv stand", "whiteboard", "blanket", "shower curtain", "trash can", "closet", "stairs",
    "microwave", "stove", "shoe", "computer tower", "bottle", "bin", "ottoman", "bench", "board", "washing machine",
    "mirror", "copier", "basket", "sofa chair", "file cabinet", "fan", "laptop", "shower", "paper", "person",
    "paper towel dispenser", "oven", "blinds", "rack", "plate", "blackboard", "piano", "suitcase", "rail",
    "radiator", "recycling bin", "container", "wardrobe", "soap dispenser", "telephone", "bucket", "clock", "stand",
    "light", "laundry basket", "pipe", "clothes dryer", "guitar", "toilet paper holder", "seat", "speaker",
    "column", "bicycle", "ladder", "bathroom stall", "shower wall", "cup", "jacket", "storage bin", "coffee maker",
    "dishwasher", "paper towel roll", "machine", "mat", "windowsill", "bar", "toaster", "bulletin board",
    "ironing board", "fireplace", "soap dish", "kitchen counter", "doorframe", "toilet paper dispenser",
    "mini fridge", "fire extinguisher", "ball", "hat", "shower curtain rod", "water cooler", "paper cutter", "tray",
    "shower door", "pillar", "ledge", "toaster oven", "mouse", "toilet seat cover dispenser", "furniture", "cart",
    "storage container", "scale", "tissue box", "light switch", "crate", "power outlet", "decoration", "sign",
    "projector", "closet door", "vacuum cleaner", "candle", "plunger", "stuffed animal", "headphones", "dish rack",
    "broom", "guitar case", "range hood", "dustpan", "hair dryer", "water bottle", "handicap bar", "purse", "vent",
    "shower floor", "water pitcher", "mailbox", "bowl", "paper bag", "alarm clock", "music stand",
    "projector screen", "divider", "laundry detergent", "bathroom counter", "object", "bathroom vanity", "closet wall",
    "laundry hamper", "bathroom stall door", "ceiling light", "trash bin", "dumbbell", "stair rail", "tube",
    "bathroom cabinet", "cd case", "closet rod", "coffee kettle", "structure", "shower head", "keyboard piano",
    "case of water bottles", "coat rack", "storage organizer", "folded chair", "fire alarm", "power strip",
    "calendar", "poster", "potted plant", "luggage", "mattress",
)  # fmt: skip

S3DIS_CLASSES = ("ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
                 "bookcase", "board", "clutter")  # fmt: skip


def _without(n: int, drop: Sequence[int]) -> tuple[int, ...]:
    return tuple(c for c in range(n) if c not in drop)


BENCHMARKS: dict[str, ClassSet] = {
    "scannet": ClassSet("scannet", SCANNET20_CLASSES, _without(20, (0, 1)), -1, 50,
                        "ScanNet20 (instance classes: the benchmark's 18, wall and floor excluded)"),
    "scannet200": ClassSet("scannet200", SCANNET200_CLASSES, _without(200, (0, 2)), -1, 50,
                           "ScanNet200 (instance classes: all but wall and floor)"),
    "s3dis": ClassSet("s3dis", S3DIS_CLASSES, tuple(range(13)), -1, 50,
                      "S3DIS (instance classes: all 13, as Sonata's S3DIS instance protocol)"),
    "semantickitti": ClassSet("semantickitti", SEMANTIC_KITTI_CLASSES, SEMANTIC_KITTI_THING_CLASSES, -1, 50,
                              "SemanticKITTI (8 thing classes; PQ min_points 50)"),
    "nuscenes": ClassSet("nuscenes", NUSCENES_CLASSES, NUSCENES_THING_CLASSES, -1, 15,
                         "nuScenes panoptic (10 thing classes; PQ min_points 15)"),
}  # fmt: skip
BENCHMARKS["scannet20"] = BENCHMARKS["scannet"]
BENCHMARKS["kitti"] = BENCHMARKS["semantickitti"]

_SCANNET_SCENE = re.compile(r"scene\d{4}_\d{2}")
_S3DIS_AREA = re.compile(r"Area_\d")


def detect_layout(root, scene_refs: Sequence = (), segment_key: str | None = None) -> str | None:
    """The built-in benchmark a dataset's files look like (a :data:`BENCHMARKS` key), or None.

    ``scene_refs``: the dataset's :class:`pointins.data.readers.SceneRef` list (kinds and names)."""
    refs = list(scene_refs)
    kinds = {getattr(r, "kind", None) for r in refs}
    if "kitti" in kinds:
        return "semantickitti"
    if "nuscenes" in kinds:
        return "nuscenes"
    names = [str(getattr(r, "name", r)) for r in refs]
    low = str(Path(root)).lower().replace("-", "_")
    scannet = any(_SCANNET_SCENE.search(n) for n in names) or "scannet" in Path(root).name.lower()
    if scannet:
        if segment_key == "segment200" or "scannet200" in low:
            return "scannet200"
        if "scannetpp" in low or "scannet++" in low:
            return None  # ScanNet++ has its own class lists: write a meta.json
        return "scannet"
    if any(_S3DIS_AREA.search(n) for n in names) or "s3dis" in low:
        return "s3dis"
    if "semantic_kitti" in low or "semantickitti" in low:
        return "semantickitti"
    if "nuscenes" in low:
        return "nuscenes"
    return None


def _from_meta(meta: dict, where: str) -> ClassSet:
    if "benchmark" in meta:
        b = meta["benchmark"]
        if not isinstance(b, str) or b.lower() not in BENCHMARKS:
            raise ValueError(f"{where}: 'benchmark' must be one of {sorted(BENCHMARKS)}, got {str(b)[:60]!r}.")
        base = BENCHMARKS[b.lower()]
        return ClassSet(base.name, base.classes, base.thing_classes, base.ignore_index, base.min_points,
                        f"{base.source} (named by {where})")  # fmt: skip
    classes = meta["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{where}: 'classes' must be a non-empty list of class names.")
    n = len(classes)

    def ints(key, default):
        v = meta.get(key, default)
        if not isinstance(v, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in v):
            raise ValueError(f"{where}: {key!r} must be a list of class indices.")
        bad = [c for c in v if not 0 <= c < n]
        if bad:
            raise ValueError(f"{where}: {key!r} has {bad[:5]} outside [0, {n}) (the {n} classes).")
        return tuple(sorted(set(v)))

    things = ints("thing_classes", [])
    if "thing_classes" not in meta and "stuff_classes" in meta:
        things = _without(n, ints("stuff_classes", []))
    ignore = meta.get("ignore_index", -1)
    if not isinstance(ignore, int) or isinstance(ignore, bool):
        raise ValueError(f"{where}: 'ignore_index' must be an integer.")
    mp = meta.get("min_points", 50)
    if not isinstance(mp, int) or isinstance(mp, bool) or mp < 0:
        raise ValueError(f"{where}: 'min_points' must be a non-negative integer.")
    return ClassSet(str(meta.get("name", "meta.json")), tuple(classes), things, ignore, mp, where)


def class_set(
    meta: dict | None,
    root,
    scene_refs: Sequence = (),
    labels: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    dataset: str | None = "auto",
    segment_key: str | None = None,
    warn=None,
) -> ClassSet:
    """The :class:`ClassSet` of a dataset (see the module docstring for the order of precedence).

    ``labels``: (segment, instance) arrays of some scenes, for the last-resort inference and for checking that
    the labels fit the chosen set. ``dataset``: a :data:`BENCHMARKS` name, ``"auto"`` (recognise the layout) or
    ``"infer"`` (skip recognition: labels, with the warning). ``warn``: called with the warning text (default:
    printed to stderr)."""
    warn = warn or (lambda msg: print(f"pointins.evaluate: warning: {msg}", file=sys.stderr))
    dataset = (dataset or "auto").lower()
    if dataset not in ("auto", "infer") and dataset not in BENCHMARKS:
        raise ValueError(f"pointins.evaluate: --dataset must be auto, infer or one of {sorted(BENCHMARKS)}, "
                         f"got {dataset!r}.")  # fmt: skip
    if meta and ("classes" in meta or "benchmark" in meta):
        cs = _from_meta(meta, f"{Path(root) / 'meta.json'}")
    elif dataset in BENCHMARKS:
        cs = BENCHMARKS[dataset]
    else:
        name = detect_layout(root, scene_refs, segment_key) if dataset == "auto" else None
        cs = BENCHMARKS[name] if name else _infer(labels, warn)
        if name:
            cs = ClassSet(cs.name, cs.classes, cs.thing_classes, cs.ignore_index, cs.min_points,
                          f"{cs.source}; recognised from the dataset layout")  # fmt: skip
    top = max((int(s.max()) for s, _ in labels if len(s)), default=-1)
    if top >= cs.num_classes and top != cs.ignore_index:
        raise ValueError(f"pointins.evaluate: the labels go up to {top} but {cs.source} has {cs.num_classes} "
                         f"classes; pass the right --dataset or write a meta.json with the class list.")  # fmt: skip
    return cs


def _infer(labels, warn) -> ClassSet:
    top = max((int(s.max()) for s, _ in labels if len(s)), default=-1)
    if top < 0:
        raise ValueError("pointins.evaluate: the scenes have no semantic labels (segment); the probes need them.")
    things = sorted({int(c) for s, i in labels for c in np.unique(s[i >= 0]) if c >= 0})
    warn(f"no meta.json and not a known benchmark layout: thing classes inferred from the labels (classes that "
         f"carry instance ids: {things}). If walls, floors or other stuff have instance ids they are wrongly "
         "evaluated as instances; write a meta.json with 'classes' and 'thing_classes', or pass --dataset "
         f"({', '.join(sorted(set(BENCHMARKS) - {'kitti', 'scannet20'}))}).")  # fmt: skip
    return ClassSet("inferred", tuple(f"class{c}" for c in range(top + 1)), tuple(things), -1, 50,
                    "inferred from the labels (no meta.json)")  # fmt: skip
