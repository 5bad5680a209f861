"""The formats' reference Python readers, in this package's convention: the yardstick for :func:`read`.

:func:`read_reference` reads a file with the reader its format's users trust -- laspy (LAS/LAZ, with lazrs),
pypcd4 (PCD), plyfile (PLY), Open3D as a second PCD/PLY reader -- and returns what :func:`read` would if it
agreed: ``coord`` float64 (absolute), ``color`` 0-255, ``normal``, ``strength`` in [0, 1] for LAS, ``segment``.
Nothing here decides what :func:`read` returns; ``tests/test_realworld.py`` compares the two on files written by
the formats' own tools (``tests/data/realworld/``), value for value.

Run it in a child process for untrusted files (see ``tools/realworld_corpus.py``): these readers trust headers.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["read_reference", "reference_for"]


def reference_for(path: str | os.PathLike) -> str:
    """The name of the reference reader for ``path``'s format (by suffix)."""
    suffix = os.fspath(path).lower().rsplit(".", 1)[-1]
    return {"las": "laspy", "laz": "laspy", "pcd": "pypcd4", "ply": "plyfile"}.get(suffix, "none")


def _las(path) -> dict:
    import laspy

    las = laspy.read(path)
    out = {"coord": np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], 1)}
    dims = set(las.point_format.dimension_names)
    if {"red", "green", "blue"} <= dims:
        c = np.stack([np.asarray(las.red), np.asarray(las.green), np.asarray(las.blue)], 1).astype(np.float64)
        out["color"] = c / 257.0 if c.max(initial=0) > 255 else c
    out["strength"] = np.asarray(las.intensity).astype(np.float64)[:, None] / 65535.0
    out["segment"] = np.asarray(las.classification).astype(np.int64)
    out["scale"] = np.asarray(las.header.scales, np.float64)
    return out


