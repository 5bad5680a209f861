"""LAS / LAZ without trusting the header.

LAS (uncompressed) is decoded here with NumPy after the public header block, the VLR chain and the point
count have been checked against the file's size: no third-party decoder sees it, so no hostile header can make
one loop or allocate. LAZ needs a real decompressor (laspy + lazrs / laszip); the header and VLRs are checked
the same way first, then decompression runs in a child process with a memory limit and a timeout, so even a
decoder that aborts (lazrs does, on some corrupt chunk tables) cannot take the caller down.

Field layout: ASPRS LAS 1.4 R15, tables 7-17 (point data record formats 0-10).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

from pointins.data.readers._errors import DataError
from pointins.data.readers._safeio import max_bytes, read_bytes

__all__ = ["LasHeader", "parse_header", "read_las"]

# base record size of each point data record format
RECORD_SIZE = {0: 20, 1: 28, 2: 26, 3: 34, 4: 57, 5: 63, 6: 30, 7: 36, 8: 38, 9: 59, 10: 67}
RGB_AT = {2: 20, 3: 28, 5: 28, 7: 30, 8: 30, 10: 30}  # byte offset of red, green, blue (u16 each)
MIN_HEADER = {0: 227, 1: 227, 2: 227, 3: 235, 4: 375}
VLR_HEADER = 54
LAZ_TIMEOUT_S = float(os.environ.get("POINTINS_LAZ_TIMEOUT", "120"))


class LasHeader:
    """What the reader needs from a LAS public header block (all fields validated)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _error(path, problem):
    return DataError(path, problem)


def parse_header(raw: bytes, path) -> LasHeader:
    size = len(raw)
    if size < 227 or raw[:4] != b"LASF":
        raise _error(path, "not a LAS/LAZ file (no 'LASF' signature or shorter than the 227-byte header)")
    major, minor = raw[24], raw[25]
    if major != 1 or minor > 4:
        raise _error(path, f"unsupported LAS version {major}.{minor} (1.0-1.4 are read)")
    header_size, point_offset, n_vlrs = struct.unpack_from("<HII", raw, 94)
    fmt_raw, rec_len, legacy_count = struct.unpack_from("<BHI", raw, 104)
    scale = np.array(struct.unpack_from("<3d", raw, 131))
    offset = np.array(struct.unpack_from("<3d", raw, 155))
    if header_size < MIN_HEADER[minor]:
        raise _error(path, f"header size {header_size} is below the {MIN_HEADER[minor]} bytes LAS 1.{minor} needs")
    if header_size > size:
        raise _error(path, f"truncated: the header claims {header_size} bytes, the file has {size}")
    if not header_size <= point_offset <= size:
        raise _error(path, f"the point data offset {point_offset} is outside the file ({header_size}..{size} bytes)")
    compressed = bool(fmt_raw & 0xC0)  # LAZ sets bit 7 (and some writers bit 6)
    fmt = fmt_raw & 0x3F
    if fmt not in RECORD_SIZE:
        raise _error(path, f"unknown point data record format {fmt} (0-10 exist)")
    if rec_len < RECORD_SIZE[fmt]:
        raise _error(path, f"point record length {rec_len} is shorter than format {fmt}'s {RECORD_SIZE[fmt]} bytes")
    if not (np.isfinite(scale).all() and np.isfinite(offset).all()) or (scale == 0).any():
        raise _error(path, f"invalid scale {scale.tolist()} or offset {offset.tolist()} (finite, non-zero scales)")
    count = legacy_count
    evlr_start = n_evlrs = 0
    if minor >= 4:
        evlr_start, n_evlrs, count64 = struct.unpack_from("<QIQ", raw, 235)
        if legacy_count and legacy_count != count64:
            raise _error(path, f"inconsistent header: legacy point count {legacy_count} != 64-bit count {count64}")
        count = count64
    if n_vlrs * VLR_HEADER > point_offset - header_size:
        raise _error(path, f"the header announces {n_vlrs} VLRs, but only {point_offset - header_size} bytes lie "
                     "between the header and the point data")  # fmt: skip
    vlrs, pos = [], header_size
    for i in range(n_vlrs):
        user, record_id, length = struct.unpack_from("<2x16sHH", raw, pos)
        end = pos + VLR_HEADER + length
        if end > point_offset:
            raise _error(path, f"VLR {i} ends at byte {end}, past the point data offset {point_offset}")
        vlrs.append((user.rstrip(b"\0").decode("ascii", "replace"), record_id, pos + VLR_HEADER, length))
        pos = end
    need = count * rec_len
    if need > max_bytes():
        raise _error(path, f"{count} points of {rec_len} bytes exceed the read limit of {max_bytes()} bytes")
    body_end = size
    if minor >= 4 and n_evlrs:
        if not point_offset <= evlr_start <= size:
            raise _error(path, f"the EVLR offset {evlr_start} is outside the file")
        body_end = evlr_start
    if minor >= 3 and not n_evlrs:
        (wave_start,) = struct.unpack_from("<Q", raw, 227)
        if wave_start and point_offset <= wave_start <= size:
            body_end = wave_start  # waveform data packets follow the points
    return LasHeader(version=(major, minor), header_size=header_size, point_offset=point_offset, format=fmt,
                     record_length=rec_len, count=count, scale=scale, offset=offset, compressed=compressed,
                     vlrs=vlrs, body_end=body_end, size=size)  # fmt: skip


