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

import io
import json
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pointins.data import _lzf, _safeio
from pointins.data._safeio import max_bytes, read_bytes

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
    "read_counted",
]


class DataError(ValueError):
    """A file that cannot be read: corrupt, truncated, inconsistent, or of an unknown kind."""

    unexpected = False  # True when no specific check caught the problem (see read())

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


LABEL_MAX = 2**31 - 1  # labels are stored as int64 but must fit int32 (Pointcept's dtype); -1 = ignore / none


def _numeric(a, k: str, path) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.names or a.dtype.kind not in "biuf":
        raise DataError(path, f"{k} must be numeric, got dtype {a.dtype}")
    return a


def _labels(a: np.ndarray, k: str, n: int, path) -> np.ndarray:
    if a.shape not in ((n,), (n, 1)):
        raise DataError(path, f"{k} has shape {a.shape} but the file has {n} points (expected ({n},))")
    a = a.reshape(n)
    if a.size == 0:
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            raise DataError(path, f"{k} labels must be integers, found non-integer or non-finite values")
    lo, hi = a.min(), a.max()
    if lo < -1 or hi > LABEL_MAX:
        raise DataError(path, f"{k} labels range over [{lo}, {hi}]; they must be integers in [-1, {LABEL_MAX}] "
                        "(-1 = ignore / no instance)")  # fmt: skip
    return a.astype(np.int64)


def _finish(out: dict, path, nan: str) -> dict[str, np.ndarray]:
    """Cast to the convention; check dtypes, shapes, label ranges and finiteness."""
    coord = _numeric(out["coord"], "coord", path)
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise DataError(path, f"coordinates must be (N, 3), got shape {coord.shape}")
    n = len(coord)
    with np.errstate(over="ignore", invalid="ignore"):
        res = {"coord": coord.astype(np.float32)}
        for k in ("color", "normal", "strength"):
            if k in out:
                a = _numeric(out[k], k, path)
                want = (n, 1) if k == "strength" else (n, 3)
                if k == "strength" and a.shape == (n,):
                    a = a.reshape(n, 1)
                if a.shape != want:
                    raise DataError(path, f"{k} has shape {a.shape} but the file has {n} points (expected {want})")
                res[k] = a.astype(np.float32)
    for k in ("segment", "instance"):
        if k in out:
            res[k] = _labels(_numeric(out[k], k, path), k, n, path)
    bad = ~np.isfinite(res["coord"]).all(1)
    what = "coordinates"
    for k in ("color", "normal", "strength"):
        if k in res:
            badk = ~np.isfinite(res[k]).all(1)
            if badk.any():
                bad |= badk
                what = "values"
    res["_dropped"] = int(bad.sum())
    if bad.any():
        if nan == "drop":
            res = {k: v[~bad] for k, v in res.items() if k != "_dropped"}
            res["_dropped"] = int(bad.sum())
        else:
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                path,
                f"{int(bad.sum())} of {n} points have NaN/Inf {what} (first at row {first}); pass "
                f"nan='drop' to drop them (organized PCD scans mark missing returns this way)",
            )
    return res


# ---- PLY ----------------------------------------------------------------------------------------------

_PLY_DTYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
               "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
               "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}  # fmt: skip
_PLY_MAX_HEADER = 1 << 20


