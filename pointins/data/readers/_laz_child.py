"""Child process of :func:`pointins.data.readers.las.read_las` for LAZ: ``python -I _laz_child.py PATH LIMIT COUNT``.

Decompresses with laspy under an address-space limit and writes the raw point records, an ``.npz`` holding
one (COUNT, record length) uint8 array, to stdout. Exit 3: laspy or its LAZ backend is missing; 2: laspy
refused the file (the message is on stderr). A decoder that aborts just ends this process.
"""

import io
import resource
import sys


def main() -> int:
    path, limit, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass
    try:
        import laspy
        import numpy as np
    except ImportError:
        return 3
    if not laspy.LazBackend.detect_available():
        return 3
    try:
        with laspy.open(path) as reader:
            if reader.header.point_count != count:
                print(f"laspy reads {reader.header.point_count} points, the header check {count}", file=sys.stderr)
                return 2
            points = reader.read_points(count)
        arr = points.array
        rec = np.frombuffer(arr.tobytes(), np.uint8).reshape(len(arr), arr.dtype.itemsize)
    except MemoryError:
        print("out of memory while decompressing", file=sys.stderr)
        return 2
    except Exception as e:  # laspy / lazrs raise many kinds
        print(f"{type(e).__name__}: {e}"[:500], file=sys.stderr)
        return 2
    buf = io.BytesIO()
    np.savez(buf, records=rec)
    sys.stdout.buffer.write(buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
