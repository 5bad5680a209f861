"""Sparse convolution: CPU and Triton paths against the gather-GEMM-scatter reference, dense conv3d,
gradients, determinism and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pointins.ops as ops
from pointins.ops import reference
from pointins.ops.sparse_conv import transpose_map


def _cloud(n=600, extent=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    grid = torch.unique(torch.randint(0, extent, (n, 3), generator=g), dim=0)
    return grid[torch.randperm(grid.shape[0], generator=g)]  # unsorted voxels


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _grads(out, inputs, g):
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("cin,cout,bias", [(8, 16, True), (5, 3, False), (48, 48, True)])
def test_cpu_matches_reference_with_grads(kernel_size, cin, cout, bias):
    grid = _cloud()
    kmap = ops.kernel_map(grid, kernel_size=kernel_size)
    kv = kernel_size**3
    feat = torch.randn(len(grid), cin, dtype=torch.float64, requires_grad=True)
    w = torch.randn(kv, cin, cout, dtype=torch.float64, requires_grad=True)
    b = torch.randn(cout, dtype=torch.float64, requires_grad=True) if bias else None
    out = ops.sparse_conv(feat, kmap, w, b)
    ref = reference.sparse_conv(feat, kmap, w, b)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    inputs = (feat, w, b) if bias else (feat, w)
    g = torch.randn_like(ref)
    for x, y in zip(_grads(out, inputs, g), _grads(ref, inputs, g), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "dtype,cin,cout",
    [(torch.float32, 16, 16), (torch.float32, 7, 32), (torch.float32, 32, 48), (torch.float32, 64, 64),
     (torch.float64, 3, 8), (torch.float64, 16, 16), (torch.float64, 5, 24), (torch.float64, 32, 32)],
)  # fmt: skip
@pytest.mark.parametrize("with_transpose", [True, False])
def test_cpu_implicit_gemm_widths_match_reference(dtype, cin, cout, with_transpose):
    """The compiled implicit-GEMM kernel (register accumulators per output width), its input gradient on the
    transposed map and its weight gradient (chunked kernel up to Cin x Cout = 512, per-offset GEMMs above),
    against the gather-GEMM-scatter reference."""
    from pointins.ops.sparse_conv import _implicit

    grid = _cloud(4000, 20, seed=cin)
    kmap = ops.kernel_map(grid)
    assert _implicit(torch.empty(0, dtype=dtype), cout)
    feat = torch.randn(len(grid), cin, dtype=dtype, requires_grad=True)
    w = (torch.randn(27, cin, cout, dtype=dtype) / (27 * cin) ** 0.5).requires_grad_()
    b = torch.randn(cout, dtype=dtype, requires_grad=True)
    out = ops.sparse_conv(feat, kmap, w, b, kernel_map_t=kmap.flip(1) if with_transpose else None)
    ref = reference.sparse_conv(feat.double(), kmap, w.double(), b.double())
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert _rel(out, ref) < tol
    g = torch.randn_like(out)
    got = _grads(out, (feat, w, b), g)
    want = _grads(ref, (feat, w, b), g.double())
    for x, y in zip(got, want, strict=True):
        assert _rel(x, y) < tol


def test_cpu_implicit_gemm_is_bitwise_deterministic_across_threads():
    grid = _cloud(6000, 24, seed=3)
    kmap = ops.kernel_map(grid)
    feat = torch.randn(len(grid), 16, requires_grad=True)
    w = torch.randn(27, 16, 16, requires_grad=True)
    results = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out = ops.sparse_conv(feat, kmap, w, kernel_map_t=kmap.flip(1))
            results.append((out, *torch.autograd.grad(out, (feat, w), torch.ones_like(out))))
    finally:
        torch.set_num_threads(old)
    for r in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(r, results[0], strict=True))


def test_cpu_implicit_gemm_gradcheck_and_map_check():
    grid = _cloud(80, 5, seed=1)
    kmap = ops.kernel_map(grid)
    feat = torch.randn(len(grid), 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(27, 3, 8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, dtype=torch.float64, requires_grad=True)
    fn = lambda f, w, b: ops.sparse_conv(f, kmap, w, b, kernel_map_t=kmap.flip(1))
    assert torch.autograd.gradcheck(fn, (feat, w, b))
    bad = kmap.clone()
    bad[0, 0] = len(grid)  # out of range: the op's own check refuses it before reading
    with pytest.raises(ValueError, match="kernel_map entries must be -1 or row indices"):
        torch.ops.pointins.sparse_conv_implicit(feat.detach(), bad, w.detach(), None, True)
    with pytest.raises(ValueError, match="kernel_map entries must be -1 or row indices"):
        torch.ops.pointins.sparse_conv_weight_grad(feat.detach(), bad, torch.randn(len(grid), 8).double(), True)
    with pytest.raises(TypeError, match="float32/float64"):
        torch.ops.pointins.sparse_conv_implicit(feat.detach().half(), kmap, w.detach().half(), None, True)


def test_dense_grid_equals_conv3d():
    """On a fully occupied grid a submanifold conv is conv3d (cross-correlation) with zero padding."""
    s, cin, cout = 5, 3, 4
    xs = torch.arange(s)
    grid = torch.cartesian_prod(xs, xs, xs)  # x slowest, like a (X, Y, Z) tensor in C order
    dense = torch.randn(1, cin, s, s, s, dtype=torch.float64)
    wd = torch.randn(cout, cin, 3, 3, 3, dtype=torch.float64)
    bd = torch.randn(cout, dtype=torch.float64)
    expect = F.conv3d(dense, wd, bd, padding=1)[0].reshape(cout, -1).t()
    feat = dense[0].reshape(cin, -1).t()
    w = wd.permute(2, 3, 4, 1, 0).reshape(27, cin, cout)
    out = ops.sparse_conv(feat, ops.kernel_map(grid), w, bd)
    torch.testing.assert_close(out, expect)


def test_strided_map_and_upsampling():
    """A down-sampling map (M != N) and its transpose (up-sampling) both work, with gradients."""
    grid = _cloud(900, 16)
    down = ops.downsample(grid, stride=2)
    feat = torch.randn(len(grid), 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 6, 5, dtype=torch.float64, requires_grad=True)
    out = ops.sparse_conv(feat, down.kernel_map, w)
    ref = reference.sparse_conv(feat, down.kernel_map, w)
    assert out.shape == (down.grid_coord.shape[0], 5)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    for x, y in zip(_grads(out, (feat, w), g), _grads(ref, (feat, w), g), strict=True):
        torch.testing.assert_close(x, y)
    up = ops.sparse_conv(out.detach(), down.up_map(), torch.randn(8, 5, 2, dtype=torch.float64))
    assert up.shape == (len(grid), 2)


def test_transpose_map():
    grid = _cloud()
    kmap = ops.kernel_map(grid)
    t = transpose_map(kmap, len(grid))
    assert torch.equal(t, kmap.flip(1))  # submanifold map of unique voxels
    assert torch.equal(t, ops.transpose_kernel_map(kmap, len(grid)))


def test_gradcheck_float64():
    grid = _cloud(60, 4)
    kmap = ops.kernel_map(grid)
    feat = torch.randn(len(grid), 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(27, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w, b: ops.sparse_conv(f, kmap, w, b), (feat, w, b))


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_point(n):
    grid = torch.zeros((n, 3), dtype=torch.int32)
    kmap = ops.kernel_map(grid)
    feat = torch.randn(n, 4, requires_grad=True)
    w = torch.randn(27, 4, 3, requires_grad=True)
    b = torch.randn(3)
    out = ops.sparse_conv(feat, kmap, w, b)
    assert out.shape == (n, 3)
    if n:  # only the centre tap sees anything
        torch.testing.assert_close(out, feat @ w[13] + b)
    out.sum().backward()
    assert feat.grad.shape == (n, 4) and w.grad.shape == (27, 4, 3)


def test_numpy_in_numpy_out():
    grid = _cloud(100, 6)
    kmap = ops.kernel_map(grid).numpy()
    feat = np.random.default_rng(0).standard_normal((len(grid), 4)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((27, 4, 2)).astype(np.float32)
    out = ops.sparse_conv(feat, kmap, w)
    assert isinstance(out, np.ndarray) and out.shape == (len(grid), 2)
    np.testing.assert_allclose(out, reference.sparse_conv(*map(torch.from_numpy, (feat, kmap, w))).numpy(), atol=1e-5)


def test_autocast_casts_like_linear():
    grid = _cloud(200, 8)
    kmap = ops.kernel_map(grid)
    feat, w = torch.randn(len(grid), 8), torch.randn(27, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ops.sparse_conv(feat, kmap, w)
    assert out.dtype == torch.bfloat16
    assert _rel(out, reference.sparse_conv(feat, kmap, w)) < 2e-2


def test_bad_input():
    grid = _cloud(100, 6)
    kmap = ops.kernel_map(grid)
    feat, w = torch.randn(len(grid), 4), torch.randn(27, 4, 2)
    with pytest.raises(TypeError, match="int64"):
        ops.sparse_conv(feat, kmap.int(), w)
    with pytest.raises(ValueError, match="Cin=4"):
        ops.sparse_conv(feat, kmap, torch.randn(27, 5, 2))
    with pytest.raises(ValueError, match="K=8"):
        ops.sparse_conv(feat, kmap, torch.randn(8, 4, 2))
    with pytest.raises(ValueError, match="row indices of feat"):
        ops.sparse_conv(feat[:10], kmap, w)
    with pytest.raises(TypeError, match="float64"):
        ops.sparse_conv(feat, kmap, w.double())
    with pytest.raises(ValueError, match="bias"):
        ops.sparse_conv(feat, kmap, w, torch.randn(3))
    bad = feat.clone()
    bad[7, 1] = float("nan")
    with pytest.raises(ValueError, match="row 7"):
        ops.sparse_conv(bad, kmap, w)
    dup = torch.cat([grid, grid[:5]])  # duplicate voxels: the input gradient has no transposed map
    with pytest.raises(ValueError, match="duplicate voxels"):
        ops.sparse_conv(torch.randn(len(dup), 4, requires_grad=True), ops.kernel_map(dup), w)
    with pytest.raises(ValueError, match="unknown backend"):
        ops.sparse_conv(feat, kmap, w, backend="mps")


def test_opcheck_cpu():
    grid = _cloud(80, 5)
    kmap = ops.kernel_map(grid)
    feat = torch.randn(len(grid), 4, requires_grad=True)
    w = torch.randn(27, 4, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    args = (feat, kmap, kmap.flip(1), w, b, False, False)
    torch.library.opcheck(torch.ops.pointins.sparse_conv.default, args)
    torch.library.opcheck(torch.ops.pointins.sparse_conv.default, (feat, kmap, None, w, None, False, True))
    # the compiled CPU kernels behind it
    x, g16 = torch.randn(len(grid), 16), torch.randn(len(grid), 16)
    w16 = torch.randn(27, 16, 16)
    torch.library.opcheck(torch.ops.pointins.sparse_conv_implicit.default, (x, kmap, w16, torch.randn(16), True))
    torch.library.opcheck(torch.ops.pointins.sparse_conv_weight_grad.default, (x, kmap, g16, True))
    src, rows, koff = ops.kernel_map_pairs(kmap)
    torch.library.opcheck(torch.ops.pointins.sparse_conv_pairs.default, (x, src, rows, koff, w16, None, len(grid)))
    torch.library.opcheck(torch.ops.pointins.sparse_conv_pairs_wgrad.default, (x, g16, src, rows, koff))


def test_torch_compile_fullgraph():
    grid = _cloud(80, 5)
    kmap = ops.kernel_map(grid)
    feat = torch.randn(len(grid), 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(27, 4, 3, dtype=torch.float64, requires_grad=True)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(feat, w):
        return ops.sparse_conv(feat, kmap, w, kernel_map_t=kmap.flip(1), validate=False).square().sum()

    loss = f(feat, w)
    loss.backward()
    ref = reference.sparse_conv(feat, kmap, w).square().sum()
    torch.testing.assert_close(loss, ref)
    g_ref = torch.autograd.grad(ref, (feat, w))
    torch.testing.assert_close(feat.grad, g_ref[0])
    torch.testing.assert_close(w.grad, g_ref[1])


# ---------------------------------------------------------------------------------------------
# Triton (interpreter on CPU; compiled on a GPU)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 16 so that several tiles, masked channel tails and several row splits run."""
    from pointins.triton import load

    mod = load("sparse_conv")
    monkeypatch.setattr(mod, "CONV_BLOCKS", (16, 16, 16, 4, 2))
    monkeypatch.setattr(mod, "WGRAD_BLOCKS", (16, 16, 16, 4, 2))
    monkeypatch.setattr(mod, "WGRAD_TARGET_PROGRAMS", 300)
    return mod


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float16, 3e-3)])
@pytest.mark.parametrize(
    "cin,cout,bias,deterministic", [(8, 16, True, False), (20, 40, True, True), (48, 24, False, False)]
)
def test_triton_matches_reference(triton_interpret, small_blocks, dtype, tol, cin, cout, bias, deterministic):
    grid = _cloud(160, 7)
    kmap = ops.kernel_map(grid)
    feat = torch.randn(len(grid), cin).to(dtype).requires_grad_()
    w = (torch.randn(27, cin, cout) / cin**0.5).to(dtype).requires_grad_()
    b = torch.randn(cout).to(dtype).requires_grad_() if bias else None
    inputs = (feat, w, b) if bias else (feat, w)
    out = ops.sparse_conv(feat, kmap, w, b, backend="triton", deterministic=deterministic)
    assert out.dtype == dtype
    ref = reference.sparse_conv(feat.double(), kmap, w.double(), None if b is None else b.double())
    assert _rel(out, ref) < tol
    g = torch.randn_like(ref)
    got = _grads(out, inputs, g.to(dtype))
    want = _grads(ref, inputs, g)
    for x, y in zip(got, want, strict=True):
        assert x.dtype == dtype
        assert _rel(x, y) < tol