def _ply_header(raw: bytes, path):
    """(format, elements, body offset) of a PLY header; elements are (name, count, props) with props
    (name, dtype) or (name, "list", count dtype, item dtype)."""
    if not raw.startswith(b"ply"):
        raise DataError(path, "not a PLY file (it does not start with 'ply')")
    end = raw.find(b"end_header", 0, _PLY_MAX_HEADER)
    if end < 0:
        raise DataError(path, f"PLY header has no 'end_header' line in its first {_PLY_MAX_HEADER} bytes "
                        "(truncated or not PLY)")  # fmt: skip
    body = raw.find(b"\n", end) + 1
    if body == 0:
        raise DataError(path, "PLY file ends right after 'end_header'")
    fmt, elements = None, []
    # lines end at "\n" only (str.splitlines would also split at \v, \f, \x1c.. and misread a corrupt header)
    for line in raw[:body].decode("ascii", "replace").split("\n")[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info", "end_header"):
            continue
        try:
            if tok[0] == "format":
                if fmt is not None:
                    raise DataError(path, "two 'format' lines in the PLY header")
                fmt = tok[1]
            elif tok[0] == "element":
                if len(tok) != 3:
                    raise DataError(path, f"bad PLY element line {line!r} (expected 'element NAME COUNT')")
                count = int(tok[2])
                if count < 0:
                    raise DataError(path, f"PLY element {tok[1]!r} has a negative count ({count})")
                if any(e[0] == tok[1] for e in elements):
                    raise DataError(path, f"PLY element {tok[1]!r} is declared twice")
                elements.append((tok[1], count, []))
            elif tok[0] == "property":
                if not elements:
                    raise DataError(path, f"PLY property before any element: {line!r}")
                props = elements[-1][2]
                if len(tok) != (5 if tok[1] == "list" else 3):
                    raise DataError(path, f"bad PLY property line {line!r}")
                if tok[1] == "list":
                    prop = (tok[4], "list", _PLY_DTYPES[tok[2]], _PLY_DTYPES[tok[3]])
                    if prop[2][0] == "f":
                        raise DataError(path, f"PLY list count type must be an integer: {line!r}")
                else:
                    prop = (tok[2], _PLY_DTYPES[tok[1]])
                if any(p[0] == prop[0] for p in props):
                    raise DataError(path, f"PLY property {prop[0]!r} is declared twice in element {elements[-1][0]!r}")
                props.append(prop)
            else:
                raise DataError(path, f"unknown PLY header line {line!r}")
        except (IndexError, KeyError, ValueError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(path, f"bad PLY header line {line!r} ({type(e).__name__}: {e})") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise DataError(path, f"unknown PLY format {fmt!r}")
    vertex = [e for e in elements if e[0] == "vertex"]
    if not vertex:
        raise DataError(path, "PLY file has no 'vertex' element")
    if any(p[1] == "list" for p in vertex[0][2]):
        raise DataError(path, "list properties in the vertex element are not supported")
    if not vertex[0][2]:
        raise DataError(path, "the PLY vertex element has no properties")
    return fmt, elements, body


def _read_ply(path) -> dict:
    raw = read_bytes(path)
    fmt, elements, body = _ply_header(raw, path)
    if fmt == "ascii":
        return _read_ply_ascii(raw, body, elements, path)
    order = "<" if fmt == "binary_little_endian" else ">"
    offset, vertices = body, None
    for name, count, props in elements:
        if any(p[1] == "list" for p in props):
            offset = _skip_list_element(raw, offset, name, count, props, order, path)
            continue
        dt = np.dtype([(p[0], order + p[1]) for p in props])
        need = count * dt.itemsize
        if len(raw) - offset < need:
            raise DataError(path, f"truncated: {count} {name} records need {need} bytes at byte {offset}, the file "
                            f"has {len(raw) - offset}")  # fmt: skip
        if name == "vertex":
            rec = np.frombuffer(raw, dt, count, offset)
            vertices = {p[0]: rec[p[0]].astype(p[1]) for p in props}
        offset += need
    if offset != len(raw):
        raise DataError(path, f"inconsistent: {len(raw) - offset} bytes follow the elements the header declares (the "
                        "header's counts disagree with the body)")  # fmt: skip
    return vertices


def _read_ply_ascii(raw: bytes, body: int, elements, path) -> dict:
    lines = [ln for ln in raw[body:].decode("ascii", "replace").split("\n") if ln.strip()]
    total = sum(e[1] for e in elements)
    if len(lines) != total:
        kind = "truncated" if len(lines) < total else "inconsistent"
        what = ", ".join(f"{c} {n}" for n, c, _ in elements)
        raise DataError(path, f"{kind}: the header declares {total} rows ({what})"
                        f", the body has {len(lines)}")  # fmt: skip
    row = 0
    for name, count, props in elements:
        if name != "vertex":
            row += count  # one line per item in ASCII
            continue
        chunk = lines[row : row + count]
        widths = np.fromiter((len(ln.split()) for ln in chunk), np.int64, count)
        bad = np.flatnonzero(widths != len(props))
        if bad.size:
            raise DataError(path, f"vertex row {int(bad[0])} has {int(widths[bad[0]])} values, the header declares "
                            f"{len(props)} properties")  # fmt: skip
        try:
            arr = np.array(" ".join(chunk).split(), dtype=np.float64).reshape(count, len(props))
        except ValueError as e:
            raise DataError(path, f"unparsable vertex data ({e})") from None
        out = {}
        for j, p in enumerate(props):
            col = arr[:, j]
            if p[1][0] in "iu":
                info = np.iinfo(p[1])
                if col.size and (not np.isfinite(col).all() or (col != np.round(col)).any()
                                 or col.min() < info.min or col.max() > info.max):  # fmt: skip
                    raise DataError(path, f"vertex property {p[0]!r} ({p[1]}) has values that are not {p[1]} integers")
            out[p[0]] = col.astype(p[1])
        return out
    raise AssertionError("unreachable")


def _skip_list_element(raw, offset, name, count, props, order, path) -> int:
    """Byte offset after ``count`` records of an element with list properties. Bounded: the declared count is
    checked against the bytes left first (every record takes at least its fixed part), counts must be >= 0, and
    the usual case (one list whose records all have the same length, e.g. triangles) is checked in one pass."""
    fixed = sum(np.dtype(p[2]).itemsize if p[1] == "list" else np.dtype(p[1]).itemsize for p in props)
    left = len(raw) - offset
    if count * fixed > left:
        raise DataError(path, f"truncated: {count} {name} records need at least {count * fixed} bytes at byte "
                        f"{offset}, the file has {left}")  # fmt: skip
    if count == 0:
        return offset
    lists = [j for j, p in enumerate(props) if p[1] == "list"]
    if len(lists) == 1:  # fast path: every list as long as the first
        j = lists[0]
        pre = sum(np.dtype(p[1]).itemsize for p in props[:j])
        cdt = np.dtype(order + props[j][2])
        k0 = int(np.frombuffer(raw, cdt, 1, offset + pre)[0])
        if k0 >= 0:
            rec = fixed + k0 * np.dtype(props[j][3]).itemsize
            if count * rec <= left:
                view = np.ndarray((count,), cdt, raw, offset + pre, (rec,))
                if bool((view == k0).all()):
                    return offset + count * rec
    end = len(raw)
    codes = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I"}
    sizes = [(struct.Struct(order + codes[p[2]]), np.dtype(p[3]).itemsize) if p[1] == "list"
             else np.dtype(p[1]).itemsize for p in props]  # fmt: skip
    for i in range(count):
        for s in sizes:
            if isinstance(s, int):
                offset += s
                continue
            cs, item = s
            if offset + cs.size > end:
                raise DataError(path, f"truncated inside {name} record {i}")
            (k,) = cs.unpack_from(raw, offset)
            if k < 0:
                raise DataError(path, f"{name} record {i} has a negative list length ({k})")
            offset += cs.size + k * item
        if offset > end:
            raise DataError(path, f"truncated: {name} record {i} ends at byte {offset}, past the end ({end})")
    return offset


# ---- PCD ----------------------------------------------------------------------------------------------

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8",
              ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8"}  # fmt: skip


_PCD_MAX_HEADER = 1 << 16
_PCD_MAX_COUNT = 1 << 16


def _pcd_int(header, key, path, default=None) -> int:
    vals = header.get(key)
    if vals is None:
        if default is None:
            raise DataError(path, f"PCD header has no {key} line")
        return default
    try:
        v = int(vals[0])
    except (IndexError, ValueError):
        raise DataError(path, f"PCD {key} must be an integer, got {' '.join(vals)!r}") from None
    if v < 0:
        raise DataError(path, f"PCD {key} is negative ({v})")
    return v


def _read_pcd(path) -> dict:
    raw = read_bytes(path)
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        nl = raw.find(b"\n", pos, _PCD_MAX_HEADER)
        if nl < 0:
            raise DataError(path, "PCD header has no DATA line (truncated or not PCD)")
        line = raw[pos:nl].decode("ascii", "replace").strip()
        pos = nl + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        if key.upper() in header:
            raise DataError(path, f"PCD header line {key.upper()} appears twice")
        header[key.upper()] = vals
        if key.upper() == "DATA":
            break
    for key in ("FIELDS", "SIZE", "TYPE", "DATA"):
        if not header.get(key):
            raise DataError(path, f"PCD header has no {key} line")
    names = header["FIELDS"]
    types = header["TYPE"]
    try:
        sizes = [int(s) for s in header["SIZE"]]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(names))]
    except ValueError as e:
        raise DataError(path, f"bad PCD SIZE/COUNT ({e})") from None
    if not (len(names) == len(sizes) == len(types) == len(counts)):
        raise DataError(path, "PCD header's FIELDS/SIZE/TYPE/COUNT have different lengths")
    if len(set(names)) != len(names):
        raise DataError(path, f"PCD FIELDS names a field twice: {names}")
    bad = [c for c in counts if not 1 <= c <= _PCD_MAX_COUNT]
    if bad:
        raise DataError(path, f"PCD COUNT values must be 1..{_PCD_MAX_COUNT}, got {bad[0]}")
    try:
        dts = [np.dtype("<" + _PCD_TYPES[(t.upper(), s)]) for t, s in zip(types, sizes, strict=True)]
    except KeyError as e:
        raise DataError(path, f"unknown PCD TYPE/SIZE pair {e.args[0]}") from None
    width_, height = _pcd_int(header, "WIDTH", path, -1), _pcd_int(header, "HEIGHT", path, -1)
    if "POINTS" in header:
        n = _pcd_int(header, "POINTS", path)
        if width_ >= 0 and height >= 0 and width_ * height != n:
            raise DataError(path, f"inconsistent header: POINTS {n} != WIDTH {width_} x HEIGHT {height}")
    elif width_ >= 0 and height >= 0:
        n = width_ * height
    else:
        raise DataError(path, "PCD header has neither POINTS nor WIDTH and HEIGHT")
    data_kind = header["DATA"][0].lower()
    point_bytes = sum(d.itemsize * c for d, c in zip(dts, counts, strict=True))
    if n * point_bytes > max_bytes():
        raise DataError(path, f"{n} points of {point_bytes} bytes exceed the read limit of {max_bytes()} bytes")
    cols: dict[str, np.ndarray] = {}
    if data_kind == "ascii":
        width = sum(counts)
        rows = [ln for ln in raw[pos:].decode("ascii", "replace").split("\n") if ln.strip()]
        if len(rows) != n:
            kind = "truncated" if len(rows) < n else "inconsistent"
            raise DataError(path, f"{kind}: the header declares {n} points, the body has {len(rows)} rows")
        widths = np.fromiter((len(r.split()) for r in rows), np.int64, n)
        badrow = np.flatnonzero(widths != width)
        if badrow.size:
            raise DataError(path, f"row {int(badrow[0])} has {int(widths[badrow[0]])} values, the header declares "
                            f"{width} per point")  # fmt: skip
        try:
            arr = np.array(" ".join(rows).split(), dtype=np.float64).reshape(n, width)
        except ValueError as e:
            raise DataError(path, f"unparsable PCD ASCII data ({e})") from None
        j = 0
        for name, dt, c in zip(names, dts, counts, strict=True):
            a = arr[:, j : j + c]
            j += c
            if name in ("rgb", "rgba"):  # packed colour: PCL writes the bits as an integer (or the float itself)
                a = a[:, 0]
                ints = a > 1.0
                if a.size and (not np.isfinite(a).all() or a.max() >= 2**32 or (a[ints] != np.round(a[ints])).any()):
                    raise DataError(path, f"packed {name} values must be 32-bit integers (or their float bits)")
                packed = np.where(ints, a, 0).astype(np.uint32)
                packed[~ints] = a[~ints].astype(np.float32).view(np.uint32)
                cols[name] = packed
            else:
                cols[name] = a[:, 0].astype(dt) if c == 1 else a.astype(dt)
    elif data_kind == "binary":
        dt = np.dtype(
            [(f"f{i}", d, (c,)) if c > 1 else (f"f{i}", d) for i, (d, c) in enumerate(zip(dts, counts, strict=True))]
        )
        have = len(raw) - pos
        if have != n * dt.itemsize:
            kind = "truncated" if have < n * dt.itemsize else "inconsistent"
            raise DataError(path, f"{kind}: {n} points need {n * dt.itemsize} bytes after the header, found {have}")
        rec = np.frombuffer(raw, dt, n, pos)
        cols = {name: rec[f"f{i}"] for i, name in enumerate(names)}
    elif data_kind == "binary_compressed":
        if len(raw) - pos < 8:
            raise DataError(path, "truncated: binary_compressed data lacks its size header")
        csize, usize = (int(v) for v in np.frombuffer(raw, "<u4", 2, pos))
        have = len(raw) - pos - 8
        if have != csize:
            kind = "truncated" if have < csize else "inconsistent"
            raise DataError(path, f"{kind}: {csize} compressed bytes announced, {have} present")
        need = n * point_bytes
        if usize != need:
            raise DataError(path, f"binary_compressed announces {usize} bytes, {n} points need {need}")
        if usize > _lzf.MAX_RATIO * csize + 8:
            raise DataError(path, f"{csize} LZF bytes cannot expand to {usize} (LZF's ratio is at most "
                            f"{_lzf.MAX_RATIO}:1); the size header is corrupt")  # fmt: skip
        try:
            buf = _lzf.decompress(raw[pos + 8 : pos + 8 + csize], usize)
        except _lzf.LZFError as e:
            raise DataError(path, f"corrupt LZF data ({e})") from None
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
            if packed.ndim != 1:
                raise DataError(path, f"PCD field {key} must have COUNT 1")
            packed = packed.view(np.uint32) if packed.dtype.itemsize == 4 else packed.astype(np.uint32)
            cols["red"], cols["green"], cols["blue"] = (packed >> 16) & 255, (packed >> 8) & 255, packed & 255
    return _from_columns({k: v for k, v in cols.items() if np.asarray(v).ndim == 1}, path, color_scale=1.0)


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


