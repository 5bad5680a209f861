"""Hostile and malformed files: every reader refuses them with a DataError naming the file and the problem, in
bounded time and memory, and never reads a file whose header disagrees with its body. Plus the fuzz harness."""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import sys
import time
import zipfile

import numpy as np
import pytest

from pointins.data import DataError, PointCloudDataset, fuzz, read, write
from pointins.data.readers import las as L

HAS_LASPY = importlib.util.find_spec("laspy") is not None
HAS_LAZ = HAS_LASPY and fuzz._has_laz()


def _cloud(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "coord": rng.uniform(-3, 3, (n, 3)).astype(np.float32),
        "color": rng.integers(0, 256, (n, 3)).astype(np.float32),
        "segment": rng.integers(0, 5, n),
        "instance": rng.integers(-1, 4, n),
    }


def _refused(path, match, names=None, **kw):
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=match) as ei:
        read(path, **kw)
    assert time.perf_counter() - t0 < 10
    assert not ei.value.unexpected, ei.value  # a specific check caught it, not the safety net
    assert (names or os.path.basename(str(path))) in str(ei.value)
    return ei.value


def _ply(tmp_path, header: str, body: bytes = b"", name="x.ply"):
    p = tmp_path / name
    p.write_bytes(header.encode() + body)
    return p


# ---- not regular files ------------------------------------------------------------------------------


def test_fifo_and_devices_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.ply"
    os.mkfifo(fifo)
    _refused(fifo, "FIFO")
    link = tmp_path / "zero.ply"
    link.symlink_to("/dev/zero")
    _refused(link, "character device")
    link2 = tmp_path / "null.npy"
    link2.symlink_to("/dev/null")
    _refused(link2, "character device")


def test_read_limit(tmp_path, monkeypatch):
    write(tmp_path / "a.ply", _cloud())
    monkeypatch.setenv("POINTINS_MAX_READ_BYTES", "100")
    _refused(tmp_path / "a.ply", "over the read limit")


# ---- PLY ------------------------------------------------------------------------------------------------

HEAD = (
    "ply\nformat binary_little_endian 1.0\nelement vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
)


def test_ply_duplicate_property_and_negative_counts(tmp_path):
    body = np.zeros((2, 3), "<f4").tobytes()
    _refused(_ply(tmp_path, HEAD.format(n=2) + "property float x\nend_header\n", body), "declared twice")
    _refused(_ply(tmp_path, HEAD.format(n=-1) + "end_header\n", body), "negative count")
    asc = "ply\nformat ascii 1.0\nelement vertex -1\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    _refused(_ply(tmp_path, asc, b"0 0 0\n1 1 1\n"), "negative count")
    _refused(_ply(tmp_path, "ply\nformat ascii 1.0\nproperty float x\nelement vertex 1\nend_header\n"), "before any")


def test_ply_trailing_or_missing_bytes(tmp_path):
    body = np.zeros((2, 3), "<f4").tobytes()
    _refused(_ply(tmp_path, HEAD.format(n=2) + "end_header\n", body + b"\0" * 12), "inconsistent")
    _refused(_ply(tmp_path, HEAD.format(n=3) + "end_header\n", body), "truncated")
    assert len(read(_ply(tmp_path, HEAD.format(n=2) + "end_header\n", body))["coord"]) == 2


def test_ply_ascii_rows_must_match(tmp_path):
    h = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    _refused(_ply(tmp_path, h, b"0 0 0 7\n1 1\n"), "vertex row 0 has 4 values")
    _refused(_ply(tmp_path, h, b"0 0 0\n1 1 1\n2 2 2\n"), "inconsistent")
    _refused(_ply(tmp_path, h, b"0 0 0\n"), "truncated")
    hl = h.replace("property float z\n", "property float z\nproperty uchar label\n")
    _refused(_ply(tmp_path, hl, b"0 0 0 1\n1 1 1 300\n"), "not u1 integers")


def test_ply_face_list_before_vertices(tmp_path):
    # a huge face count ahead of the vertices: refused at once from the byte count, no list walk
    h = ("ply\nformat binary_little_endian 1.0\nelement face 4000000000\nproperty list uchar int vertex_indices\n"
         + HEAD.format(n=1)[len("ply\nformat binary_little_endian 1.0\n"):] + "end_header\n")  # fmt: skip
    _refused(_ply(tmp_path, h, b"\x03" + bytes(12) * 50), "truncated")
    # signed list counts going negative
    h2 = h.replace("4000000000", "2").replace("list uchar", "list char")
    body = struct.pack("<b3i", 3, 0, 0, 0) + struct.pack("<b", -5) + bytes(12) + np.zeros(3, "<f4").tobytes()
    _refused(_ply(tmp_path, h2, body), "negative list length")
    # valid mixed lists, then vertices
    body = struct.pack("<b3i", 3, 0, 0, 0) + struct.pack("<b4i", 4, 0, 0, 0, 0) + np.ones(3, "<f4").tobytes()
    np.testing.assert_array_equal(read(_ply(tmp_path, h2, body))["coord"], [[1, 1, 1]])


