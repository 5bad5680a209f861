"""Collate clouds (or multi-view samples) into one batch of torch tensors with CSR ``offsets``.

A batch of clouds has every per-point array concatenated, ``offsets`` (B+1, int64, starting at 0) and a
``feat`` matrix for the backbone: ``coord`` + ``color`` / 255 (Pointcept's ``NormalizeColor``: [0, 1], what
Sonata's configs feed PT-v3m2) + ``normal`` indoors (9 channels),
``coord`` + ``strength`` outdoors (4), whichever of those the clouds have (choose with ``feat_keys``).
Views also stack ``transform`` (B,3,3) and ``shift`` (B,3) (float64).

A batch of multi-view samples (from :class:`pointins.data.views.ViewDataset`) becomes ``{"global": batch,
"local": batch, "num_samples": S, "names": [...]}``. Each view batch is view-major (view 0 of every
sample, then view 1, ...) and adds ``cloud_sample`` / ``cloud_view`` (per cloud) and ``source`` (per point:
the row in the concatenation of the samples' grid-sampled scenes, ``index`` + the sample's scene offset),
so points of different views of one sample match when their ``source`` is equal.
"""

from __future__ import annotations

import numpy as np
import torch

from pointins import _timing

__all__ = ["collate", "collate_clouds", "features"]

_FLOAT = ("coord", "color", "normal", "strength", "origin", "centre")
_INT = ("segment", "instance", "index", "source")


def features(cloud: dict, keys=None) -> np.ndarray:
    """The backbone input of one cloud (see the module docstring); ``keys`` picks and orders the parts."""
    if keys is None:
        keys = ("coord", "color", "normal") if "color" in cloud else ("coord", "strength")
    parts = []
    for k in keys:
        if k not in cloud:
            raise KeyError(f"features: the cloud has no {k!r} (it has {sorted(cloud)}); pass feat_keys=...")
        a = np.asarray(cloud[k], np.float32)
        if k == "color":
            a = a / 255.0  # NormalizeColor (pointcept/datasets/transform.py), as Sonata's configs feed PT-v3m2
        parts.append(a.reshape(len(a), -1))
    return np.concatenate(parts, 1) if parts else np.zeros((len(cloud["coord"]), 0), np.float32)


def collate_clouds(clouds: list[dict], feat_keys=None) -> dict:
    """Concatenate clouds into one batch (CSR ``offsets``); see the module docstring."""
    if not clouds:
        raise ValueError("collate_clouds: no clouds to collate.")
    keys = [k for k in clouds[0] if all(k in c for c in clouds)]
    sizes = [len(c["coord"]) for c in clouds]
    out: dict = {"offsets": torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.long)}
    for k in keys:
        vals = [c[k] for c in clouds]
        if k in ("transform", "shift"):
            out[k] = torch.from_numpy(np.stack(vals).astype(np.float64))
        elif k in _FLOAT:
            out[k] = torch.from_numpy(np.concatenate([np.asarray(v, np.float32) for v in vals]))
        elif k in _INT:
            out[k] = torch.from_numpy(np.concatenate([np.asarray(v, np.int64).reshape(-1) for v in vals]))
        elif k == "grid_coord":
            out[k] = torch.from_numpy(np.concatenate([np.asarray(v, np.int32) for v in vals]))
        elif k == "mask":
            out[k] = torch.from_numpy(np.concatenate([np.asarray(v, bool) for v in vals]))
        else:
            out[k] = vals
    if feat_keys is not False:
        out["feat"] = torch.from_numpy(np.concatenate([features(c, feat_keys) for c in clouds]))
    return out


def collate(samples: list[dict], feat_keys=None) -> dict:
    """Batch clouds, or multi-view samples (dicts with ``"global"`` / ``"local"`` lists)."""
    if not samples:
        raise ValueError("collate: empty batch.")
    if "global" not in samples[0]:
        return collate_clouds(samples, feat_keys)
    timings = [s.pop("_timing") for s in samples if "_timing" in s]  # phase timings of a profiling run's workers
    with _timing.phase("collate"):
        out = _collate_views(samples, feat_keys)
    if timings:
        for t in [*timings, _timing.take()]:
            for k, (sec, calls) in t.items():
                acc = out.setdefault("_timing", {}).setdefault(k, [0.0, 0.0])
                acc[0] += sec
                acc[1] += calls
    return out


def _collate_views(samples: list[dict], feat_keys) -> dict:
    starts = np.concatenate([[0], np.cumsum([s["scene_points"] for s in samples])])
    out: dict = {"num_samples": len(samples), "names": [s.get("name") for s in samples],
                 "dropped_points": sum(int(s.get("dropped_points", 0)) for s in samples),
                 "repaired_points": sum(int(s.get("repaired_points", 0)) for s in samples)}  # fmt: skip
    for kind in ("global", "local"):
        nviews = len(samples[0][kind])
        if any(len(s[kind]) != nviews for s in samples):
            raise ValueError(f"collate: samples have different numbers of {kind} views.")
        if nviews == 0:
            continue
        clouds, cs, cv = [], [], []
        for v in range(nviews):
            for i, s in enumerate(samples):
                c = dict(s[kind][v])
                c["source"] = np.asarray(c["index"], np.int64) + starts[i]
                clouds.append(c)
                cs.append(i)
                cv.append(v)
        b = collate_clouds(clouds, feat_keys)
        b["cloud_sample"] = torch.tensor(cs, dtype=torch.long)
        b["cloud_view"] = torch.tensor(cv, dtype=torch.long)
        out[kind] = b
    return out
