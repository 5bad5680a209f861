"""Files written by the formats' own tools (PCL, PDAL, LASzip, liblas, laspy, Open3D, plyfile, pypcd4), read by
ours and by the reference readers, compared value for value (``tests/data/realworld/manifest.json`` says where
each file comes from, its licence and what it exercises; ``tools/realworld_corpus.py`` rebuilds it)."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from pointins.data import DataError, PointCloudDataset, read, write
from pointins.data.readers import read_counted
from pointins.data.readers.reference import compare, read_reference

HERE = Path(__file__).parent / "data" / "realworld"
ENTRIES = json.loads((HERE / "manifest.json").read_text())["files"]
MODULE = {"laspy": "laspy", "pypcd4": "pypcd4", "plyfile": "plyfile", "open3d": "open3d"}


def _needs(reader: str, path: Path) -> None:
    mod = MODULE[reader]
    if importlib.util.find_spec(mod) is None:
        pytest.skip(f"{mod} is not installed (the reference reader for {path.name})")
    if path.suffix.lower() == ".laz":
        import laspy

        if not laspy.LazBackend.detect_available():
            pytest.skip("no LAZ backend for laspy (pip install lazrs)")


def test_manifest_is_complete():
    files = {p.name for p in HERE.iterdir() if p.name != "manifest.json"}
    assert files == {e["file"] for e in ENTRIES}
    assert len(ENTRIES) >= 60
    assert sum(p.stat().st_size for p in HERE.iterdir()) < 20 * 2**20
    for e in ENTRIES:
        assert e["licence"] and e["exercises"] and e["expect"]
        if e["repository"]:
            assert len(e["commit"]) == 40 and e["path"]
    kinds = {Path(e["file"]).suffix.lower() for e in ENTRIES}
    assert kinds == {".pcd", ".ply", ".las", ".laz"}


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_read_as_the_reference_reads(entry):
    path = HERE / entry["file"]
    if entry["expect"].startswith("same as"):  # the references refuse it; its twin in another layout is the truth
        twin = entry["expect"].split(":")[0].removeprefix("same as ").strip()
        a, b = read(path), read(HERE / twin)
        assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
        return
    if entry["expect"] != "agree":  # the format's own tool refuses it too (the manifest says which and why)
        with pytest.raises(DataError):
            read(path, nan="drop")
        return
    _needs(entry["reference"], path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, _ = read_counted(path, nan="drop")
        ref = read_reference(path, entry["reference"])
    assert compare(ours, ref) == []
    if "grid_shape" in ref and ref["grid_shape"][0] > 1:  # organized: (HEIGHT, WIDTH) kept
        assert ours["grid_shape"].tolist() == ref["grid_shape"].tolist()
        kept = np.flatnonzero(np.isfinite(np.asarray(ref["coord"], np.float64)).all(1))
        assert np.array_equal(ours["grid_index"], kept)  # each kept point's place in the sensor grid


def _file(name: str) -> Path:
    return HERE / next(e["file"] for e in ENTRIES if e["file"].endswith(name))


def test_pcl_compressed_padding_and_nan_normals():
    """PCL's binary_compressed files carry bytes after the LZF block (refused before: '61534 compressed bytes
    announced, 65447 present'); sac_plane_test.pcd's NaN normals are repaired and counted, no point is dropped
    (nan="drop" dropped 15 of its 3,283 points before)."""
    assert len(read(_file("bun0.pcd"))["coord"]) == 397
    data, counts = read_counted(_file("sac_plane_test.pcd"), nan="drop")
    assert counts.dropped == 0 and counts.repaired == {"normal": 15} and len(data["coord"]) == 3283
    assert np.isfinite(data["normal"]).all()
    with pytest.warns(UserWarning, match="15 NaN/Inf normal values set to 0"):
        read(_file("sac_plane_test.pcd"))
    data, counts = read_counted(_file("table_scene_mug_stereo_textured.pcd"), nan="drop")
    assert data["grid_shape"].tolist() == [480, 640] and counts.dropped == 480 * 640 - len(data["coord"]) > 0


def test_georeferenced_las_is_recentred_and_written_back(tmp_path):
    """autzen-utm.las (UTM, 1 cm scale): float32 absolute coordinates were up to 0.25 m off."""
    pytest.importorskip("laspy")
    import laspy

    path = _file("autzen-utm.las")
    las = laspy.read(path)
    truth = np.stack([las.x, las.y, las.z], 1)
    data = read(path)
    assert data["coord_offset"].dtype == np.float64 and np.abs(data["coord_offset"]).max() > 1e5
    assert np.abs(data["coord"].astype(np.float64) + data["coord_offset"] - truth).max() <= 0.005
    assert np.abs(data["coord"]).max() < 2e4  # what training sees is local
    for name in ("a.ply", "a.pcd", "a.npz", "a.txt", "a.las"):  # the writers restore the absolute coordinates
        write(tmp_path / name, data)
        back = read(tmp_path / name)
        err = np.abs(back["coord"].astype(np.float64) + back["coord_offset"] - truth).max()
        assert err <= (0.0051 if name in ("a.txt", "a.las") else 0.005), (name, err)


def test_nan_policy_drops_coordinates_only(tmp_path):
    n = 6
    d = {"coord": np.arange(n * 3, dtype=np.float32).reshape(n, 3), "normal": np.ones((n, 3), np.float32),
         "color": np.full((n, 3), 7, np.float32), "strength": np.full((n, 1), 0.5, np.float32)}  # fmt: skip
    d["coord"][1, 2] = np.nan
    d["normal"][2, 0] = np.nan
    d["strength"][3] = np.inf
    d["normal"][1] = np.nan  # on the point that is dropped anyway: not counted as repaired
    write(tmp_path / "a.ply", d)
    with pytest.raises(DataError, match="1 of 6 points have NaN/Inf coordinates"):
        read_counted(tmp_path / "a.ply")
    data, counts = read_counted(tmp_path / "a.ply", nan="drop")
    assert counts.dropped == 1 and counts.repaired == {"normal": 1, "strength": 1}
    assert len(data["coord"]) == 5
    assert data["normal"][1].tolist() == [0, 0, 0] and data["strength"][2, 0] == 0  # rows 2 and 3 of the file
    ds = PointCloudDataset(tmp_path)
    item = ds[0]
    assert item["dropped_points"] == 1 and item["repaired_points"] == 2 and ds.repaired == 2


def test_organized_pcd_keeps_its_grid_through_dropping(tmp_path):
    head = ("VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 3\nHEIGHT 2\nPOINTS 6\n"
            "DATA ascii\n")  # fmt: skip
    rows = "0 0 0\nnan nan nan\n2 0 0\n0 1 0\n1 1 0\nnan nan nan\n"
    (tmp_path / "o.pcd").write_text(head + rows)
    data, counts = read_counted(tmp_path / "o.pcd", nan="drop")
    assert counts.dropped == 2
    assert data["grid_shape"].tolist() == [2, 3] and data["grid_index"].tolist() == [0, 2, 3, 4]
