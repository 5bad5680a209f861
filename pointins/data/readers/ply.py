"""PLY (ASCII and binary, either byte order), with list elements (faces) skipped safely."""

from __future__ import annotations

import struct

import numpy as np

from pointins.data.readers._errors import DataError
from pointins.data.readers._safeio import read_bytes

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
