"""Writers for the formats :mod:`pointins.data.readers` reads (export, round-trip tests, interop).

Every writer takes a dict of NumPy arrays in the library's convention: ``coord`` (N,3) and any of
``color`` (N,3) 0-255, ``normal`` (N,3), ``strength`` (N,) or (N,1), ``segment`` (N,), ``instance`` (N,).
Files are written to a temporary name and renamed, so a crash never leaves half a file behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pointins.data.readers import _lzf

__all__ = [
    "write",
    "write_kitti",
    "write_las",
    "write_npy",
    "write_npz",
    "write_nuscenes",
    "write_pcd",
    "write_ply",
    "write_pointcept",
    "write_txt",
]

KEYS = ("coord", "color", "normal", "strength", "segment", "instance")


@contextmanager
def _atomic(path: str | os.PathLike) -> Iterator[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _check(data: dict) -> int:
    if "coord" not in data:
        raise ValueError("pointins.data.writers: data needs a 'coord' (N, 3) array.")
    coord = np.asarray(data["coord"])
    if coord.ndim != 2 or coord.shape[1] != 3:
        raise ValueError(f"pointins.data.writers: coord must have shape (N, 3), got {coord.shape}.")
    n = len(coord)
    for k in KEYS[1:]:
        if k in data and len(np.asarray(data[k])) != n:
            raise ValueError(f"pointins.data.writers: {k} has {len(np.asarray(data[k]))} rows, coord has {n}.")
    return n


def _absolute(data: dict) -> tuple[np.ndarray, bool]:
    """The absolute coordinates: ``coord`` plus ``coord_offset`` (what the readers re-centred) in float64, and
    whether there was an offset (then the writers keep float64 where the format can; see the readers' rule)."""
    off = np.asarray(data.get("coord_offset", np.zeros(3)), np.float64).reshape(-1)
    if off.shape != (3,) or not np.isfinite(off).all():
        raise ValueError(f"pointins.data.writers: coord_offset must be 3 finite numbers, got {off.tolist()}.")
    coord = np.asarray(data["coord"])
    if not off.any():
        return coord, False
    return coord.astype(np.float64) + off, True


def _strength(data: dict) -> np.ndarray:
    return np.asarray(data["strength"], np.float32).reshape(-1)


def write_pointcept(folder: str | os.PathLike, data: dict) -> None:
    """One scene folder: ``coord.npy`` float32, ``color.npy`` uint8, ``normal.npy`` float32,
    ``strength.npy`` float32 (N,1), ``segment.npy`` / ``instance.npy`` int32 -- the keys ``data`` has."""
    _check(data)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtypes = {"coord": np.float32, "color": np.uint8, "normal": np.float32, "strength": np.float32}
    for k in KEYS:
        if k not in data:
            continue
        a = np.asarray(data[k])
        if k == "coord":
            a, shifted = _absolute(data)
            if shifted:  # float32 would lose the georeference's precision: Pointcept's loaders cast on load
                dtypes = {**dtypes, "coord": np.float64}
        if k == "color":
            a = np.clip(np.round(a), 0, 255)
        a = a.astype(dtypes.get(k, np.int32))
        if k == "strength":
            a = a.reshape(-1, 1)
        with _atomic(folder / f"{k}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, a)


def write_npy(path, data: dict) -> None:
    """Without labels: an (N, C) float32 array (xyz, then rgb, normal, strength: the column layouts
    :func:`pointins.data.readers.read` infers); with labels: a structured array with named fields."""
    _check(data)
    arr, names = _columns(data)
    shifted = _absolute(data)[1]
    if "segment" in data or "instance" in data or ("normal" in data and "color" not in data):
        rec = np.empty(
            len(arr), [(name, np.float64 if shifted and j < 3 else np.float32) for j, name in enumerate(names)]
        )
        for j, name in enumerate(names):
            rec[name] = arr[:, j]
        arr = rec
    elif not shifted:
        arr = arr.astype(np.float32)
    with _atomic(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)


def write_npz(path, data: dict) -> None:
    """Named arrays (``coord``, ``color``, ...), compressed."""
    _check(data)
    with _atomic(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f, **{k: _absolute(data)[0] if k == "coord" else np.asarray(data[k]) for k in KEYS if k in data}
        )


def _columns(data: dict) -> tuple[np.ndarray, list[str]]:
    cols, names = [np.asarray(_absolute(data)[0], np.float64)], ["x", "y", "z"]
    if "color" in data:
        cols.append(np.asarray(data["color"], np.float64))
        names += ["red", "green", "blue"]
    if "normal" in data:
        cols.append(np.asarray(data["normal"], np.float64))
        names += ["nx", "ny", "nz"]
    if "strength" in data:
        cols.append(_strength(data)[:, None].astype(np.float64))
        names.append("intensity")
    for k, name in (("segment", "label"), ("instance", "instance")):
        if k in data:
            cols.append(np.asarray(data[k], np.float64).reshape(-1, 1))
            names.append(name)
    return np.concatenate(cols, 1), names


def write_txt(path, data: dict, header: bool = True, delimiter: str = " ") -> None:
    """Whitespace (or ``delimiter``) separated columns, with a ``x y z red ...`` header line by default."""
    _check(data)
    arr, names = _columns(data)
    if not _absolute(data)[1]:
        arr = arr.astype(np.float32).astype(np.float64)  # the values a float32 cloud holds, printed as before
    fmt = ["%.6f"] * 3 + ["%.8g"] * (arr.shape[1] - 3)
    with _atomic(path) as tmp:
        np.savetxt(tmp, arr, fmt=fmt, delimiter=delimiter, header=delimiter.join(names) if header else "", comments="")


_PLY_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.uint8): "uchar",
              np.dtype(np.int32): "int", np.dtype(np.uint16): "ushort", np.dtype(np.int16): "short",
              np.dtype(np.uint32): "uint", np.dtype(np.int8): "char"}  # fmt: skip


