"""Hash table, voxelization, kernel maps and stride-2 down-sampling maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pointins.ops as ops
from pointins.ops import reference as ref

HYP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def cloud(counts, scale=3.0, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(sum(counts))
    c = (torch.rand(n, 3, generator=g, dtype=torch.float64) * scale).to(dtype).to(device)
    offsets = torch.tensor([0, *np.cumsum(counts).tolist()], device=device)
    return c, offsets


# --- hash table --------------------------------------------------------------------------------


@HYP
@given(n=st.integers(0, 500), span=st.integers(1, 2**40), seed=st.integers(0, 2**16))
def test_hash_table_matches_reference(n, span, seed):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randint(0, span, (n,), generator=g)  # duplicates when span is small
    table = ops.HashTable(keys)
    queries = torch.cat([keys, torch.randint(0, span + 10, (200,), generator=g), torch.tensor([-1, -7])])
    got = table.query(queries)
    assert torch.equal(got, ref.hash_lookup(keys, queries))
    assert table.capacity >= 2 * n and table.capacity & (table.capacity - 1) == 0
    assert torch.equal(table.contains(queries), got >= 0)


def test_hash_table_devices_and_errors(device):
    keys = torch.tensor([10, 3, 10, 2**62], device=device)
    t = ops.HashTable(keys)
    assert t.query(torch.tensor([10, 3, 2**62, 4], device=device)).tolist() == [0, 1, 3, -1]
    assert len(t) == 4 and "HashTable(keys=4" in repr(t)
    with pytest.raises(ValueError, match="non-negative keys only"):
        ops.HashTable(torch.tensor([1, -1, 2], device=device))
    with pytest.raises(ValueError, match="power of two larger than the number of keys"):
        ops.HashTable(keys, capacity=4)
    with pytest.raises(TypeError, match="int64 packed keys"):
        ops.HashTable(keys.int())
    empty = ops.HashTable(torch.zeros(0, dtype=torch.long, device=device))
    assert empty.query(torch.tensor([0, 5], device=device)).tolist() == [-1, -1]


def test_hash_table_numpy_roundtrip():
    keys = np.array([5, 9, 5, 1], dtype=np.int64)
    out = ops.HashTable(keys).query(np.array([1, 5, 6], dtype=np.int64))
    assert isinstance(out, np.ndarray) and out.tolist() == [3, 0, -1]


# --- voxelize ----------------------------------------------------------------------------------


FIELDS = ("grid_coord", "batch", "offsets", "inverse", "counts", "index", "point_grid_coord")


@pytest.mark.parametrize("mode", ["train", "test", "all"])
def test_voxelize_matches_reference(device, mode):
    coord, offsets = cloud([3000, 0, 1, 5000], device=device)
    feats = torch.randn(coord.shape[0], 4, device=device)
    v = ops.voxelize(coord, offsets, 0.1, mode=mode, seed=7, feats=feats)
    r = ops.voxelize(coord.cpu(), offsets.cpu(), 0.1, mode=mode, seed=7, feats=feats.cpu(), backend="reference")
    for f in FIELDS:
        assert torch.equal(getattr(v, f).cpu(), getattr(r, f)), f
    torch.testing.assert_close(v.feats.cpu(), r.feats)
    if mode == "test":
        assert torch.equal(v.fragments.cpu(), r.fragments)


def test_voxelize_structure():
    coord, offsets = cloud([4000, 2500], scale=2.0)
    v = ops.voxelize(coord, offsets, 0.2, mode="test", seed=0, feats=coord)
    n = coord.shape[0]
    assert int(v.counts.sum()) == n and len(v) == v.grid_coord.shape[0]
    # voxels are unique per sample and every point lies in its voxel
    keys = ops.pack_keys(v.grid_coord, v.batch)
    assert torch.unique(keys).numel() == len(v)
    assert torch.equal(v.point_grid_coord, v.grid_coord[v.inverse])
    assert torch.equal(v.offsets, torch.tensor([0, int((v.batch == 0).sum()), len(v)]))
    # kept points belong to their voxel; voxels numbered by first point
    assert torch.equal(v.inverse[v.index], torch.arange(len(v)))
    first = torch.full((len(v),), n).scatter_reduce(0, v.inverse, torch.arange(n), "amin")
    assert bool((first.diff() > 0).all())
    # fragments: fragment f takes the (f mod count)-th point of each voxel, so all points appear
    frag = v.fragments
    assert frag.shape == (int(v.counts.max()), len(v))
    assert torch.equal(torch.unique(frag), torch.arange(n))
    assert torch.equal(v.inverse[frag], torch.arange(len(v)).expand_as(frag))
    # feature means
    expected = torch.zeros(len(v), 3, dtype=torch.float64).index_add_(0, v.inverse, coord.double())
    torch.testing.assert_close(v.feats, (expected / v.counts[:, None]).float())


def test_voxelize_train_is_uniform_and_seeded():
    coord = torch.tensor([[0.01, 0.01, 0.01], [0.02, 0.02, 0.02], [0.03, 0.01, 0.02], [0.04, 0.04, 0.04]])
    picks = torch.stack([ops.voxelize(coord, None, 1.0, seed=s).index for s in range(4000)]).squeeze(1)
    freq = torch.bincount(picks, minlength=4).float() / 4000
    assert bool(((freq - 0.25).abs() < 0.035).all()), freq  # ~5 sigma
    a = ops.voxelize(coord, None, 1.0, seed=123).index
    assert torch.equal(a, ops.voxelize(coord, None, 1.0, seed=123).index)
    torch.manual_seed(5)
    b = ops.voxelize(coord, None, 1.0).index
    torch.manual_seed(5)
    assert torch.equal(b, ops.voxelize(coord, None, 1.0).index)  # seed=None follows torch's RNG


@pytest.mark.parametrize("seed", [0, 7, 2**62 - 3])
def test_voxel_select_redraws_a_cached_grouping_exactly(seed):
    """voxel_select on a grouping (mode="all") picks, for every seed, exactly voxelize(mode="train")'s points:
    compiled and reference; a voxel id with no points gets -1; bad maps are refused."""
    g = torch.Generator().manual_seed(seed % 1000)
    coord = torch.rand(20_000, 3, generator=g) * 3
    grouping = ops.voxelize(coord, None, 0.05, mode="all")
    want = ops.voxelize(coord, None, 0.05, mode="train", seed=seed).index
    v = len(grouping)
    assert torch.equal(ops.voxel_select(grouping.inverse, v, seed), want)
    assert torch.equal(ops.voxel_select(grouping.inverse, v, seed, backend="reference"), want)
    extra = ops.voxel_select(grouping.inverse, v + 2, seed)
    assert torch.equal(extra[:v], want) and extra[v:].tolist() == [-1, -1]
    assert torch.equal(ops.voxel_select(grouping.inverse, v + 2, seed, backend="reference"), extra)
    for bad, n in ((grouping.inverse.clone().fill_(v), v), (grouping.inverse - 1, v)):
        with pytest.raises(ValueError, match="voxel ids in"):
            ops.voxel_select(bad, n, seed)
    with pytest.raises(TypeError, match="1-D integer"):
        ops.voxel_select(coord, v, seed)
    with pytest.raises(ValueError, match="seed"):
        ops.voxel_select(grouping.inverse, v, -1)
    torch.library.opcheck(torch.ops.pointins.voxel_select.default, (grouping.inverse, v, seed))


def test_voxelize_unsorted_batch_ids():
    coord, offsets = cloud([300, 400])
    batch = ref.offsets_to_batch(offsets)
    perm = torch.randperm(coord.shape[0])
    v = ops.voxelize(coord, None, 0.3, batch=batch, mode="all")
    vp = ops.voxelize(coord[perm], None, 0.3, batch=batch[perm], mode="all")
    # same voxels (as sets of points), expressed in the permuted order
    assert len(v) == len(vp)
    assert torch.equal(vp.point_grid_coord, v.point_grid_coord[perm])
    assert torch.equal(vp.inverse[vp.index], torch.arange(len(vp)))


def test_voxelize_edge_cases(device):
    empty = ops.voxelize(torch.zeros(0, 3, device=device), None, 0.1, mode="test")
    assert len(empty) == 0 and empty.inverse.numel() == 0 and empty.fragments.numel() == 0
    one = ops.voxelize(torch.tensor([[1.0, 2.0, 3.0]], device=device), None, 0.1)
    assert len(one) == 1 and one.index.tolist() == [0] and one.grid_coord.tolist() == [[0, 0, 0]]
    same = ops.voxelize(torch.full((50, 3), 0.5, device=device), None, 0.1, mode="test")
    assert len(same) == 1 and same.counts.tolist() == [50] and same.fragments.shape == (50, 1)
    c64, off = cloud([100, 200], dtype=torch.float64, device=device)
    v64 = ops.voxelize(c64, off.int(), 0.05, mode="all")
    v32 = ops.voxelize(c64.float(), off, 0.05, mode="all")
    assert len(v64) > 0 and v64.offsets.dtype == torch.long and len(v32) > 0
    nc = c64.t().contiguous().t()  # non-contiguous view of the same values
    assert not nc.is_contiguous()
    assert torch.equal(ops.voxelize(nc, off, 0.05, mode="all").inverse, v64.inverse)


def test_voxelize_errors(device):
    coord, offsets = cloud([100, 100], device=device)
    bad = coord.clone()
    bad[5, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        ops.voxelize(bad, offsets, 0.1)
    far = coord.clone()
    far[0, 0] = 3000.0  # 3 km at 2 cm = 150000 cells > 2^16
    with pytest.raises(
        ValueError,
        match=r"grid_size \[0.02, 0.02, 0.02\].*spans up to \[2999.*\[149998, .*2\^16 = 65536.*larger grid_size",
    ):
        ops.voxelize(far, offsets, 0.02)
    with pytest.raises(ValueError, match="not valid CSR offsets"):
        ops.voxelize(coord, torch.tensor([0, 100, 150], device=device), 0.1)
    with pytest.raises(ValueError, match="mode must be"):
        ops.voxelize(coord, offsets, 0.1, mode="eval")
    with pytest.raises(ValueError, match="one row per point"):
        ops.voxelize(coord, offsets, 0.1, feats=coord[:10])


# --- kernel maps --------------------------------------------------------------------------------


def unique_voxels(counts, span=12, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    grid = torch.randint(0, span, (int(sum(counts)), 3), generator=g)
    batch = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    keys = ref.pack_keys(grid, batch)
    _, first, _ = ref.voxel_group(keys)
    return grid[first].int().to(device), batch[first].to(device)


@pytest.mark.parametrize(("k", "dilation"), [(3, 1), (5, 1), (3, 2), (1, 1)])
def test_kernel_map_matches_reference(device, k, dilation):
    grid, batch = unique_voxels([800, 600], device=device)
    km = ops.kernel_map(grid, batch=batch, kernel_size=k, dilation=dilation)
    assert km.shape == (grid.shape[0], k**3) and km.dtype == torch.int64
    assert torch.equal(km.cpu(), ref.kernel_map(grid.cpu(), batch.cpu(), k, dilation))
    n = grid.shape[0]
    assert torch.equal(km[:, k**3 // 2], torch.arange(n, device=device))  # centre = self
    # symmetry: i sees j through offset q  <=>  j sees i through the mirrored offset
    i, q = (km >= 0).nonzero(as_tuple=True)
    j = km[i, q]
    assert torch.equal(km[j, k**3 - 1 - q], i)
    assert torch.equal(batch[i], batch[j])  # never across samples


def test_kernel_map_offsets_order_and_errors():
    grid = torch.tensor([[1, 1, 1], [2, 1, 1], [1, 2, 1], [1, 1, 2]], dtype=torch.int32)
    km = ops.kernel_map(grid)
    # x slowest, z fastest: +x = 22, +y = 16, +z = 14
    assert km[0, 22] == 1 and km[0, 16] == 2 and km[0, 14] == 3
    assert km[1, 4] == 0  # -x from voxel 1
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ops.kernel_map(grid, kernel_size=4)
    with pytest.raises(ValueError, match="negative values"):
        ops.kernel_map(grid - 2)
    assert ops.kernel_map(torch.zeros(0, 3, dtype=torch.int32)).shape == (0, 27)
    # an int64 coordinate past 2^32 is an error, never a silent wrap to a small int32
    with pytest.raises(ValueError, match="does not fit 16 bits per axis"):
        ops.kernel_map(torch.tensor([[2**32 + 1, 0, 0], [1, 0, 0]]))
    wide = ops.kernel_map(torch.tensor([[1, 1, 1], [2, 1, 1]]))  # int64 input, same map as int32
    assert torch.equal(wide, ops.kernel_map(torch.tensor([[1, 1, 1], [2, 1, 1]], dtype=torch.int32)))


def test_kernel_map_pairs_and_transpose():
    grid, batch = unique_voxels([300])
    km = ops.kernel_map(grid, batch=batch)
    in_idx, out_idx, koff = ops.kernel_map_pairs(km)
    assert koff.shape == (28,) and int(koff[-1]) == int((km >= 0).sum())
    for q in range(27):
        sl = slice(int(koff[q]), int(koff[q + 1]))
        assert torch.equal(out_idx[sl], (km[:, q] >= 0).nonzero().squeeze(1))
        assert torch.equal(in_idx[sl], km[out_idx[sl], q])
    t = ops.transpose_kernel_map(km, grid.shape[0])
    assert torch.equal(t, km.flip(1))  # a submanifold map is its own mirror


@pytest.mark.parametrize("shape", [(0, 27), (5, 0), (1, 1), (20_000, 27), (17_000, 8)])
def test_kernel_map_pairs_compiled_equals_torch_ops(shape):
    # the CPU op counts and fills per 8192-row block: several blocks, any thread count, same layout
    g = torch.Generator().manual_seed(shape[0])
    km = torch.randint(-1, max(1, shape[0]), shape, generator=g)
    km[torch.rand(shape, generator=g) < 0.6] = -1
    mt = km.t()
    k_idx, out_idx = (mt >= 0).nonzero(as_tuple=True)
    counts = (mt >= 0).sum(1)
    want = (mt[k_idx, out_idx], out_idx, torch.cat([counts.new_zeros(1), counts.cumsum(0)]))
    threads = torch.get_num_threads()
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            got = ops.kernel_map_pairs(km)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    finally:
        torch.set_num_threads(threads)


def test_downsample_maps(device):
    grid, batch = unique_voxels([500, 400], span=16, device=device)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long, device=device), torch.bincount(batch).cumsum(0)])
    ds = ops.downsample(grid, offsets)
    n, m = grid.shape[0], ds.grid_coord.shape[0]
    assert ds.kernel_map.shape == (m, 8)
    assert torch.equal(ds.grid_coord[ds.parent], torch.div(grid, 2, rounding_mode="floor"))
    assert torch.equal(ds.batch[ds.parent], batch)
    valid = ds.kernel_map >= 0
    assert int(valid.sum()) == n  # every fine voxel exactly once
    mm, kk = valid.nonzero(as_tuple=True)
    fine = ds.kernel_map[mm, kk]
    assert torch.equal(ds.parent[fine], mm)
    d = grid[fine] - 2 * ds.grid_coord[mm]
    assert torch.equal(((d[:, 0] * 2 + d[:, 1]) * 2 + d[:, 2]).long(), kk)
    up = ds.up_map()
    assert up.shape == (n, 8) and bool(((up >= 0).sum(1) == 1).all())
    assert torch.equal(up.max(1).values, ds.parent)
    assert torch.equal(ds.offsets, torch.cat([ds.offsets.new_zeros(1), torch.bincount(ds.batch).cumsum(0)]))


# --- op plumbing --------------------------------------------------------------------------------


def test_voxel_opcheck(device):
    keys = torch.randint(0, 50, (200,), device=device)
    torch.library.opcheck(torch.ops.pointins.hash_build.default, (keys, 512))
    tk, tv = torch.ops.pointins.hash_build(keys, 512)
    torch.library.opcheck(torch.ops.pointins.hash_query.default, (tk, tv, torch.randint(0, 60, (70,), device=device)))
    torch.library.opcheck(torch.ops.pointins.voxel_group.default, (keys,))
    torch.library.opcheck(torch.ops.pointins.voxel_group.default, (keys, 11))
    grid, batch = unique_voxels([100, 50], device=device)
    torch.library.opcheck(torch.ops.pointins.kernel_map.default, (grid, batch, 3, 1, 16))


def test_voxelize_compiles():
    def f(coord):
        g = ops.grid_coord(coord, None, 0.1)
        keys = ops.pack_keys(g)
        inv, _first, counts, _sel = torch.ops.pointins.voxel_group(keys, 3)
        return inv, counts.sum()

    coord = torch.rand(500, 3)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    a, b = compiled(coord)
    ea, eb = f(coord)
    assert torch.equal(a, ea) and int(b) == int(eb)


@pytest.mark.cuda
@pytest.mark.slow
def test_kernel_map_past_int32_elements_gpu():
    """A dense 430^3 block: 79.5M voxels x 27 offsets = 2.15e9 map entries (> 2^31)."""
    side = 430
    free, _ = torch.cuda.mem_get_info()
    if free < 30 * 2**30:
        pytest.skip("needs ~30 GiB free GPU memory")
    r = torch.arange(side, device="cuda", dtype=torch.int32)
    grid = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    n = grid.shape[0]
    assert n * 27 > 2**31
    km = ops.kernel_map(grid)
    # in the dense block, voxel (x, y, z) has index (x*side + y)*side + z
    idx = torch.cat([torch.arange(0, 2000, device="cuda"), torch.arange(n - 2000, n, device="cuda")])
    g = grid[idx].long()
    for q in (0, 4, 13, 22, 26):
        dx, dy, dz = q // 9 - 1, (q // 3) % 3 - 1, q % 3 - 1
        nb = g + torch.tensor([dx, dy, dz], device="cuda")
        inside = ((nb >= 0) & (nb < side)).all(1)
        expected = torch.where(inside, (nb[:, 0] * side + nb[:, 1]) * side + nb[:, 2], -1)
        assert torch.equal(km[idx, q], expected), q
