"""Folders of scans: find_scenes() and PointCloudDataset."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from pointins.data.readers._common import KITTI_SPLITS
from pointins.data.readers._dispatch import SUFFIXES, read_counted
from pointins.data.readers._errors import DataError
from pointins.data.readers._safeio import read_bytes


@dataclass(frozen=True)
class SceneRef:
    """One scene of a dataset: where it is and how to read it."""

    path: str
    name: str
    kind: str | None = None
    labels: tuple = ()  # extra label files as (keyword, path) pairs for read()


def _split_names(root: Path, split: str) -> set[str] | None:
    f = root / f"{split}.txt"
    if not f.exists():
        return None
    text = read_bytes(f).decode("utf-8", "replace")
    return {Path(line.strip()).name.removesuffix(".pcd.bin") for line in text.splitlines() if line.strip()}


def find_scenes(root: str | os.PathLike, split: str | None = None) -> list[SceneRef]:
    """The scenes under ``root``, sorted: a single file or scene folder; a SemanticKITTI root (``sequences/``:
    the standard train/val/test sequences by ``split``); a nuScenes root (``v1.0-*/sample_data.json`` pairs
    each lidar file with its lidarseg/panoptic file); or any folder tree of Pointcept scene folders and
    point-cloud files. ``split`` picks ``root/split/`` (Pointcept's ScanNet layout), ``root/split.txt``
    (a list of scene names), or comma-separated sub-folders (S3DIS: ``"Area_1,Area_2"``).
    """
    root = Path(root)
    if not root.exists():
        raise DataError(root, "no such file or folder")
    if root.is_file() or (root / "coord.npy").exists():
        return [SceneRef(str(root), root.name)]
    seq = root / "sequences" if (root / "sequences").is_dir() else root if root.name == "sequences" else None
    if seq is not None:
        wanted = KITTI_SPLITS.get(split) if split else None
        if split and wanted is None:
            raise ValueError(f"SemanticKITTI split must be one of {sorted(KITTI_SPLITS)}, got {split!r}.")
        refs = []
        for d in sorted(p for p in seq.iterdir() if p.is_dir() and p.name.isdigit()):
            if wanted is not None and int(d.name) not in wanted:
                continue
            refs += [SceneRef(str(f), f"{d.name}/{f.stem}", "kitti") for f in sorted((d / "velodyne").glob("*.bin"))]
        return refs
    tables = sorted(root.glob("v1.0-*/sample_data.json"))
    if tables:
        return _nuscenes_scenes(root, tables, split)
    names = _split_names(root, split) if split else None
    bases = [root]
    if split and names is None:
        bases = [root / s for s in split.split(",")]
        missing = [b for b in bases if not b.is_dir()]
        if missing:
            raise DataError(missing[0], f"split {split!r}: neither this folder nor {root / (split + '.txt')} exists")
    refs = []
    for base in bases:
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            d = Path(dirpath)
            if "coord.npy" in filenames:
                refs.append(SceneRef(str(d), str(d.relative_to(root))))
                dirnames.clear()
                continue
            for fn in sorted(filenames):
                low = fn.lower()
                if low.endswith(("_lidarseg.bin", ".lidarseg.bin", ".label", "_panoptic.npz")) or low.startswith("."):
                    continue
                if low.endswith(SUFFIXES) and not (low.endswith(".txt") and (d == root and fn[:-4] in _KNOWN_LISTS)):
                    refs.append(SceneRef(str(d / fn), str((d / fn).relative_to(root))))
    if names is not None:
        refs = [r for r in refs if Path(r.name).name.split(".")[0] in names or Path(r.name).name in names]
    return sorted(refs, key=lambda r: r.name)


_KNOWN_LISTS = ("train", "val", "test", "trainval")


def _json_records(f: Path) -> list[dict]:
    try:
        recs = json.loads(read_bytes(f).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f, f"not valid JSON ({e})") from None
    if not isinstance(recs, list) or not all(isinstance(r, dict) for r in recs):
        raise DataError(f, "a nuScenes table must be a JSON list of records")
    return recs


def _inside(root: Path, rel, table: Path) -> Path:
    """``root / rel`` for a file name from a table, refusing names that leave the dataset root."""
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise DataError(table, f"file name {rel!r} is not a relative path inside the dataset root")
    return root / rel


def _nuscenes_scenes(root: Path, tables: list[Path], split: str | None) -> list[SceneRef]:
    refs = []
    for table in tables:
        records = _json_records(table)
        seg, pan = {}, {}
        try:
            for fname, dest in (("lidarseg.json", seg), ("panoptic.json", pan)):
                f = table.parent / fname
                if f.exists():
                    for r in _json_records(f):
                        dest[r["sample_data_token"]] = _inside(root, r["filename"], f)
            for r in records:
                fn = r.get("filename", "")
                if not isinstance(fn, str) or not fn.endswith(".pcd.bin") or not r.get("is_key_frame", True):
                    continue
                labels = []
                if r["token"] in pan:
                    labels.append(("panoptic", str(pan[r["token"]])))
                elif r["token"] in seg:
                    labels.append(("lidarseg", str(seg[r["token"]])))
                refs.append(SceneRef(str(_inside(root, fn, table)), str(r["token"]), "nuscenes", tuple(labels)))
        except (KeyError, TypeError) as e:
            raise DataError(table, f"a record lacks a field or has the wrong type ({type(e).__name__}: {e})") from None
    names = _split_names(root, split) if split else None
    if split and names is None:
        raise DataError(root, f"nuScenes split {split!r}: write the sample_data tokens to {root / (split + '.txt')}")
    if names is not None:
        refs = [r for r in refs if r.name in names or Path(r.path).name.removesuffix(".pcd.bin") in names]
    return sorted(refs, key=lambda r: r.path)


class PointCloudDataset:
    """A folder of scans as a map-style dataset (``torch.utils.data.Dataset`` protocol).

    ``dataset[i]`` is :func:`read` of scene ``i`` plus ``name``, ``dropped_points`` and ``repaired_points``,
    passed through ``transform`` when given.

    Points with NaN/Inf coordinates are **dropped** by default (``nan="drop"``; organized scans mark missing
    returns that way) and counted: ``dropped_points`` in each item, and the running total in :attr:`dropped` (of
    this process). Points whose normal, colour or intensity is NaN/Inf keep their place with that value set to 0:
    ``repaired_points`` and :attr:`repaired`. ``nan="raise"`` refuses such scans instead. A scan left with fewer than
    ``min_points`` points is treated as unreadable. With ``on_error="skip"`` an unreadable scan is reported
    (a warning naming the file and the problem, and an entry in :attr:`skipped`) and the next readable scene
    is returned instead; :meth:`check` reads every scene up front and drops the broken ones.
    """

    def __init__(self, root, split: str | None = None, transform=None, on_error: str = "raise", *,
                 nan: str = "drop", min_points: int = 1, **read_kwargs):  # fmt: skip
        if on_error not in ("raise", "skip"):
            raise ValueError(f"PointCloudDataset: on_error must be 'raise' or 'skip', got {on_error!r}.")
        if nan not in ("raise", "drop"):
            raise ValueError(f"PointCloudDataset: nan must be 'raise' or 'drop', got {nan!r}.")
        if isinstance(min_points, bool) or not isinstance(min_points, int) or min_points < 1:
            raise ValueError(f"PointCloudDataset: min_points must be an integer >= 1, got {min_points!r}.")
        self.root, self.split, self.transform, self.on_error = Path(root), split, transform, on_error
        self.nan, self.min_points = nan, min_points
        self.read_kwargs = read_kwargs
        self.scenes = find_scenes(root, split)
        if not self.scenes:
            raise DataError(root, f"no scenes found{f' for split {split!r}' if split else ''} (readable: {SUFFIXES})")
        self.skipped: list[tuple[str, str]] = []
        self.dropped = 0
        self.repaired = 0
        meta = self.root / "meta.json"
        self.meta = None
        if self.root.is_dir() and meta.is_file():
            try:
                self.meta = json.loads(read_bytes(meta).decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise DataError(meta, f"not valid JSON ({e}); fix or delete it") from None
            if not isinstance(self.meta, dict):
                raise DataError(meta, f"must hold a JSON object, got {type(self.meta).__name__}")

    def __len__(self) -> int:
        return len(self.scenes)

    def load(self, i: int) -> dict:
        ref = self.scenes[i]
        data, counts = read_counted(
            ref.path, kind=ref.kind, **dict(ref.labels), **{"nan": self.nan, **self.read_kwargs}
        )
        if len(data["coord"]) < self.min_points:
            why = f" after dropping {counts.dropped} with NaN/Inf coordinates" if counts.dropped else ""
            raise DataError(ref.path, f"only {len(data['coord'])} points{why}; fewer than min_points={self.min_points}")
        self.dropped += counts.dropped
        self.repaired += counts.repaired_points
        data["name"] = ref.name
        data["dropped_points"] = counts.dropped
        data["repaired_points"] = counts.repaired_points
        return data

    def __getitem__(self, i: int) -> dict:
        for k in range(len(self.scenes)):
            j = (i + k) % len(self.scenes)
            try:
                data = self.load(j)
            except DataError as e:
                if self.on_error == "raise":
                    raise
                if (e.path, e.problem) not in self.skipped:
                    self.skipped.append((e.path, e.problem))
                    warnings.warn(f"skipping unreadable scene {e}", stacklevel=2)
                continue
            return self.transform(data) if self.transform is not None else data
        raise DataError(self.root, "every scene of the dataset failed to read (see the warnings)")

    def check(self, progress: bool = True) -> list[tuple[str, str]]:
        """Read every scene; return the broken ones as (path, problem), dropping them when skipping."""
        from pointins._progress import progress_bar

        bad, good = [], []
        bar = progress_bar(len(self.scenes), "checking scenes", progress)
        for i, ref in enumerate(self.scenes):
            try:
                self.load(i)
                good.append(ref)
            except DataError as e:
                bad.append((e.path, e.problem))
            bar.update(1)
        bar.close()
        if bad and self.on_error == "raise":
            raise DataError(bad[0][0], f"{bad[0][1]} (and {len(bad) - 1} more broken scenes)")
        self.scenes, self.skipped = good, self.skipped + bad
        return bad