def _decode_records(buf: bytes, h: LasHeader) -> dict:
    rec = np.frombuffer(buf, np.uint8, h.count * h.record_length).reshape(h.count, h.record_length)

    def field(at: int, dtype: str, width: int = 1) -> np.ndarray:
        return rec[:, at : at + np.dtype(dtype).itemsize * width].copy().view(dtype)

    xyz = field(0, "<i4", 3).astype(np.float64) * h.scale + h.offset
    out = {"coord": xyz, "_scale": h.scale}
    if h.format in RGB_AT:
        c = field(RGB_AT[h.format], "<u2", 3).astype(np.float64)
        out["color"] = c / 257.0 if c.max(initial=0) > 255 else c
    out["strength"] = field(12, "<u2")[:, 0].astype(np.float64) / 65535.0
    cls = rec[:, 16] if h.format >= 6 else rec[:, 15] & 0x1F
    out["segment"] = cls.astype(np.int64)
    return out


def read_las(path) -> dict:
    """Read a LAS or LAZ file (see the module docstring)."""
    raw = read_bytes(path)
    h = parse_header(raw, path)
    if not h.compressed:
        end = h.point_offset + h.count * h.record_length
        if end > h.body_end:
            have = (h.body_end - h.point_offset) // h.record_length
            raise _error(path, f"truncated: the header promises {h.count} point records of {h.record_length} bytes, "
                         f"the file holds {have}")  # fmt: skip
        if end < h.body_end:
            raise _error(path, f"inconsistent: {h.body_end - end} bytes follow the {h.count} point records the header "
                         "declares (the point count disagrees with the body)")  # fmt: skip
        return _decode_records(raw[h.point_offset : end], h)
    laszip = [(at, n) for user, rid, at, n in h.vlrs if user == "laszip encoded" and rid == 22204]
    if not laszip:
        raise _error(path, "a compressed (LAZ) point format without the LASzip VLR ('laszip encoded', 22204)")
    at, length = laszip[0]
    if length < 34:
        raise _error(path, f"the LASzip VLR is {length} bytes, shorter than its 34-byte fixed part")
    (compressor,) = struct.unpack_from("<H", raw, at)
    (chunk_size,) = struct.unpack_from("<I", raw, at + 12)
    if compressor not in (2, 3):  # 1: pointwise, from LASzip before 2.0 (no chunks); lazrs decodes 2 and 3 only
        raise _error(
            path,
            f"LASzip compressor {compressor} ({'pointwise, LASzip before 2.0' if compressor == 1 else 'unknown'}) "
            "is not supported by the lazrs decoder (laspy refuses it too); decompress it with LAStools "
            "(laszip -i in.laz -o out.las) or PDAL (pdal translate in.laz out.las) and read the LAS",
        )
    if h.point_offset + 8 > h.body_end:
        raise _error(path, "truncated: LAZ point data lacks its chunk-table offset")
    (table,) = struct.unpack_from("<q", raw, h.point_offset)
    if table != -1:  # -1: written by a streaming encoder without a table (the decoder scans the chunks)
        if not h.point_offset + 8 <= table <= h.size - 8:
            raise _error(path, f"the LAZ chunk table offset {table} is outside the file ({h.size} bytes)")
        version, chunks = struct.unpack_from("<II", raw, table)
        fixed = chunk_size not in (0, 0xFFFFFFFF)
        most = (h.count + chunk_size - 1) // chunk_size + 1 if fixed else max(1, h.count)
        if version != 0 or chunks > most or chunks * 1 > h.size - table:
            raise _error(path, f"corrupt LAZ chunk table at byte {table} (version {version}, {chunks} chunks for "
                         f"{h.count} points in chunks of {chunk_size}); the file was altered after "
                         "compression")  # fmt: skip
    del raw
    return _decode_laz(path, h)


_CHILD = Path(__file__).with_name("_laz_child.py")


def _decode_laz(path, h: LasHeader) -> dict:
    """Decompress in a child process (memory-limited, timed out): a decoder crash becomes a DataError."""
    expect = h.count * h.record_length
    limit = 1536 * 2**20 + 6 * expect + 2 * h.size
    cmd = [sys.executable, "-I", str(_CHILD), os.fspath(path), str(limit), str(h.count)]
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=LAZ_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise _error(path, f"LAZ decompression did not finish in {LAZ_TIMEOUT_S:.0f} s (POINTINS_LAZ_TIMEOUT); the "
                     "file is corrupt or hostile") from None  # fmt: skip
    if res.returncode != 0:
        msg = res.stderr.decode("utf-8", "replace").strip().splitlines()
        tail = msg[-1][:300] if msg else ""
        if res.returncode < 0:
            raise _error(path, f"the LAZ decoder crashed (signal {-res.returncode}) on this file; it is corrupt "
                         f"{('(' + tail + ')') if tail else ''}".rstrip())  # fmt: skip
        if res.returncode == 3:
            raise _error(path, "reading LAZ needs laspy with a LAZ backend: pip install laspy lazrs")
        raise _error(path, f"cannot decompress LAZ ({tail or 'decoder exit ' + str(res.returncode)})")
    try:
        import io

        with np.load(io.BytesIO(res.stdout), allow_pickle=False) as z:
            rec = z["records"]
    except Exception as e:
        raise _error(path, f"the LAZ decoder returned no usable data ({type(e).__name__}: {e})") from None
    if rec.dtype != np.uint8 or rec.ndim != 2 or rec.shape != (h.count, h.record_length):
        raise _error(path, f"inconsistent: the header declares {h.count} records of {h.record_length} bytes, the "
                     f"compressed body decodes to {rec.shape[0] if rec.ndim == 2 else rec.size} records")  # fmt: skip
    return _decode_records(rec.tobytes(), h)