def test_ply_list_fast_path_many_triangles_is_fast(tmp_path):
    d = _cloud(10)
    write(tmp_path / "m.ply", d, faces=np.zeros((300_000, 3), np.int64))
    t0 = time.perf_counter()
    assert len(read(tmp_path / "m.ply")["coord"]) == 10
    assert time.perf_counter() - t0 < 5


# ---- PCD ------------------------------------------------------------------------------------------------

PCD = "VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT {count}\nWIDTH {w}\nHEIGHT 1\nPOINTS {n}\nDATA {kind}\n"


@pytest.mark.parametrize(("count", "match"), [("0 1 1", "COUNT"), ("-1 1 1", "COUNT"), ("1000000000000 1 1", "COUNT")])
def test_pcd_bad_count(tmp_path, count, match):
    p = tmp_path / "x.pcd"
    p.write_bytes(PCD.format(count=count, w=2, n=2, kind="binary").encode() + bytes(24))
    _refused(p, match)


def test_pcd_points_checks(tmp_path):
    p = tmp_path / "x.pcd"
    p.write_bytes(PCD.format(count="1 1 1", w=3, n=-1, kind="ascii").encode() + b"0 0 0\n1 1 1\n2 2 2\n")
    _refused(p, "negative")
    p.write_bytes(PCD.format(count="1 1 1", w=3, n=2, kind="ascii").encode() + b"0 0 0\n1 1 1\n")
    _refused(p, "POINTS 2 != WIDTH 3")
    p.write_bytes(PCD.format(count="1 1 1", w=3, n=3, kind="ascii").encode() + b"0 0 0\n1 1 1\n")
    _refused(p, "truncated: the header declares 3 points, the body has 2")
    # PCL reads the declared points and ignores what follows them (pcd_io.cpp: readBodyASCII / readBodyBinary)
    p.write_bytes(PCD.format(count="1 1 1", w=2, n=2, kind="ascii").encode() + b"0 0 0\n1 1 1\n2 2 2\n")
    assert read(p)["coord"].tolist() == [[0, 0, 0], [1, 1, 1]]
    p.write_bytes(PCD.format(count="1 1 1", w=2, n=2, kind="ascii").encode() + b"0 0 0 5\n1 1\n")
    _refused(p, "row 0 has 4 values")
    p.write_bytes(PCD.format(count="1 1 1", w=2, n=2, kind="binary").encode() + bytes(25))
    assert len(read(p)["coord"]) == 2
    p.write_bytes(PCD.format(count="1 1 1", w=2, n=2, kind="binary").encode() + bytes(23))
    _refused(p, "truncated")


def test_pcd_compressed_size_checked_before_decompressing(tmp_path):
    p = tmp_path / "x.pcd"
    head = PCD.format(count="1 1 1", w=10**6, n=10**6, kind="binary_compressed").encode()
    p.write_bytes(head + struct.pack("<II", 4, 12 * 10**6) + b"\x00abc")
    _refused(p, "cannot expand")


# ---- LAS / LAZ -----------------------------------------------------------------------------------------


@pytest.fixture
def las_bytes(tmp_path):
    if not HAS_LASPY:
        pytest.skip("laspy not installed (needed to write the LAS fixture)")
    d = _cloud(40)
    d.pop("instance")
    write(tmp_path / "a.las", d)
    return (tmp_path / "a.las").read_bytes()


def test_las_hostile_headers(tmp_path, las_bytes):
    p = tmp_path / "x.las"
    b = bytearray(las_bytes)
    b[100:104] = struct.pack("<I", 0xFFFFFFFF)  # number of VLRs
    p.write_bytes(bytes(b))
    _refused(p, "VLRs")
    p.write_bytes(las_bytes[: len(las_bytes) - 15 * 34])  # 25 of 40 records
    e = _refused(p, "truncated")
    assert "40 point records" in str(e) and "holds 25" in str(e)
    b = bytearray(las_bytes)
    b[96:100] = struct.pack("<I", len(las_bytes) + 100)  # point data offset past the end
    p.write_bytes(bytes(b))
    _refused(p, "outside the file")
    p.write_bytes(las_bytes + bytes(34))
    _refused(p, "inconsistent")
    b = bytearray(las_bytes)
    b[107:111] = struct.pack("<I", 39)
    p.write_bytes(bytes(b))
    _refused(p, "inconsistent")


