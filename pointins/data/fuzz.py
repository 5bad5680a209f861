"""Fuzzing the readers: ``python -m pointins.data.fuzz`` (the test suite runs a short seeded round).

Valid files of every format the package reads are written with :mod:`pointins.data.writers` (plus a few built
by hand: a PLY whose face list precedes its vertices, a structured NPY) and, in a checkout, taken from the
real-world corpus (``tests/data/realworld/``: files PCL, PDAL, LASzip, laspy and Open3D wrote; :data:`REAL_SEEDS`),
then mutated (byte flips, insertions,
deletions, truncations, header-field edits with boundary values, duplicated header lines) and read with
:func:`pointins.data.read` in **child processes** with an address-space limit and a per-file timeout. A case
passes when the read

* returns, or raises :class:`pointins.data.DataError` -- any other exception fails the case;
* does not kill its process (a signal, e.g. SIGABRT from a decoder) and finishes within the timeout;
* returns the number of points the (mutated) header declares, and for formats whose size the header fixes
  (binary PLY without lists, binary PCD, LAS, NPY, SemanticKITTI pairs), only when the size agrees:
  a file whose header disagrees with its body must be refused, not read.

    python -m pointins.data.fuzz --seconds 600 --out fuzz-report     # the long run; report.json + failures/
    python -m pointins.data.fuzz --cases 300 --seed 1                # a fixed number of cases

Failing inputs are copied to ``OUT/failures/`` with what happened, so they can become regression tests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["FORMATS", "FuzzReport", "make_seeds", "mutate", "run"]

# ------------------------------------------------------------------------------------------------
# seeds: one small valid file (or file group) per format
# ------------------------------------------------------------------------------------------------

FORMATS = ("ply-ascii", "ply-le", "ply-be", "ply-faces-first", "pcd-ascii", "pcd-binary", "pcd-compressed",
           "las", "laz", "npy", "npy-structured", "npz", "txt", "csv", "kitti", "nuscenes-lidarseg",
           "nuscenes-panoptic", "pointcept", "pcd-compressed-pcl", "pcd-rgb-pcl", "pcd-ascii-pcl", "pcd-binary-pcl",
           "pcd-binary-pdal", "pcd-organized-pcl", "pcd-compressed-open3d", "ply-le-open3d", "ply-ascii-pdal",
           "las-14-evlr-laspy", "las-utm-pdal", "laz-laszip", "laz-14-fmt8-laspy")  # fmt: skip


#: seeds from the real-world corpus (tests/data/realworld/, files written by the formats' own tools): name ->
#: (file, the format whose oracle judges it)
REAL_SEEDS = {
    "pcd-compressed-pcl": ("pointcloudlibrary__test__bun0.pcd", "pcd-compressed"),
    "pcd-rgb-pcl": ("pointcloudlibrary__test__car6.pcd", "pcd-compressed"),
    "pcd-ascii-pcl": ("pointcloudlibrary__test__bun4.pcd", "pcd-ascii"),
    "pcd-binary-pcl": ("pointcloudlibrary__test__colored_cloud.pcd", "pcd-binary"),
    "pcd-binary-pdal": ("pdal__test__data__pcd__autzen-utm.pcd", "pcd-binary"),
    "pcd-organized-pcl": ("pointcloudlibrary__test__2d__erosion_binary.pcd", "pcd-compressed"),
    "pcd-compressed-open3d": ("open3d-compressed.pcd", "pcd-compressed"),
    "ply-le-open3d": ("open3d-binary.ply", "ply-le"),
    "ply-ascii-pdal": ("pdal__test__data__ply__mesh.ply", "ply-ascii"),
    "las-14-evlr-laspy": ("laspy__tests__data__1_4_w_evlr.las", "las"),
    "las-utm-pdal": ("pdal__test__data__autzen__autzen-utm.las", "las"),
    "laz-laszip": ("pdal__test__data__laszip__laszip-generated.laz", "laz"),
    "laz-14-fmt8-laspy": ("laspy-1.4-fmt8.laz", "laz"),
}
REALWORLD = Path(__file__).resolve().parents[2] / "tests" / "data" / "realworld"


def _cloud(rng: np.random.Generator, n: int) -> dict:
    return {
        "coord": rng.uniform(-5, 5, (n, 3)).astype(np.float32),
        "color": rng.integers(0, 256, (n, 3)).astype(np.float32),
        "normal": rng.normal(size=(n, 3)).astype(np.float32),
        "strength": rng.uniform(0, 1, (n, 1)).astype(np.float32),
        "segment": rng.integers(-1, 12, n),
        "instance": rng.integers(-1, 6, n),
    }


def _has_laz() -> bool:
    try:
        import laspy

        return bool(laspy.LazBackend.detect_available())
    except Exception:
        return False


def make_seeds(folder: Path, seed: int = 0, n: int = 40) -> dict[str, dict]:
    """Write one valid case per format under ``folder``: {format: {"path": main file or folder, "files": [...],
    "kind": read kind or None}}. Formats whose writer is not installed (laspy) are left out."""
    from pointins.data import writers as w

    rng = np.random.default_rng(seed)
    d = _cloud(rng, n)
    seeds: dict[str, dict] = {}

    def add(name, path, files=None, kind=None):
        seeds[name] = {"path": str(path), "files": [str(f) for f in (files or [path])], "kind": kind}

    folder.mkdir(parents=True, exist_ok=True)
    w.write_ply(folder / "a.ply", d, binary=False)
    add("ply-ascii", folder / "a.ply")
    faces = rng.integers(0, n, (7, 3))
    w.write_ply(folder / "le.ply", d, binary=True, faces=faces)
    add("ply-le", folder / "le.ply")
    w.write_ply(folder / "be.ply", d, binary=True, big_endian=True)
    add("ply-be", folder / "be.ply")
    # faces before vertices, lists of mixed lengths: the list-skipping path
    body = b"".join(struct.pack("<B", k) + struct.pack(f"<{k}i", *rng.integers(0, n, k)) for k in (3, 4, 3, 5))
    verts = d["coord"].astype("<f4").tobytes()
    head = (f"ply\nformat binary_little_endian 1.0\nelement face 4\nproperty list uchar int vertex_indices\n"
            f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\nend_header\n")  # fmt: skip
    (folder / "ff.ply").write_bytes(head.encode() + body + verts)
    add("ply-faces-first", folder / "ff.ply")
    for enc, name in (("ascii", "pcd-ascii"), ("binary", "pcd-binary"), ("binary_compressed", "pcd-compressed")):
        w.write_pcd(folder / f"{name}.pcd", d, encoding=enc)
        add(name, folder / f"{name}.pcd")
    try:
        import laspy  # noqa: F401

        las = {k: v for k, v in d.items() if k not in ("normal", "instance")}
        las["segment"] = np.abs(d["segment"]) % 30
        w.write_las(folder / "a.las", las)
        add("las", folder / "a.las")
        if _has_laz():
            w.write_las(folder / "a.laz", las)
            add("laz", folder / "a.laz")
    except ImportError:
        pass
    w.write_npy(folder / "a.npy", d)
    add("npy", folder / "a.npy")
    rec = np.zeros(n, [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "<i4")])
    rec["x"], rec["y"], rec["z"], rec["label"] = d["coord"].T[0], d["coord"].T[1], d["coord"].T[2], d["segment"]
    np.save(folder / "s.npy", rec)
    add("npy-structured", folder / "s.npy")
    w.write_npz(folder / "a.npz", d)
    add("npz", folder / "a.npz")
    w.write_txt(folder / "a.txt", d)
    add("txt", folder / "a.txt")
    w.write_txt(folder / "a.csv", d, delimiter=",")
    add("csv", folder / "a.csv")
    k = folder / "kitti"
    raw = rng.choice([0, 10, 11, 40, 44, 48, 50, 70, 80], n).astype(np.uint32)
    w.write_kitti(k / "000000.bin", d, label_path=k / "000000.label", raw_semantic=raw)
    add("kitti", k / "000000.bin", [k / "000000.bin", k / "000000.label"], "kitti")
    nraw = rng.integers(0, 32, n)
    nl = folder / "nus-l"
    w.write_nuscenes(nl / "s.pcd.bin", d, lidarseg_path=nl / "s_lidarseg.bin", raw_semantic=nraw)
    add("nuscenes-lidarseg", nl / "s.pcd.bin", [nl / "s.pcd.bin", nl / "s_lidarseg.bin"], "nuscenes")
    npn = folder / "nus-p"
    w.write_nuscenes(npn / "s.pcd.bin", d, panoptic_path=npn / "s_panoptic.npz", raw_semantic=nraw)
    add("nuscenes-panoptic", npn / "s.pcd.bin", [npn / "s.pcd.bin", npn / "s_panoptic.npz"], "nuscenes")
    pc = folder / "scene0000_00"
    w.write_pointcept(pc, d)
    add("pointcept", pc, sorted(pc.glob("*.npy")), "pointcept")
    for name, (file, _) in REAL_SEEDS.items():  # files the formats' own tools wrote, where the checkout has them
        src = REALWORLD / file
        if src.is_file() and (not name.startswith("laz") or _has_laz()):
            dest = folder / "real" / name / file
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest)
            add(name, dest)
    return seeds


# ------------------------------------------------------------------------------------------------
# mutations
# ------------------------------------------------------------------------------------------------

_BOUNDARY = ("-1", "0", "1", "-2147483649", "2147483647", "2147483648", "4294967295", "4294967296",
             "1000000000000", "9223372036854775807", "18446744073709551616", "1e30", "nan", "-0", "3.5",
             "")  # fmt: skip
_BOUNDARY_INTS = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def _header_end(data: bytes) -> int:
    """Where a text header ends (PLY end_header / PCD DATA line / NPY header), else a small prefix."""
    for marker in (b"end_header\n", b"end_header\r\n"):
        i = data.find(marker)
        if i >= 0:
            return i + len(marker)
    i = data.find(b"\nDATA ")
    if i >= 0:
        j = data.find(b"\n", i + 1)
        return j + 1 if j > 0 else len(data)
    if data[:6] == b"\x93NUMPY":
        return min(len(data), 10 + int.from_bytes(data[8:10], "little"))
    if data[:4] == b"LASF":
        return min(len(data), 375)
    return min(len(data), 64)


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random mutation of ``data``: (new bytes, description)."""
    n = len(data)
    hend = _header_end(data)
    kind = rng.choice(["flip", "flip-header", "insert", "insert-body", "delete", "truncate", "field", "field",
                       "binary-field", "dup-line", "append"])  # fmt: skip
    if n == 0:
        return bytes([rng.randrange(256)]) * rng.randrange(1, 64), "fill"
    if kind in ("flip", "flip-header"):
        hi = hend if kind == "flip-header" and hend > 0 else n
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(hi)] ^= 1 << rng.randrange(8)
        return bytes(b), kind
    if kind in ("insert", "insert-body", "append"):
        pos = n if kind == "append" else rng.randrange(hend, n + 1) if kind == "insert-body" else rng.randrange(n + 1)
        k = rng.choice([1, 2, 3, 4, 8, 16, 20, rng.randrange(1, 200)])
        chunk = bytes(rng.randrange(256) for _ in range(k))
        return data[:pos] + chunk + data[pos:], f"{kind} {k}@{pos}"
    if kind == "delete":
        pos = rng.randrange(n)
        k = rng.randint(1, min(32, n - pos))
        return data[:pos] + data[pos + k :], f"delete {k}@{pos}"
    if kind == "truncate":
        cut = rng.randrange(n)
        return data[:cut], f"truncate {cut}/{n}"
    if kind == "field" and hend:
        head = data[:hend].decode("latin-1")
        nums = [m for m in re.finditer(r"-?\d+(\.\d+)?", head)]
        if nums:
            m = rng.choice(nums)
            val = rng.choice(_BOUNDARY)
            new = head[: m.start()] + val + head[m.end() :]
            return new.encode("latin-1") + data[hend:], f"field {m.group()}->{val!r}"
    if kind == "dup-line" and hend:
        lines = data[:hend].split(b"\n")
        if len(lines) > 2:
            i = rng.randrange(1, len(lines) - 1)
            lines.insert(i, lines[i])
            return b"\n".join(lines) + data[hend:], f"dup-line {i}"
    # binary-field: overwrite 1/2/4/8 bytes of the header with a boundary integer
    size = rng.choice([1, 2, 4, 8])
    pos = rng.randrange(max(1, min(hend or 64, n) - size + 1))
    val = rng.choice(_BOUNDARY_INTS) if size < 8 else rng.choice([0, 2**63 - 1, 2**64 - 1, 2**40])
    val &= (1 << (8 * size)) - 1
    b = bytearray(data)
    b[pos : pos + size] = val.to_bytes(size, "little")[: len(b[pos : pos + size])]
    return bytes(b), f"binary-field {size}B@{pos}={val:#x}"


