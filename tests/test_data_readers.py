"""Readers and writers: round trips for every format, hand-written files, corrupt files, datasets."""

from __future__ import annotations

import importlib.util
import json
import zipfile

import numpy as np
import pytest

from pointins.data import DataError, PointCloudDataset, find_scenes, read, write
from pointins.data import readers as R
from pointins.data import writers as W
from pointins.data.readers import _lzf

HAS_LASPY = importlib.util.find_spec("laspy") is not None
HAS_LAZ = HAS_LASPY and (
    importlib.util.find_spec("lazrs") is not None or importlib.util.find_spec("laszip") is not None
)


def _cloud(n=257, seed=0, labels=True):
    rng = np.random.default_rng(seed)
    nrm = rng.normal(size=(n, 3))
    d = {
        "coord": (rng.normal(size=(n, 3)) * 5).astype(np.float32),
        "color": rng.integers(0, 256, (n, 3)).astype(np.float32),
        "normal": (nrm / np.linalg.norm(nrm, axis=1, keepdims=True)).astype(np.float32),
        "strength": rng.random((n, 1)).astype(np.float32),
    }
    if labels:
        d["segment"] = rng.integers(-1, 20, n).astype(np.int64)
        d["instance"] = rng.integers(-1, 30, n).astype(np.int64)
    return d


def _same(got, want, keys, atol=1e-6):
    assert sorted(got) == sorted([*keys, "coord_offset"]), sorted(got)
    assert got["coord_offset"].dtype == np.float64 and got["coord_offset"].shape == (3,)
    np.testing.assert_array_equal(got["coord_offset"], 0)  # small float32-range clouds are not re-centred
    for k in keys:
        assert got[k].shape == (want[k].reshape(len(want["coord"]), -1).shape if k in ("strength",) else want[k].shape)
        np.testing.assert_allclose(got[k].astype(np.float64), want[k].astype(np.float64), atol=atol, err_msg=k)
    assert got["coord"].dtype == np.float32
    for k in ("segment", "instance"):
        if k in got:
            assert got[k].dtype == np.int64


ALL = ["coord", "color", "normal", "strength", "segment", "instance"]


@pytest.mark.parametrize(
    ("name", "kwargs", "atol"),
    [
        ("a.ply", {}, 0),
        ("a.ply", {"binary": False}, 1e-5),
        ("a.ply", {"big_endian": True}, 0),
        ("a.ply", {"faces": np.array([[0, 1, 2], [2, 3, 4]])}, 0),
        ("a.ply", {"binary": False, "faces": np.array([[0, 1, 2]])}, 1e-5),
        ("a.pcd", {"encoding": "ascii"}, 1e-5),
        ("a.pcd", {"encoding": "binary"}, 0),
        ("a.pcd", {"encoding": "binary_compressed"}, 0),
        ("a.npy", {}, 0),
        ("a.npz", {}, 0),
        ("a.txt", {}, 1e-5),
        ("a.xyz", {"delimiter": "\t"}, 1e-5),
        ("a.csv", {}, 1e-5),
        ("scene", {}, 0),
    ],
)
def test_round_trip(tmp_path, name, kwargs, atol):
    d = _cloud()
    path = tmp_path / name
    write(path, d, **kwargs)
    _same(read(path), d, ALL, atol)


@pytest.mark.parametrize("n", [0, 1])
def test_round_trip_tiny(tmp_path, n):
    d = _cloud(n)
    for name in ("a.ply", "b.pcd", "c.npz", "scene"):
        write(tmp_path / name, d)
        assert len(read(tmp_path / name)["coord"]) == n


def test_headerless_columns(tmp_path):
    d = _cloud(labels=False)
    xyz = d["coord"]
    for cols, keys in [
        ([xyz], ["coord"]),
        ([xyz, d["strength"]], ["coord", "strength"]),
        ([xyz, d["color"]], ["coord", "color"]),
        ([xyz, d["color"], d["strength"]], ["coord", "color", "strength"]),
        ([xyz, d["color"], d["normal"]], ["coord", "color", "normal"]),
        ([xyz, d["color"], d["normal"], d["strength"]], ["coord", "color", "normal", "strength"]),
    ]:
        arr = np.concatenate(cols, 1)
        np.savetxt(tmp_path / "p.txt", arr, fmt="%.7f")
        np.save(tmp_path / "p.npy", arr.astype(np.float32))
        for f in ("p.txt", "p.npy"):
            _same(read(tmp_path / f), d, keys, atol=1e-5)
    np.save(tmp_path / "five.npy", np.zeros((4, 5), np.float32))
    with pytest.raises(DataError, match=r"five\.npy: 5 unnamed columns"):
        read(tmp_path / "five.npy")


