"""Readers: Pointcept scene folders, SemanticKITTI, nuScenes, PLY, PCD, LAS/LAZ, NPY/NPZ, XYZ/TXT.

:func:`read` returns a dict of NumPy arrays in one convention, whatever the source:

==========  ==============  =====================================================================
key         dtype / shape   meaning
==========  ==============  =====================================================================
coord       float32 (N, 3)  always present; finite (see ``nan=``)
color       float32 (N, 3)  0-255
normal      float32 (N, 3)
strength    float32 (N, 1)  LiDAR intensity / remission in [0, 1] where the format defines a scale
segment     int64 (N,)      semantic class, -1 = ignore (SemanticKITTI / nuScenes: after the learning map)
instance    int64 (N,)      instance id, -1 = none (stuff, unlabeled)
==========  ==============  =====================================================================

Only the keys the file has are returned. A broken file raises :class:`DataError` naming the file and the
problem; :class:`PointCloudDataset` can skip such files and report them instead.

Column conventions for headerless text files and plain (N, C) ``.npy`` arrays: 3 columns = xyz,
4 = xyz + strength, 6 = xyz + rgb, 7 = xyz + rgb + strength, 9 = xyz + rgb + normal, 10 = xyz + rgb + normal
+ strength. A header line (``x y z red green blue ...``) or named fields override this.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pointins.data import _lzf

__all__ = [
    "NUSCENES_CLASSES",
    "NUSCENES_THING_CLASSES",
    "SEMANTIC_KITTI_CLASSES",
    "SEMANTIC_KITTI_THING_CLASSES",
    "SUFFIXES",
    "DataError",
    "PointCloudDataset",
    "SceneRef",
    "find_scenes",
    "read",
]


class DataError(ValueError):
    """A file that cannot be read: corrupt, truncated, inconsistent, or of an unknown kind."""

    def __init__(self, path, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


# ---- label conventions --------------------------------------------------------------------------------

SEMANTIC_KITTI_CLASSES = ("car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
                          "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence",
                          "vegetation", "trunk", "terrain", "pole", "traffic-sign")  # fmt: skip
SEMANTIC_KITTI_THING_CLASSES = tuple(range(8))
# SemanticKITTI's raw ids -> the 19 evaluated classes (semantic-kitti.yaml learning_map, minus 1; -1 ignore)
_KITTI_MAP = {0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10,
              48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0, 252: 1,
              253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5}  # fmt: skip
KITTI_SPLITS = {"train": (0, 1, 2, 3, 4, 5, 6, 7, 9, 10), "val": (8,), "test": tuple(range(11, 22))}

NUSCENES_CLASSES = ("barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
                    "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain",
                    "manmade", "vegetation")  # fmt: skip
NUSCENES_THING_CLASSES = tuple(range(10))
# nuScenes-lidarseg's 32 raw categories -> the 16 evaluated classes (-1 ignore)
_NUSCENES_MAP = {1: -1, 5: -1, 7: -1, 8: -1, 10: -1, 11: -1, 13: -1, 19: -1, 20: -1, 0: -1, 29: -1, 31: -1, 9: 0,
                 14: 1, 15: 2, 16: 2, 17: 3, 18: 4, 21: 5, 2: 6, 3: 6, 4: 6, 6: 6, 12: 7, 22: 8, 23: 9, 24: 10,
                 25: 11, 26: 12, 27: 13, 28: 14, 30: 15}  # fmt: skip


def _lut(mapping: dict[int, int], size: int, shift: int = 0) -> np.ndarray:
    lut = np.full(size, -1, np.int64)
    for k, v in mapping.items():
        lut[k] = v - shift
    return lut


_KITTI_LUT = _lut(_KITTI_MAP, 2**16, shift=1)
_NUSCENES_LUT = _lut(_NUSCENES_MAP, 256)

# ---- named columns ------------------------------------------------------------------------------------

_ALIASES = {
    "x": ("x",),
    "y": ("y",),
    "z": ("z",),
    "red": ("red", "r", "diffuse_red"),
    "green": ("green", "g", "diffuse_green"),
    "blue": ("blue", "b", "diffuse_blue"),
    "nx": ("nx", "normal_x", "normalx"),
    "ny": ("ny", "normal_y", "normaly"),
    "nz": ("nz", "normal_z", "normalz"),
    "strength": ("intensity", "scalar_intensity", "reflectance", "remission", "strength", "i"),
    "segment": ("label", "class", "semantic", "segment", "scalar_label", "classification", "sem", "semantic_label"),
    "instance": ("instance", "instance_id", "object", "object_id", "ins", "scalar_instance", "instance_label"),
}
_LOOKUP = {alias: key for key, names in _ALIASES.items() for alias in names}
_POSITIONAL = {3: "xyz", 4: "xyzs", 6: "xyzc", 7: "xyzcs", 9: "xyzcn", 10: "xyzcns"}


def _from_columns(cols: dict[str, np.ndarray], path, color_scale: float | None = None) -> dict[str, np.ndarray]:
    """Assemble the convention's arrays from named columns (names are matched case-insensitively)."""
    named: dict[str, np.ndarray] = {}
    for name, a in cols.items():
        key = _LOOKUP.get(name.lower().lstrip("/#").strip())
        if key and key not in named:
            named[key] = a
    if not all(k in named for k in "xyz"):
        raise DataError(path, f"no x/y/z columns among {sorted(cols)}")
    out = {"coord": np.stack([named["x"], named["y"], named["z"]], 1)}
    if all(k in named for k in ("red", "green", "blue")):
        c = np.stack([named["red"], named["green"], named["blue"]], 1).astype(np.float64)
        if color_scale is None:  # floats in [0, 1] are fractions; 16-bit colours are scaled down
            kind = named["red"].dtype.kind
            if kind == "f" and c.size and c.max() <= 1.0:
                color_scale = 255.0
            else:
                color_scale = 1 / 257 if c.max(initial=0) > 255 else 1.0
        out["color"] = c * color_scale
    if all(k in named for k in ("nx", "ny", "nz")):
        out["normal"] = np.stack([named["nx"], named["ny"], named["nz"]], 1)
    for k in ("strength", "segment", "instance"):
        if k in named:
            out[k] = named[k]
    return out


