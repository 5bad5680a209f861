"""What every reader shares: column names and aliases, the label conventions, the final checks and casts."""

from __future__ import annotations

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