def _read_las(path) -> dict:
    from pointins.data._las import read_las

    return read_las(path)


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
    data, _ = read_counted(path, kind=kind, segment_key=segment_key, learning_map=learning_map, nan=nan, **labels)
    return data


def read_counted(
    path: str | os.PathLike,
    *,
    kind: str | None = None,
    segment_key: str | None = None,
    learning_map: bool = True,
    nan: str = "raise",
    **labels,
) -> tuple[dict[str, np.ndarray], int]:
    """:func:`read`, plus the number of points dropped for non-finite values (``nan="drop"``)."""
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
        out = _finish(readers[kind](), path, nan)
        return out, out.pop("_dropped")
    except DataError:
        raise
    except (OSError, MemoryError) as e:
        raise DataError(path, f"cannot read ({type(e).__name__}: {e})") from None
    except Exception as e:  # a case the checks above missed: still the caller's DataError, never a crash
        err = DataError(path, f"malformed file ({type(e).__name__}: {e})")
        err.unexpected = True  # the fuzz harness counts these as failures: each deserves a specific check
        raise err from None


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

    ``dataset[i]`` is :func:`read` of scene ``i`` plus ``name`` and ``dropped_points``, passed through
    ``transform`` when given.

    Points with NaN/Inf coordinates or features are **dropped** by default (``nan="drop"``; organized scans
    mark missing returns that way) and counted: ``dropped_points`` in each item, and the running total in
    :attr:`dropped` (of this process). ``nan="raise"`` refuses such scans instead. A scan left with fewer than
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
        data, dropped = read_counted(
            ref.path, kind=ref.kind, **dict(ref.labels), **{"nan": self.nan, **self.read_kwargs}
        )
        if len(data["coord"]) < self.min_points:
            why = f" after dropping {dropped} with NaN/Inf values" if dropped else ""
            raise DataError(ref.path, f"only {len(data['coord'])} points{why}; fewer than min_points={self.min_points}")
        self.dropped += dropped
        data["name"] = ref.name
        data["dropped_points"] = dropped
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