def _columns(named: dict) -> dict:
    """Shared by the PCD and PLY references: named columns to the convention (their common field names)."""
    low = {k.lower(): v for k, v in named.items()}
    out = {"coord": np.stack([low["x"], low["y"], low["z"]], 1)}
    for trio in (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z")):
        if all(t in low for t in trio):
            out["normal"] = np.stack([low[t] for t in trio], 1).astype(np.float64)
    for trio in (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue")):
        if all(t in low for t in trio):
            c = np.stack([low[t] for t in trio], 1)
            cf = c.astype(np.float64)
            if c.dtype.kind == "f" and cf.size and cf.max() <= 1.0:
                cf = cf * 255.0
            elif cf.max(initial=0) > 255:
                cf = cf / 257.0
            out["color"] = cf
            break
    for name in ("intensity", "scalar_intensity", "reflectance", "remission"):
        if name in low:
            out["strength"] = low[name].astype(np.float64)[:, None]
            break
    for name in ("label", "class", "classification", "semantic", "segment"):
        if name in low:
            out["segment"] = low[name].astype(np.int64)
            break
    return out


def _pcd(path) -> dict:
    import pypcd4

    pc = pypcd4.PointCloud.from_path(path)
    a = pc.pc_data
    named = {name: a[name] for name in a.dtype.names}
    for key in ("rgb", "rgba"):
        if key in named:  # packed colour: the float's bits are 0x00RRGGBB
            packed = np.ascontiguousarray(named.pop(key)).view(np.uint32)
            named["red"], named["green"], named["blue"] = (packed >> 16) & 255, (packed >> 8) & 255, packed & 255
            for k in ("red", "green", "blue"):
                named[k] = named[k].astype(np.uint8)
    out = _columns(named)
    out["grid_shape"] = np.array([int(pc.metadata.height), int(pc.metadata.width)])
    return out


def _open3d(path, fmt: str) -> dict:
    """Open3D's reader (PCD or PLY). Colours only for PCD: Open3D stores them as fractions, and a PLY's 8-bit
    values do not always come back exactly from ``c / 255 * 255``."""
    import open3d as o3d

    pc = o3d.io.read_point_cloud(os.fspath(path), format=fmt, remove_nan_points=False, remove_infinite_points=False)
    out = {"coord": np.asarray(pc.points, np.float64)}
    if pc.has_normals():
        out["normal"] = np.asarray(pc.normals, np.float64)
    if fmt == "pcd" and pc.has_colors():
        out["color"] = np.asarray(pc.colors, np.float64) * 255.0
    return out


def _ply(path) -> dict:
    import plyfile

    ply = plyfile.PlyData.read(os.fspath(path))
    v = ply["vertex"].data
    return _columns({name: np.asarray(v[name]) for name in v.dtype.names})


def read_reference(path: str | os.PathLike, reader: str | None = None) -> dict:
    """Read ``path`` with its format's reference reader (``reader``: ``laspy``, ``pypcd4``, ``plyfile``, or
    ``open3d`` for PCD/PLY -- a second opinion where the first refuses a file its format's tools write: PCD v.5,
    a PLY magic line with a trailing blank; default by suffix). Raises whatever that reader raises (ImportError
    when it is absent)."""
    reader = reader or reference_for(path)
    if reader == "open3d":
        reader = "open3d-ply" if os.fspath(path).lower().endswith(".ply") else "open3d-pcd"
    readers = {
        "laspy": _las,
        "pypcd4": _pcd,
        "plyfile": _ply,
        "open3d-pcd": lambda p: _open3d(p, "pcd"),
        "open3d-ply": lambda p: _open3d(p, "ply"),
    }
    fn = readers.get(reader)
    if fn is None:
        raise ValueError(f"read_reference: no reference reader {reader!r} (laspy, pypcd4, open3d, plyfile)")
    return fn(path)


def compare(ours: dict, ref: dict) -> list[str]:
    """Where :func:`read`'s result (``nan="drop"``) disagrees with the reference's: [] when it agrees.

    Rules: the reference's points with non-finite coordinates are the ones ours drops; ``coord + coord_offset``
    must be the reference's coordinates to within half the file's scale (LAS/LAZ; or half float32's spacing
    where the file's extent spans more than 2**24 of its steps) or, for other formats, ``coord``
    must be exactly the float32 rounding of the reference's coordinates minus the offset (bit for bit for float32
    files); colours, normals and intensities equal the reference's cast to float32, a non-finite one being 0
    (repaired); labels equal."""
    bad = []
    rc = np.asarray(ref["coord"], np.float64)
    keep = np.isfinite(rc).all(1)
    n = len(ours["coord"])
    if n != int(keep.sum()):
        return [f"points: ours {n}, reference {int(keep.sum())} finite of {len(rc)}"]
    off = np.asarray(ours.get("coord_offset", np.zeros(3)), np.float64)
    if "scale" in ref:
        err = np.abs(ours["coord"].astype(np.float64) + off - rc[keep]).max(0) if n else np.zeros(3)
        # half the file's scale, or half float32's spacing at the re-centred values where the file's extent spans
        # more than float32's 2**24 steps of its scale (then no float32 can do better)
        spacing = np.spacing(np.abs(ours["coord"]).max(0).astype(np.float32)).astype(np.float64) if n else 0
        tol = np.maximum(np.asarray(ref["scale"], np.float64) / 2, spacing / 2)
        if (err > tol).any():
            bad.append(f"coord: error {err.tolist()} exceeds {tol.tolist()} (half the scale or float32's spacing)")
    else:
        want = (rc[keep] - off).astype(np.float32)
        if not np.array_equal(ours["coord"], want):
            err = np.abs(ours["coord"].astype(np.float64) - want).max()
            bad.append(f"coord: differs from the reference's by up to {err:.3g}")
    for k in ("color", "normal", "strength"):
        if k not in ref:
            continue
        if k not in ours:
            bad.append(f"{k}: the reference has it, ours does not")
            continue
        want = np.asarray(ref[k], np.float64)[keep].astype(np.float32)
        if k == "normal":
            want[~np.isfinite(want).all(1)] = 0.0
        want[~np.isfinite(want)] = 0.0
        if want.shape != ours[k].shape or not np.array_equal(ours[k], want):
            bad.append(f"{k}: differs (shapes {ours[k].shape} / {want.shape})")
    if "segment" in ref:
        if "segment" not in ours or not np.array_equal(ours["segment"], np.asarray(ref["segment"])[keep]):
            bad.append("segment: differs" if "segment" in ours else "segment: the reference has it, ours does not")
    return bad