def test_triton_deterministic_wgrad_is_bitwise_repeatable(triton_interpret, small_blocks):
    grid = _cloud(300, 9)
    kmap = ops.kernel_map(grid)
    feat = torch.randn(len(grid), 16, requires_grad=True)
    w = torch.randn(27, 16, 16, requires_grad=True)
    g = torch.randn(len(grid), 16)
    runs = [_grads(ops.sparse_conv(feat, kmap, w, backend="triton", deterministic=True), (w,), g)[0] for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert small_blocks.wgrad_splits(len(grid), 27, 16, 16)[0] > 1  # the workspace path really split the rows


def test_triton_strided_map(triton_interpret, small_blocks):
    grid = _cloud(500, 12)
    down = ops.downsample(grid, stride=2)
    feat = torch.randn(len(grid), 16, requires_grad=True)
    w = torch.randn(8, 16, 32, requires_grad=True)
    out = ops.sparse_conv(feat, down.kernel_map, w, backend="triton")
    ref = reference.sparse_conv(feat, down.kernel_map, w)
    assert _rel(out, ref) < 2e-5
    g = torch.randn_like(ref)
    for x, y in zip(_grads(out, (feat, w), g), _grads(ref, (feat, w), g), strict=True):
        assert _rel(x, y) < 2e-5


def test_triton_kernel_size_5(triton_interpret, small_blocks):
    grid = _cloud(120, 6)
    kmap = ops.kernel_map(grid, kernel_size=5)
    feat = torch.randn(len(grid), 16, requires_grad=True)
    w = torch.randn(125, 16, 16, requires_grad=True)
    b = torch.randn(16, requires_grad=True)
    out = ops.sparse_conv(feat, kmap, w, b, backend="triton")
    ref = reference.sparse_conv(feat, kmap, w, b)
    assert _rel(out, ref) < 2e-5
    g = torch.randn_like(ref)
    for x, y in zip(_grads(out, (feat, w, b), g), _grads(ref, (feat, w, b), g), strict=True):
        assert _rel(x, y) < 2e-5


def test_triton_default_blocks_and_empty(triton_interpret):
    grid = _cloud(150, 7)
    kmap = ops.kernel_map(grid)
    feat = torch.randn(len(grid), 48, requires_grad=True)
    w = torch.randn(27, 48, 48, requires_grad=True)
    out = ops.sparse_conv(feat, kmap, w, backend="triton")
    assert _rel(out, reference.sparse_conv(feat, kmap, w)) < 2e-5
    empty = ops.sparse_conv(torch.zeros(0, 48), torch.zeros(0, 27, dtype=torch.long), w.detach(), backend="triton")
    assert empty.shape == (0, 48)
    with pytest.raises(TypeError, match="float64"):
        ops.sparse_conv(feat.double(), kmap, w.double(), backend="triton")


def test_triton_opcheck(triton_interpret):
    grid = _cloud(60, 5)
    kmap = ops.kernel_map(grid)
    feat = torch.randn(len(grid), 16, requires_grad=True)
    w = torch.randn(27, 16, 16, requires_grad=True)
    b = torch.randn(16, requires_grad=True)
    torch.library.opcheck(
        torch.ops.pointins.sparse_conv.default,
        (feat, kmap, kmap.flip(1), w, b, True, True),
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )


@pytest.mark.triton
def test_tune_script_smoke(triton_interpret, tmp_path, capsys):
    """bench/tune_sparse_conv.py (the GPU block-size sweep) end to end on the interpreter."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    bench_dir = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench_dir))
    try:
        spec = importlib.util.spec_from_file_location("tune_sparse_conv", bench_dir / "tune_sparse_conv.py")
        tune = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tune)
        out = tmp_path / "tune.json"
        argv = ["--device", "cpu", "--n", "200", "--channels", "16", "--dtype", "float16", "--json", str(out)]
        assert tune.main(argv) == 0
    finally:
        sys.path.remove(str(bench_dir))
    res = json.loads(out.read_text())
    assert len(res["best"]) == 3 and all(r.get("rel_err", 1) < 2e-2 for run in res["runs"] for r in run["rows"])
    assert "best configs" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# GPU
# ---------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 1e-2), (torch.float16, 3e-3), (torch.float32, 2e-5)])
@pytest.mark.parametrize("c", [48, 96, 192])
def test_cuda_matches_reference(dtype, tol, c):
    grid = _cloud(200_000, 80).cuda()
    kmap = ops.kernel_map(grid)
    feat = torch.randn(len(grid), c, device="cuda").to(dtype).requires_grad_()
    w = (torch.randn(27, c, c, device="cuda") / c**0.5).to(dtype).requires_grad_()
    b = torch.randn(c, device="cuda").to(dtype).requires_grad_()
    out = ops.sparse_conv(feat, kmap, w, b)
    ref = reference.sparse_conv(feat.double(), kmap, w.double(), b.double())
    assert _rel(out, ref) < tol
    g = torch.randn_like(ref)
    for det in (False, True):
        got = _grads(ops.sparse_conv(feat, kmap, w, b, deterministic=det), (feat, w, b), g.to(dtype))
        for x, y in zip(got, _grads(ref, (feat, w, b), g), strict=True):
            assert _rel(x, y) < tol


@pytest.mark.cuda
def test_cuda_deterministic_bitwise():
    grid = _cloud(100_000, 60).cuda()
    kmap = ops.kernel_map(grid)
    feat = torch.randn(len(grid), 96, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(27, 96, 96, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(len(grid), 96, device="cuda", dtype=torch.bfloat16)
    runs = [_grads(ops.sparse_conv(feat, kmap, w, deterministic=True), (w,), g)[0] for _ in range(3)]
    assert all(torch.equal(runs[0], r) for r in runs[1:])


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_past_int32_elements():
    """feat with more than 2^31 elements: rows at the far end must be right (int64 offsets)."""
    c = 64
    n = 2**31 // c + 4096
    feat = torch.randn(n, c, device="cuda", dtype=torch.float16)
    kmap = torch.arange(n, device="cuda")[:, None]  # a 1x1 conv
    w = torch.randn(1, c, c, device="cuda", dtype=torch.float16)
    out = ops.sparse_conv(feat, kmap, w, validate=False)
    tail = slice(n - 4096, n)
    torch.testing.assert_close(out[tail].float(), feat[tail].float() @ w[0].float(), rtol=1e-2, atol=1e-2)
