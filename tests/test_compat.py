"""Drop-in layers (pointins.compat): torch_scatter's API on our kernels, checked against PyTorch's own
scatter_reduce on random inputs, and against torch_scatter's own test suite where a checkout is present."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pointins.compat
from pointins import ops
from pointins.compat import torch_scatter as ts

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import pointcept_src  # noqa: E402  (tools/: loads Pointcept's own code from a checkout)

TORCH = {"sum": "sum", "mean": "mean", "min": "amin", "max": "amax", "mul": "prod"}


def _reference(src, index, dim, size, reduce):
    """PyTorch's scatter_reduce with torch_scatter's conventions (empty entries 0, 1 for a product)."""
    index = ts.broadcast(index, src, dim)
    shape = list(src.shape)
    shape[dim] = size
    base = torch.zeros(shape, dtype=src.dtype)
    out = base.scatter_reduce(dim, index, src, TORCH[reduce], include_self=False)
    if reduce == "mul":
        count = torch.zeros(shape).scatter_add(dim, index, torch.ones(index.shape))
        out = torch.where(count > 0, out, torch.ones_like(out))
    return out


@pytest.mark.parametrize("reduce", ["sum", "mean", "min", "max", "mul"])
@pytest.mark.parametrize("full_index", [False, True])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_scatter_matches_torch(reduce, full_index, dim):
    g = torch.Generator().manual_seed(hash((reduce, full_index, dim)) % 2**31)
    src = torch.randn(7, 5, 3, generator=g, dtype=torch.float64)
    d = dim % src.dim()
    size = 6
    index = torch.randint(0, size, src.shape if full_index else (src.shape[d],), generator=g)
    got = ts.scatter(src, index, dim, dim_size=size, reduce=reduce)
    want = _reference(src, index, d, size, reduce)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_arg_conventions_and_out():
    src = torch.tensor([1.0, 3, 2, 4, 5, 6])
    index = torch.tensor([0, 1, 0, 1, 1, 3])
    val, arg = ts.scatter_max(src, index)
    assert val.tolist() == [2, 5, 0, 6] and arg.tolist() == [2, 4, 6, 5]  # empty segment: value 0, arg N
    out = torch.full((4,), 4.5)
    val, arg = ts.scatter_max(src, index, out=out)
    assert val is out and out.tolist() == [4.5, 5, 4.5, 6] and arg.tolist() == [6, 4, 6, 5]  # out takes part
    total = torch.ones(4)
    assert ts.scatter_sum(src, index, out=total) is total and total.tolist() == [4, 13, 1, 7]
    assert ts.scatter_mean(torch.tensor([1, 2, 4]), torch.tensor([0, 0, 1])).tolist() == [1, 4]  # ints: floored
    assert ts.segment_csr(src, torch.tensor([0, 2, 2, 6]), reduce="max").tolist() == [3, 0, 6]
    assert ts.gather_csr(torch.tensor([1.0, 2, 3]), torch.tensor([0, 2, 2, 3])).tolist() == [1, 1, 3]


def test_gradients_and_script():
    src = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 2, 0, 1, 2, 2])
    for reduce in ("sum", "mean", "min", "max", "mul"):
        assert torch.autograd.gradcheck(lambda s, r=reduce: ts.scatter(s, index, 0, None, 4, r), (src,))
    assert torch.autograd.gradcheck(lambda s: ts.segment_csr(s, torch.tensor([0, 2, 6]), None, "mean"), (src,))
    scripted = torch.jit.script(ts.scatter_softmax)
    x = torch.randn(6)
    torch.testing.assert_close(scripted(x, index), ts.scatter_softmax(x, index))
    grouped = ts.scatter_softmax(x, index)
    for k in range(3):
        torch.testing.assert_close(grouped[index == k], torch.softmax(x[index == k], 0))


def test_install_resolves_the_import():
    code = ("import pointins.compat, sys; print(pointins.compat.install()); import torch_scatter; "
            "from torch_scatter.testing import dtypes; print(torch_scatter.__name__)")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pointins.compat.torch_scatter" in res.stdout
    assert importlib.import_module("pointins.compat").install.__doc__
    assert pointins.compat.install  # importable in-process too


PEER = ROOT.parent / ".mirror" / "rusty1s+pytorch_scatter" / "repo"


@pytest.mark.skipif(not PEER.exists(), reason="no checkout of torch_scatter (fetch github:rusty1s/pytorch_scatter)")
def test_torch_scatter_own_suite():
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "peer_tests.py"), "torch_scatter", "-x", "-W",
                          "ignore"], capture_output=True, text=True, check=False)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:]


POINTCEPT = pointcept_src.POINTCEPT


def _pointcept_serialization(tmp_path):
    return pointcept_src.serialization(POINTCEPT, tmp_path)


@pytest.mark.skipif(not POINTCEPT.exists(), reason="no checkout of Pointcept (fetch github:Pointcept/Pointcept)")
def test_pointcept_encode_decode_are_pointcepts(tmp_path):
    """pointins.compat.pointcept.encode/decode against Pointcept's own serialization code, read from a checkout
    at run time (pointcept/models/utils/serialization)."""
    theirs = _pointcept_serialization(tmp_path)
    from pointins.compat import pointcept as ours

    g = torch.Generator().manual_seed(0)
    grid = torch.randint(0, 2**10, (500, 3), generator=g)
    batch = torch.randint(0, 4, (500,), generator=g)
    for order in ("z", "z-trans", "hilbert", "hilbert-trans"):
        for depth in (10, 16):
            want = theirs.encode(grid, batch, depth, order)
            got = ours.encode(grid, batch, depth, order)
            assert torch.equal(got, want), (order, depth)
    code = theirs.encode(grid, batch, 16, "hilbert")
    g_want, b_want = theirs.decode(code, 16, "hilbert")
    g_got, b_got = ours.decode(code, 16, "hilbert")
    assert torch.equal(g_got.long(), g_want.long()) and torch.equal(b_got, b_want)
    # Pointcept's decode(order="z") unpacks key2xyz's four outputs into three (it raises); its key2xyz is the truth
    code = theirs.encode(grid, batch, 16, "z")
    xyz = theirs.default.z_order_decode_(code & (2**48 - 1), depth=16)[:3]
    g_got, b_got = ours.decode(code, 16, "z")
    assert torch.equal(g_got.long(), torch.stack(xyz, 1).long()) and torch.equal(b_got, batch)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x: ops.kmeans(x, 20), r"value 20 filled the parameter 'offsets'.*did you mean k=20"),
        (lambda x: ops.connected_components(x[:, :3], 0.04), r"did you mean radius=0.04.*connected_components\(coord"),
        (lambda x: ops.voxelize(x[:, :3], 0.05), r"did you mean grid_size=0.05"),
        (lambda x: ops.encode(torch.zeros(4, 3, dtype=torch.long), None, 16, "z"), r"order before depth.*compat"),
    ],
)
def test_positional_slips_name_the_parameter(call, match):
    with pytest.raises(TypeError, match=match):
        call(torch.randn(50, 4))


def test_numpy_in_numpy_out_for_result_objects():
    import dataclasses

    import numpy as np

    x = np.random.default_rng(0).random((300, 3), dtype=np.float32)
    results = [ops.voxelize(x, None, 0.1), ops.kmeans(x, None, k=4), ops.connected_components(x, None, 0.05),
               ops.serialize((x * 50).astype(np.int32))]  # fmt: skip
    for res in results:
        arrays = [getattr(res, f.name) for f in dataclasses.fields(res)]
        assert all(isinstance(a, np.ndarray) for a in arrays if a is not None and not isinstance(a, int | tuple))
    torch_res = ops.kmeans(torch.from_numpy(x), None, k=4)
    assert isinstance(torch_res.labels, torch.Tensor)
    np.testing.assert_array_equal(results[1].labels, torch_res.labels.numpy())


@pytest.mark.parametrize("script", ["gpu_check.sh", "count_syncs.py", "quick.py", "sanitize_ops.py", "peers.py",
                                    "tune_attention.py", "tune_sparse_conv.py", "profile_step.py",
                                    "bench_compat.py"])  # fmt: skip
def test_bench_scripts_answer_help(script, tmp_path):
    runner = "bash" if script.endswith(".sh") else sys.executable
    cmd = [runner, str(ROOT / "bench" / script)]
    res = subprocess.run([*cmd, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-500:]
    assert "Takes" in res.stdout or "minutes" in res.stdout
    assert not any(tmp_path.iterdir())  # --help is not an output folder


def test_faiss_shaped_kmeans():
    import numpy as np

    from pointins.compat.faiss import Kmeans

    x = np.random.default_rng(0).random((800, 6), dtype=np.float32)
    km = Kmeans(6, 7, niter=30, seed=3)
    obj = km.train(x)
    assert km.centroids.shape == (7, 6) and km.centroids.dtype == np.float32 and km.obj == [obj]
    d, i = km.assign(x)
    full = ((x[:, None, :] - km.centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(i, full.argmin(1))
    np.testing.assert_allclose(d, full.min(1), rtol=1e-4, atol=1e-5)
    assert obj == pytest.approx(float(full.min(1).sum()), rel=1e-4)
    with pytest.raises(ValueError, match=r"x must be \(n, 6\)"):
        km.train(x[:, :3])


def test_scipy_shaped_radius_components():
    sp = pytest.importorskip("scipy.sparse")
    import numpy as np
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    from pointins.compat.scipy import radius_components

    p = np.random.default_rng(1).random((2000, 3))
    n, labels = radius_components(p, 0.06)
    pairs = cKDTree(p).query_pairs(0.06, output_type="ndarray")
    graph = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(p), len(p)))
    n_ref, ref = connected_components(graph, directed=False)
    assert n == n_ref and np.array_equal(labels, ref)


def _pointcept_grid_sample():
    return pointcept_src.grid_sample(POINTCEPT)


@pytest.mark.skipif(not POINTCEPT.exists(), reason="no checkout of Pointcept (fetch github:Pointcept/Pointcept)")
@pytest.mark.parametrize("mode", ["train", "test"])
def test_grid_sample_is_pointcepts(mode):
    import numpy as np

    from pointins.compat.pointcept import GridSample

    theirs_cls = _pointcept_grid_sample()
    rng = np.random.default_rng(0)
    data = {"coord": rng.uniform(-1, 2, (3000, 3)).astype(np.float32), "segment": rng.integers(0, 5, 3000),
            "normal": rng.normal(size=(3000, 3)).astype(np.float32), "name": "scene0000_00"}  # fmt: skip
    # Pointcept's train mode projects with the normals it has already subsampled (a shape error): project in test only
    kw = dict(grid_size=0.1, mode=mode, return_inverse=True, return_grid_coord=True, return_min_coord=True,
              return_displacement=True, project_displacement=mode == "test")  # fmt: skip
    ours = GridSample(**kw, seed=0)({k: v.copy() if hasattr(v, "copy") else v for k, v in data.items()})
    theirs = theirs_cls(**kw)({k: v.copy() if hasattr(v, "copy") else v for k, v in data.items()})
    ours, theirs = (ours, theirs) if mode == "test" else ([ours], [theirs])
    assert len(ours) == len(theirs)
    grid = np.floor(data["coord"] / 0.1).astype(np.int64)
    grid -= grid.min(0)
    for a, b in zip(ours, theirs, strict=True):
        assert sorted(a) == sorted(b) and a["index_valid_keys"] == b["index_valid_keys"] and a["name"] == b["name"]
        assert sorted(map(tuple, a["grid_coord"])) == sorted(map(tuple, b["grid_coord"]))  # the same voxels
        for d in (a, b):  # every point maps to its voxel's row; rows hold points of their voxel
            assert np.array_equal(d["grid_coord"][d["inverse"]], grid)
            np.testing.assert_allclose(d["min_coord"], b["min_coord"])
        for d in (a, b):  # each kept point lies in its row's voxel, one point per voxel
            assert np.array_equal(
                np.floor(d["coord"] / 0.1).astype(np.int64)
                - grid.min(0)
                - (np.floor(data["coord"] / 0.1).astype(np.int64).min(0)),
                d["grid_coord"],
            )
            assert len(np.unique(d["grid_coord"], axis=0)) == len(d["grid_coord"])
        assert a["displacement"].shape == b["displacement"].shape
    if mode == "test":
        cover = np.concatenate([p["index"] for p in ours])
        assert set(cover.tolist()) == set(range(3000))


def test_pointcept_offsets():
    from pointins.compat.pointcept import offsets_from_pointcept

    off = offsets_from_pointcept([3, 7, 7, 12])
    assert off.tolist() == [0, 3, 7, 7, 12]
    assert ops.segment_reduce(torch.ones(12, 1), offsets=off).ravel().tolist() == [3, 4, 0, 5]


def test_fullgraph_paths_are_as_the_readme_says():
    """README: which op paths torch.compile(fullgraph=True) takes whole, and which graph-break (and why)."""
    x, idx, off = torch.randn(100, 8), torch.randint(0, 10, (100,)), torch.tensor([0, 50, 100])
    g, c = torch.randint(0, 60, (100, 3)), torch.rand(100, 3)
    vox = ops.voxelize(c, None, 0.1)
    kmap, w = ops.kernel_map(vox.grid_coord), torch.randn(27, 8, 4)
    feat = torch.randn(len(vox.grid_coord), 8)
    whole = {"segment_reduce(offsets)": lambda: ops.segment_reduce(x, offsets=off), "encode": lambda: ops.encode(g),
             "sparse_conv(validate=False)": lambda: ops.sparse_conv(feat, kmap, w, validate=False)}  # fmt: skip
    breaks = {"segment_reduce(index)": lambda: ops.segment_reduce(x, index=idx, num_segments=10),
              "serialize": lambda: ops.serialize(g, off).code,
              "voxelize": lambda: ops.voxelize(c, None, 0.1).grid_coord,
              "sparse_conv(validate=True)": lambda: ops.sparse_conv(feat, kmap, w)}  # fmt: skip
    for name, fn in whole.items():
        torch._dynamo.reset()
        torch.testing.assert_close(torch.compile(fn, fullgraph=True, backend="eager")(), fn(), msg=name)
    for name, fn in breaks.items():
        torch._dynamo.reset()
        with pytest.raises(Exception):  # noqa: B017 -- dynamo's error types vary across torch versions
            torch.compile(fn, fullgraph=True, backend="eager")()
        torch.testing.assert_close(torch.compile(fn, backend="eager")(), fn(), msg=name)  # with the breaks: fine


@pytest.mark.skipif(not POINTCEPT.exists(), reason="no checkout of Pointcept (fetch github:Pointcept/Pointcept)")
def test_point_serialization_fills_what_pointcept_fills(tmp_path):
    """The fields Pointcept's Point.serialization fills, from Pointcept's own encode (structure.py's recipe: codes
    per order, argsort, inverse) against ours."""
    from pointins.compat import pointcept as ours

    theirs = _pointcept_serialization(tmp_path)
    g = torch.Generator().manual_seed(1)
    coord = torch.rand(400, 3, generator=g) * 3
    offset = torch.tensor([150, 400])  # Pointcept's offset: no leading 0
    point = ours.serialization({"coord": coord, "grid_size": 0.02, "offset": offset}, order=("z", "hilbert-trans"))
    grid = torch.div(coord - coord.min(0)[0], 0.02, rounding_mode="trunc").int()
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([150, 250]))
    depth = int(grid.max() + 1).bit_length()
    code = torch.stack([theirs.encode(grid, batch, depth, o) for o in ("z", "hilbert-trans")])
    assert point["serialized_depth"] == depth and torch.equal(point["grid_coord"], grid)
    assert torch.equal(point["serialized_code"], code)
    assert torch.equal(code.gather(1, point["serialized_order"]), code.sort(1).values)  # sorted by code
    ar = torch.arange(400).repeat(2, 1)
    assert torch.equal(point["serialized_inverse"].gather(1, point["serialized_order"]), ar)
    shuffled = ours.serialization({"coord": coord, "grid_size": 0.02, "offset": offset}, order=("z", "hilbert-trans"),
                                  shuffle_orders=True, generator=torch.Generator().manual_seed(3))  # fmt: skip
    rows = {tuple(r.tolist()) for r in shuffled["serialized_code"]}
    assert rows == {tuple(r.tolist()) for r in code}


def _open3d_rule(p, v, extra):
    """Open3D's VoxelDownSample as its C++ reads (cpp/open3d/geometry/PointCloud.cpp): the grid anchored at
    min - v / 2, floor((p - anchor) / v), plain means (normals not re-normalised)."""
    import numpy as np

    idx = np.floor((p - (p.min(0) - 0.5 * v)) / v).astype(np.int64)
    _, inv = np.unique(idx, axis=0, return_inverse=True)
    inv = inv.ravel()
    cnt = np.bincount(inv)
    outs = []
    for a in (p, *extra):
        m = np.zeros((len(cnt), 3))
        np.add.at(m, inv, a)
        outs.append(m / cnt[:, None])
    return outs


@pytest.mark.parametrize("v", [0.05, 0.3])
def test_open3d_voxel_down_sample(v):
    import numpy as np

    from pointins.compat.open3d import voxel_down_sample

    rng = np.random.default_rng(3)
    p = rng.uniform(-2, 5, (20_000, 3))
    n, c = rng.normal(size=p.shape), rng.uniform(size=p.shape)
    r = voxel_down_sample(p, v, colors=c, normals=n)
    try:
        import open3d as o3d

        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
        pc.normals, pc.colors = o3d.utility.Vector3dVector(n), o3d.utility.Vector3dVector(c)
        d = pc.voxel_down_sample(v)
        ref = [np.asarray(d.points), np.asarray(d.colors), np.asarray(d.normals)]
    except Exception:  # Open3D absent (it needs libusb): its rule restated from its C++
        ref = _open3d_rule(p, v, (c, n))
    o2 = np.lexsort(r.points.T)
    for want in (ref, _open3d_rule(p, v, (c, n))):  # Open3D itself (when installed) and its rule
        o = np.lexsort(want[0].T)
        assert len(want[0]) == len(r.points)
        for a, b in zip(want, (r.points, r.colors, r.normals), strict=True):
            np.testing.assert_allclose(b[o2], a[o], atol=1e-12)
    assert np.array_equal(r.points[r.inverse].shape, p.shape) and r.inverse.max() == len(r.points) - 1
    with pytest.raises(ValueError, match="voxel_size"):
        voxel_down_sample(p, 0)