def _positional(arr: np.ndarray, path) -> dict[str, np.ndarray]:
    layout = _POSITIONAL.get(arr.shape[1])
    if layout is None:
        raise DataError(
            path,
            f"{arr.shape[1]} unnamed columns; without names only 3/4/6/7/9/10 columns are understood "
            f"(xyz [rgb] [normal] [strength]). Add a header line such as 'x y z red green blue label'.",
        )
    out, col = {"coord": arr[:, :3]}, 3
    for part in layout[3:]:
        if part == "c":
            out["color"], col = arr[:, col : col + 3], col + 3
        elif part == "n":
            out["normal"], col = arr[:, col : col + 3], col + 3
        else:
            out["strength"], col = arr[:, col], col + 1
    return out


def _finish(out: dict, path, nan: str) -> dict[str, np.ndarray]:
    """Cast to the convention, check shapes and finiteness."""
    coord = np.asarray(out["coord"])
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise DataError(path, f"coordinates must be (N, 3), got shape {coord.shape}")
    n = len(coord)
    res = {"coord": coord.astype(np.float32)}
    for k, dt in (("color", np.float32), ("normal", np.float32), ("strength", np.float32)):
        if k in out:
            a = np.asarray(out[k]).astype(dt)
            width = 1 if k == "strength" else 3
            res[k] = a.reshape(n, width) if a.size == n * width else a
    for k in ("segment", "instance"):
        if k in out:
            a = np.asarray(out[k])
            if a.dtype.kind == "f":
                if not np.isfinite(a).all() or (a != np.round(a)).any():
                    raise DataError(path, f"{k} labels must be integers, found non-integer values")
            res[k] = a.astype(np.int64).reshape(-1)
    for k, a in res.items():
        want = (n, 3) if k in ("coord", "color", "normal") else (n, 1) if k == "strength" else (n,)
        if a.shape != want:
            raise DataError(path, f"{k} has shape {a.shape} but the file has {n} points (expected {want})")
    bad = ~np.isfinite(res["coord"]).all(1)
    if bad.any():
        if nan == "drop":
            res = {k: v[~bad] for k, v in res.items()}
        else:
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                path,
                f"{int(bad.sum())} of {n} points have NaN/Inf coordinates (first at row {first}); pass "
                f"nan='drop' to drop them (organized PCD scans mark missing returns this way)",
            )
    return res


# ---- PLY ----------------------------------------------------------------------------------------------

_PLY_DTYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
               "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
               "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}  # fmt: skip


