"""Segment reductions: values, args, gradients and errors against the plain-PyTorch reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pointins.ops as ops
from pointins.ops import reference as ref

HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BASIC = ("sum", "mean", "max", "min", "var")


def _offsets(counts, device="cpu"):
    return torch.tensor([0, *np.cumsum(counts).tolist()], dtype=torch.long, device=device)


def _check(x, idx, s, reduce, device, correction=0, atol=1e-5):
    out, arg = ref.segment_reduce(x, idx, s, reduce, correction)
    if reduce in ("max", "min"):
        got, garg = ops.segment_reduce(
            x.to(device), index=idx.to(device), num_segments=s, reduce=reduce, return_arg=True
        )
        assert torch.equal(garg.cpu(), arg), reduce
    else:
        got = ops.segment_reduce(
            x.to(device), index=idx.to(device), num_segments=s, reduce=reduce, correction=correction
        )
    assert got.dtype == x.dtype and got.shape == (s, x.shape[1])
    torch.testing.assert_close(got.cpu(), out, atol=atol, rtol=1e-5, equal_nan=True)


@HYP
@given(
    n=st.integers(0, 300),
    c=st.integers(1, 9),
    s=st.integers(0, 40),
    reduce=st.sampled_from(BASIC),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    ties=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_index_path_matches_reference(n, c, s, reduce, dtype, ties, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=dtype)
    if ties:  # few distinct values: many equal extrema, the lowest row must win
        x = torch.randint(0, 3, (n, c), generator=g).to(dtype)
    idx = torch.randint(-1, max(s, 1), (n,), generator=g) if s else torch.full((n,), -1)
    _check(x, idx, s, reduce, "cpu", correction=int(seed % 2))


@pytest.mark.parametrize("reduce", BASIC)
def test_csr_equals_index_path_and_reference(reduce, device):
    counts = [0, 5, 1, 0, 300, 2, 700, 0]  # empty, single, long (GPU two-level path) segments
    off = _offsets(counts, device)
    x = torch.randn(int(sum(counts)), 6, device=device, dtype=torch.float64)
    idx = ref.offsets_to_batch(off)
    a = ops.segment_reduce(x, offsets=off, reduce=reduce)
    b = ops.segment_reduce(x, index=idx, num_segments=len(counts), reduce=reduce)
    r, _ = ref.segment_reduce(x.cpu(), idx.cpu(), len(counts), reduce)
    torch.testing.assert_close(a.cpu(), r)
    torch.testing.assert_close(b.cpu(), r)


@pytest.mark.parametrize("reduce", BASIC)
def test_few_huge_segments(reduce, device):
    # Average segment length far above the GPU chunk size (two-level path), few segments (CPU
    # splits the channels across threads), unsorted ids.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20_000, 5, generator=g, dtype=torch.float64)
    idx = torch.randint(0, 3, (20_000,), generator=g)
    _check(x, idx, 3, reduce, device, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduce", BASIC)
def test_half_precision_accumulates_in_float32(dtype, reduce, device):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4000, 3, generator=g).to(dtype)
    idx = torch.randint(0, 4, (4000,), generator=g)
    got = ops.segment_reduce(x.to(device), index=idx.to(device), reduce=reduce).cpu()
    out, _ = ref.segment_reduce(x.double(), idx, 4, reduce)
    assert got.dtype == dtype
    tol = 2e-2 if dtype == torch.float16 else 1e-1
    torch.testing.assert_close(got.double(), out, atol=tol * (100 if reduce == "sum" else 1), rtol=tol)


def test_empty_segments_and_inputs(device):
    x = torch.randn(3, 2, device=device)
    out, arg = ops.segment_reduce(
        x, index=torch.tensor([2, 2, -1], device=device), num_segments=4, reduce="max", return_arg=True
    )
    assert out[[0, 1, 3]].abs().sum() == 0 and (arg[[0, 1, 3]] == -1).all()
    assert torch.equal(arg[2], x[:2].argmax(0)) and torch.equal(out[2], x[:2].amax(0))
    for r in BASIC:
        e = ops.segment_reduce(
            torch.zeros(0, 4, device=device),
            index=torch.zeros(0, dtype=torch.long, device=device),
            num_segments=3,
            reduce=r,
        )
        assert e.shape == (3, 4) and not e.any()
        z = ops.segment_reduce(x, offsets=torch.tensor([0, 3], device=device), reduce=r)
        assert z.shape == (1, 2)
        none = ops.segment_reduce(x, index=torch.full((3,), -1, device=device), num_segments=0, reduce=r)
        assert none.shape == (0, 2)
    # variance of a single row is 0 for either correction
    v = ops.segment_reduce(x[:1], offsets=torch.tensor([0, 1], device=device), reduce="var", correction=1)
    assert v.abs().sum() == 0


def test_ties_nan_and_trailing_dims(device):
    x = torch.tensor([[1.0, 2.0], [3.0, 2.0], [3.0, float("nan")], [0.0, 7.0]], device=device)
    vals, arg = ops.segment_reduce(
        x, index=torch.zeros(4, dtype=torch.long, device=device), reduce="max", return_arg=True
    )
    assert arg.tolist() == [[1, 2]] and vals[0, 0] == 3 and torch.isnan(vals[0, 1])
    assert ops.segment_reduce(x, index=torch.zeros(4, dtype=torch.long, device=device), reduce="argmin").tolist() == [
        [3, 2]
    ]
    y = torch.randn(10, 2, 3, device=device)
    idx = torch.tensor([0, 1] * 5, device=device)
    got = ops.segment_reduce(y, index=idx, reduce="sum")
    assert got.shape == (2, 2, 3)
    torch.testing.assert_close(got, torch.stack([y[0::2].sum(0), y[1::2].sum(0)]))


@pytest.mark.parametrize("reduce", BASIC)
@pytest.mark.parametrize("path", ["index", "csr"])
def test_gradcheck(reduce, path, device):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64).to(device).requires_grad_()
    if path == "index":
        idx = torch.randint(-1, 6, (40,), generator=g).to(device)
        f = lambda t: ops.segment_reduce(t, index=idx, num_segments=7, reduce=reduce, correction=1)
    else:
        off = _offsets([0, 10, 1, 2, 27], device)
        f = lambda t: ops.segment_reduce(t, offsets=off, reduce=reduce, correction=1)
    assert torch.autograd.gradcheck(f, (x,))


def test_gradient_of_ignored_rows_is_zero():
    x = torch.randn(5, 2, requires_grad=True)
    ops.segment_reduce(x, index=torch.tensor([0, -1, 1, -1, 0]), reduce="mean").sum().backward()
    assert x.grad[[1, 3]].abs().sum() == 0 and x.grad[[0, 2, 4]].abs().sum() > 0


def test_deterministic_across_thread_counts():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(200_000, 8, generator=g)
    idx = torch.randint(0, 500, (200_000,), generator=g)
    prev = torch.get_num_threads()
    try:
        outs = []
        for t in (1, max(2, prev)):
            torch.set_num_threads(t)
            outs.append([ops.segment_reduce(x, index=idx, reduce=r) for r in BASIC])
    finally:
        torch.set_num_threads(prev)
    for a, b in zip(*outs, strict=True):
        assert torch.equal(a, b)


def test_errors():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"ids >= num_segments = 2.*largest 5"):
        ops.segment_reduce(x, index=torch.tensor([0, 1, 5, 0]), num_segments=2)
    with pytest.raises(ValueError, match="not valid CSR offsets"):
        ops.segment_reduce(x, offsets=torch.tensor([0, 3, 2, 4]))
    with pytest.raises(ValueError, match="not valid CSR offsets"):
        ops.segment_reduce(x, offsets=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="exactly one of index"):
        ops.segment_reduce(x)
    with pytest.raises(TypeError, match="floating point"):
        ops.segment_reduce(x.long(), index=torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="must be integer"):
        ops.segment_reduce(x, index=torch.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        ops.segment_reduce(x, index=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="reduce must be one of"):
        ops.segment_reduce(x, index=torch.zeros(4, dtype=torch.long), reduce="prod")
    with pytest.raises(ValueError, match="return_arg=True needs"):
        ops.segment_reduce(x, index=torch.zeros(4, dtype=torch.long), return_arg=True)
    with pytest.raises(ValueError, match="reduce must be one of"):
        torch.ops.pointins.segment_csr(x, torch.tensor([0, 4]), None, "median", 0)


def test_opcheck_and_compile():
    x = torch.randn(30, 4, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(-1, 5, (30,))
    perm, off = torch.ops.pointins.segment_index_csr(idx, 5)
    torch.library.opcheck(torch.ops.pointins.segment_index_csr, (idx, 5))
    for r in BASIC:
        torch.library.opcheck(torch.ops.pointins.segment_csr, (x, off, perm, r, 1))
        torch.library.opcheck(torch.ops.pointins.segment_csr, (x, _offsets([10, 0, 20]), None, r, 0))

    def f(t, offsets):
        return ops.segment_reduce(t, offsets=offsets, reduce="var") + ops.segment_reduce(t, offsets=offsets)

    off2 = _offsets([10, 0, 20])
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, off2), f(x, off2))


def test_numpy_roundtrip():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = ops.segment_reduce(x, index=np.array([1, 0, 1]), reduce="sum")
    assert isinstance(out, np.ndarray) and out.tolist() == [[2, 3], [4, 6]]


@pytest.mark.cuda
@pytest.mark.slow
def test_more_than_2_31_elements_cuda():
    rows, c = 2**29 + 300, 4  # rows * channels > 2^31: 64-bit index math in every kernel (~25 GB peak)
    x = torch.ones(rows, c, device="cuda", dtype=torch.float16)
    x[-1] = 3
    idx = torch.zeros(rows, dtype=torch.long, device="cuda")
    idx[-1] = 1
    vals, arg = ops.segment_reduce(x, index=idx, reduce="max", return_arg=True)
    assert vals.float().tolist() == [[1.0] * c, [3.0] * c] and arg.tolist() == [[0] * c, [rows - 1] * c]
    del idx
    off = torch.tensor([0, rows - 1, rows], device="cuda")
    total = ops.segment_reduce(x, offsets=off, reduce="sum")  # fp16 output of 2^29 ones saturates: check mean
    assert total.shape == (2, c)
    mean = ops.segment_reduce(x, offsets=off, reduce="mean")
    assert mean.float().tolist() == [[1.0] * c, [3.0] * c]


@pytest.mark.parametrize("reduce", BASIC)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_ids_path_is_bitwise_equal_to_csr_path(reduce, dtype):
    # The id path (segment_coo) must give exactly what the sorted (CSR) path gives, for any
    # thread count (prefetching, channel splitting and chunking never change the row order).
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3000, 96, generator=g).to(dtype)
    idx = torch.randint(-1, 40, (3000,), generator=g)
    idx[idx == 7] = 3  # an empty segment
    perm, off = torch.ops.pointins.segment_index_csr(idx, 41)
    csr, csr_aux = torch.ops.pointins.segment_csr(x, off, perm, reduce, 1)
    prev = torch.get_num_threads()
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            out, aux = torch.ops.pointins.segment_coo(x, idx, 41, reduce, 1)
            assert torch.equal(out, csr), t
            assert torch.equal(aux, csr_aux), t
    finally:
        torch.set_num_threads(prev)
    ref_out, _ = ref.segment_reduce(x.double(), idx, 41, reduce, 1)
    torch.testing.assert_close(out.double(), ref_out, atol=0.05, rtol=0.02)


def test_ids_path_gradcheck_and_opcheck():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(30, 32, generator=g, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(-1, 5, (30,), generator=g)
    for r in BASIC:
        assert torch.autograd.gradcheck(lambda t, r=r: ops.segment_reduce(t, index=idx, num_segments=6, reduce=r), (x,))
        torch.library.opcheck(torch.ops.pointins.segment_coo, (x, idx, 6, r, 0))
    torch.library.opcheck(torch.ops.pointins.segment_coo, (x[:, :3], idx, 6, "max", 0))


@pytest.mark.slow
def test_float32_long_segment_sum_stays_accurate():
    # 2^25 ones: a plain sequential float32 sum stops at 2^24; the chunked sum is exact.
    x = torch.ones(2**25, 1)
    idx = torch.zeros(2**25, dtype=torch.long)
    assert ops.segment_reduce(x, offsets=torch.tensor([0, 2**25]), reduce="sum").item() == 2**25
    assert ops.segment_reduce(x, index=idx, reduce="mean").item() == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduce", ["max", "min"])
def test_value_only_extrema_equal_the_arg_path(dtype, reduce):
    # without return_arg or autograd, max/min skip the (S, C) int64 arg array: same values, NaN first-wins,
    # ties, empty segments (0) and ignored rows included
    g = torch.Generator().manual_seed(7)
    x = torch.randint(-3, 4, (500, 9), generator=g).to(dtype)  # many ties
    x[torch.rand(500, 9, generator=g) < 0.02] = float("nan")
    idx = torch.randint(-1, 60, (500,), generator=g)
    off = _offsets([0, 7, 0, 100, 1, 392])
    for args in ((x, idx, 64, reduce, 0),):
        vals, aux = torch.ops.pointins.segment_coo(*args, False)
        full, arg = torch.ops.pointins.segment_coo(*args, True)
        assert aux.numel() == 0 and arg.shape == full.shape
        torch.testing.assert_close(vals, full, equal_nan=True, rtol=0, atol=0)
    vals, aux = torch.ops.pointins.segment_csr(x, off, None, reduce, 0, False)
    full, _ = torch.ops.pointins.segment_csr(x, off, None, reduce, 0, True)
    assert aux.numel() == 0
    torch.testing.assert_close(vals, full, equal_nan=True, rtol=0, atol=0)
    # the public API takes the value-only path and still matches the reference
    want, _ = ref.segment_reduce(x.double(), idx, 64, reduce, 0)
    got = ops.segment_reduce(x, index=idx, reduce=reduce, num_segments=64)
    torch.testing.assert_close(got.double(), want, equal_nan=True, rtol=0, atol=0)


def test_value_only_extrema_refuse_autograd():
    x = torch.randn(10, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="with_arg=True"):
        torch.ops.pointins.segment_coo(x, torch.zeros(10, dtype=torch.long), 1, "max", 0, False)
    out = ops.segment_reduce(x, index=torch.zeros(10, dtype=torch.long), reduce="max")  # the API records args
    out.sum().backward()
    assert int((x.grad != 0).sum()) == 3
