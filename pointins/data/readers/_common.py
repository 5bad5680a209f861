"""What every reader shares: column names and aliases, the label conventions, the final checks and casts."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pointins.data.readers._errors import DataError

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


#: coordinates stored with more precision than float32 (float64, integers, LAS) are re-centred when their largest
#: magnitude reaches this (float32's spacing there is 0.5 mm); LAS/LAZ use their own scale instead (see _offset)
RECENTRE_ABOVE = 4096.0
#: what a non-finite attribute value is replaced with (the point is kept; its coordinates are fine)
REPAIR_VALUE = {"normal": 0.0, "color": 0.0, "strength": 0.0}


@dataclass(frozen=True)
class ReadCounts:
    """What :func:`pointins.data.readers.read_counted` changed in a file: points dropped for non-finite coordinates
    (``nan="drop"``) and, per attribute, points whose non-finite values were repaired (see ``REPAIR_VALUE``)."""

    dropped: int = 0
    repaired: dict = field(default_factory=dict)

    @property
    def repaired_points(self) -> int:
        return sum(self.repaired.values())

    def __bool__(self) -> bool:
        return bool(self.dropped or self.repaired_points)

    def describe(self) -> str:
        parts = [f"{self.dropped} points with NaN/Inf coordinates dropped"] if self.dropped else []
        parts += [f"{n} NaN/Inf {k} values set to {REPAIR_VALUE[k]:g}" for k, n in self.repaired.items()]
        return "; ".join(parts)


def _offset(coord: np.ndarray, scale) -> np.ndarray:
    """The re-centring rule: ``coord_offset`` is the bounding box's centre rounded to whole units, per axis, when
    float32 cannot hold the file's coordinates to their own precision -- LAS/LAZ (integers times ``scale``): when
    their largest magnitude reaches ``2**22 * scale`` (float32's spacing there is a quarter of the scale); other
    sources stored in float64 or as integers: from :data:`RECENTRE_ABOVE`. Float32 sources are never re-centred
    (their values come back bit for bit). Zero otherwise."""
    zero = np.zeros(3, np.float64)
    if coord.dtype == np.float32 or len(coord) == 0:
        return zero
    c = coord.astype(np.float64, copy=False)
    fin = np.isfinite(c).all(1)
    if not fin.any():
        return zero
    lo, hi = c[fin].min(0), c[fin].max(0)
    limit = RECENTRE_ABOVE if scale is None else float(2**22 * np.min(np.abs(scale)))
    if max(np.abs(lo).max(), np.abs(hi).max()) < limit:
        return zero
    return np.round((lo + hi) / 2)


def _finish(out: dict, path, nan: str) -> tuple[dict[str, np.ndarray], ReadCounts]:
    """Cast to the convention; check dtypes, shapes and label ranges; re-centre large coordinates (``coord_offset``);
    drop (or refuse) points with non-finite coordinates and repair non-finite attributes, counting both."""
    coord = _numeric(out["coord"], "coord", path)
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise DataError(path, f"coordinates must be (N, 3), got shape {coord.shape}")
    n = len(coord)
    offset = _offset(coord, out.get("_scale"))
    with np.errstate(over="ignore", invalid="ignore"):
        shifted = coord.astype(np.float64) - offset if offset.any() else coord
        res = {"coord": shifted.astype(np.float32)}
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
    if "grid_index" in out:
        res["grid_index"] = np.asarray(out["grid_index"], np.int64)
    bad = ~np.isfinite(res["coord"]).all(1)
    if bad.any() and nan != "drop":
        first = int(np.flatnonzero(bad)[0])
        raise DataError(path, f"{int(bad.sum())} of {n} points have NaN/Inf coordinates (first at row {first}); pass "
                        "nan='drop' to drop them (organized PCD scans mark missing returns this way)")  # fmt: skip
    repaired = {}
    for k in ("color", "normal", "strength"):
        if k in res:
            badk = ~np.isfinite(res[k]).all(1) & ~bad
            if badk.any():
                a = res[k].copy()
                a[~np.isfinite(a)] = REPAIR_VALUE[k]
                if k == "normal":
                    a[badk] = REPAIR_VALUE[k]  # a normal with any non-finite component is unknown as a whole
                res[k] = a
                repaired[k] = int(badk.sum())
    if bad.any():
        res = {k: v[~bad] for k, v in res.items()}
    res["coord_offset"] = offset
    if "grid_shape" in out:
        res["grid_shape"] = np.asarray(out["grid_shape"], np.int64)
    return res, ReadCounts(int(bad.sum()), repaired)