def _read_ply(path) -> dict:
    raw = Path(path).read_bytes()
    if not raw.startswith(b"ply"):
        raise DataError(path, "not a PLY file (it does not start with 'ply')")
    end = raw.find(b"end_header")
    if end < 0:
        raise DataError(path, "PLY header has no 'end_header' line (truncated or not PLY)")
    body = raw.find(b"\n", end) + 1
    if body == 0:
        raise DataError(path, "PLY file ends right after 'end_header'")
    fmt, elements = None, []
    for line in raw[:body].decode("ascii", "replace").splitlines()[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info", "end_header"):
            continue
        try:
            if tok[0] == "format":
                fmt = tok[1]
            elif tok[0] == "element":
                elements.append((tok[1], int(tok[2]), []))
            elif tok[0] == "property":
                if tok[1] == "list":
                    elements[-1][2].append((tok[4], "list", _PLY_DTYPES[tok[2]], _PLY_DTYPES[tok[3]]))
                else:
                    elements[-1][2].append((tok[2], _PLY_DTYPES[tok[1]]))
            else:
                raise DataError(path, f"unknown PLY header line {line!r}")
        except (IndexError, KeyError, ValueError) as e:
            raise DataError(path, f"bad PLY header line {line!r} ({type(e).__name__}: {e})") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise DataError(path, f"unknown PLY format {fmt!r}")
    if not any(e[0] == "vertex" for e in elements):
        raise DataError(path, "PLY file has no 'vertex' element")
    if fmt == "ascii":
        lines = raw[body:].decode("ascii", "replace").splitlines()
        row = 0
        for name, count, props in elements:
            if name != "vertex":
                row += count  # one line per item in ASCII
                continue
            if any(p[1] == "list" for p in props):
                raise DataError(path, "list properties in the vertex element are not supported")
            chunk = lines[row : row + count]
            if len(chunk) < count:
                raise DataError(path, f"truncated: the header promises {count} vertices, the file has {len(chunk)}")
            try:
                arr = np.array(" ".join(chunk).split(), dtype=np.float64)
            except ValueError as e:
                raise DataError(path, f"unparsable vertex data ({e})") from None
            if arr.size != count * len(props):
                raise DataError(path, f"vertex rows must have {len(props)} values each ({arr.size} values for {count})")
            arr = arr.reshape(count, len(props))
            return {p[0]: arr[:, j].astype(p[1]) for j, p in enumerate(props)}
    order = "<" if fmt == "binary_little_endian" else ">"
    offset = body
    for name, count, props in elements:
        if any(p[1] == "list" for p in props):
            if name == "vertex":
                raise DataError(path, "list properties in the vertex element are not supported")
            offset = _skip_list_element(raw, offset, count, props, order, path)
            continue
        dt = np.dtype([(p[0], order + p[1]) for p in props])
        need = count * dt.itemsize
        if name != "vertex":
            offset += need
            continue
        if len(raw) - offset < need:
            raise DataError(
                path,
                f"truncated: {count} vertices need {need} bytes after the header, the file has {len(raw) - offset}",
            )
        rec = np.frombuffer(raw, dt, count, offset)
        return {p[0]: rec[p[0]].astype(p[1]) for p in props}
    raise AssertionError("unreachable")


def _skip_list_element(raw, offset, count, props, order, path) -> int:
    for _ in range(count):
        for p in props:
            if p[1] == "list":
                cdt = np.dtype(order + p[2])
                if offset + cdt.itemsize > len(raw):
                    raise DataError(path, "truncated inside a list element")
                k = int(np.frombuffer(raw, cdt, 1, offset)[0])
                offset += cdt.itemsize + k * np.dtype(p[3]).itemsize
            else:
                offset += np.dtype(p[1]).itemsize
    return offset


# ---- PCD ----------------------------------------------------------------------------------------------

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8",
              ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8"}  # fmt: skip


def _read_pcd(path) -> dict:
    raw = Path(path).read_bytes()
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        nl = raw.find(b"\n", pos)
        if nl < 0:
            raise DataError(path, "PCD header has no DATA line (truncated or not PCD)")
        line = raw[pos:nl].decode("ascii", "replace").strip()
        pos = nl + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        header[key.upper()] = vals
        if key.upper() == "DATA":
            break
    try:
        names = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = header["TYPE"]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(names))]
        n = int(header["POINTS"][0]) if "POINTS" in header else int(header["WIDTH"][0]) * int(header["HEIGHT"][0])
        data_kind = header["DATA"][0].lower()
        dts = [np.dtype("<" + _PCD_TYPES[(t.upper(), s)]) for t, s in zip(types, sizes, strict=True)]
    except (KeyError, ValueError, IndexError) as e:
        raise DataError(path, f"bad PCD header ({type(e).__name__}: {e})") from None
    if not (len(names) == len(sizes) == len(types) == len(counts)):
        raise DataError(path, "PCD header's FIELDS/SIZE/TYPE/COUNT have different lengths")
    cols: dict[str, np.ndarray] = {}
    if data_kind == "ascii":
        text = raw[pos:].decode("ascii", "replace").split()
        width = sum(counts)
        if len(text) < n * width:
            raise DataError(path, f"truncated: {n} points x {width} values expected, found {len(text)} values")
        try:
            arr = np.array(text[: n * width], dtype=np.float64).reshape(n, width)
        except ValueError as e:
            raise DataError(path, f"unparsable PCD ASCII data ({e})") from None
        j = 0
        for name, dt, c in zip(names, dts, counts, strict=True):
            a = arr[:, j : j + c]
            j += c
            if name in ("rgb", "rgba"):  # packed colour: PCL writes the bits as an integer (or the float itself)
                a = a[:, 0]
                ints = a > 1.0
                packed = np.where(ints, a, 0).astype(np.uint32)
                packed[~ints] = a[~ints].astype(np.float32).view(np.uint32)
                cols[name] = packed
            else:
                cols[name] = a[:, 0].astype(dt) if c == 1 else a.astype(dt)
    elif data_kind == "binary":
        dt = np.dtype(
            [(f"f{i}", d, (c,)) if c > 1 else (f"f{i}", d) for i, (d, c) in enumerate(zip(dts, counts, strict=True))]
        )
        if len(raw) - pos < n * dt.itemsize:
            raise DataError(path, f"truncated: {n} points need {n * dt.itemsize} bytes, found {len(raw) - pos}")
        rec = np.frombuffer(raw, dt, n, pos)
        cols = {name: rec[f"f{i}"] for i, name in enumerate(names)}
    elif data_kind == "binary_compressed":
        if len(raw) - pos < 8:
            raise DataError(path, "truncated: binary_compressed data lacks its size header")
        csize, usize = (int(v) for v in np.frombuffer(raw, "<u4", 2, pos))
        if len(raw) - pos - 8 < csize:
            raise DataError(path, f"truncated: {csize} compressed bytes announced, {len(raw) - pos - 8} present")
        try:
            buf = _lzf.decompress(raw[pos + 8 : pos + 8 + csize], usize)
        except _lzf.LZFError as e:
            raise DataError(path, f"corrupt LZF data ({e})") from None
        need = sum(n * d.itemsize * c for d, c in zip(dts, counts, strict=True))
        if usize != need:
            raise DataError(path, f"binary_compressed holds {usize} bytes, {n} points need {need}")
        off = 0
        for name, d, c in zip(names, dts, counts, strict=True):
            a = np.frombuffer(buf, d, n * c, off)
            off += n * c * d.itemsize
            cols[name] = a if c == 1 else a.reshape(n, c)
    else:
        raise DataError(path, f"unknown PCD DATA kind {data_kind!r} (ascii, binary, binary_compressed)")
    cols.pop("_", None)
    for key in ("rgb", "rgba"):
        if key in cols:
            packed = cols.pop(key)
            packed = packed.view(np.uint32) if packed.dtype.itemsize == 4 else packed.astype(np.uint32)
            cols["red"], cols["green"], cols["blue"] = (packed >> 16) & 255, (packed >> 8) & 255, packed & 255
    return _from_columns({k: v for k, v in cols.items() if np.asarray(v).ndim == 1}, path, color_scale=1.0)