def test_las_decoded_without_laspy_matches_laspy(tmp_path, las_bytes):
    import laspy

    p = tmp_path / "a.las"
    p.write_bytes(las_bytes)
    ours, ref = read(p), laspy.read(str(p))
    np.testing.assert_allclose(ours["coord"][:, 0], np.asarray(ref.x), atol=1e-4)
    np.testing.assert_array_equal(ours["segment"], np.asarray(ref.classification))
    np.testing.assert_allclose(ours["color"][:, 1], np.asarray(ref.green) / 257.0, atol=1e-4)


@pytest.mark.skipif(not HAS_LAZ, reason="no LAZ backend")
def test_laz_with_inserted_bytes_is_refused_not_fatal(tmp_path):
    d = _cloud(3000)
    d.pop("instance")
    write(tmp_path / "a.laz", d)
    raw = (tmp_path / "a.laz").read_bytes()
    for pos in (400, len(raw) // 2, len(raw) - 30):
        p = tmp_path / "b.laz"
        p.write_bytes(raw[:pos] + bytes(range(20)) + raw[pos:])
        _refused(p, "LAZ|truncated|inconsistent")
    assert len(read(tmp_path / "a.laz")["coord"]) == 3000


@pytest.mark.skipif(not HAS_LAZ, reason="no LAZ backend")
def test_laz_decoder_abort_is_contained(tmp_path, monkeypatch):
    d = _cloud(50)
    d.pop("instance")
    write(tmp_path / "a.laz", d)
    child = tmp_path / "abort.py"
    child.write_text("import os\nos.abort()\n")
    monkeypatch.setattr(L, "_CHILD", child)
    _refused(tmp_path / "a.laz", "crashed")
    child.write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setattr(L, "LAZ_TIMEOUT_S", 1.0)
    _refused(tmp_path / "a.laz", "did not finish")


# ---- NPY / NPZ / Pointcept folders -----------------------------------------------------------------------


def test_npy_corrupt_headers_and_dtypes(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.zeros((4, 3), np.float32))
    raw = bytearray(p.read_bytes())
    i = raw.index(b"{")
    raw[i] = ord("(")  # unbalanced: tokenize.TokenError inside numpy
    p.write_bytes(bytes(raw))
    _refused(p, "corrupt NPY header")
    np.save(p, np.array([["a", "b", "c"]]))
    _refused(p, "non-numeric")
    np.save(p, np.zeros(3, "V12"))
    _refused(p, "non-numeric")
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _refused(p, "pickled")
    # a header promising far more than the body: refused before allocating
    hdr = np.lib.format.header_data_from_array_1_0(np.zeros((1, 3), np.float32))
    hdr["shape"] = (10**12, 3)
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, hdr)
    p.write_bytes(f.getvalue() + bytes(12))
    _refused(p, "over the read limit|truncated")


