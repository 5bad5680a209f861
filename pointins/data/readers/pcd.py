"""PCD (PCL's format): ascii, binary and binary_compressed (LZF) data."""

from __future__ import annotations

import numpy as np

from pointins.data.readers import _lzf
from pointins.data.readers._common import _from_columns
from pointins.data.readers._errors import DataError
from pointins.data.readers._safeio import max_bytes, read_bytes

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
        if not key.isascii() or not key.replace("_", "").isalpha():  # a mangled key is not an unknown one
            raise DataError(path, f"PCD header line {line[:40]!r} does not start with a keyword (VERSION, FIELDS, "
                            "SIZE, TYPE, COUNT, WIDTH, HEIGHT, VIEWPOINT, POINTS, DATA)")  # fmt: skip
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
        body = raw[pos:].decode("ascii", "replace").replace(",", " ")  # commas separate values in PDAL's files too
        rows = [ln for ln in body.split("\n") if ln.strip()]
        if len(rows) < n:
            raise DataError(path, f"truncated: the header declares {n} points, the body has {len(rows)} rows")
        rows = rows[:n]  # PCL reads the declared points and ignores what follows
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
        if have < n * dt.itemsize:  # PCL refuses a short body and ignores bytes after the declared points
            raise DataError(path, f"truncated: {n} points need {n * dt.itemsize} bytes after the header, found {have}")
        rec = np.frombuffer(raw, dt, n, pos)
        cols = {name: rec[f"f{i}"] for i, name in enumerate(names)}
    elif data_kind == "binary_compressed":
        if len(raw) - pos < 8:
            raise DataError(path, "truncated: binary_compressed data lacks its size header")
        csize, usize = (int(v) for v in np.frombuffer(raw, "<u4", 2, pos))
        have = len(raw) - pos - 8
        if have < csize:  # PCL pads its files after the compressed block; it refuses only a short one
            raise DataError(path, f"truncated: {csize} compressed bytes announced, {have} present")
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
    out = _from_columns({k: v for k, v in cols.items() if np.asarray(v).ndim == 1}, path, color_scale=1.0)
    if height > 1 and width_ >= 0:  # an organized cloud: keep the sensor grid (rows of WIDTH points)
        out["grid_shape"] = np.array([height, width_], np.int64)
        out["grid_index"] = np.arange(n, dtype=np.int64)
    return out