# ---- the other formats --------------------------------------------------------------------------------


def _read_txt(path) -> dict:
    with open(path, encoding="utf-8", errors="replace") as f:
        first = ""
        skip = 0
        for line in f:
            skip += 1
            if line.strip():
                first = line.strip()
                break
    if not first:
        raise DataError(path, "empty text file")
    delim = "," if "," in first else None
    tokens = first.replace(",", " ").split()
    try:
        [float(t) for t in tokens]
        names, skiprows = None, skip - 1
    except ValueError:
        names, skiprows = [t.lstrip("/#").lower() for t in tokens], skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.loadtxt(path, delimiter=delim, skiprows=skiprows, ndmin=2, comments="#")
    except ValueError as e:
        raise DataError(path, f"unparsable text ({e})") from None
    if arr.size == 0:
        arr = arr.reshape(0, len(names) if names else 3)
    if names is not None:
        if len(names) != arr.shape[1]:
            raise DataError(path, f"the header names {len(names)} columns, the rows have {arr.shape[1]}")
        return _from_columns({nm: arr[:, j] for j, nm in enumerate(names)}, path)
    return _positional(arr, path)


def _load_npy(path):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(path, "holds pickled Python objects; only numeric arrays are read (no pickles)") from None
        raise DataError(path, f"corrupt or truncated .npy ({e})") from None
    except (OSError, EOFError) as e:
        raise DataError(path, f"corrupt or truncated .npy ({e})") from None


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
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            names = sorted(z.files)
            files = {k.lower(): k for k in z.files}
            out = {}
            for key, aliases in _NPZ_KEYS.items():
                for a in aliases:
                    if a in files:
                        out[key] = z[files[a]]
                        break
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError, ...
        raise DataError(path, f"corrupt or truncated .npz ({type(e).__name__}: {e})") from None
    if "coord" not in out:
        raise DataError(path, f"no coordinates: expected one of {_NPZ_KEYS['coord']} among {names}")
    coord = np.asarray(out["coord"])
    if coord.ndim == 2 and coord.shape[1] > 3 and "color" not in out and "strength" not in out:
        out.update(_positional(coord, path))
    return out