def test_npz_bomb_and_shapes(tmp_path):
    p = tmp_path / "b.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("coord.npy", "w", force_zip64=True) as m:
            np.lib.format.write_array_header_1_0(m, {"descr": "<f4", "fortran_order": False, "shape": (20_000_000, 3)})
            zero = bytes(2**22)
            for _ in range(240_000_000 // len(zero)):
                m.write(zero)
    assert p.stat().st_size < 1_000_000
    t0 = time.perf_counter()
    _refused(p, "zip bomb")
    assert time.perf_counter() - t0 < 2
    np.savez(p, coord=np.zeros((5, 3)), color=np.zeros((5, 4)))
    _refused(p, "color has shape")
    np.savez(p, coord=np.zeros((5, 3)), segment=np.zeros(6))
    _refused(p, "different lengths")


def test_pointcept_zero_d_and_labels(tmp_path):
    s = tmp_path / "scene"
    write(s, _cloud(5))
    np.save(s / "color.npy", np.float32(3.0))
    _refused(s, r"color\.npy: expected an array")
    write(s, _cloud(5))
    for bad, match in ((np.array([0, 1, 2, 3, 1e30]), "labels range"),
                       (np.array([0, 1, 2, 3, 2**64 - 1], np.uint64), "labels range"),
                       (np.array([0, 1, 2, 3, 0.5]), "integers"),
                       (np.array([0, 1, 2, 3, -7]), "labels range")):  # fmt: skip
        np.save(s / "segment.npy", bad)
        _refused(s, match)


def test_nuscenes_negative_panoptic(tmp_path):
    d = _cloud(6)
    write_nus = __import__("pointins.data.writers", fromlist=["write_nuscenes"]).write_nuscenes
    write_nus(tmp_path / "s.pcd.bin", d, panoptic_path=tmp_path / "s_panoptic.npz", raw_semantic=np.arange(6))
    np.savez_compressed(tmp_path / "s_panoptic.npz", data=np.array([1001, -5, 3000, 2, 2, 2]))
    _refused(tmp_path / "s.pcd.bin", "panoptic values", names="s_panoptic.npz")


def test_dataset_skips_every_malformed_file(tmp_path):
    write(tmp_path / "good.ply", _cloud(8))
    (tmp_path / "bad.pcd").write_bytes(PCD.format(count="0 1 1", w=2, n=2, kind="binary").encode())
    np.save(tmp_path / "bad.npy", np.array(["x"]))
    with pytest.warns(UserWarning, match="skipping"):
        ds = PointCloudDataset(tmp_path, on_error="skip")
        assert [ds[i]["name"] for i in range(len(ds))] == ["good.ply"] * 3


# ---- the fuzz harness ------------------------------------------------------------------------------------


def test_fuzz_short_seeded_run(tmp_path):
    """About a minute of mutated files of every format, each read in a memory-limited child with a timeout."""
    seconds = float(os.environ.get("POINTINS_FUZZ_SECONDS", "45"))
    rep = fuzz.run(seconds=seconds, seed=int(os.environ.get("POINTINS_FUZZ_SEED", "0")), out=tmp_path, progress=False)
    print(rep.table(), f"\n{rep.cases} cases, peak RSS {rep.peak_rss_mb:.0f} MB, slowest {rep.slowest_s:.2f} s")
    assert rep.cases >= len(rep.per_format) * 5
    assert not rep.failures, rep.failures[:5]
    assert set(rep.per_format) >= {f for f in fuzz.FORMATS if not f.startswith("la")}


def test_fuzz_oracle_catches_a_lenient_reader(tmp_path, monkeypatch):
    """The harness is not vacuous: a reader that ignores trailing bytes where the format's tools refuse them, or
    crashes, is reported; bytes after a PCD body, which PCL reads past, are not held against a read."""
    seeds = fuzz.make_seeds(tmp_path / "s")
    f = tmp_path / "s" / "be.ply"
    f.write_bytes(f.read_bytes() + bytes(16))
    assert fuzz._judge({"outcome": "ok", "points": 40}, "ply-be", [f]) is not None
    assert fuzz._judge({"outcome": "crash"}, "ply-be", [f]) is not None
    assert fuzz._judge({"outcome": "DataError"}, "ply-be", [f]) is None
    g = tmp_path / "s" / "pcd-binary.pcd"
    g.write_bytes(g.read_bytes() + bytes(16))
    assert fuzz._judge({"outcome": "ok", "points": 40}, "pcd-binary", [g]) is None
    g.write_bytes(g.read_bytes()[:-40])  # now shorter than the declared points: a read is wrong
    assert fuzz._judge({"outcome": "ok", "points": 40}, "pcd-binary", [g]) is not None
    assert "ply-le" in seeds
    data, what = fuzz.mutate(
        b"ply\nformat ascii 1.0\nelement vertex 3\nend_header\n1 2 3\n", __import__("random").Random(1)
    )
    assert isinstance(data, bytes) and what


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS semantics")
def test_fuzz_worker_reports_crash_and_hang(tmp_path):
    w = fuzz._Worker(2048 * 2**20)
    try:
        p = tmp_path / "x.ply"
        write(p, _cloud(5))
        res = w.run({"id": 0, "path": str(p), "kind": None}, 30)
        assert res["outcome"] == "ok" and res["points"] == 5
        w.p.stdin.write("not json\n")
        w.p.stdin.flush()
        res = w.run({"id": 1, "path": str(p), "kind": None}, 5)
        assert res["outcome"] in ("crash", "hang")
    finally:
        w.kill()


def test_ply_header_lines_end_at_newline_only(tmp_path):
    """Found by the long fuzz run: a flipped bit turned a header '\\n' into '\\v'; str.splitlines split there
    too, so the corrupt header was read as if intact."""
    p = tmp_path / "le.ply"
    write(p, _cloud(10), faces=np.array([[0, 1, 2]]))
    raw = p.read_bytes()
    i = raw.index(b"\nproperty list")
    p.write_bytes(raw[:i] + b"\x0b" + raw[i + 1 :])
    _refused(p, "bad PLY element line")


def test_pcd_mangled_header_key_is_refused(tmp_path):
    """Fuzz case 36631 (2026-12-07): 'POINTS 361' mangled to 'POINTS\\xa0 261' was read by WIDTH x HEIGHT while a
    reader that splits on Unicode blanks (or matches PCL's six-letter prefix) takes 261 points: refuse it."""
    p = tmp_path / "x.pcd"
    head = PCD.format(count="1 1 1", w=2, n=2, kind="ascii").replace("POINTS 2", "POINTS\xa0 1").encode("latin-1")
    p.write_bytes(head + b"0 0 0\n1 1 1\n")
    _refused(p, "does not start with a keyword")
