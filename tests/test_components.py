"""Connected components of the radius graph within groups, against BFS-style and SciPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pointins.ops as ops
from pointins.ops import reference as ref

HYP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _roots(labels: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    if first.numel() == 0:
        return torch.full_like(labels, -1)
    return torch.where(labels >= 0, first[labels.clamp(min=0)], -1)


@HYP
@given(
    n=st.integers(0, 250),
    groups=st.integers(0, 4),
    radius=st.floats(0.01, 0.6),
    scale=st.sampled_from([1.0, 0.1, 1000.0]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_matches_reference(n, groups, radius, scale, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    coord = (torch.rand(n, 3, generator=g, dtype=torch.float64) * scale).to(dtype)
    group = torch.randint(-1, groups, (n,), generator=g) if groups else None
    r = radius * scale
    got = ops.connected_components(coord, radius=r, group=group)
    gid = torch.zeros(n, dtype=torch.long) if group is None else group
    expect = ref.radius_components(coord, gid, r)
    assert torch.equal(_roots(got.labels, got.first), expect)
    assert got.sizes.sum() == (expect >= 0).sum()
    # components numbered by first point, sizes consistent with the labels
    assert torch.equal(torch.bincount(got.labels[got.labels >= 0], minlength=got.num_components), got.sizes)
    assert bool((got.first.diff() > 0).all())


def test_matches_scipy_on_a_larger_cloud(device):
    spatial = pytest.importorskip("scipy.spatial")
    csgraph = pytest.importorskip("scipy.sparse.csgraph")
    sparse = pytest.importorskip("scipy.sparse")
    g = torch.Generator().manual_seed(1)
    centres = torch.rand(40, 3, generator=g) * 10
    coord = centres[torch.randint(0, 40, (20_000,), generator=g)] + 0.15 * torch.randn(20_000, 3, generator=g)
    r = 0.08
    got = ops.connected_components(coord.to(device), radius=r)
    pairs = spatial.cKDTree(coord.double().numpy()).query_pairs(r, output_type="ndarray")
    d = np.linalg.norm(coord.double().numpy()[pairs[:, 0]] - coord.double().numpy()[pairs[:, 1]], axis=1)
    pairs = pairs[d < r]  # query_pairs is <= r; ours is strictly < r
    adj = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(20_000, 20_000))
    num, lab = csgraph.connected_components(adj, directed=False)
    assert got.num_components == num
    # same partition: our labels and scipy's are a bijection
    ours = got.labels.cpu().numpy()
    assert len(set(zip(ours.tolist(), lab.tolist(), strict=True))) == num


def test_strict_radius_groups_samples_and_min_size(device):
    coord = torch.tensor(
        [[0.0, 0, 0], [0.5, 0, 0], [0.25, 0, 0], [5, 5, 5], [5.1, 5, 5], [5.2, 5, 5], [9, 9, 9]], device=device
    )
    # 0 and 1 are exactly 0.5 apart: not linked at radius 0.5, linked through 2
    c = ops.connected_components(coord[:2], radius=0.5)
    assert c.labels.tolist() == [0, 1]
    c = ops.connected_components(coord, radius=0.5)
    assert c.labels.tolist() == [0, 0, 0, 1, 1, 1, 2] and c.sizes.tolist() == [3, 3, 1]
    c = ops.connected_components(coord, radius=0.5, min_size=2)
    assert c.labels.tolist() == [0, 0, 0, 1, 1, 1, -1] and c.num_components == 2
    # a group boundary cuts component 1; group -1 leaves a point out
    grp = torch.tensor([0, 0, 0, 1, 2, 1, -1], device=device)
    c = ops.connected_components(coord, radius=0.5, group=grp)
    assert c.labels.tolist() == [0, 0, 0, 1, 2, 1, -1]
    # samples never merge, even on identical coordinates
    both = torch.cat([coord[:3], coord[:3]])
    c = ops.connected_components(both, torch.tensor([0, 3, 6], device=device), radius=0.5)
    assert c.labels.tolist() == [0, 0, 0, 1, 1, 1] and c.offsets.tolist() == [0, 1, 2] and c.batch.tolist() == [0, 1]
    # unsorted per-point sample ids
    c = ops.connected_components(both, batch=torch.tensor([1, 0, 1, 0, 1, 0], device=device), radius=0.5)
    assert c.labels.tolist() == [0, 1, 0, 1, 0, 1]


def test_dense_clusters_are_fast_and_correct():
    # Shifted points collapse onto instance centres (the SCR case): thousands of points per cell.
    g = torch.Generator().manual_seed(2)
    centres = torch.rand(20, 3, generator=g) * 5
    lab = torch.randint(0, 20, (100_000,), generator=g)
    coord = centres[lab] + 0.002 * torch.randn(100_000, 3, generator=g)
    c = ops.connected_components(coord, radius=0.04)
    assert c.num_components == 20
    assert len(set(zip(c.labels.tolist(), lab.tolist(), strict=True))) == 20


def test_deterministic_across_thread_counts():
    g = torch.Generator().manual_seed(3)
    coord = torch.rand(50_000, 3, generator=g) * 3
    prev = torch.get_num_threads()
    try:
        out = []
        for t in (1, max(2, prev)):
            torch.set_num_threads(t)
            out.append(ops.connected_components(coord, radius=0.03).labels)
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(out[0], out[1])


def test_empty_and_all_ignored(device):
    e = ops.connected_components(torch.zeros(0, 3, device=device), radius=1.0)
    assert e.num_components == 0 and e.labels.numel() == 0
    c = ops.connected_components(torch.rand(5, 3, device=device), radius=1.0, group=torch.full((5,), -1, device=device))
    assert c.num_components == 0 and (c.labels == -1).all()


def test_bad_input(device):
    coord = torch.rand(10, 3, device=device)
    bad = coord.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf in 1 points \(first at index 3\)"):
        ops.connected_components(bad, radius=0.1)
    grp = torch.zeros(10, dtype=torch.long, device=device)
    grp[3] = -1  # a left-out point may hold NaN
    assert ops.connected_components(bad, radius=0.1, group=grp).labels[3] == -1
    with pytest.raises(ValueError, match="radius must be finite and > 0"):
        ops.connected_components(coord, radius=0.0)
    with pytest.raises(ValueError, match="radius must be finite and > 0"):
        ops.connected_components(coord, radius=float("nan"))
    with pytest.raises(ValueError, match="too large for radius"):
        ops.connected_components(coord * 1e6, radius=1e-3)
    with pytest.raises(TypeError, match="group must be integer"):
        ops.connected_components(coord, radius=0.1, group=torch.zeros(10, device=device))
    with pytest.raises(ValueError, match="min_size must be >= 1"):
        ops.connected_components(coord, radius=0.1, min_size=0)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        ops.connected_components(coord[:, :2], radius=0.1)


def test_opcheck():
    coord = torch.rand(40, 3)
    grp = torch.randint(-1, 3, (40,))
    torch.library.opcheck(torch.ops.pointins.radius_components, (coord, grp, 0.3))