def test_hand_written_ply_and_pcd(tmp_path):
    # PLY as other tools write it: a face element first, colours as uchar, labels as "class", CRLF-free text
    (tmp_path / "h.ply").write_text(
        "ply\nformat ascii 1.0\ncomment made by hand\nelement face 1\nproperty list uchar int vertex_indices\n"
        "element vertex 3\nproperty double x\nproperty double y\nproperty double z\nproperty uchar red\n"
        "property uchar green\nproperty uchar blue\nproperty int class\nend_header\n3 0 1 2\n"
        "0 0 0 255 0 0 4\n1 0.5 -2 0 255 0 4\n2.25 1 3 0 0 255 7\n"
    )
    r = read(tmp_path / "h.ply")
    np.testing.assert_allclose(r["coord"], [[0, 0, 0], [1, 0.5, -2], [2.25, 1, 3]])
    np.testing.assert_array_equal(r["color"], [[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    np.testing.assert_array_equal(r["segment"], [4, 4, 7])
    # float colours in [0, 1] are fractions
    (tmp_path / "f.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
        "property float red\nproperty float green\nproperty float blue\nend_header\n0 0 0 1 0 0.5\n1 1 1 0 1 0\n"
    )
    np.testing.assert_allclose(read(tmp_path / "f.ply")["color"], [[255, 0, 127.5], [0, 255, 0]])
    # PCL ASCII: rgb as the packed integer; an organized cloud with a NaN (missing return)
    (tmp_path / "h.pcd").write_text(
        "# .PCD v.7 - Point Cloud Data file format\nVERSION .7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F F\n"
        "COUNT 1 1 1 1\nWIDTH 2\nHEIGHT 2\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 4\nDATA ascii\n"
        f"1 2 3 {(10 << 16) | (20 << 8) | 30}\n4 5 6 {255 << 16}\nnan nan nan 0\n7 8 9 {0xFF}\n"
    )
    with pytest.raises(DataError, match=r"h.pcd: 1 of 4 points have NaN/Inf coordinates.*nan='drop'"):
        read(tmp_path / "h.pcd")
    r = read(tmp_path / "h.pcd", nan="drop")
    np.testing.assert_allclose(r["coord"], [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    np.testing.assert_array_equal(r["color"], [[10, 20, 30], [255, 0, 0], [0, 0, 255]])


def test_pcd_multi_count_field_and_padding(tmp_path):
    n = 5
    rng = np.random.default_rng(1)
    xyz = rng.random((n, 3)).astype(np.float32)
    hist = rng.random((n, 4)).astype(np.float32)
    lab = np.arange(n, dtype=np.uint32)
    rec = np.empty(n, [("xyz", "<f4", (3,)), ("h", "<f4", (4,)), ("label", "<u4")])
    rec["xyz"], rec["h"], rec["label"] = xyz, hist, lab
    head = (
        "VERSION 0.7\nFIELDS x y z _ label\nSIZE 4 4 4 4 4\nTYPE F F F F U\nCOUNT 1 1 1 4 1\n"
        f"WIDTH {n}\nHEIGHT 1\nPOINTS {n}\nDATA binary\n"
    )
    (tmp_path / "m.pcd").write_bytes(head.encode() + rec.tobytes())
    r = read(tmp_path / "m.pcd")
    np.testing.assert_array_equal(r["coord"], xyz)
    np.testing.assert_array_equal(r["segment"], lab)
    # the same in binary_compressed (column-major)
    raw = xyz[:, 0].tobytes() + xyz[:, 1].tobytes() + xyz[:, 2].tobytes() + hist.tobytes() + lab.tobytes()
    comp = _lzf.compress(raw)
    body = np.array([len(comp), len(raw)], "<u4").tobytes() + comp
    (tmp_path / "c.pcd").write_bytes(head.replace("DATA binary", "DATA binary_compressed").encode() + body)
    np.testing.assert_array_equal(read(tmp_path / "c.pcd")["coord"], xyz)


def test_lzf_codec():
    rng = np.random.default_rng(0)
    for data in [b"", b"x", b"ab" * 300, bytes(5000), rng.integers(0, 3, 20000).astype(np.uint8).tobytes()]:
        c = _lzf.compress(data)
        assert _lzf.decompress(c, len(data)) == data
    assert len(_lzf.compress(bytes(5000))) < 100
    # a hand-made stream: literal "abc", then a back-reference of 6 bytes at distance 3 (overlapping copy)
    stream = bytes([2]) + b"abc" + bytes([(4 << 5) | 0, 2])
    assert _lzf.decompress(stream, 9) == b"abcabcabc"
    with pytest.raises(_lzf.LZFError, match="points before the start"):
        _lzf.decompress(bytes([(1 << 5), 9]), 3)
    with pytest.raises(_lzf.LZFError, match="passes the end"):
        _lzf.decompress(bytes([10]) + b"ab", 11)


@pytest.mark.skipif(not HAS_LASPY, reason="laspy not installed")
@pytest.mark.parametrize("suffix", [".las", ".laz"])
def test_las_round_trip(tmp_path, suffix):
    if suffix == ".laz" and not HAS_LAZ:
        pytest.skip("no LAZ backend (lazrs or laszip)")
    d = _cloud()
    d["segment"] = np.abs(d["segment"]) % 30
    d.pop("instance")
    d.pop("normal")
    write(tmp_path / f"a{suffix}", d)
    r = read(tmp_path / f"a{suffix}")
    _same(r, d, ["coord", "color", "strength", "segment"], atol=1e-4)
    (tmp_path / "bad.las").write_bytes(b"LASF" + bytes(50))
    with pytest.raises(DataError, match=r"bad\.las: not a LAS/LAZ file"):
        read(tmp_path / "bad.las")


def test_semantic_kitti(tmp_path):
    root = tmp_path / "kitti"
    raw = np.array([10, 10, 40, 48, 0, 252, 30, 30, 70, 99], np.uint32)
    inst = np.array([1, 2, 0, 0, 0, 1, 5, 5, 0, 0], np.uint32)
    d = _cloud(len(raw), labels=False)
    d["instance"] = inst.astype(np.int64)
    for seq in ("00", "08"):
        W.write_kitti(root / "sequences" / seq / "velodyne" / "000000.bin", d,
                      root / "sequences" / seq / "labels" / "000000.label", raw_semantic=raw)  # fmt: skip
    r = read(root / "sequences" / "08" / "velodyne" / "000000.bin")
    np.testing.assert_allclose(r["coord"], d["coord"])
    np.testing.assert_allclose(r["strength"], d["strength"])
    # learning map: car 0, road 8, sidewalk 10, unlabeled -1, moving-car -> car, person 5, vegetation 14
    np.testing.assert_array_equal(r["segment"], [0, 0, 8, 10, -1, 0, 5, 5, 14, -1])
    inst_out = r["instance"]
    assert (inst_out[[2, 3, 4, 8, 9]] == -1).all()
    assert inst_out[0] != inst_out[1] and inst_out[6] == inst_out[7] and inst_out[5] != inst_out[0]
    assert len(set(inst_out[[0, 1, 5, 6]].tolist())) == 4  # car#1, car#2, moving-car#1, person#5
    assert read(root / "sequences/08/velodyne/000000.bin", learning_map=False)["segment"][5] == 252
    assert [s.name for s in find_scenes(root, "val")] == ["08/000000"]
    assert [s.name for s in find_scenes(root, "train")] == ["00/000000"]
    assert len(find_scenes(root)) == 2
    # inconsistent label file, truncated scan
    (root / "sequences/00/labels/000000.label").write_bytes(np.zeros(3, "<u4").tobytes())
    with pytest.raises(DataError, match=r"000000.label: inconsistent: 3 labels for 10 points"):
        read(root / "sequences/00/velodyne/000000.bin")
    (root / "sequences/08/velodyne/000000.bin").write_bytes(np.zeros(9, "<f4").tobytes())
    with pytest.raises(DataError, match="truncated SemanticKITTI scan"):
        read(root / "sequences/08/velodyne/000000.bin")


def test_nuscenes(tmp_path):
    root = tmp_path / "nus"
    raw = np.array([17, 17, 24, 2, 30, 0, 9], np.int64)
    inst = np.array([0, 1, -1, 0, -1, -1, 2], np.int64)
    d = _cloud(len(raw), labels=False)
    d["instance"] = inst
    lidar = root / "samples" / "LIDAR_TOP" / "scan1.pcd.bin"
    seg, pan = root / "lidarseg/v1.0-mini/tok1_lidarseg.bin", root / "panoptic/v1.0-mini/tok1_panoptic.npz"
    W.write_nuscenes(lidar, d, seg, pan, raw_semantic=raw)
    r = read(lidar, lidarseg=root / "lidarseg/v1.0-mini/tok1_lidarseg.bin")
    np.testing.assert_allclose(r["strength"][:, 0], d["strength"][:, 0], atol=1e-6)
    np.testing.assert_array_equal(r["segment"], [3, 3, 10, 6, 15, -1, 0])
    assert "instance" not in r
    r = read(lidar, panoptic=root / "panoptic/v1.0-mini/tok1_panoptic.npz")
    np.testing.assert_array_equal(r["segment"], [3, 3, 10, 6, 15, -1, 0])
    i = r["instance"]
    assert (i[[2, 4, 5]] == -1).all() and len({i[0], i[1], i[3], i[6]}) == 4
    # the nuScenes tables pair files and labels
    table = root / "v1.0-mini"
    table.mkdir()
    (table / "sample_data.json").write_text(json.dumps([
        {"token": "tok1", "filename": "samples/LIDAR_TOP/scan1.pcd.bin", "is_key_frame": True},
        {"token": "cam", "filename": "samples/CAM_FRONT/x.jpg", "is_key_frame": True},
    ]))  # fmt: skip
    (table / "panoptic.json").write_text(json.dumps(
        [{"token": "p", "sample_data_token": "tok1", "filename": "panoptic/v1.0-mini/tok1_panoptic.npz"}]
    ))  # fmt: skip
    ds = PointCloudDataset(root)
    assert len(ds) == 1
    np.testing.assert_array_equal(ds[0]["instance"], i)
    (root / "panoptic/v1.0-mini/tok1_panoptic.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DataError, match=r"tok1_panoptic\.npz: corrupt"):
        ds[0]


CORRUPT = {
    "trunc.ply": lambda p: _truncate(p, "a.ply", {}, 40),
    "header.ply": lambda p: p.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 2\nproperty flot x\nend_header\n"),
    "noend.ply": lambda p: p.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 2\n"),
    "short.ply": lambda p: p.write_bytes(
        b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
        b"end_header\n1 2 3\n4 5 6\n"
    ),
    "trunc.pcd": lambda p: _truncate(p, "a.pcd", {}, 30),
    "lzf.pcd": lambda p: _corrupt_lzf(p),
    "nodata.pcd": lambda p: p.write_bytes(b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\n"),
    "trunc.npy": lambda p: _truncate(p, "a.npy", {}, 100),
    "pickle.npy": lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
    "bad.npz": lambda p: p.write_bytes(b"this is not a zip"),
    "nocoord.npz": lambda p: np.savez(p, colors=np.zeros((3, 3))),
    "ragged.txt": lambda p: p.write_text("x y z\n1 2 3\n4 5\n"),
    "words.xyz": lambda p: p.write_text("1 2 3\nfoo bar baz\n"),
    "trunc.bin": lambda p: p.write_bytes(np.zeros(7, "<f4").tobytes()),
    "trunc.pcd.bin": lambda p: p.write_bytes(np.zeros(7, "<f4").tobytes()),
    "empty.ply": lambda p: p.write_bytes(b""),
    "nan.npy": lambda p: np.save(p, np.array([[0, 0, 0], [np.nan, 1, 1]], np.float32)),
    "unknown.obj": lambda p: p.write_text("v 1 2 3\n"),
}


def _truncate(p, name, kw, keep_bytes_less):
    write(p.parent / ("full_" + name), _cloud(), **kw)
    full = (p.parent / ("full_" + name)).read_bytes()
    p.write_bytes(full[: len(full) - keep_bytes_less])
    (p.parent / ("full_" + name)).unlink()


def _corrupt_lzf(p):
    write(p, _cloud(), encoding="binary_compressed")
    raw = bytearray(p.read_bytes())
    at = raw.index(b"DATA binary_compressed\n") + len(b"DATA binary_compressed\n") + 8
    raw[at] = 0xE0  # a back-reference right at the start of the stream
    raw[at + 2] = 0xFF
    p.write_bytes(bytes(raw))


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_corrupt_file_names_file_and_problem(tmp_path, name):
    p = tmp_path / name
    CORRUPT[name](p)
    with pytest.raises(DataError) as e:
        read(p)
    assert str(p) in str(e.value) and e.value.problem


def test_pointcept_folder_inconsistent_and_keys(tmp_path):
    d = _cloud(labels=False)
    write(tmp_path / "s", d)
    np.save(tmp_path / "s" / "segment20.npy", np.arange(len(d["coord"])) % 20)
    np.save(tmp_path / "s" / "segment200.npy", np.arange(len(d["coord"])) % 200)
    assert read(tmp_path / "s")["segment"].max() == 19
    assert read(tmp_path / "s", segment_key="segment200")["segment"].max() == 199
    with pytest.raises(DataError, match=r"no segment99\.npy"):
        read(tmp_path / "s", segment_key="segment99")
    np.save(tmp_path / "s" / "instance.npy", np.zeros(5, np.int32))
    with pytest.raises(DataError, match=r"instance.npy: inconsistent: 5 rows, coord.npy has 257"):
        read(tmp_path / "s")
    with pytest.raises(DataError, match="use PointCloudDataset"):
        read(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        read(tmp_path / "missing.ply")


def test_dataset_skip_and_report(tmp_path):
    for i in range(3):
        write(tmp_path / "scans" / f"s{i}.ply", _cloud(50, seed=i))
    write(tmp_path / "scans" / "room" / "scene_a", _cloud(40))  # a Pointcept folder among files
    (tmp_path / "scans" / "s1.ply").write_bytes(b"ply\nbroken")
    ds = PointCloudDataset(tmp_path / "scans")
    assert [s.name for s in ds.scenes] == ["room/scene_a", "s0.ply", "s1.ply", "s2.ply"]
    with pytest.raises(DataError, match=r"s1\.ply"):
        ds[2]
    ds = PointCloudDataset(tmp_path / "scans", on_error="skip")
    with pytest.warns(UserWarning, match="skipping unreadable scene .*s1.ply"):
        item = ds[2]
    assert item["name"] == "s2.ply" and len(ds.skipped) == 1
    ds = PointCloudDataset(tmp_path / "scans", on_error="skip")
    bad = ds.check(progress=False)
    assert len(bad) == 1 and "s1.ply" in bad[0][0] and len(ds) == 3
    with pytest.raises(DataError, match=r"s1.ply: .*and 0 more broken"):
        PointCloudDataset(tmp_path / "scans").check(progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("no scans here")
    with pytest.raises(DataError, match="empty: no scenes found"):
        PointCloudDataset(tmp_path / "empty")


def test_split_lists_and_s3dis_areas(tmp_path):
    for area, rooms in (("Area_1", ["office_1", "hallway_2"]), ("Area_5", ["office_3"])):
        for room in rooms:
            write(tmp_path / area / room, _cloud(20))
    assert [s.name for s in find_scenes(tmp_path, "Area_5")] == ["Area_5/office_3"]
    assert len(find_scenes(tmp_path, "Area_1,Area_5")) == 3
    (tmp_path / "mine.txt").write_text("office_1\noffice_3\n")
    assert [s.name for s in find_scenes(tmp_path, "mine")] == ["Area_1/office_1", "Area_5/office_3"]
    with pytest.raises(DataError, match="split 'Area_9'"):
        find_scenes(tmp_path, "Area_9")


def test_writer_rejects_bad_data(tmp_path):
    with pytest.raises(ValueError, match="coord"):
        write(tmp_path / "a.ply", {"color": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="segment has 2 rows, coord has 3"):
        write(tmp_path / "a.ply", {"coord": np.zeros((3, 3)), "segment": np.zeros(2)})
    with pytest.raises(ValueError, match="no writer"):
        write(tmp_path / "a.obj", {"coord": np.zeros((3, 3))})
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_npz_aliases_and_zip_member_corruption(tmp_path):
    np.savez(tmp_path / "a.npz", points=np.ones((4, 4), np.float32), labels=np.arange(4))
    r = read(tmp_path / "a.npz")
    assert r["strength"].shape == (4, 1) and list(r["segment"]) == [0, 1, 2, 3]
    with zipfile.ZipFile(tmp_path / "b.npz", "w") as z:
        z.writestr("coord.npy", b"\x93NUMPY garbage")
    with pytest.raises(DataError, match=r"b\.npz: (member coord\.npy: )?corrupt"):
        read(tmp_path / "b.npz")
    assert R.SUFFIXES  # the list the errors quote