def _read_las(path) -> dict:
    try:
        import laspy
    except ImportError:
        raise DataError(path, "reading LAS/LAZ needs laspy: pip install laspy (and lazrs for .laz)") from None
    try:
        las = laspy.read(str(path))
    except Exception as e:  # laspy raises its own error types
        raise DataError(path, f"laspy cannot read it ({type(e).__name__}: {e})") from None
    out = {"coord": np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], 1)}
    dims = set(las.point_format.dimension_names)
    if {"red", "green", "blue"} <= dims:
        c = np.stack([np.asarray(las.red), np.asarray(las.green), np.asarray(las.blue)], 1).astype(np.float64)
        out["color"] = c / 257.0 if c.max(initial=0) > 255 else c
    if "intensity" in dims:
        out["strength"] = np.asarray(las.intensity, np.float64) / 65535.0
    if "classification" in dims:
        out["segment"] = np.asarray(las.classification).astype(np.int64)
    return out


def _fromfile(path, dtype, width: int, what: str) -> np.ndarray:
    raw = np.fromfile(path, dtype=dtype)
    if raw.size % width:
        raise DataError(path, f"truncated {what}: {raw.size} values is not a multiple of {width} per point")
    return raw.reshape(-1, width)


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
        lab = np.fromfile(label_path, "<u4")
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
        try:
            with open(panoptic, "rb") as f, np.load(f, allow_pickle=False) as z:
                pan = z["data"].astype(np.int64)
        except Exception as e:
            raise DataError(panoptic, f"corrupt nuScenes panoptic file ({type(e).__name__}: {e})") from None
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
        raw = np.fromfile(lidarseg, np.uint8).astype(np.int64)
        if len(raw) != len(pts):
            raise DataError(lidarseg, f"inconsistent: {len(raw)} labels for {len(pts)} points in {path.name}")
        if raw.max(initial=0) > 31:
            raise DataError(lidarseg, f"category {int(raw.max())} out of nuScenes' range 0..31")
        out["segment"] = _NUSCENES_LUT[raw] if learning_map else raw
    return out


