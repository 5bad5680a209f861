"""Opening untrusted files safely: regular files only, bounded sizes, NPY headers checked before allocating.

Every reader in :mod:`pointins.data.readers` goes through :func:`open_regular` / :func:`read_bytes`, so a FIFO,
a device (a symlink to ``/dev/zero`` named ``x.ply``), a folder or a socket is refused before a byte is read,
and nothing waits on a writer that never comes (the file is opened with ``O_NONBLOCK``).

``MAX_BYTES`` bounds what one read may decode (default 16 GiB; ``POINTINS_MAX_READ_BYTES`` overrides it):
a header that promises more is refused before anything is allocated.
"""

from __future__ import annotations

import os
import stat
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pointins.data.readers._errors import DataError

__all__ = ["MAX_BYTES", "check_npy_header", "max_bytes", "open_regular", "read_bytes"]

MAX_BYTES = 16 * 2**30
MAX_NPZ_MEMBERS = 4096
# deflate's ratio tops out near 1032:1; real point data compresses 1-5:1. A large member that claims more
# than this is a zip bomb, not a scan.
MAX_NPZ_RATIO = 200
_RATIO_MIN_BYTES = 64 * 2**20


def max_bytes() -> int:
    env = os.environ.get("POINTINS_MAX_READ_BYTES")
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            pass
    return MAX_BYTES


def _error(path, problem):
    return DataError(path, problem)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


@contextmanager
def open_regular(path):
    """A binary file object of ``path``, which must be a regular file (symlinks are followed, then checked)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise _error(path, f"cannot open ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _error(path, f"{_kind(st.st_mode)}, not a regular file; only regular files are read")
        if st.st_size > max_bytes():
            raise _error(path, f"{st.st_size} bytes is over the read limit of {max_bytes()} bytes "
                         "(POINTINS_MAX_READ_BYTES raises it)")  # fmt: skip
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def read_bytes(path) -> bytes:
    """The whole content of a regular file (see :func:`open_regular`), read to its size at open time."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(size)
    if len(data) != size:
        raise _error(path, f"the file shrank while it was read ({len(data)} of {size} bytes)")
    return data


_NUMERIC = "biuf"


def _dtype_ok(dt: np.dtype) -> bool:
    if dt.hasobject:
        return False
    if dt.names:
        return all(_dtype_ok(dt.fields[n][0]) for n in dt.names)
    if dt.subdtype is not None:
        return _dtype_ok(dt.subdtype[0])
    return dt.kind in _NUMERIC


def check_npy_header(f, path, available: int, member: str = "") -> tuple[tuple[int, ...], np.dtype, bool]:
    """Parse an NPY header from ``f`` and check that its array fills exactly the ``available`` bytes left after
    it. Returns (shape, dtype, fortran_order); raises DataError for anything else (pickles included). ``member``
    names the array inside an archive."""
    pre = f"member {member}: " if member else ""
    start = f.tell()
    try:
        major, minor = np.lib.format.read_magic(f)
        if (major, minor) == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif major in (2, 3) and minor == 0:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported NPY format version {major}.{minor}")
    except Exception as e:  # ValueError, SyntaxError, tokenize.TokenError, UnicodeDecodeError, ...
        raise _error(path, pre + f"corrupt NPY header ({type(e).__name__}: {e})") from None
    header_len = f.tell() - start
    if not _dtype_ok(dtype):
        what = "pickled Python objects" if dtype.hasobject else f"a non-numeric dtype ({dtype})"
        raise _error(path, pre + f"holds {what}; only numeric arrays are read (no pickles, strings or raw bytes)")
    if any(int(s) < 0 for s in shape):
        raise _error(path, pre + f"negative dimension in shape {shape}")
    count = 1
    for s in shape:
        count *= int(s)
    need = count * dtype.itemsize
    if need > max_bytes():
        raise _error(path, pre + f"the NPY header declares shape {shape} of {dtype} ({need} bytes), over the read "
                     "limit "
                     f"of {max_bytes()} bytes")  # fmt: skip
    have = available - header_len
    if need != have:
        kind = "truncated" if have < need else "inconsistent"
        raise _error(path, pre + f"{kind}: the NPY header declares shape {shape} of {dtype} ({need} bytes), the file "
                     "holds "
                     f"{have} bytes of data")  # fmt: skip
    return tuple(int(s) for s in shape), dtype, bool(fortran)


def load_npy(path) -> np.ndarray:
    """An ``.npy`` file, its header checked against its size before the array is allocated."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        shape, dtype, fortran = check_npy_header(f, path, size)
        return _read_array(f, path, shape, dtype, fortran)


def _read_array(f, path, shape, dtype, fortran) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    data = f.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise _error(path, f"truncated: {len(data)} of {count * dtype.itemsize} data bytes")
    arr = np.frombuffer(data, dtype, count)
    arr = arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)
    return arr.copy() if not arr.flags.writeable else arr


def load_npz(path, wanted: dict[str, str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The members ``wanted`` (output key -> member name without ``.npy``) of an ``.npz``: member count, declared
    sizes, compression ratios and every NPY header are checked before any array is decompressed. Returns the
    arrays and the sorted member names."""
    with open_regular(path) as f:
        try:
            z = zipfile.ZipFile(f)
        except Exception as e:  # BadZipFile, ValueError, OSError, EOFError, ...
            raise _error(path, f"corrupt or truncated .npz ({type(e).__name__}: {e})") from None
        with z:
            infos = z.infolist()
            if len(infos) > MAX_NPZ_MEMBERS:
                raise _error(path, f"{len(infos)} members; an .npz of a scan has a handful (limit {MAX_NPZ_MEMBERS})")
            by_name = {}
            for info in infos:
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                by_name.setdefault(name, info)
            names = sorted(by_name)
            missing = [n for n in wanted.values() if n not in by_name]
            if missing:
                raise _error(path, f"no member {missing[0]!r} among {names}")
            headers = {}
            for key, name in wanted.items():
                info = by_name[name]
                if info.file_size > max_bytes():
                    raise _error(path, f"member {info.filename} declares {info.file_size} bytes, over the read limit")
                if info.file_size > _RATIO_MIN_BYTES and info.file_size > MAX_NPZ_RATIO * max(1, info.compress_size):
                    raise _error(path, f"member {info.filename} expands {info.compress_size} bytes to "
                                 f"{info.file_size} (ratio over {MAX_NPZ_RATIO}): a zip bomb, not point "
                                 "data")  # fmt: skip
                try:
                    with z.open(info) as m:
                        headers[key] = check_npy_header(m, path, info.file_size, info.filename)
                except Exception as e:
                    if type(e).__name__ == "DataError":
                        raise
                    raise _error(path, f"corrupt member {info.filename} ({type(e).__name__}: {e})") from None
            firsts = {k: h[0][0] for k, h in headers.items() if h[0]}
            if len(set(firsts.values())) > 1:
                raise _error(path, f"inconsistent: its arrays have different lengths {firsts}")
            out = {}
            for key, name in wanted.items():
                info = by_name[name]
                try:
                    with z.open(info) as m:
                        shape, dtype, fortran = check_npy_header(m, path, info.file_size, info.filename)
                        out[key] = _read_array(m, path, shape, dtype, fortran)
                except Exception as e:
                    if type(e).__name__ == "DataError":
                        raise
                    raise _error(path, f"corrupt member {info.filename} ({type(e).__name__}: {e})") from None
    return out, names
