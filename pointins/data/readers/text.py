"""Text tables (XYZ / TXT / PTS / CSV) and NumPy files (NPY, NPZ)."""

from __future__ import annotations

import io
import warnings

import numpy as np

from pointins.data.readers import _safeio
from pointins.data.readers._common import _from_columns, _positional
from pointins.data.readers._errors import DataError
from pointins.data.readers._safeio import read_bytes

# ---- the other formats --------------------------------------------------------------------------------


def _read_txt(path) -> dict:
    raw = read_bytes(path)
    text = raw.decode("utf-8", "replace")
    first, skip = "", 0
    for line in io.StringIO(text):  # the same line splitting as np.loadtxt below
        skip += 1
        if line.strip():
            first = line.strip()
            break
    if not first:
        raise DataError(path, "empty text file")
    delim = "," if "," in first else None
    tokens = first.replace(",", " ").split()
    if all(_is_number(t) for t in tokens):
        names, skiprows = None, skip - 1
    else:
        names, skiprows = [t.lstrip("/#").lower() for t in tokens], skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.loadtxt(io.StringIO(text), delimiter=delim, skiprows=skiprows, ndmin=2, comments="#")
    except ValueError as e:
        raise DataError(path, f"unparsable text ({e})") from None
    if arr.size == 0:
        arr = arr.reshape(0, len(names) if names else 3)
    if names is not None:
        if len(names) != arr.shape[1]:
            raise DataError(path, f"the header names {len(names)} columns, the rows have {arr.shape[1]}")
        return _from_columns({nm: arr[:, j] for j, nm in enumerate(names)}, path)
    return _positional(arr, path)


def _is_number(t: str) -> bool:
    try:
        float(t)
    except ValueError:
        return False
    return True


def _load_npy(path) -> np.ndarray:
    return _safeio.load_npy(path)


def _read_npy(path) -> dict:
    arr = _load_npy(path)
    if arr.dtype.names:
        return _from_columns({nm: arr[nm] for nm in arr.dtype.names}, path)
    if arr.ndim != 2:
        raise DataError(path, f"expected an (N, C) array, got shape {arr.shape}")
    return _positional(arr, path)


_NPZ_KEYS = {
    "coord": ("coord", "xyz", "points", "pos", "positions", "vertices", "point"),
    "color": ("color", "rgb", "colors"),
    "normal": ("normal", "normals"),
    "strength": ("strength", "intensity", "remission", "reflectance"),
    "segment": ("segment", "label", "labels", "semantic", "semantic_label", "segment20", "sem"),
    "instance": ("instance", "instances", "instance_id", "instance_label", "ins"),
}


def _read_npz(path) -> dict:
    with _safeio.open_regular(path) as f:
        try:
            import zipfile

            with zipfile.ZipFile(f) as z:
                members = [m[:-4] if m.endswith(".npy") else m for m in z.namelist()]
        except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError, ...
            raise DataError(path, f"corrupt or truncated .npz ({type(e).__name__}: {e})") from None
    files = {}
    for m in members:
        files.setdefault(m.lower(), m)
    wanted = {}
    for key, aliases in _NPZ_KEYS.items():
        for a in aliases:
            if a in files:
                wanted[key] = files[a]
                break
    if "coord" not in wanted:
        raise DataError(path, f"no coordinates: expected one of {_NPZ_KEYS['coord']} among {sorted(members)}")
    out, _ = _safeio.load_npz(path, wanted)
    coord = out["coord"]
    if coord.ndim == 2 and coord.shape[1] > 3 and "color" not in out and "strength" not in out:
        out.update(_positional(coord, path))
    return out