def _fields(data: dict) -> list[tuple[str, np.ndarray]]:
    n = _check(data)
    coord, shifted = _absolute(data)
    coord = np.asarray(coord, np.float64 if shifted else np.float32)  # doubles keep a georeference
    f = [("x", coord[:, 0]), ("y", coord[:, 1]), ("z", coord[:, 2])]
    if "normal" in data:
        nrm = np.asarray(data["normal"], np.float32)
        f += [("nx", nrm[:, 0]), ("ny", nrm[:, 1]), ("nz", nrm[:, 2])]
    if "color" in data:
        c = np.clip(np.round(np.asarray(data["color"], np.float64)), 0, 255).astype(np.uint8)
        f += [("red", c[:, 0]), ("green", c[:, 1]), ("blue", c[:, 2])]
    if "strength" in data:
        f.append(("intensity", _strength(data)))
    if "segment" in data:
        f.append(("label", np.asarray(data["segment"]).astype(np.int32).reshape(n)))
    if "instance" in data:
        f.append(("instance", np.asarray(data["instance"]).astype(np.int32).reshape(n)))
    return f


def write_ply(path, data: dict, binary: bool = True, big_endian: bool = False, faces: np.ndarray | None = None):
    """PLY with a ``vertex`` element (x y z [nx ny nz] [red green blue uchar] [intensity] [label instance]).

    ``binary=False`` writes ASCII. ``faces`` (F,3) int adds a ``face`` element (readers must skip it).
    """
    fields = _fields(data)
    n = len(fields[0][1])
    fmt = "ascii" if not binary else ("binary_big_endian" if big_endian else "binary_little_endian")
    head = ["ply", f"format {fmt} 1.0", "comment written by pointins", f"element vertex {n}"]
    head += [f"property {_PLY_TYPES[a.dtype]} {name}" for name, a in fields]
    if faces is not None:
        head += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    head.append("end_header")
    with _atomic(path) as tmp, open(tmp, "wb") as f:
        f.write(("\n".join(head) + "\n").encode("ascii"))
        if not binary:
            cols = np.stack([a.astype(np.float64) for _, a in fields], 1)
            fmts = ["%d" if a.dtype.kind in "iu" else "%.7g" for _, a in fields]
            np.savetxt(f, cols, fmt=fmts)
            if faces is not None:
                np.savetxt(f, np.concatenate([np.full((len(faces), 1), 3), faces], 1), fmt="%d")
            return
        order = ">" if big_endian else "<"
        rec = np.empty(n, [(name, a.dtype.newbyteorder(order)) for name, a in fields])
        for name, a in fields:
            rec[name] = a
        f.write(rec.tobytes())
        if faces is not None:
            frec = np.empty(len(faces), [("n", "u1"), ("v", f"{order}i4", (3,))])
            frec["n"], frec["v"] = 3, faces
            f.write(frec.tobytes())