def _read_pointcept(folder: Path, segment_key: str | None) -> dict:
    out = {}
    for key in ("coord", "color", "normal", "strength", "instance"):
        f = folder / f"{key}.npy"
        if f.exists():
            out[key] = _load_npy(f)
    keys = [segment_key] if segment_key else ["segment", "segment20", "segment200"]
    for k in keys:
        if (folder / f"{k}.npy").exists():
            out["segment"] = _load_npy(folder / f"{k}.npy")
            break
    else:
        if segment_key:
            raise DataError(folder, f"no {segment_key}.npy in this scene folder")
    if "coord" not in out:
        raise DataError(folder, "a Pointcept scene folder needs coord.npy")
    n = len(out["coord"])
    for k, a in out.items():
        if len(a) != n:
            raise DataError(folder / f"{k}.npy", f"inconsistent: {len(a)} rows, coord.npy has {n}")
    return out


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
        nan: ``"raise"`` (default) or ``"drop"`` points with non-finite coordinates.
        **labels: explicit label files: ``label_path=`` (SemanticKITTI), ``lidarseg=`` / ``panoptic=`` (nuScenes).

    Raises:
        DataError: the file is missing, corrupt, truncated or inconsistent (the message names it and why).

    >>> import os, tempfile
    >>> from pointins.data import write
    >>> path = os.path.join(tempfile.mkdtemp(), "two.ply")
    >>> write(path, {"coord": np.zeros((2, 3)), "segment": np.array([1, 2])})
    >>> data = read(path)
    >>> sorted(data), data["coord"].dtype.name, data["segment"].tolist()
    (['coord', 'segment'], 'float32', [1, 2])
    """
    path = Path(path)
    if nan not in ("raise", "drop"):
        raise ValueError(f"pointins.data.read: nan must be 'raise' or 'drop', got {nan!r}.")
    if not path.exists():
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
        out = readers[kind]()
    except DataError:
        raise
    except (OSError, MemoryError) as e:
        raise DataError(path, f"cannot read ({type(e).__name__}: {e})") from None
    return _finish(out, path, nan)


# ---- datasets -----------------------------------------------------------------------------------------


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
    return {Path(line.strip()).name.removesuffix(".pcd.bin") for line in f.read_text().splitlines() if line.strip()}


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


def _nuscenes_scenes(root: Path, tables: list[Path], split: str | None) -> list[SceneRef]:
    refs = []
    for table in tables:
        records = json.loads(table.read_text())
        seg, pan = {}, {}
        for fname, dest in (("lidarseg.json", seg), ("panoptic.json", pan)):
            f = table.parent / fname
            if f.exists():
                for r in json.loads(f.read_text()):
                    dest[r["sample_data_token"]] = root / r["filename"]
        for r in records:
            fn = r.get("filename", "")
            if not fn.endswith(".pcd.bin") or not r.get("is_key_frame", True):
                continue
            labels = []
            if r["token"] in pan:
                labels.append(("panoptic", str(pan[r["token"]])))
            elif r["token"] in seg:
                labels.append(("lidarseg", str(seg[r["token"]])))
            refs.append(SceneRef(str(root / fn), r["token"], "nuscenes", tuple(labels)))
    names = _split_names(root, split) if split else None
    if split and names is None:
        raise DataError(root, f"nuScenes split {split!r}: write the sample_data tokens to {root / (split + '.txt')}")
    if names is not None:
        refs = [r for r in refs if r.name in names or Path(r.path).name.removesuffix(".pcd.bin") in names]
    return sorted(refs, key=lambda r: r.path)


class PointCloudDataset:
    """A folder of scans as a map-style dataset (``torch.utils.data.Dataset`` protocol).

    ``dataset[i]`` is :func:`read` of scene ``i`` plus ``name``, passed through ``transform`` when given.
    With ``on_error="skip"`` a broken file is reported (a warning naming the file and the problem, and an
    entry in :attr:`skipped`) and the next readable scene is returned instead; :meth:`check` reads every
    scene up front and drops the broken ones.
    """

    def __init__(self, root, split: str | None = None, transform=None, on_error: str = "raise", **read_kwargs):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"PointCloudDataset: on_error must be 'raise' or 'skip', got {on_error!r}.")
        self.root, self.split, self.transform, self.on_error = Path(root), split, transform, on_error
        self.read_kwargs = read_kwargs
        self.scenes = find_scenes(root, split)
        if not self.scenes:
            raise DataError(root, f"no scenes found{f' for split {split!r}' if split else ''} (readable: {SUFFIXES})")
        self.skipped: list[tuple[str, str]] = []
        meta = self.root / "meta.json"
        self.meta = json.loads(meta.read_text()) if self.root.is_dir() and meta.exists() else None

    def __len__(self) -> int:
        return len(self.scenes)

    def load(self, i: int) -> dict:
        ref = self.scenes[i]
        data = read(ref.path, kind=ref.kind, **dict(ref.labels), **self.read_kwargs)
        data["name"] = ref.name
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
