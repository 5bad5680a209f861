"""Transforms (recorded maps), grid sampling, crops, views, block masking, collate, seeded loading, show."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
import torch

from pointins.data import PointCloudDataset, read, write
from pointins.data import show as SH
from pointins.data import synthetic as S
from pointins.data import transforms as T
from pointins.data.collate import collate, collate_clouds, features
from pointins.data.masking import MaskSchedule, block_mask
from pointins.data.views import ViewConfig, ViewDataset, make_loader, make_views, overlap_stats, prepare_scene


@pytest.fixture(scope="module")
def room():
    return S.indoor_scene(seed=11, index=0, config=S.IndoorConfig(points=(60_000, 80_000)))


@pytest.fixture(scope="module")
def scene(room):
    return prepare_scene(room, 0.02, np.random.default_rng(0))


def _random_cloud(n, seed):
    rng = np.random.default_rng(seed)
    nrm = rng.normal(size=(n, 3))
    return {
        "coord": rng.uniform(-4, 6, (n, 3)),
        "normal": (nrm / np.linalg.norm(nrm, axis=1, keepdims=True)).astype(np.float32),
        "color": rng.uniform(0, 255, (n, 3)).astype(np.float32),
        "segment": rng.integers(0, 5, n),
    }


@pytest.mark.parametrize("seed", range(6))
def test_recorded_transform_maps_back(seed):
    rng = np.random.default_rng(seed)
    d = _random_cloud(500, seed)
    orig = d["coord"].copy()
    v = T.start_view(d)
    T.center_shift(v, apply_z=bool(seed % 2))
    T.random_rotate(v, rng, "z", p=1.0)
    T.random_rotate(v, rng, "x", (-0.2, 0.2))
    T.random_rotate(v, rng, "y", (-0.2, 0.2))
    T.random_scale(v, rng, (0.5, 2.0), anisotropic=seed >= 3)
    T.random_flip(v, rng, p=0.5)
    v = T.take(v, rng.permutation(500)[:300])
    np.testing.assert_allclose(T.to_original(v), orig[v["index"]], atol=1e-5)
    # offset vectors go back and forth; normals follow the inverse transpose (stay perpendicular to tangents)
    vec = rng.normal(size=(300, 3))
    np.testing.assert_allclose(T.vectors_to_view(v, T.vectors_to_original(v, vec)), vec, atol=1e-9)
    tangent = np.cross(d["normal"][v["index"]], rng.normal(size=(300, 3)))
    tv = tangent @ v["transform"].T
    np.testing.assert_allclose((tv * v["normal"]).sum(1), 0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(v["normal"], axis=1), 1, atol=1e-5)


def test_jitter_elastic_colour_are_outside_the_map():
    rng = np.random.default_rng(0)
    d = T.start_view(_random_cloud(2000, 0))
    before = d["coord"].copy()
    T.random_jitter(d, rng, 0.005, 0.02)
    delta = d["coord"] - before
    assert 0 < np.abs(delta).max() <= 0.02 and abs(delta.std() - 0.005) < 0.001
    np.testing.assert_array_equal(d["transform"], np.eye(3))
    e = T.start_view(_random_cloud(2000, 1))
    before = e["coord"].copy()
    T.elastic_distortion(e, rng, ((0.2, 0.4), (0.8, 1.6)))
    moved = np.linalg.norm(e["coord"] - before, axis=1)
    assert 0 < moved.mean() < 1.5
    # smooth: nearby points move alike, far points differently
    close = np.linalg.norm(before[:, None] - before[None, :200], axis=2)
    i, j = np.nonzero((close > 0) & (close < 0.05))
    dd = np.linalg.norm((e["coord"] - before)[i] - (e["coord"] - before)[j], axis=1)
    assert len(i) == 0 or dd.mean() < 0.3 * moved.mean() + 1e-9
    c = T.start_view(_random_cloud(500, 2))
    before = c["color"].copy()
    T.color_jitter(c, rng, auto_contrast_p=1.0)
    assert c["color"].min() >= 0 and c["color"].max() <= 255 and not np.allclose(c["color"], before)


def test_grid_sample_modes(room):
    d = {k: room[k] for k in ("coord", "segment", "instance")}
    d["index"] = np.arange(len(d["coord"]))
    s = T.grid_sample(d, 0.05, "train", np.random.default_rng(0))
    keys = np.floor(room["coord"][s["index"]].astype(np.float64) / 0.05)
    assert len(np.unique(keys, axis=0)) == len(keys)  # one point per voxel
    assert len(keys) == len(np.unique(np.floor(room["coord"].astype(np.float64) / 0.05), axis=0))
    np.testing.assert_array_equal(s["segment"], room["segment"][s["index"]])
    assert s["grid_coord"].min() == 0 and s["grid_coord"].dtype == np.int32
    frags = T.grid_sample(d, 0.05, "test")
    covered = np.unique(np.concatenate([f["index"] for f in frags]))
    assert len(covered) == len(d["coord"]) and all(len(f["index"]) == len(s["index"]) for f in frags)
    assert len(T.grid_sample(T.take(d, np.zeros(0, int)), 0.05)["coord"]) == 0
    with pytest.raises(ValueError, match="mode"):
        T.grid_sample(d, 0.05, "eval")


def test_crops():
    d = T.start_view(_random_cloud(1000, 3))
    c = d["coord"][17]
    k = T.nearest_crop(d, 100, c)
    dist = np.linalg.norm(d["coord"] - c, axis=1)
    np.testing.assert_array_equal(np.sort(k["index"]), np.sort(np.argsort(dist)[:100]))
    s = T.sphere_crop(d, np.random.default_rng(0), radius=2.0, centre=c)
    np.testing.assert_array_equal(s["index"], np.flatnonzero(dist <= 2.0))
    s = T.sphere_crop(d, np.random.default_rng(0), radius=2.0, max_points=10, centre=c)
    assert len(s["index"]) == 10 and np.linalg.norm(s["coord"] - c, axis=1).max() <= 2.0


def test_views_are_subsets_with_source_indices(scene):
    cfg = ViewConfig(jitter_sigma=0.0, elastic=None)  # elastic distortion is outside the recorded map
    views = make_views(scene, cfg, np.random.default_rng(1))
    n = len(scene["coord"])
    base = min(n, cfg.max_points)
    assert len(views["global"]) == 2 and len(views["local"]) == 4
    for kind, (lo, hi) in (("global", cfg.global_ratio), ("local", cfg.local_ratio)):
        for v in views[kind]:
            idx = v["index"]
            assert len(np.unique(idx)) == len(idx) and idx.min() >= 0 and idx.max() < n
            assert len(idx) <= round(hi * base)
            assert len(idx) >= 0.5 * lo * base  # grid sampling in the rotated frame loses a few points
            np.testing.assert_allclose(T.to_original(v), scene["coord"][idx], atol=1e-5)
            np.testing.assert_array_equal(v["segment"], scene["segment"][idx])
            np.testing.assert_array_equal(v["instance"], scene["instance"][idx])
            assert v["coord"].dtype == np.float32
            assert len(np.unique(v["grid_coord"], axis=0)) == len(idx)  # one point per voxel of the view
            assert abs(abs(np.linalg.det(v["transform"])) ** (1 / 3) - 1) <= 0.1 + 1e-9  # scale within [0.9, 1.1]
    # with jitter the map is exact up to the clipped noise
    jv = make_views(scene, ViewConfig(elastic=None), np.random.default_rng(1))["global"][0]
    err = np.abs(T.to_original(jv) - scene["coord"][jv["index"]]).max()
    assert 0 < err < 0.02 * 1.2


def test_views_are_anchored_as_sonata(scene):
    """MultiViewGenerator: the second global view is centred on a point of the first; each local view on a point
    of the first global view that no earlier local view covered (mask reset once all are covered)."""
    cfg = ViewConfig(elastic=None, jitter_sigma=0.0, local_views=6)
    for seed in range(4):
        views = make_views(scene, cfg, np.random.default_rng(seed))
        st = overlap_stats(views)
        assert st["global_overlap"] > 0.1  # never disjoint: its centre is a point of view 1
        assert min(st["local_overlap"]) > 0.1
        # sizes: int(U(ratio) x min(max_points, N)) before grid sampling in the view frame
        base = min(len(scene["coord"]), cfg.max_points)
        for v in views["local"]:
            assert len(v["index"]) <= int(cfg.local_ratio[1] * base)
    old = ViewConfig(elastic=None, anchored=False)
    olds = [overlap_stats(make_views(scene, old, np.random.default_rng(s))) for s in range(12)]
    news = [overlap_stats(make_views(scene, ViewConfig(elastic=None), np.random.default_rng(s))) for s in range(12)]
    assert np.mean([s["global_overlap"] for s in news]) > np.mean([s["global_overlap"] for s in olds])
    assert np.mean([np.mean(s["local_overlap"]) for s in news]) > np.mean([np.mean(s["local_overlap"]) for s in olds])
    with pytest.raises(TypeError, match="anchored"):
        ViewConfig(anchored="yes")


@pytest.mark.parametrize("anchored", [True, False])
def test_views_from_a_part_of_the_scene(scene, anchored):
    """scene_points: every view of a sample lies in the scene_points points nearest one point of the scene, and
    the view sizes are fractions of that part (the paper's share of a room at the CPU scale)."""
    k = 6000
    cfg = ViewConfig(jitter_sigma=0.0, elastic=None, max_points=65536, scene_points=k, anchored=anchored)
    n = len(scene["coord"])
    assert n > 3 * k
    for seed in range(3):
        views = make_views(scene, cfg, np.random.default_rng(seed))
        rows = np.unique(np.concatenate([v["index"] for vs in views.values() for v in vs]))
        assert len(rows) <= k and rows.max() < n
        # the part: the k points nearest a random point of the scene (the sample's first draw)
        c = scene["coord"][int(np.random.default_rng(seed).integers(n))]
        nearest = np.argsort(((scene["coord"] - c) ** 2).sum(1), kind="stable")[:k]
        assert np.isin(rows, nearest).all()
        for v in views["global"]:
            assert 0.5 * cfg.global_ratio[0] * k <= len(v["index"]) <= cfg.global_ratio[1] * k
            np.testing.assert_allclose(T.to_original(v), scene["coord"][v["index"]], atol=1e-5)
        for v in views["local"]:
            assert len(v["index"]) <= cfg.local_ratio[1] * k
    # off (0) or a part at least the scene's size: the views are the ones made from the whole scene
    for sp in (0, n):
        a = make_views(scene, ViewConfig(scene_points=sp, anchored=anchored), np.random.default_rng(5))
        b = make_views(scene, ViewConfig(anchored=anchored), np.random.default_rng(5))
        for kind in ("global", "local"):
            for va, vb in zip(a[kind], b[kind], strict=True):
                np.testing.assert_array_equal(va["index"], vb["index"])
                np.testing.assert_array_equal(va["coord"], vb["coord"])
    with pytest.raises(ValueError, match="scene_points"):
        ViewConfig(scene_points=-1)


def test_local_view_centres_follow_the_cover_mask(scene, monkeypatch):
    """Each local view's centre is an uncovered point of the major view (checked by recording the crops)."""
    from pointins.data import views as V

    calls = []
    real = T.nearest_crop

    def spy(d, k, centre):
        out = real(d, k, centre)
        calls.append((np.asarray(centre).copy(), out))
        return out

    monkeypatch.setattr(V.T, "nearest_crop", spy)
    cfg = ViewConfig(elastic=None, local_views=8, local_ratio=(0.3, 0.4), global_ratio=(0.5, 0.6))
    make_views(scene, cfg, np.random.default_rng(3))
    major = calls[0][1]
    covered = np.zeros(len(major["index"]), bool)
    resets = 0
    for centre, crop in calls[cfg.global_views :]:
        if covered.all():
            covered[:] = False
            resets += 1
        hit = np.flatnonzero((major["coord"] == centre).all(1))
        assert len(hit) and not covered[hit].all()  # an uncovered point of the major view
        covered |= np.isin(major["index"], crop["index"])
    assert len(calls) == cfg.global_views + cfg.local_views


def test_sonata_colour_augmentation():
    rng = np.random.default_rng(0)
    c = _random_cloud(400, 4)
    # identity factors and p = 1: unchanged up to the float32 HSV round trip
    d = T.random_color_jitter(dict(c), rng, brightness=0, contrast=0, saturation=0, hue=0, p=1.0)
    np.testing.assert_allclose(d["color"], c["color"], atol=1e-3)
    hsv = T._rgb_to_hsv(c["color"].astype(np.float64) / 255)
    np.testing.assert_allclose(T._hsv_to_rgb(hsv) * 255, c["color"], atol=1e-6)
    # brightness alone scales (then clips)
    d = T.random_color_jitter(dict(c), np.random.default_rng(1), brightness=0.4, contrast=0, saturation=0, hue=0,
                              p=1.0)  # fmt: skip
    ratio = d["color"][c["color"] > 10] / c["color"][c["color"] > 10]
    assert np.allclose(ratio[d["color"][c["color"] > 10] < 255], ratio.min(), atol=1e-4)
    e = T.chromatic_translation(dict(c), np.random.default_rng(2), p=1.0, ratio=0.05)
    shift = (e["color"] - c["color"])[(c["color"] > 20).all(1) & (c["color"] < 235).all(1)]
    assert np.allclose(shift, shift[0], atol=1e-4) and np.abs(shift[0]).max() <= 0.05 * 255


def test_global_views_share_one_colour_augmentation(scene):
    views = make_views(scene, ViewConfig(elastic=None), np.random.default_rng(5))
    g0, g1 = views["global"]
    common, i0, i1 = np.intersect1d(g0["index"], g1["index"], return_indices=True)
    assert len(common) > 0
    np.testing.assert_array_equal(g0["color"][i0], g1["color"][i1])
    assert not np.allclose(g0["color"][i0], scene["color"][common])  # but augmented
    loc = views["local"][0]
    c2, j0, j1 = np.intersect1d(g0["index"], loc["index"], return_indices=True)
    assert len(c2) and not np.array_equal(g0["color"][j0], loc["color"][j1])  # local views: their own


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("size", [0.1, 0.4])
def test_block_mask_ratio(scene, ratio, size):
    views = make_views(scene, ViewConfig(), np.random.default_rng(2))
    b = collate_clouds(views["global"] + views["local"][:2])
    m = block_mask(b["coord"], b["offsets"], size=size, ratio=ratio, generator=torch.Generator().manual_seed(0))
    assert m.dtype == torch.bool and m.shape == (len(b["coord"]),)
    for a, e in zip(b["offsets"][:-1].tolist(), b["offsets"][1:].tolist(), strict=True):
        assert abs(m[a:e].float().mean().item() - ratio) <= 0.05
    # masks are whole cubes: hashing with the same grid offset reproduces cube membership
    g = torch.Generator().manual_seed(0)
    shift = torch.rand(len(b["offsets"]) - 1, 3, generator=g) * size
    batch = torch.repeat_interleave(torch.arange(len(b["offsets"]) - 1), b["offsets"].diff())
    cube = torch.floor((b["coord"] + shift[batch]) / size).long()
    key = (batch * 10**9)[:, None] + cube
    _, inv = torch.unique(key, dim=0, return_inverse=True)
    per_cube = torch.zeros(int(inv.max()) + 1).index_add_(0, inv, m.float()) / torch.bincount(inv).float()
    assert ((per_cube == 0) | (per_cube == 1)).all()


def test_block_mask_edges_and_schedule():
    c = np.random.default_rng(0).random((1000, 3)).astype(np.float32)
    assert not block_mask(c, size=0.1, ratio=0.0).any()
    assert block_mask(c, size=0.1, ratio=1.0).all()
    assert isinstance(block_mask(c, size=0.1, ratio=0.5), np.ndarray)
    assert block_mask(np.zeros((0, 3), np.float32), size=0.1, ratio=0.5).shape == (0,)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    np.testing.assert_array_equal(block_mask(c, size=0.2, ratio=0.4, generator=g1),
                                  block_mask(c, size=0.2, ratio=0.4, generator=g2))  # fmt: skip
    with pytest.raises(ValueError, match="ratio"):
        block_mask(c, size=0.1, ratio=1.5)
    sch = MaskSchedule()
    assert sch.at(0.0) == (0.1, 0.3)
    assert sch.at(0.025) == pytest.approx((0.25, 0.5))
    assert sch.at(0.05) == pytest.approx((0.4, 0.7)) and sch.at(0.9) == pytest.approx((0.4, 0.7))


def test_collate_views_and_features(scene):
    ds = ViewDataset([dict(scene, name="a"), dict(scene, name="b")], ViewConfig(local_views=2), seed=5)
    batch = collate([ds[0], ds[1]])
    assert batch["num_samples"] == 2 and batch["names"] == ["a", "b"]
    g = batch["global"]
    assert g["offsets"].tolist()[0] == 0 and len(g["offsets"]) == 5
    assert g["cloud_sample"].tolist() == [0, 1, 0, 1] and g["cloud_view"].tolist() == [0, 0, 1, 1]
    assert g["transform"].shape == (4, 3, 3) and g["transform"].dtype == torch.float64
    assert g["feat"].shape == (len(g["coord"]), 9)
    n = len(scene["coord"])
    for c in range(4):
        a, e = g["offsets"][c].item(), g["offsets"][c + 1].item()
        src = g["source"][a:e]
        s = g["cloud_sample"][c].item()
        assert (src >= s * n).all() and (src < (s + 1) * n).all()
        np.testing.assert_array_equal(src.numpy() - s * n, g["index"][a:e].numpy())
    f = features({"coord": np.zeros((2, 3)), "color": np.full((2, 3), 255.0), "normal": np.ones((2, 3))})
    np.testing.assert_allclose(f[:, 3:6], 1.0)
    f = features({"coord": np.zeros((2, 3)), "strength": np.ones((2, 1))})
    assert f.shape == (2, 4)
    with pytest.raises(KeyError, match="no 'normal'"):
        features({"coord": np.zeros((2, 3)), "color": np.zeros((2, 3))})


def test_loader_deterministic_across_workers(tmp_path):
    S.generate("indoor", tmp_path, 4, seed=1, val_fraction=0.0, workers=1, progress=False,
               config=S.IndoorConfig(points=(4000, 6000)))  # fmt: skip
    ds = ViewDataset(PointCloudDataset(tmp_path, split="train"), ViewConfig(local_views=1), seed=3)
    batches = []
    for workers in (0, 2):
        loader = make_loader(ds, batch_size=2, seed=9, num_workers=workers)
        batches.append([b["global"]["coord"] for b in loader])
    assert len(batches[0]) == 2
    for a, b in zip(*batches, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    ds.set_epoch(1)
    other = next(iter(make_loader(ds, batch_size=2, seed=9, num_workers=0)))["global"]["coord"]
    assert other.shape != batches[0][0].shape or not torch.equal(other, batches[0][0])


def _png_size(path):
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    w, h = struct.unpack(">II", raw[16:24])
    idat = raw[raw.index(b"IDAT") + 4 : raw.index(b"IEND") - 8]
    pixels = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 3 * w + 1)[:, 1:].reshape(h, w, 3)
    return w, h, pixels


def test_show_writes_png_and_ply(tmp_path, room, capsys):
    write(tmp_path / "room", room)
    assert SH.main([str(tmp_path / "room"), "--out", str(tmp_path / "out" / "r"), "--size", "200"]) == 0
    assert "wrote" in capsys.readouterr().out
    w, h, pix = _png_size(tmp_path / "out" / "r.png")
    assert w == 2 * 200 + 4 and h == 5 * 150 + 4 * 4  # rgb, semantic, instance, view, mask x (top, oblique)
    assert (pix < 250).any(axis=2).mean() > 0.2  # points were drawn
    ply = read(tmp_path / "out" / "r.ply")
    assert {"coord", "color", "segment", "instance"} <= set(ply)
    out = S.outdoor_scene(0, 0, S.OutdoorConfig(beams=32))
    write(tmp_path / "sweep.npz", out)
    assert SH.main([str(tmp_path / "sweep.npz"), "--by", "strength,instance", "--size", "160"]) == 0
    w, h, _ = _png_size(tmp_path / "sweep_show.png")
    assert (w, h) == (2 * 160 + 4, 2 * 120 + 4)
    assert SH.main([str(tmp_path / "sweep.npz"), "--by", "rgb"]) == 2
    assert "has no color" in capsys.readouterr().err


def test_render_z_buffer():
    # two points on the same pixel column: the top view shows the higher one
    coord = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    cols = np.array([[255, 0, 0], [0, 0, 255], [0, 255, 0]], np.uint8)
    img = SH.render(coord, cols, "top", (40, 40), point_px=1)
    assert (img.reshape(-1, 3) == [0, 0, 255]).all(1).sum() == 1
    assert not (img.reshape(-1, 3) == [255, 0, 0]).all(1).any()
    lc = SH.label_colors(np.array([-1, 0, 1, 25]))
    assert (lc[0] == 0).all() and len({tuple(c) for c in lc}) == 4
    ic = SH.instance_colors(np.array([-1, 0, 1, 2]))
    assert (ic[0] == 200).all() and len({tuple(c) for c in ic[1:]}) == 3
    assert math.isfinite(float(img.mean()))


def test_compiled_view_kernels_are_bitwise_the_numpy_expressions():
    """Elastic displacement and the hue rotation run compiled when the extension is built; both must equal their
    NumPy statements bit for bit (views, and so training batches, do not depend on which ran)."""
    import torch

    from pointins.data import transforms as T

    rng = np.random.default_rng(7)
    coord = rng.uniform(-2, 3, (5000, 3)) * np.array([1.0, 0.7, 0.4])
    coord[:5] = [[-2, -1.4, -0.8], [3, 2.1, 1.2], [0, 0, 0], [0.2, 0.2, 0.2], [-2, 2.1, 0.4]]  # lattice corners
    for gran, mag in ((0.2, 0.4), (0.8, 1.6)):
        lo = T._cmin(coord)
        dims = ((T._cmax(coord) - lo) // gran).astype(int) + 3
        lattice = T._smooth(T._smooth(rng.normal(0, 1, (*dims, 3))))
        got = torch.ops.pointins.elastic_displace(torch.from_numpy(coord), torch.from_numpy(lattice),
                                                  [float(v) for v in lo], gran, mag).numpy()  # fmt: skip
        want = T._displace_numpy(coord, lattice, lo, gran, mag)
        assert np.array_equal(got.view(np.int64), want.view(np.int64))
    col = rng.uniform(0, 255, (20000, 3)).astype(np.float32)
    col[:6] = [[0, 0, 0], [255, 255, 255], [128, 128, 128], [255, 0, 0], [0, 255, 0], [0, 0, 255]]
    col[6:500] = np.round(col[6:500] / 64) * 64  # ties between channels
    for shift in (-0.02, -1e-9, 0.0, 0.013, 0.02, 0.5):
        got = T._hue_shift(col, shift)
        want = T._hue_shift_numpy(col, shift)
        assert got.dtype == np.float32 and np.array_equal(got.view(np.int32), want.view(np.int32)), shift


def test_scene_cache_gives_the_same_samples_and_evicts_least_recent(tmp_path):
    """Scenes cached per process with their voxel grouping: every sample (two epochs, so cached scenes are
    re-drawn) equals the uncached one bit for bit; a budget of two scenes keeps the two most recent."""
    S.generate("indoor", tmp_path, 3, seed=2, val_fraction=0.0, workers=1, progress=False,
               config=S.IndoorConfig(points=(4000, 6000)))  # fmt: skip
    src = PointCloudDataset(tmp_path, split="train")
    cfg = ViewConfig(local_views=1, grid_size=0.05)
    plain, cached = ViewDataset(src, cfg, seed=4), ViewDataset(src, cfg, seed=4, cache_mb=64)
    for epoch in (0, 1):
        for i in range(len(src)):
            a, b = plain[(epoch, i)], cached[(epoch, i)]
            for kind in ("global", "local"):
                for va, vb in zip(a[kind], b[kind], strict=True):
                    assert sorted(va) == sorted(vb)
                    for k in va:
                        np.testing.assert_array_equal(np.asarray(va[k]), np.asarray(vb[k]), err_msg=k)
    assert list(cached._cache) == [0, 1, 2]
    one = max(entry[2] for entry in cached._cache.values())
    small = ViewDataset(src, cfg, seed=4, cache_mb=(2 * one + 1) / 2**20)
    for i in (0, 1, 2, 1):
        small[(0, i)]
    assert list(small._cache) == [2, 1] and small._cached <= small.cache_bytes
