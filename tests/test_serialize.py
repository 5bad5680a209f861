"""Serialization (z-order / Hilbert, PTv3 conventions) and patch partition."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pointins.ops as ops
from pointins.ops import reference as ref

HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@HYP
@given(
    depth=st.integers(1, 21),
    n=st.integers(0, 300),
    orders=st.lists(st.sampled_from(ops.ORDERS), min_size=1, max_size=4),
    with_batch=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_encode_decode_match_reference(depth, n, orders, with_batch, seed):
    gen = torch.Generator().manual_seed(seed)
    grid = torch.randint(0, 2**depth, (n, 3), generator=gen)
    batch = torch.randint(0, min(2 ** (63 - 3 * depth), 1000), (n,), generator=gen) if with_batch else None
    codes = ops.encode(grid, batch, orders, depth)
    assert codes.shape == (len(orders), n) and codes.dtype == torch.int64
    for k, order in enumerate(orders):
        expected = ref.serialize_encode(grid, batch, depth, order)
        assert torch.equal(codes[k], expected), order
        g, b = ops.decode(codes[k], depth, order)
        assert torch.equal(g.long(), grid)
        assert torch.equal(b, torch.zeros(n, dtype=torch.long) if batch is None else batch)
        rg, rb = ref.serialize_decode(expected, depth, order)
        assert torch.equal(rg, g) and torch.equal(rb, b)


def test_z_order_known_values():
    # bit i of x -> 3i+2, y -> 3i+1, z -> 3i
    grid = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 2, 3], [65535, 65535, 65535]])
    assert ops.encode(grid, order="z").tolist() == [4, 2, 1, 29, 2**48 - 1]
    # -trans swaps x and y first: (1, 2, 3) -> z-code of (2, 1, 3) = 32 + 2 + 9
    assert ops.encode(grid, order="z-trans").tolist() == [2, 4, 1, 43, 2**48 - 1]


def _hilbert_walk(depth, order="hilbert"):
    side = 2**depth
    grid = torch.tensor(list(itertools.product(range(side), repeat=3)))
    code = ops.encode(grid, order=order, depth=depth)
    return grid, code


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("order", ["hilbert", "hilbert-trans"])
def test_hilbert_is_a_hilbert_curve(depth, order):
    """The defining properties, checked exhaustively: a bijection onto [0, 8^depth) that
    starts at the origin and moves to a face-adjacent cell at every step."""
    grid, code = _hilbert_walk(depth, order)
    assert torch.equal(torch.sort(code).values, torch.arange(8**depth))
    path = grid[torch.argsort(code)]
    assert path[0].tolist() == [0, 0, 0]
    steps = (path[1:] - path[:-1]).abs().sum(1)
    assert bool((steps == 1).all())


def test_hilbert_first_level_order():
    # Skilling's curve at depth 1: the 3-bit reflected Gray code over (x, y, z), x most significant
    grid, code = _hilbert_walk(1)
    assert grid[torch.argsort(code)].tolist() == [
        [0, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 1, 0], [1, 1, 1], [1, 0, 1], [1, 0, 0],
    ]  # fmt: skip


def test_z_order_is_morton():
    grid, _ = _hilbert_walk(2)
    code = ops.encode(grid, order="z", depth=2)
    assert torch.equal(torch.sort(code).values, torch.arange(64))
    # within each octant the code range is contiguous (recursive Z structure)
    octant = (grid >> 1)[:, 0] * 4 + (grid >> 1)[:, 1] * 2 + (grid >> 1)[:, 2]
    assert torch.equal(code >> 3, octant)


def test_encode_devices_and_batch(device):
    grid = torch.randint(0, 1000, (5000, 3), device=device, dtype=torch.int32)
    offsets = torch.tensor([0, 2000, 2000, 5000], device=device)
    codes = ops.encode(grid, order=list(ops.ORDERS), depth=10, offsets=offsets)
    batch = ref.offsets_to_batch(offsets)
    for k, order in enumerate(ops.ORDERS):
        assert torch.equal(codes[k].cpu(), ref.serialize_encode(grid.cpu(), batch.cpu(), 10, order))
        g, b = ops.decode(codes[k], 10, order)
        assert torch.equal(g, grid) and torch.equal(b, batch)


def test_serialize_sorts_and_inverts(device):
    grid = torch.randint(0, 200, (3000, 3), device=device)
    offsets = torch.tensor([0, 1000, 3000], device=device)
    s = ops.serialize(grid, offsets)
    assert s.depth == int(grid.max() + 1).bit_length() and s.orders == ops.ORDERS
    for k in range(4):
        assert bool((s.code[k][s.order[k]].diff() >= 0).all())
        assert torch.equal(s.order[k][s.inverse[k]], torch.arange(3000, device=device))
        # batch above the curve bits: sample 0 entirely before sample 1
        assert bool((s.order[k][:1000] < 1000).all())


def test_serialize_shuffle_and_depth_errors():
    grid = torch.randint(0, 50, (100, 3))
    g = torch.Generator().manual_seed(3)
    s = ops.serialize(grid, orders=["z", "hilbert"], shuffle_orders=True, generator=g)
    assert sorted(s.orders) == ["hilbert", "z"]
    assert torch.equal(s.code[s.orders.index("z")], ops.encode(grid, order="z", depth=s.depth))
    with pytest.raises(ValueError, match=r"need depth 18 > 16"):
        ops.serialize(torch.tensor([[2**17, 0, 0]]))
    with pytest.raises(ValueError, match="unknown order 'peano'"):
        ops.encode(grid, order="peano")


def test_encode_errors(device):
    with pytest.raises(ValueError, match=r"does not fit depth=4 bits per axis.*needs depth >= 5"):
        ops.encode(torch.tensor([[16, 0, 0]], device=device), depth=4)
    with pytest.raises(ValueError, match="negative values"):
        ops.encode(torch.tensor([[0, -1, 0]], device=device))
    with pytest.raises(ValueError, match=r"leaves 15 bits"):
        ops.encode(torch.zeros(1, 3, dtype=torch.long, device=device), torch.tensor([2**15], device=device))
    with pytest.raises(ValueError, match=r"depth \(bits per axis\) must be in \[1, 21\]"):
        ops.encode(torch.zeros(1, 3, dtype=torch.long, device=device), depth=22)
    with pytest.raises(TypeError, match="int32 or int64"):
        ops.encode(torch.zeros(1, 3, device=device))
    with pytest.raises(ValueError, match="negative values, which no serialization produces"):
        ops.decode(torch.tensor([-5], device=device))


def test_encode_empty_noncontiguous_numpy():
    assert ops.encode(torch.zeros(0, 3, dtype=torch.int32), order=list(ops.ORDERS)).shape == (4, 0)
    base = torch.randint(0, 30, (3, 200))
    assert torch.equal(
        ops.encode(base.t(), order="hilbert", depth=5), ops.encode(base.t().contiguous(), order="hilbert", depth=5)
    )
    g = np.random.default_rng(0).integers(0, 100, (50, 3))
    out = ops.encode(g, order="hilbert", depth=7)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, ops.encode(torch.from_numpy(g), order="hilbert", depth=7).numpy())


# --- patch partition ---------------------------------------------------------------------------


@HYP
@given(counts=st.lists(st.integers(0, 80), min_size=1, max_size=6), k=st.integers(1, 40))
def test_patch_partition_matches_reference(counts, k):
    offsets = torch.tensor([0, *np.cumsum(counts).tolist()])
    pad, unpad, cu = ops.patch_partition(offsets, k)
    rpad, runpad, rcu = ref.patch_partition(offsets, k)
    assert torch.equal(pad, rpad) and torch.equal(unpad, runpad) and torch.equal(cu, rcu)
    assert cu.dtype == torch.int32 and pad.dtype == torch.int64
    assert torch.equal(pad[unpad], torch.arange(int(offsets[-1])))  # every point sits in its slot
    lengths = cu.diff()
    assert bool((lengths <= k).all()) and bool((lengths > 0).all())
    for s, n in enumerate(counts):  # slots of a sample read only that sample's points
        lo, hi = int(offsets[s]), int(offsets[s + 1])
        sl = pad[(pad >= lo) & (pad < hi)]
        assert sl.numel() == (-(-n // k) * k if n > k else n)


def test_patch_partition_ptv3_semantics(device):
    offsets = torch.tensor([0, 5, 7, 7, 10], device=device)
    pad, unpad, cu = ops.patch_partition(offsets, 3)
    # sample 0: 5 points -> 6 slots, slot 5 repeats slot 2; sample 1: 2 points, one short patch
    assert pad.tolist() == [0, 1, 2, 3, 4, 2, 5, 6, 7, 8, 9]
    assert unpad.tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert cu.tolist() == [0, 3, 6, 8, 11]
    with pytest.raises(ValueError, match="not valid CSR offsets"):
        ops.patch_partition(torch.tensor([0, 5, 3], device=device), 3)
    with pytest.raises(ValueError, match="patch_size must be >= 1"):
        ops.patch_partition(offsets, 0)


def test_patch_partition_empty():
    pad, unpad, cu = ops.patch_partition(torch.tensor([0]), 1024)
    assert pad.numel() == 0 and unpad.numel() == 0 and cu.tolist() == [0]


def test_serialize_opcheck(device):
    grid = torch.randint(0, 100, (64, 3), device=device, dtype=torch.int32)
    batch = torch.randint(0, 3, (64,), device=device)
    torch.library.opcheck(torch.ops.pointins.serialize_encode.default, (grid, batch, 8, [0, 1, 2, 3]))
    codes = torch.ops.pointins.serialize_encode(grid, batch, 8, [2])[0]
    torch.library.opcheck(torch.ops.pointins.serialize_decode.default, (codes, 8, 2))
    torch.library.opcheck(
        torch.ops.pointins.patch_partition.default, (torch.tensor([0, 40, 41, 100], device=device), 16)
    )


@pytest.mark.parametrize("bits", [1, 11, 26, 40, 62])
def test_sort_keys_is_torch_stable_sort(bits):
    """The CPU radix sort behind serialize and kernel_map: values and permutation equal torch's stable sort, with
    duplicates (equal keys keep their order), one and two dimensions, empty input, and negative keys (the
    comparison-sort fallback)."""
    g = torch.Generator().manual_seed(bits)
    hi = 1 << bits
    for shape in ((0,), (1,), (5000,), (3, 4000)):
        x = torch.randint(0, hi, shape, generator=g, dtype=torch.long)
        if x.numel() > 100:
            x.view(-1)[::7] = x.view(-1)[1]  # many duplicates
        got = torch.ops.pointins.sort_keys(x)
        want = torch.sort(x, dim=-1, stable=True)
        assert torch.equal(got[0], want.values) and torch.equal(got[1], want.indices)
    neg = torch.randint(-hi, hi, (3000,), generator=g)
    got, want = torch.ops.pointins.sort_keys(neg), torch.sort(neg, stable=True)
    assert torch.equal(got[0], want.values) and torch.equal(got[1], want.indices)
    torch.library.opcheck(torch.ops.pointins.sort_keys.default, (torch.randint(0, hi, (2, 50), generator=g),))
    with pytest.raises(ValueError, match="int64"):
        torch.ops.pointins.sort_keys(torch.zeros(3, dtype=torch.int32))