# ------------------------------------------------------------------------------------------------
# the oracle: what the (mutated) header declares
# ------------------------------------------------------------------------------------------------


def declared(fmt: str, files: list[Path]) -> tuple[int | None, bool]:
    """(points the header declares or None when it cannot say, whether the header fixes the file size and the
    size agrees). Parsing is deliberately simple: when this cannot parse the header, it does not judge."""
    fmt = REAL_SEEDS[fmt][1] if fmt in REAL_SEEDS else fmt  # a real-world seed is judged as its format
    main = files[0]
    try:
        data = main.read_bytes() if main.is_file() else b""
    except OSError:
        return None, True
    try:
        if fmt.startswith("ply"):
            hend = _header_end(data)
            head = data[:hend].decode("latin-1").split("\n")
            elems, cur = [], None
            for ln in head:
                t = ln.split()
                if t[:1] == ["element"]:
                    cur = [t[1], int(t[2]), []]
                    elems.append(cur)
                elif t[:1] == ["property"] and cur is not None:
                    cur[2].append(t[1:])
            vert = [e for e in elems if e[0] == "vertex"]
            if len(vert) != 1:
                return None, True
            count = vert[0][1]
            sizes = {"char": 1, "uchar": 1, "short": 2, "ushort": 2, "int": 4, "uint": 4, "float": 4, "double": 8,
                     "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "float32": 4,
                     "float64": 8}  # fmt: skip
            if b"ascii" in data[:hend] or any(p[0] == "list" for e in elems for p in e[2]):
                return count, True
            total = sum(e[1] * sum(sizes[p[0]] for p in e[2]) for e in elems)
            return count, hend + total == len(data)
        if fmt.startswith("pcd"):
            hend = _header_end(data)
            head = {}
            for ln in data[:hend].decode("latin-1").split("\n"):
                t = ln.split()
                if t and not t[0].startswith("#"):
                    head[t[0].upper()] = t[1:]
            count = int(head["POINTS"][0])
            if fmt == "pcd-binary":  # PCL reads the declared points and ignores bytes after them
                size = sum(int(s) * int(c) for s, c in zip(head["SIZE"], head.get("COUNT", ["1"] * 99), strict=False))
                return count, hend + count * size <= len(data)
            return count, True
        if fmt == "las" or fmt == "laz":
            minor = data[25]
            count = struct.unpack_from("<I", data, 107)[0]
            if minor >= 4:
                count = struct.unpack_from("<Q", data, 247)[0]
            if fmt == "las":
                off, rec = struct.unpack_from("<I", data, 96)[0], struct.unpack_from("<H", data, 105)[0]
                if minor >= 3:  # waveform packets or EVLRs may follow the points
                    return count, off + count * rec <= len(data)
                return count, off + count * rec == len(data)
            return count, True
        if fmt.startswith("npy"):
            import io

            f = io.BytesIO(data)
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dt = read(f)
            need = int(np.prod(shape)) * dt.itemsize
            return (shape[0] if shape else None), f.tell() + need == len(data)
        if fmt == "kitti":
            labels = files[1].stat().st_size if files[1].exists() else None
            ok = main.stat().st_size % 16 == 0 and (labels is None or labels == main.stat().st_size // 4)
            return main.stat().st_size // 16, ok
        if fmt.startswith("nuscenes"):
            return main.stat().st_size // 20, main.stat().st_size % 20 == 0
    except Exception:
        return None, True
    return None, True


# ------------------------------------------------------------------------------------------------
# child workers
# ------------------------------------------------------------------------------------------------

_WORKER = r"""
import json, os, resource, sys, time, warnings
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
warnings.simplefilter("ignore")
from pointins.data import DataError, read
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    t = time.perf_counter()
    res = {"id": job["id"]}
    try:
        out = read(job["path"], kind=job["kind"])
        res.update(outcome="ok", points=int(len(out["coord"])))
    except DataError as e:
        if e.unexpected:  # caught by read()'s safety net, not by a check of its own
            res.update(outcome="exception", message="unchecked: " + str(e)[-500:])
        else:
            res.update(outcome="DataError", message=str(e)[-300:])
    except BaseException as e:
        res.update(outcome="exception", message=f"{type(e).__name__}: {e}"[-500:])
    res["seconds"] = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rc = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res["maxrss_kb"] = max(ru, rc)
    print(json.dumps(res), flush=True)
"""


class _Worker:
    def __init__(self, mem_bytes: int):
        self.mem = mem_bytes
        env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.p = subprocess.Popen([sys.executable, "-c", _WORKER, str(mem_bytes)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
                                  bufsize=1)  # fmt: skip
        ready = self._line(60.0)
        if ready is None or not ready.get("ready"):
            self.kill()
            raise RuntimeError("pointins.data.fuzz: a worker process failed to start (import pointins.data)")

    def _line(self, timeout: float):
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not r:
            return None
        line = self.p.stdout.readline()
        return json.loads(line) if line else None

    def run(self, job: dict, timeout: float) -> dict:
        try:
            self.p.stdin.write(json.dumps(job) + "\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        res = self._line(timeout)
        if res is not None:
            return res
        if self.p.poll() is None:
            self.kill()
            return {"id": job["id"], "outcome": "hang", "seconds": timeout}
        self.p.wait()
        return {"id": job["id"], "outcome": "crash", "message": f"worker exit {self.p.returncode}"}

    def alive(self) -> bool:
        return self.p.poll() is None

    def kill(self) -> None:
        try:
            self.p.kill()
            self.p.wait(5)
        except Exception:
            pass


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------


@dataclass
class FuzzReport:
    cases: int = 0
    per_format: dict = field(default_factory=dict)  # format -> {"cases", "ok", "DataError", "fail"}
    failures: list = field(default_factory=list)
    peak_rss_mb: float = 0.0
    peak_case: str = ""  # the case after which the peak was last raised (format, mutation)
    slowest_s: float = 0.0
    slowest_case: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"cases": self.cases, "per_format": self.per_format, "failures": self.failures,
                "peak_rss_mb": round(self.peak_rss_mb, 1), "peak_case": self.peak_case,
                "slowest_s": round(self.slowest_s, 3), "slowest_case": self.slowest_case,
                "seconds": round(self.seconds, 1)}  # fmt: skip

    def table(self) -> str:
        rows = ["| format | cases | read | DataError | failed |", "|---|---|---|---|---|"]
        for f, c in sorted(self.per_format.items()):
            rows.append(f"| {f} | {c['cases']} | {c['ok']} | {c['DataError']} | {c['fail']} |")
        return "\n".join(rows)


def _judge(res: dict, fmt: str, files: list[Path]) -> str | None:
    """Why the case failed, or None."""
    out = res.get("outcome")
    if out in ("crash", "hang", "exception"):
        return f"{out}: {res.get('message', '')}"
    if out == "ok":
        count, size_ok = declared(fmt, files)
        if not size_ok:
            return "read a file whose header disagrees with its size"
        if count is not None and res.get("points") != count:
            return f"read {res.get('points')} points, the header declares {count}"
    return None


def run(cases: int | None = None, seconds: float | None = None, seed: int = 0, formats=None, timeout: float = 30.0,
        mem_mb: int = 3072, out: str | os.PathLike | None = None, progress: bool = True) -> FuzzReport:  # fmt: skip
    """Fuzz the readers (see the module docstring); stops after ``cases`` cases or ``seconds`` (whichever first)."""
    if cases is None and seconds is None:
        cases = 200
    rng = random.Random(seed)
    report = FuzzReport()
    tmp = Path(tempfile.mkdtemp(prefix="pointins-fuzz-"))
    worker = None
    t0 = time.perf_counter()
    try:
        seeds = make_seeds(tmp / "seeds", seed)
        names = [f for f in (formats or FORMATS) if f in seeds]
        if not names:
            raise ValueError(f"pointins.data.fuzz: no formats to fuzz among {formats} (available: {sorted(seeds)})")
        worker = _Worker(mem_mb * 2**20)
        from pointins._progress import progress_bar

        bar = progress_bar(cases or 0, "fuzzing readers", progress and cases is not None)
        i = 0
        while (cases is None or i < cases) and (seconds is None or time.perf_counter() - t0 < seconds):
            fmt = names[i % len(names)]
            s = seeds[fmt]
            case = tmp / f"case{i}"
            src = Path(s["path"])
            if src.is_dir():
                shutil.copytree(src, case / src.name)
            else:
                for f in s["files"]:
                    (case / Path(f).relative_to(src.parent)).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(f, case / Path(f).relative_to(src.parent))
            files = [case / (Path(f).relative_to(src.parent) if not src.is_dir() else Path(src.name) /
                             Path(f).relative_to(src))
                     for f in s["files"]]  # fmt: skip
            victim = rng.choice(files)
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                data, what = mutate(victim.read_bytes(), rng)
                victim.write_bytes(data)
            target = case / src.name
            if not worker.alive():
                worker = _Worker(mem_mb * 2**20)
            res = worker.run({"id": i, "path": str(target), "kind": s["kind"]}, timeout)
            if res["outcome"] in ("crash", "hang"):
                worker.kill()
                worker = _Worker(mem_mb * 2**20)
            why = _judge(res, fmt, files)
            c = report.per_format.setdefault(fmt, {"cases": 0, "ok": 0, "DataError": 0, "fail": 0})
            c["cases"] += 1
            if why:
                c["fail"] += 1
                rec = {"case": i, "format": fmt, "file": victim.name, "mutation": what, "why": why}
                report.failures.append(rec)
                if out is not None:
                    dest = Path(out) / "failures" / f"case{i}-{fmt}"
                    shutil.copytree(case, dest, dirs_exist_ok=True)
                    (dest / "why.json").write_text(json.dumps(rec, indent=2))
            else:
                c[res["outcome"]] += 1
            rss = res.get("maxrss_kb", 0) / 1024
            if rss > report.peak_rss_mb:
                report.peak_rss_mb, report.peak_case = rss, f"{fmt} [{what}] -> {res.get('outcome')}"
            if float(res.get("seconds", 0.0)) > report.slowest_s:
                report.slowest_s = float(res["seconds"])
                report.slowest_case = f"{fmt} [{what}] -> {res.get('outcome')}"
            shutil.rmtree(case, ignore_errors=True)
            i += 1
            bar.update(1)
        bar.close()
        report.cases = i
    finally:
        if worker is not None:
            worker.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pointins.data.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=None, help="number of cases (default 200 when --seconds is unset)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--formats", nargs="*", default=None, choices=FORMATS, help="default: all")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds one read may take (a hang past it fails)")
    p.add_argument("--mem-mb", type=int, default=3072, help="address-space limit of the reading process")
    p.add_argument("--out", default=None, help="folder for report.json and failures/")
    a = p.parse_args(argv)
    if (a.cases is not None and a.cases < 1) or (a.seconds is not None and a.seconds <= 0):
        p.error("--cases and --seconds must be positive")
    rep = run(a.cases, a.seconds, a.seed, a.formats, a.timeout, a.mem_mb, a.out)
    print(rep.table())
    print(f"{rep.cases} cases in {rep.seconds:.0f} s; failures {len(rep.failures)}; peak RSS {rep.peak_rss_mb:.0f} MB "
          f"({rep.peak_case}); slowest read {rep.slowest_s:.2f} s ({rep.slowest_case})")  # fmt: skip
    for f in rep.failures[:20]:
        print(f"  case {f['case']} {f['format']} {f['file']} [{f['mutation']}]: {f['why']}")
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
