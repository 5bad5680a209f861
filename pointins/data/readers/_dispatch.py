"""read() / read_counted(): pick the reader, finish the arrays, turn every failure into a DataError."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from pointins.data.readers._common import ReadCounts, _finish, _from_columns
from pointins.data.readers._errors import DataError
from pointins.data.readers.las import read_las as _read_las
from pointins.data.readers.pcd import _read_pcd
from pointins.data.readers.ply import _read_ply
from pointins.data.readers.scans import _read_kitti, _read_nuscenes, _read_pointcept
from pointins.data.readers.text import _read_npy, _read_npz, _read_txt

SUFFIXES = (".ply", ".pcd", ".las", ".laz", ".npy", ".npz", ".xyz", ".txt", ".pts", ".csv", ".bin")


def read(
    path: str | os.PathLike,
    *,
    kind: str | None = None,
    segment_key: str | None = None,
    learning_map: bool = True,
    nan: str = "raise",
    **labels,
) -> dict[str, np.ndarray]:
    """Read one scan or scene (see the module docstring for the returned keys).

    Args:
        path: a file, or a Pointcept scene folder (one holding ``coord.npy``).
        kind: force a reader: ``pointcept``, ``ply``, ``pcd``, ``las``, ``npy``, ``npz``, ``txt``, ``kitti``,
            ``nuscenes``. By default it follows the suffix (``.pcd.bin`` is nuScenes, other ``.bin`` files
            SemanticKITTI's x y z remission layout).
        segment_key: Pointcept folders: which semantic file (default ``segment``, else ``segment20``, else
            ``segment200``; ScanNet200 is ``segment_key="segment200"``).
        learning_map: map SemanticKITTI / nuScenes raw ids to their evaluated classes (ignore = -1).
        nan: ``"raise"`` (default) or ``"drop"`` points with non-finite coordinates. Non-finite attributes
            (normal, colour, intensity) are set to 0 in either mode and counted (a warning here).
        **labels: explicit label files: ``label_path=`` (SemanticKITTI), ``lidarseg=`` / ``panoptic=`` (nuScenes).

    Raises:
        DataError: the file is missing, corrupt, truncated or inconsistent (the message names it and why).

    >>> import os, tempfile
    >>> from pointins.data import write
    >>> path = os.path.join(tempfile.mkdtemp(), "two.ply")
    >>> write(path, {"coord": np.zeros((2, 3)), "segment": np.array([1, 2])})
    >>> data = read(path)
    >>> sorted(data), data["coord"].dtype.name, data["segment"].tolist(), data["coord_offset"].tolist()
    (['coord', 'coord_offset', 'segment'], 'float32', [1, 2], [0.0, 0.0, 0.0])
    """
    data, counts = read_counted(path, kind=kind, segment_key=segment_key, learning_map=learning_map, nan=nan, **labels)
    if counts:
        warnings.warn(f"pointins.data.read: {path}: {counts.describe()}", stacklevel=2)
    return data


def read_counted(
    path: str | os.PathLike,
    *,
    kind: str | None = None,
    segment_key: str | None = None,
    learning_map: bool = True,
    nan: str = "raise",
    **labels,
) -> tuple[dict[str, np.ndarray], ReadCounts]:
    """:func:`read`, plus what was changed: a :class:`ReadCounts` of the points dropped for non-finite coordinates
    (``nan="drop"``) and, per attribute, the points whose non-finite values were repaired. Nothing is printed: the
    caller logs the counts (:class:`PointCloudDataset` and training do)."""
    path = Path(path)
    if nan not in ("raise", "drop"):
        raise ValueError(f"pointins.data.read: nan must be 'raise' or 'drop', got {nan!r}.")
    try:
        exists = path.exists()
    except (OSError, ValueError) as e:
        raise DataError(path, f"cannot access ({e})") from None
    if not exists:
        raise DataError(path, "no such file or folder")
    name = path.name.lower()
    if kind is None:
        if path.is_dir():
            kind = "pointcept"
        elif name.endswith(".pcd.bin"):
            kind = "nuscenes"
        else:
            kind = {".las": "las", ".laz": "las", ".xyz": "txt", ".pts": "txt", ".csv": "txt", ".bin": "kitti"}.get(
                path.suffix.lower(), path.suffix.lower().lstrip(".")
            )
    if path.is_dir() and kind == "pointcept" and not (path / "coord.npy").exists():
        raise DataError(path, "folder without coord.npy: use PointCloudDataset(folder) for a folder of scenes")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)")
    readers = {
        "pointcept": lambda: _read_pointcept(path, segment_key),
        "ply": lambda: _from_columns(_read_ply(path), path),
        "pcd": lambda: _read_pcd(path),
        "las": lambda: _read_las(path),
        "npy": lambda: _read_npy(path),
        "npz": lambda: _read_npz(path),
        "txt": lambda: _read_txt(path),
        "kitti": lambda: _read_kitti(path, labels.get("label_path"), learning_map),
        "nuscenes": lambda: _read_nuscenes(path, labels.get("lidarseg"), labels.get("panoptic"), learning_map),
    }
    if kind not in readers:
        raise DataError(path, f"unknown point-cloud format {path.suffix!r}; readable: {', '.join(SUFFIXES)}")
    try:
        return _finish(readers[kind](), path, nan)
    except DataError:
        raise
    except (OSError, MemoryError) as e:
        raise DataError(path, f"cannot read ({type(e).__name__}: {e})") from None
    except Exception as e:  # a case the checks above missed: still the caller's DataError, never a crash
        err = DataError(path, f"malformed file ({type(e).__name__}: {e})")
        err.unexpected = True  # the fuzz harness counts these as failures: each deserves a specific check
        raise err from None
