"""grid_coord / pack_keys / unpack_keys: compiled backends against the plain-PyTorch reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pointins.ops as ops
from pointins.ops import reference as ref

HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def random_offsets(counts: list[int], device="cpu") -> torch.Tensor:
    return torch.tensor([0, *np.cumsum(counts).tolist()], dtype=torch.long, device=device)


def random_cloud(counts, scale=5.0, dtype=torch.float32, device="cpu", gen=None):
    n = int(sum(counts))
    shift = torch.randn(len(counts), 3, dtype=torch.float64, generator=gen) * 10
    batch = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.long))
    c = torch.rand(n, 3, dtype=torch.float64, generator=gen) * scale + shift[batch]
    return c.to(dtype).to(device), random_offsets(counts, device)


# ---------------------------------------------------------------------------------------------
# grid_coord
# ---------------------------------------------------------------------------------------------


@HYP
@given(
    counts=st.lists(st.integers(0, 300), min_size=1, max_size=6),
    grid=st.one_of(st.floats(0.01, 2.0), st.tuples(st.floats(0.01, 2.0), st.floats(0.01, 2.0), st.floats(0.01, 2.0))),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_grid_coord_matches_reference(counts, grid, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    coord, offsets = random_cloud(counts, dtype=dtype, gen=gen)
    out = ops.grid_coord(coord, offsets, grid)
    gs = [grid] * 3 if isinstance(grid, float) else list(grid)
    expected = ref.grid_coord(coord, offsets, gs)
    assert out.dtype == torch.int32 and out.shape == (coord.shape[0], 3)
    assert torch.equal(out, expected)
    # each non-empty sample has its minimum at 0
    for s in range(len(counts)):
        seg = out[offsets[s] : offsets[s + 1]]
        if seg.numel():
            assert torch.equal(seg.min(0).values, torch.zeros(3, dtype=torch.int32))


def test_grid_coord_devices(device):
    coord, offsets = random_cloud([5000, 1, 0, 20000, 777], scale=20.0, device=device)
    out = ops.grid_coord(coord, offsets, 0.02)
    assert out.device.type == device
    assert torch.equal(out.cpu(), ref.grid_coord(coord.cpu(), offsets.cpu(), [0.02] * 3))
    coord64 = coord.double()
    assert torch.equal(
        ops.grid_coord(coord64, offsets, (0.05, 0.1, 0.2)).cpu(),
        ref.grid_coord(coord64.cpu(), offsets.cpu(), [0.05, 0.1, 0.2]),
    )


def test_grid_coord_negative_and_exact_boundaries():
    coord = torch.tensor([[-0.5, 0.0, 1.0], [-1.0, 0.999999, 2.0], [0.25, 1.0, -3.0]])
    out = ops.grid_coord(coord, None, 0.5)
    # floor(c / 0.5): [-1, 0, 2], [-2, 1, 4], [0, 2, -6]  minus the min [-2, 0, -6]
    assert out.tolist() == [[1, 0, 8], [0, 1, 10], [2, 2, 0]]


def test_grid_coord_single_point_and_one_voxel():
    assert ops.grid_coord(torch.tensor([[3.3, -7.1, 0.0]]), None, 0.1).tolist() == [[0, 0, 0]]
    coord = torch.full((100, 3), 1.234) + torch.rand(100, 3) * 1e-4
    assert (ops.grid_coord(coord, None, 1.0) == 0).all()


def test_grid_coord_empty():
    out = ops.grid_coord(torch.empty(0, 3), None, 0.1)
    assert out.shape == (0, 3) and out.dtype == torch.int32
    out = ops.grid_coord(torch.empty(0, 3), torch.tensor([0, 0, 0]), 0.1)
    assert out.shape == (0, 3)
    out = ops.grid_coord(torch.empty(0, 3), torch.tensor([0]), 0.1)  # zero samples
    assert out.shape == (0, 3)


def test_grid_coord_batch_ids_sorted_and_unsorted():
    coord, offsets = random_cloud([50, 70, 30])
    expected = ops.grid_coord(coord, offsets, 0.3)
    batch = ref.offsets_to_batch(offsets)
    assert torch.equal(ops.grid_coord(coord, grid_size=0.3, batch=batch), expected)
    perm = torch.randperm(coord.shape[0])
    shuffled = ops.grid_coord(coord[perm], grid_size=0.3, batch=batch[perm])
    assert torch.equal(shuffled, expected[perm])
    with pytest.raises(ValueError, match="either offsets"):
        ops.grid_coord(coord, offsets, 0.3, batch=batch)
    with pytest.raises(ValueError, match=">= 0"):
        ops.grid_coord(coord, grid_size=0.3, batch=batch - 1)


def test_grid_coord_non_contiguous_and_half():
    base = torch.rand(3, 400) * 10
    coord = base.t()  # non-contiguous (N, 3) view
    assert not coord.is_contiguous()
    assert torch.equal(
        ops.grid_coord(coord, None, 0.1), ref.grid_coord(coord.contiguous(), torch.tensor([0, 400]), [0.1] * 3)
    )
    assert torch.equal(
        torch.ops.pointins.grid_coord(coord, torch.tensor([0, 400]), [0.1] * 3),
        ops.grid_coord(coord.contiguous(), None, 0.1),
    )
    half = (torch.rand(64, 3) * 8).half()
    assert torch.equal(ops.grid_coord(half, None, 0.5), ref.grid_coord(half.float(), torch.tensor([0, 64]), [0.5] * 3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_grid_coord_rejects_non_finite(device, bad):
    coord = torch.rand(100, 3, device=device)
    coord[37, 1] = bad
    with pytest.raises(ValueError, match=r"NaN or Inf in 1 of 100 points \(first at index 37\)"):
        ops.grid_coord(coord, None, 0.1)


def test_grid_coord_rejects_overflow(device):
    coord = torch.rand(10, 3, device=device)
    coord[3, 0] = 5.0e7  # 5e7 m / 1 cm = 5e9 cells > 2^30
    with pytest.raises(ValueError, match=r"\+-2\^30 grid cells.*grid_size \[0.01, 0.01, 0.01\].*millimetres"):
        ops.grid_coord(coord, None, 0.01)


@pytest.mark.parametrize(
    ("offsets", "hint"),
    [([1, 10], "start at 0"), ([0, 4], "end at N"), ([0, 6, 3, 10], "never decrease"), ([0, 10, 12], "ending at 12")],
)
def test_grid_coord_rejects_bad_offsets(device, offsets, hint):
    coord = torch.rand(10, 3, device=device)
    with pytest.raises(ValueError, match="not valid CSR offsets") as e:
        ops.grid_coord(coord, torch.tensor(offsets, device=device), 0.1)
    assert hint in str(e.value)


def test_grid_coord_rejects_bad_types_and_shapes():
    with pytest.raises(TypeError, match=r"float32 or float64.*pack_keys"):
        ops.grid_coord(torch.ones(4, 3, dtype=torch.int64), None, 0.1)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        ops.grid_coord(torch.ones(4, 2), None, 0.1)
    with pytest.raises(ValueError, match="finite and > 0"):
        ops.grid_coord(torch.ones(4, 3), None, 0.0)
    with pytest.raises(ValueError, match="finite and > 0"):
        ops.grid_coord(torch.ones(4, 3), None, float("nan"))
    with pytest.raises(TypeError, match="grid_size is required"):
        ops.grid_coord(torch.ones(4, 3))
    with pytest.raises(ValueError, match="3 numbers"):
        ops.grid_coord(torch.ones(4, 3), None, (0.1, 0.2))
    with pytest.raises(TypeError, match="offsets must be an integer tensor"):
        ops.grid_coord(torch.ones(4, 3), torch.tensor([0.0, 4.0]), 0.1)
    with pytest.raises(TypeError, match="offsets must be int64"):
        torch.ops.pointins.grid_coord(torch.ones(4, 3), torch.tensor([0, 4], dtype=torch.int32), [0.1] * 3)


def test_grid_coord_rejects_device_mismatch():
    with pytest.raises((ValueError, RuntimeError), match="meta"):
        torch.ops.pointins.grid_coord(torch.ones(4, 3), torch.tensor([0, 4], device="meta"), [0.1] * 3)


# ---------------------------------------------------------------------------------------------
# pack_keys / unpack_keys
# ---------------------------------------------------------------------------------------------


@st.composite
def grids(draw):
    bits = draw(st.integers(1, 21))
    n = draw(st.integers(0, 200))
    dtype = draw(st.sampled_from([torch.int32, torch.int64]))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    grid = torch.randint(0, 2**bits, (n, 3), generator=gen).to(dtype)
    bmax = min(2 ** (63 - 3 * bits), 2**40)
    batch = draw(st.sampled_from([None, "ids"]))
    if batch == "ids":
        batch = torch.randint(0, bmax, (n,), generator=gen)
    return grid, batch, bits


@HYP
@given(grids())
def test_pack_unpack_roundtrip_matches_reference(case):
    grid, batch, bits = case
    keys = ops.pack_keys(grid, batch, bits=bits)
    assert keys.dtype == torch.int64 and keys.shape == (grid.shape[0],)
    assert torch.equal(keys, ref.pack_keys(grid, batch, bits))
    assert bool((keys >= 0).all())
    g2, b2 = ops.unpack_keys(keys, bits)
    assert g2.dtype == torch.int32 and b2.dtype == torch.int64
    assert torch.equal(g2, grid.to(torch.int32))
    assert torch.equal(b2, torch.zeros_like(keys) if batch is None else batch)
    r_grid, r_batch = ref.unpack_keys(keys, bits)
    assert torch.equal(g2, r_grid) and torch.equal(b2, r_batch)


def test_pack_keys_sorts_lexicographically_and_is_injective(device):
    grid = torch.randint(0, 8, (5000, 3), device=device)
    batch = torch.randint(0, 4, (5000,), device=device)
    keys = ops.pack_keys(grid, batch)
    rows = torch.cat([batch[:, None], grid], 1).cpu().numpy()
    order_lex = np.lexsort(rows.T[::-1])
    assert np.array_equal(keys.cpu().numpy()[order_lex], np.sort(keys.cpu().numpy()))
    assert torch.unique(keys).numel() == np.unique(rows, axis=0).shape[0]


def test_pack_keys_devices_and_offsets(device):
    grid = torch.randint(0, 2**16, (10000, 3), dtype=torch.int32, device=device)
    offsets = torch.tensor([0, 10, 10, 6000, 10000], device=device)
    keys = ops.pack_keys(grid, offsets=offsets)
    batch = ref.offsets_to_batch(offsets)
    assert torch.equal(keys, ref.pack_keys(grid, batch))
    assert torch.equal(ops.pack_keys(grid, batch.int()), keys)  # int32 ids accepted
    g, b = ops.unpack_keys(keys)
    assert torch.equal(g, grid) and torch.equal(b, batch)


def test_pack_keys_extremes():
    bits = 16
    grid = torch.tensor([[0, 0, 0], [65535, 65535, 65535]])
    batch = torch.tensor([0, ops.max_batch(bits) - 1])
    keys = ops.pack_keys(grid, batch)
    assert keys[0] == 0 and keys[1] == 2**63 - 1
    g, b = ops.unpack_keys(keys)
    assert torch.equal(g.long(), grid) and torch.equal(b, batch)
    # bits=21: no batch bits, full 63-bit range
    keys = ops.pack_keys(torch.tensor([[2**21 - 1] * 3]), bits=21)
    assert keys.item() == 2**63 - 1


def test_pack_keys_empty_and_single(device):
    keys = ops.pack_keys(torch.empty(0, 3, dtype=torch.int32, device=device))
    assert keys.shape == (0,) and keys.dtype == torch.int64
    g, b = ops.unpack_keys(keys)
    assert g.shape == (0, 3) and b.shape == (0,)
    assert ops.pack_keys(torch.tensor([[1, 2, 3]], device=device)).item() == (1 << 32) | (2 << 16) | 3


def test_pack_keys_non_contiguous(device):
    base = torch.randint(0, 100, (3, 500), device=device)
    grid = base.t()
    batch = torch.randint(0, 5, (1000,), device=device)[::2]
    assert not grid.is_contiguous() and not batch.is_contiguous()
    assert torch.equal(ops.pack_keys(grid, batch), ref.pack_keys(grid.contiguous(), batch.contiguous()))
    assert torch.equal(torch.ops.pointins.pack_keys(grid, batch, 16), ref.pack_keys(grid, batch))
    keys = ops.pack_keys(grid.contiguous(), batch.contiguous())
    strided = torch.stack([keys, keys], 1)[:, 0]
    assert torch.equal(ops.unpack_keys(strided)[0], grid.int())


def test_pack_keys_rejects_negative(device):
    grid = torch.tensor([[0, 1, 2], [3, -4, 5]], device=device)
    with pytest.raises(ValueError, match=r"negative values \(min per axis \(0, -4, 2\)\).*grid_coord"):
        ops.pack_keys(grid)


def test_pack_keys_rejects_overflow_and_names_needed_bits(device):
    grid = torch.tensor([[0, 0, 0], [70000, 5, 5]], device=device)
    with pytest.raises(
        ValueError, match=r"does not fit 16 bits per axis \(max per axis \(70000, 5, 5\), limit 65535\).*bits=17"
    ):
        ops.pack_keys(grid)
    keys = ops.pack_keys(grid, bits=17)  # and the suggestion works
    assert torch.equal(ops.unpack_keys(keys, 17)[0].long(), grid)


def test_pack_keys_rejects_batch_out_of_range(device):
    grid = torch.zeros(3, 3, dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match=r"batch ids range over \[0, 32768\].*15 batch bits \(ids 0..32767\)"):
        ops.pack_keys(grid, torch.tensor([0, 1, 32768], device=device))
    with pytest.raises(ValueError, match="batch ids range over"):
        ops.pack_keys(grid, torch.tensor([0, -1, 2], device=device))
    with pytest.raises(ValueError, match="batch ids range over"):
        ops.pack_keys(grid, torch.tensor([0, 1, 1], device=device), bits=21)


def test_pack_keys_rejects_bad_arguments():
    grid = torch.zeros(3, 3, dtype=torch.int32)
    with pytest.raises(TypeError, match=r"int32 or int64.*grid_coord"):
        ops.pack_keys(grid.float())
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        ops.pack_keys(torch.zeros(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"bits \(per axis\) must be in \[1, 21\]"):
        ops.pack_keys(grid, bits=22)
    with pytest.raises(ValueError, match=r"batch must have shape \(N,\) = \(3,\)"):
        ops.pack_keys(grid, torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="batch must be an integer tensor"):
        ops.pack_keys(grid, torch.zeros(3))
    with pytest.raises(ValueError, match="not valid CSR offsets"):
        ops.pack_keys(grid, offsets=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="not both"):
        ops.pack_keys(grid, torch.zeros(3, dtype=torch.long), offsets=torch.tensor([0, 3]))


def test_unpack_keys_rejects_bad_input(device):
    with pytest.raises(ValueError, match="1 negative values, which pack_keys never produces"):
        ops.unpack_keys(torch.tensor([5, -1, 7], device=device))
    with pytest.raises(TypeError, match="keys must be int64"):
        ops.unpack_keys(torch.tensor([5, 1], dtype=torch.int32, device=device))
    with pytest.raises(ValueError, match="must be in"):
        ops.unpack_keys(torch.tensor([5], device=device), bits=0)


def test_reference_backend_through_public_api():
    coord, offsets = random_cloud([30, 40])
    g = ops.grid_coord(coord, offsets, 0.2, backend="reference")
    assert torch.equal(g, ops.grid_coord(coord, offsets, 0.2))
    keys = ops.pack_keys(g, offsets=offsets, backend="reference")
    assert torch.equal(keys, ops.pack_keys(g, offsets=offsets))
    assert torch.equal(ops.unpack_keys(keys, backend="reference")[0], g)
    with pytest.raises(ValueError, match="NaN or Inf"):
        ops.grid_coord(torch.tensor([[float("nan"), 0, 0]]), None, 0.1, backend="reference")


# ---------------------------------------------------------------------------------------------
# Triton (interpreter on CPU, compiled on GPU)
# ---------------------------------------------------------------------------------------------


@pytest.mark.triton
@pytest.mark.parametrize("bits", [16, 10, 21])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_triton_pack_unpack_interpreter(triton_interpret, bits, dtype):
    n = 2500  # several programs, last one partial
    grid = torch.randint(0, 2**bits, (n, 3)).to(dtype)
    batch = torch.randint(0, min(ops.max_batch(bits), 1000), (n,)) if bits < 21 else None
    keys = ops.pack_keys(grid, batch, bits=bits, backend="triton")
    assert torch.equal(keys, ref.pack_keys(grid, batch, bits))
    g, b = ops.unpack_keys(keys, bits, backend="triton")
    assert torch.equal(g, grid.int())
    assert torch.equal(b, torch.zeros(n, dtype=torch.long) if batch is None else batch)
    assert ops.pack_keys(grid[:0], backend="triton").shape == (0,)


@pytest.mark.triton
def test_triton_errors_interpreter(triton_interpret):
    with pytest.raises(ValueError, match="negative"):
        ops.pack_keys(torch.tensor([[0, -1, 0]]), backend="triton")
    with pytest.raises(ValueError, match="does not fit 16 bits"):
        ops.pack_keys(torch.tensor([[0, 1 << 16, 0]]), backend="triton")
    with pytest.raises(ValueError, match="batch"):
        ops.pack_keys(torch.tensor([[0, 1, 0]]), torch.tensor([1 << 15]), backend="triton")
    with pytest.raises(ValueError, match="negative"):
        ops.unpack_keys(torch.tensor([3, -2]), backend="triton")


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        ops.pack_keys(torch.zeros(2, 3, dtype=torch.int32), backend="triton")


@pytest.mark.cuda
def test_triton_pack_unpack_gpu():
    grid = torch.randint(0, 2**16, (300_001, 3), device="cuda", dtype=torch.int32)
    batch = torch.randint(0, 100, (300_001,), device="cuda")
    keys = ops.pack_keys(grid, batch, backend="triton")
    assert torch.equal(keys, ops.pack_keys(grid, batch))
    g, b = ops.unpack_keys(keys, backend="triton")
    assert torch.equal(g, grid) and torch.equal(b, batch)


# ---------------------------------------------------------------------------------------------
# Large inputs (int64 index math) on the GPU
# ---------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.slow
def test_past_int32_elements_gpu():
    free, _ = torch.cuda.mem_get_info()
    n = 2**31 // 3 + 4097  # 3n > 2^31 elements in the (n, 3) arrays
    if free < n * 48 + (4 << 30):
        pytest.skip(f"needs ~{(n * 48 >> 30) + 4} GiB free GPU memory")
    coord = torch.empty(n, 3, device="cuda").uniform_(0.0, 100.0)
    coord[-1] = torch.tensor([-1.0, 200.0, 50.0], device="cuda")  # minimum and maximum at the very end
    mins = torch.floor(coord / 0.01).amin(0)
    g = ops.grid_coord(coord, None, 0.01)
    assert g[-1, 0].item() == 0  # the minimum sits past element 2^31
    idx = torch.cat([torch.arange(0, 1000, device="cuda"), torch.arange(n - 1000, n, device="cuda")])
    assert torch.equal(g[idx].long(), (torch.floor(coord[idx] / 0.01) - mins).long())
    del coord
    keys = ops.pack_keys(g)
    assert torch.equal(keys[idx], ref.pack_keys(g[idx]))
    g2, _ = ops.unpack_keys(keys)
    assert torch.equal(g2[idx], g[idx]) and bool((g2[-5:] == g[-5:]).all())