def write_pcd(path, data: dict, encoding: str = "binary") -> None:
    """PCD v0.7 (``encoding``: ``ascii``, ``binary`` or ``binary_compressed``), PCL's field names:
    x y z [normal_x normal_y normal_z] [rgb (packed float)] [intensity] [label] [instance]."""
    if encoding not in ("ascii", "binary", "binary_compressed"):
        raise ValueError(f"write_pcd: encoding must be ascii, binary or binary_compressed, got {encoding!r}.")
    fields = []
    for name, a in _fields(data):
        if name in ("red", "green", "blue"):
            continue
        fields.append(({"nx": "normal_x", "ny": "normal_y", "nz": "normal_z"}.get(name, name), a))
    if "color" in data:
        c = np.clip(np.round(np.asarray(data["color"], np.float64)), 0, 255).astype(np.uint32)
        packed = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
        at = 6 if "normal" in data else 3
        fields.insert(at, ("rgb", packed.view(np.float32)))
    n = len(fields[0][1])
    types = {"f": "F", "i": "I", "u": "U"}
    head = [
        "# .PCD v0.7 - Point Cloud Data file format (written by pointins)",
        "VERSION 0.7",
        "FIELDS " + " ".join(name for name, _ in fields),
        "SIZE " + " ".join(str(a.dtype.itemsize) for _, a in fields),
        "TYPE " + " ".join(types[a.dtype.kind] for _, a in fields),
        "COUNT " + " ".join("1" for _ in fields),
        f"WIDTH {n}",
        "HEIGHT 1",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {n}",
        f"DATA {encoding}",
    ]
    with _atomic(path) as tmp, open(tmp, "wb") as f:
        f.write(("\n".join(head) + "\n").encode("ascii"))
        if encoding == "ascii":
            lines = []
            for i in range(n):
                vals = []
                for name, a in fields:
                    v = a[i]
                    if name == "rgb":  # PCL writes the packed float's bits as an unsigned integer in ASCII
                        vals.append(str(int(np.asarray(v).view(np.uint32))))
                    elif a.dtype.kind == "f":
                        vals.append(f"{float(v):.7g}")
                    else:
                        vals.append(str(int(v)))
                lines.append(" ".join(vals))
            f.write(("\n".join(lines) + ("\n" if lines else "")).encode("ascii"))
        elif encoding == "binary":
            rec = np.empty(n, [(name, a.dtype.newbyteorder("<")) for name, a in fields])
            for name, a in fields:
                rec[name] = a
            f.write(rec.tobytes())
        else:  # column-major (field after field), LZF-compressed, prefixed by both sizes
            raw = b"".join(np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"))).tobytes() for _, a in fields)
            comp = _lzf.compress(raw)
            f.write(np.array([len(comp), len(raw)], "<u4").tobytes() + comp)


def write_kitti(velodyne_path, data: dict, label_path=None, raw_semantic: np.ndarray | None = None) -> None:
    """SemanticKITTI scan: ``.bin`` float32 (N,4) x y z remission; optional ``.label`` uint32 with the raw
    semantic id (``raw_semantic``, SemanticKITTI's own ids such as 10 = car) in the low 16 bits and the
    instance id in the high 16 bits."""
    n = _check(data)
    pts = np.zeros((n, 4), np.float32)
    pts[:, :3] = _absolute(data)[0]
    if "strength" in data:
        pts[:, 3] = _strength(data)
    with _atomic(velodyne_path) as tmp:
        pts.tofile(tmp)
    if label_path is not None:
        sem = np.asarray(raw_semantic if raw_semantic is not None else data["segment"], np.uint32)
        inst = np.asarray(data.get("instance", np.zeros(n)), np.int64)
        lab = (sem & 0xFFFF) | (np.where(inst < 0, 0, inst).astype(np.uint32) << 16)
        with _atomic(label_path) as tmp:
            lab.astype("<u4").tofile(tmp)


def write_nuscenes(pcd_bin_path, data: dict, lidarseg_path=None, panoptic_path=None, raw_semantic=None) -> None:
    """nuScenes lidar file: ``.pcd.bin`` float32 (N,5) x y z intensity(0-255) ring; optional lidarseg
    ``.bin`` (uint8 raw category per point) and panoptic ``.npz`` (``data``: uint16 category*1000 + instance,
    instance 0 meaning none). ``raw_semantic`` are nuScenes' 32 raw category indices."""
    n = _check(data)
    pts = np.zeros((n, 5), np.float32)
    pts[:, :3] = _absolute(data)[0]
    if "strength" in data:
        pts[:, 3] = _strength(data) * 255.0
    with _atomic(pcd_bin_path) as tmp:
        pts.tofile(tmp)
    sem = np.asarray(raw_semantic if raw_semantic is not None else data.get("segment", np.zeros(n)), np.int64)
    if lidarseg_path is not None:
        with _atomic(lidarseg_path) as tmp:
            sem.astype(np.uint8).tofile(tmp)
    if panoptic_path is not None:
        inst = np.asarray(data.get("instance", np.full(n, -1)), np.int64)
        pan = sem * 1000 + np.where(inst < 0, 0, inst + 1)
        with _atomic(panoptic_path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, data=pan.astype(np.uint16))


def write_las(path, data: dict) -> None:
    """LAS/LAZ through laspy (point format 3 with RGB, or 2 ... see laspy); LAZ needs lazrs or laszip."""
    try:
        import laspy
    except ImportError as e:
        raise ImportError("write_las needs laspy: pip install laspy (and lazrs for .laz).") from e
    _check(data)
    coord = np.asarray(_absolute(data)[0], np.float64)
    header = laspy.LasHeader(point_format=3 if "color" in data else 1, version="1.2")
    header.offsets = coord.min(0) if len(coord) else np.zeros(3)
    header.scales = np.array([1e-4, 1e-4, 1e-4])
    las = laspy.LasData(header)
    las.x, las.y, las.z = coord[:, 0], coord[:, 1], coord[:, 2]
    if "color" in data:
        c = np.clip(np.round(np.asarray(data["color"], np.float64)), 0, 255).astype(np.uint16) * 257
        las.red, las.green, las.blue = c[:, 0], c[:, 1], c[:, 2]
    if "strength" in data:
        las.intensity = np.round(np.clip(_strength(data), 0, 1) * 65535).astype(np.uint16)
    if "segment" in data:
        las.classification = np.asarray(data["segment"]).astype(np.uint8)
    with _atomic(path) as tmp:
        las.write(str(tmp) + Path(path).suffix)
        os.replace(str(tmp) + Path(path).suffix, tmp)


def write(path, data: dict, **kwargs) -> None:
    """Write by extension: ``.ply``, ``.pcd``, ``.npy``, ``.npz``, ``.txt``/``.xyz``/``.pts``/``.csv``,
    ``.las``/``.laz``; a path without a suffix is a Pointcept scene folder."""
    suffix = Path(path).suffix.lower()
    writers = {".ply": write_ply, ".pcd": write_pcd, ".npy": write_npy, ".npz": write_npz, ".txt": write_txt,
               ".xyz": write_txt, ".pts": write_txt, ".las": write_las, ".laz": write_las}  # fmt: skip
    if suffix == ".csv":
        return write_txt(path, data, delimiter=",", **kwargs)
    if suffix == "":
        return write_pointcept(path, data)
    if suffix not in writers:
        raise ValueError(f"pointins.data.write: no writer for {suffix!r} ({path}); use one of {sorted(writers)}.")
    return writers[suffix](path, data, **kwargs)
