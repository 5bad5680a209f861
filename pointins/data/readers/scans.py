"""Benchmark layouts: SemanticKITTI scans, nuScenes sweeps with their label files, Pointcept scene folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointins.data.readers import _safeio
from pointins.data.readers._common import _KITTI_LUT, _NUSCENES_LUT
from pointins.data.readers._errors import DataError
from pointins.data.readers._safeio import read_bytes
from pointins.data.readers.text import _load_npy


def _fromfile(path, dtype, width: int, what: str) -> np.ndarray:
    raw = read_bytes(path)
    item = np.dtype(dtype).itemsize
    if len(raw) % (item * width):
        raise DataError(path, f"truncated {what}: {len(raw)} bytes is not a multiple of {item * width} per point")
    return np.frombuffer(raw, dtype).reshape(-1, width)


def _kitti_label_path(path: Path) -> Path | None:
    cand = path.parent.parent / "labels" / (path.stem + ".label")
    if path.parent.name == "velodyne" and cand.exists():
        return cand
    cand = path.with_suffix(".label")
    return cand if cand.exists() else None


def _read_kitti(path, label_path=None, learning_map: bool = True) -> dict:
    path = Path(path)
    pts = _fromfile(path, "<f4", 4, "SemanticKITTI scan")
    out = {"coord": pts[:, :3], "strength": pts[:, 3]}
    label_path = label_path or _kitti_label_path(path)
    if label_path is not None:
        lab = _fromfile(label_path, "<u4", 1, "SemanticKITTI label file")[:, 0]
        if len(lab) != len(pts):
            raise DataError(label_path, f"inconsistent: {len(lab)} labels for {len(pts)} points in {path.name}")
        raw_sem = (lab & 0xFFFF).astype(np.int64)
        sem = _KITTI_LUT[raw_sem] if learning_map else raw_sem
        out["segment"] = sem
        thing = (sem >= 0) & (sem < 8) if learning_map else (lab >> 16) > 0
        inst = np.full(len(lab), -1, np.int64)
        if thing.any():
            _, inst[thing] = np.unique(lab[thing], return_inverse=True)  # (class, instance) pairs are the ids
        out["instance"] = inst
    return out


def _nuscenes_sibling(path: Path, tail: str) -> Path | None:
    stem = path.name[: -len(".pcd.bin")] if path.name.endswith(".pcd.bin") else path.stem
    for cand in (path.with_name(stem + tail), path.with_name(stem + "." + tail.lstrip("_"))):
        if cand.exists():
            return cand
    return None


def _read_nuscenes(path, lidarseg=None, panoptic=None, learning_map: bool = True) -> dict:
    path = Path(path)
    pts = _fromfile(path, "<f4", 5, "nuScenes lidar file")
    out = {"coord": pts[:, :3], "strength": pts[:, 3] / 255.0}
    panoptic = panoptic or _nuscenes_sibling(path, "_panoptic.npz")
    lidarseg = lidarseg or _nuscenes_sibling(path, "_lidarseg.bin")
    if panoptic is not None:
        pan = _safeio.load_npz(panoptic, {"data": "data"})[0]["data"]
        if pan.ndim != 1 or pan.dtype.kind not in "iu":
            raise DataError(panoptic, f"nuScenes panoptic labels must be a 1-D integer array, got {pan.dtype} "
                            f"{pan.shape}")  # fmt: skip
        if pan.size and (pan.min() < 0 or pan.max() > 31999):
            raise DataError(panoptic, f"panoptic values must be category * 1000 + instance in 0..31999, found "
                            f"{int(pan.min())}..{int(pan.max())}")  # fmt: skip
        pan = pan.astype(np.int64)
        if len(pan) != len(pts):
            raise DataError(panoptic, f"inconsistent: {len(pan)} labels for {len(pts)} points in {path.name}")
        raw, inst_raw = pan // 1000, pan % 1000
        if raw.max(initial=0) > 31:
            raise DataError(panoptic, f"category {int(raw.max())} out of nuScenes' range 0..31")
        sem = _NUSCENES_LUT[raw] if learning_map else raw
        thing = (inst_raw > 0) & ((sem >= 0) & (sem < 10) if learning_map else True)
        inst = np.full(len(pan), -1, np.int64)
        if thing.any():
            _, inst[thing] = np.unique(pan[thing], return_inverse=True)
        out["segment"], out["instance"] = sem, inst
    elif lidarseg is not None:
        raw = np.frombuffer(read_bytes(lidarseg), np.uint8).astype(np.int64)
        if len(raw) != len(pts):
            raise DataError(lidarseg, f"inconsistent: {len(raw)} labels for {len(pts)} points in {path.name}")
        if raw.max(initial=0) > 31:
            raise DataError(lidarseg, f"category {int(raw.max())} out of nuScenes' range 0..31")
        out["segment"] = _NUSCENES_LUT[raw] if learning_map else raw
    return out


def _read_pointcept(folder: Path, segment_key: str | None) -> dict:
    out, files = {}, {}
    for key in ("coord", "color", "normal", "strength", "instance"):
        f = folder / f"{key}.npy"
        if f.exists():
            out[key], files[key] = _load_npy(f), f
    keys = [segment_key] if segment_key else ["segment", "segment20", "segment200"]
    for k in keys:
        if (folder / f"{k}.npy").exists():
            files["segment"] = folder / f"{k}.npy"
            out["segment"] = _load_npy(files["segment"])
            break
    else:
        if segment_key:
            raise DataError(folder, f"no {segment_key}.npy in this scene folder")
    if "coord" not in out:
        raise DataError(folder, "a Pointcept scene folder needs coord.npy")
    for k, a in out.items():
        if a.ndim == 0 or a.dtype.names:
            raise DataError(files[k], f"expected an array of one row per point, got shape {a.shape} {a.dtype}")
    n = len(out["coord"])
    for k, a in out.items():
        if len(a) != n:
            raise DataError(files[k], f"inconsistent: {len(a)} rows, coord.npy has {n}")
    return out
