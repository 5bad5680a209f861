"""LZF (liblzf's format), as PCL uses for PCD ``DATA binary_compressed``.

A compressed stream is a sequence of tokens. A control byte ``c < 32`` starts a literal run of ``c + 1``
bytes. Otherwise ``len = c >> 5`` (7 means: add the next byte) and a back-reference copies ``len + 2``
bytes from ``distance = ((c & 31) << 8) + next byte + 1`` bytes back in the output (it may overlap what it
writes, which repeats a pattern).
"""

from __future__ import annotations

# The densest token is a long back-reference: 3 input bytes (control, length, distance) yield 7 + 255 + 2 = 264
# output bytes. So n compressed bytes never decode to more than 88 n: a larger size header is corrupt.
MAX_RATIO = 88


class LZFError(ValueError):
    pass


def decompress(data: bytes, size: int) -> bytes:
    """Decode ``data`` to exactly ``size`` bytes; raises :class:`LZFError` on a corrupt stream."""
    src = memoryview(data)
    out = bytearray()
    ip, n = 0, len(src)
    while ip < n:
        ctrl = src[ip]
        ip += 1
        if ctrl < 32:
            run = ctrl + 1
            if ip + run > n:
                raise LZFError(f"literal run of {run} bytes at input offset {ip - 1} passes the end of the data")
            out += src[ip : ip + run]
            ip += run
            continue
        length = ctrl >> 5
        if length == 7:
            if ip >= n:
                raise LZFError("stream ends inside a back-reference")
            length += src[ip]
            ip += 1
        if ip >= n:
            raise LZFError("stream ends inside a back-reference")
        dist = ((ctrl & 0x1F) << 8) + src[ip] + 1
        ip += 1
        length += 2
        start = len(out) - dist
        if start < 0:
            raise LZFError(f"back-reference {dist} bytes back at output offset {len(out)} points before the start")
        if dist >= length:
            out += out[start : start + length]
        else:  # overlapping copy repeats the last `dist` bytes
            chunk = out[start:]
            reps = -(-length // dist)
            out += (chunk * reps)[:length]
        if len(out) > size:
            break
    if len(out) != size:
        raise LZFError(f"decoded {len(out)} bytes, the header says {size}")
    return bytes(out)


def compress(data: bytes) -> bytes:
    """Encode ``data`` (greedy matching with a 3-byte hash table; plain Python, meant for files of a few MB)."""
    src = bytes(data)
    n = len(src)
    out = bytearray()
    table: dict[bytes, int] = {}
    lit_start = 0
    i = 0

    def flush_literals(end: int) -> None:
        s = lit_start
        while s < end:
            run = min(32, end - s)
            out.append(run - 1)
            out.extend(src[s : s + run])
            s += run

    while i + 2 < n:
        key = src[i : i + 3]
        ref = table.get(key)
        table[key] = i
        if ref is not None and 0 < i - ref <= 8192:
            length = 3
            limit = min(264, n - i)
            while length < limit and src[ref + length] == src[i + length]:
                length += 1
            flush_literals(i)
            dist = i - ref - 1
            ln = length - 2
            if ln < 7:
                out.append((ln << 5) | (dist >> 8))
            else:
                out.append((7 << 5) | (dist >> 8))
                out.append(ln - 7)
            out.append(dist & 0xFF)
            for j in range(i + 1, min(i + length, n - 2)):
                table[src[j : j + 3]] = j
            i += length
            lit_start = i
        else:
            i += 1
    flush_literals(n)
    return bytes(out)
