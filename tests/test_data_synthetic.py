"""Synthetic scene generators: labels, counts, instance structure, determinism, CLI and folder layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pointins.data import PointCloudDataset, read
from pointins.data import synthetic as S


@pytest.fixture(scope="module")
def rooms():
    return [S.indoor_scene(seed=7, index=i) for i in range(4)]


@pytest.fixture(scope="module")
def sweeps():
    return [S.outdoor_scene(seed=7, index=i, config=S.OutdoorConfig(beams=64 if i % 2 else 32)) for i in range(4)]


def _check_labels(d, classes, things):
    seg, inst = d["segment"], d["instance"]
    assert seg.dtype == np.int32 and inst.dtype == np.int32
    assert seg.min() >= 0 and seg.max() < len(classes)
    stuff = ~np.isin(seg, things)
    assert (inst[stuff] == -1).all(), "stuff points must have no instance"
    assert (inst[~stuff] >= 0).all(), "every thing point belongs to an instance"
    ids = np.unique(inst[inst >= 0])
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # consecutive ids
    for k in ids:  # every instance has exactly one class
        assert len(np.unique(seg[inst == k])) == 1
    n = len(d["coord"])
    assert all(len(v) == n for v in d.values())
    assert np.isfinite(d["coord"]).all()
    nrm = np.linalg.norm(d["normal"], axis=1)
    np.testing.assert_allclose(nrm, 1.0, atol=1e-4)
    return len(ids)


def _side_by_side_pairs(d, gap):
    """Same-class instance pairs whose xy bounding boxes are within ``gap`` of each other."""
    seg, inst, c = d["segment"], d["instance"], d["coord"]
    boxes = [(seg[inst == k][0], c[inst == k, :2].min(0), c[inst == k, :2].max(0)) for k in range(inst.max() + 1)]
    pairs = 0
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            if a[0] == b[0] and np.maximum(np.maximum(a[1] - b[2], b[1] - a[2]), 0).max() < gap:
                pairs += 1
    return pairs


def test_indoor_rooms_labels_counts_and_structure(rooms):
    seen = set()
    for d in rooms:
        n_inst = _check_labels(d, S.INDOOR_CLASSES, S.INDOOR_THING_CLASSES)
        assert 50_000 <= len(d["coord"]) <= 200_000
        assert 5 <= n_inst <= 60
        ext = d["coord"].max(0) - d["coord"].min(0)
        assert 3.9 <= ext[0] <= 10.1 and 3.9 <= ext[1] <= 10.1 and 2.4 <= ext[2] <= 3.3
        assert d["color"].dtype == np.uint8
        assert {0, 1} <= set(np.unique(d["segment"]).tolist())  # walls and floor
        assert _side_by_side_pairs(d, gap=0.2) >= 1, "each room has same-class instances side by side"
        # instances are compact objects, not scattered points
        for k in range(n_inst):
            pts = d["coord"][d["instance"] == k]
            assert (pts.max(0) - pts.min(0)).max() < 2.6
        seen |= set(np.unique(d["segment"][d["instance"] >= 0]).tolist())
    assert len(seen) >= 6


def test_indoor_covers_all_thing_classes():
    seen = set()
    cfg = S.IndoorConfig(points=(5_000, 8_000))
    for i in range(10):
        d = S.indoor_scene(seed=1, index=i, config=cfg)
        assert 5_000 <= len(d["coord"]) <= 8_000
        seen |= set(np.unique(d["segment"][d["instance"] >= 0]).tolist())
    assert seen == set(S.INDOOR_THING_CLASSES)


def test_outdoor_sweeps(sweeps):
    for i, d in enumerate(sweeps):
        n_inst = _check_labels(d, S.OUTDOOR_CLASSES, S.OUTDOOR_THING_CLASSES)
        beams = 64 if i % 2 else 32
        assert (80_000 if beams == 64 else 30_000) <= len(d["coord"]) <= (131_072 if beams == 64 else 57_600)
        assert n_inst >= 5
        s = d["strength"]
        assert s.shape == (len(d["coord"]), 1) and s.min() >= 0 and s.max() <= 1
        r = np.linalg.norm(d["coord"], axis=1)
        assert r.min() >= 1.4 and r.max() <= 80.5
        ground = np.isin(d["segment"], [0, 1])
        assert abs(np.median(d["coord"][ground, 2]) + 1.73) < 0.05  # sensor frame: ground 1.73 m below
        present = set(np.unique(d["segment"]).tolist())
        assert {1, 3, 6} <= present  # road, buildings and cars are always in view
    all_cls = set().union(*(set(np.unique(d["segment"]).tolist()) for d in sweeps))
    assert all_cls == set(range(len(S.OUTDOOR_CLASSES)))


def test_outdoor_occlusion_and_falloff(sweeps):
    d = sweeps[1]
    r = np.linalg.norm(d["coord"][:, :2], axis=1)
    near, far = (r < 20).sum() / (np.pi * 20**2), ((r > 40) & (r < 60)).sum() / (np.pi * (60**2 - 40**2))
    assert near > 20 * far  # density falls with range
    # occlusion: no return lies behind a car along its ray (same beam/azimuth within a small angle)
    car = d["segment"] == 6
    az = np.arctan2(d["coord"][:, 1], d["coord"][:, 0])
    el = np.arctan2(d["coord"][:, 2], np.linalg.norm(d["coord"][:, :2], axis=1))
    rng3 = np.linalg.norm(d["coord"], axis=1)
    ci = np.flatnonzero(car)[:200]
    for j in ci:
        same_ray = (np.abs(az - az[j]) < 1e-3) & (np.abs(el - el[j]) < 2e-3)
        assert not (same_ray & (rng3 > rng3[j] + 0.5)).any()


def test_deterministic_by_seed():
    a = S.indoor_scene(seed=3, index=5, config=S.IndoorConfig(points=(5_000, 9_000)))
    b = S.indoor_scene(seed=3, index=5, config=S.IndoorConfig(points=(5_000, 9_000)))
    c = S.indoor_scene(seed=3, index=6, config=S.IndoorConfig(points=(5_000, 9_000)))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert len(a["coord"]) != len(c["coord"]) or not np.array_equal(a["coord"], c["coord"])
    o1, o2 = S.outdoor_scene(2, 1), S.outdoor_scene(2, 1)
    for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k])
    assert not np.array_equal(S.outdoor_scene(3, 1)["coord"][:100], o1["coord"][:100])


def test_cli_writes_pointcept_layout_independent_of_workers(tmp_path):
    args = ["--kind", "indoor", "--scenes", "3", "--seed", "4", "--quiet", "points=[4000,6000]"]
    assert S.main([*args, "--out", str(tmp_path / "a"), "--workers", "1"]) == 0
    assert S.main([*args, "--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    root = tmp_path / "a"
    assert (root / "train.txt").read_text().split() == ["scene_00000", "scene_00001"]
    assert (root / "val.txt").read_text().split() == ["scene_00002"]
    meta = json.loads((root / "meta.json").read_text())
    assert meta["classes"] == list(S.INDOOR_CLASSES) and meta["thing_classes"] == list(S.INDOOR_THING_CLASSES)
    assert meta["config"]["points"] == [4000, 6000]
    folder = root / "train" / "scene_00001"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["coord.npy", "color.npy", "normal.npy", "segment.npy", "instance.npy"]
    )
    assert np.load(folder / "coord.npy").dtype == np.float32 and np.load(folder / "color.npy").dtype == np.uint8
    expect = S.indoor_scene(4, 1, S.IndoorConfig(points=(4000, 6000)))
    got = read(folder)
    np.testing.assert_array_equal(got["coord"], expect["coord"])
    np.testing.assert_array_equal(got["instance"], expect["instance"])
    for name in ("scene_00000", "scene_00001"):
        for f in ("coord.npy", "segment.npy"):
            split = "train"
            assert (root / split / name / f).read_bytes() == (tmp_path / "b" / split / name / f).read_bytes()
    ds = PointCloudDataset(root, split="val")
    assert len(ds) == 1 and ds.meta["kind"] == "indoor"
    assert len(PointCloudDataset(root)) == 3


def test_cli_outdoor_and_bad_arguments(tmp_path, capsys):
    assert S.main(["--kind", "outdoor", "--out", str(tmp_path), "--scenes", "1", "--quiet", "beams=32"]) == 0
    folder = tmp_path / "train" / "scene_00000"
    assert (folder / "strength.npy").exists() and not (folder / "color.npy").exists()
    assert np.load(folder / "strength.npy").shape[1] == 1
    with pytest.raises(SystemExit, match="bad override"):
        S.main(["--kind", "outdoor", "--out", str(tmp_path), "--scenes", "1", "nonsense=3"])
    assert S.main(["--kind", "indoor", "--out", str(tmp_path / "x"), "--scenes", "0"]) == 2
    assert "--scenes must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="beams must be 32 or 64"):
        S.outdoor_scene(0, 0, S.OutdoorConfig(beams=16))


@pytest.mark.parametrize("seed", range(4))
def test_hole_candidates_hold_every_point_of_each_ball(seed):
    """Rooms' occlusion holes look only at the grid cells around each hole (a full scan per hole was 60% of a
    room's generation time); the rooms stay the same exactly when every point of a ball is a candidate."""
    from pointins.data._indoor import _near_points

    rng = np.random.default_rng(seed)
    radius = float(rng.uniform(0.05, 0.5))
    coord = rng.uniform(-3, 3, (4000, 3)) * rng.uniform(0.1, 1.0, 3)
    coord[:500] = np.round(coord[:500] / radius) * radius  # points on cell walls
    centres = np.concatenate([coord[rng.integers(len(coord), size=40)], coord.min(0)[None], coord.max(0)[None]])
    for c, idx in zip(centres, _near_points(coord, centres, radius), strict=True):
        d2 = ((coord - c) ** 2).sum(1)
        ball = np.flatnonzero(d2 < radius * radius)  # the largest hole: radius = the cell side
        assert np.isin(ball, idx).all()
        assert (np.diff(idx) > 0).all() and len(idx) < len(coord)
