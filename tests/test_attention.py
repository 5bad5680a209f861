"""Serialized patch attention: Triton kernels (interpreter on CPU, compiled on GPU), the CPU path
and the reference, against a float64 oracle and an independent PTv3-style formulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pointins.ops as ops
from pointins.ops import attention, reference

_exp2_poly = None  # set by test_exp2_poly_accuracy
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def make_case(sizes, patch_size, heads, d, seed=0, device="cpu", order_index=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    off = torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.long)
    n = int(off[-1])
    grid = torch.randint(0, 40, (n, 3), generator=g)
    order = ops.serialize(grid, offsets=off).order[order_index] if n else torch.zeros(0, dtype=torch.long)
    pad, unpad, cu = ops.patch_partition(off, patch_size)
    if device == "cpu":
        qkv = torch.randn(n, 3 * heads * d, generator=g, dtype=dtype)
    else:
        gen = torch.Generator(device).manual_seed(seed)
        qkv = torch.randn(n, 3 * heads * d, generator=gen, dtype=dtype, device=device)
    return qkv, order.to(device), pad.to(device), unpad.to(device), cu.to(device)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    assert not torch.isnan(a).any(), "NaN in the result"
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def run(qkv64, order, pad, unpad, cu, heads, dtype, backend, grad_seed=1, **kw):
    """(out, lse, dqkv) of one backend in ``dtype`` and of the float64 reference."""
    ref_q = qkv64.clone().requires_grad_()
    ref_out, ref_lse = reference.patch_attention(ref_q, order, pad, unpad, cu, heads)
    go = torch.randn(ref_out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    go = go.to(qkv64.device)
    (ref_out * go).sum().backward()
    q = qkv64.to(dtype).requires_grad_()
    out, lse = ops.patch_attention(q, order, pad, unpad, cu, heads, backend=backend, return_lse=True, **kw)
    (out.double() * go).sum().backward()
    return (out, lse, q.grad), (ref_out, ref_lse, ref_q.grad)


@pytest.fixture
def small_blocks():
    """Triton block sizes of 16/32 so that small patches span several blocks (both loop paths)."""
    from pointins.triton import load

    mod = load("attention")
    saved = mod.FWD_BLOCKS, mod.BWD_KV_BLOCKS, mod.BWD_Q_BLOCKS
    mod.FWD_BLOCKS, mod.BWD_KV_BLOCKS, mod.BWD_Q_BLOCKS = (16, 32, 4, 1), (16, 32, 4, 1), (32, 16, 4, 1)
    yield
    mod.FWD_BLOCKS, mod.BWD_KV_BLOCKS, mod.BWD_Q_BLOCKS = saved


CASES = [
    # (cloud sizes, K, heads, d): K dividing and not dividing n, short clouds, one-point clouds
    ([100, 300, 37], 64, 2, 16),
    ([128, 64, 1, 200], 64, 1, 32),
    ([90, 41, 5], 40, 3, 16),
    ([20], 64, 2, 64),
]


def assert_close(got, want, dtype):
    out, lse, grad = got
    rout, rlse, rgrad = want
    tol = TOL[dtype]
    assert rel(out, rout) < tol, rel(out, rout)
    assert rel(lse, rlse) < max(tol / 10, 1e-7), rel(lse, rlse)
    assert rel(grad, rgrad) < 2 * tol, rel(grad, rgrad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("case", CASES)
def test_cpu_matches_reference(case, dtype):
    sizes, k, heads, d = case
    qkv, order, pad, unpad, cu = make_case(sizes, k, heads, d)
    got, want = run(qkv, order, pad, unpad, cu, heads, dtype, "cpu")
    assert_close(got, want, dtype)


def test_cpu_math_fallback_matches_reference(monkeypatch):
    """The path used where PyTorch lacks its fused CPU attention with log-sum-exp."""
    monkeypatch.setattr(attention, "_FLASH_CPU", None)
    monkeypatch.setattr(attention, "_FLASH_CPU_BWD", None)
    qkv, order, pad, unpad, cu = make_case([100, 300, 37], 64, 2, 16)
    got, want = run(qkv, order, pad, unpad, cu, 2, torch.float32, "cpu")
    assert_close(got, want, torch.float32)


@pytest.mark.triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", CASES)
def test_triton_matches_reference(triton_interpret, small_blocks, case, dtype):
    sizes, k, heads, d = case
    qkv, order, pad, unpad, cu = make_case(sizes, k, heads, d, seed=len(sizes))
    got, want = run(qkv, order, pad, unpad, cu, heads, dtype, "triton")
    assert_close(got, want, dtype)


@pytest.mark.triton
def test_triton_default_blocks(triton_interpret):
    """The GPU block sizes (128/64): patches shorter than one block, masked tails only."""
    qkv, order, pad, unpad, cu = make_case([150, 70], 96, 2, 16)
    got, want = run(qkv, order, pad, unpad, cu, 2, torch.float32, "triton")
    assert_close(got, want, torch.float32)


@pytest.mark.triton
def test_triton_deterministic_backward(triton_interpret, small_blocks):
    """use_deterministic_algorithms: dQ by its own kernel, no atomics; bitwise repeatable."""
    qkv, order, pad, unpad, cu = make_case([100, 300, 37], 64, 2, 16)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        got, want = run(qkv, order, pad, unpad, cu, 2, torch.float32, "triton")
        again, _ = run(qkv, order, pad, unpad, cu, 2, torch.float32, "triton")
    finally:
        torch.use_deterministic_algorithms(prev)
    assert_close(got, want, torch.float32)
    assert torch.equal(got[2], again[2])


@pytest.mark.triton
@pytest.mark.parametrize("every", [1, 2])
def test_triton_emulated_exp2_matches_reference(triton_interpret, small_blocks, every, monkeypatch):
    """Software exp2 on every (1) or every other (2) key block: still within fp16 tolerance."""
    from pointins.triton import load

    monkeypatch.setitem(load("attention").EXP2_EMULATION, torch.float16, every)
    qkv, order, pad, unpad, cu = make_case([100, 300, 37], 64, 2, 16)
    got, want = run(qkv, order, pad, unpad, cu, 2, torch.float16, "triton")
    assert_close(got, want, torch.float16)
    torch.use_deterministic_algorithms(True)
    try:
        got, want = run(qkv, order, pad, unpad, cu, 2, torch.float16, "triton")
    finally:
        torch.use_deterministic_algorithms(False)
    assert_close(got, want, torch.float16)


@pytest.mark.triton
def test_exp2_poly_accuracy(triton_interpret):
    import triton
    import triton.language as tl

    from pointins.triton import load

    global _exp2_poly  # Triton resolves callees through the kernel's module globals
    _exp2_poly = load("attention")._exp2_poly

    @triton.jit
    def kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(y_ptr + i, _exp2_poly(tl.load(x_ptr + i, mask=i < n)), mask=i < n)

    x = torch.cat([-torch.rand(5000) * 130, torch.tensor([0.0, -1e-7, -1.0, -125.9, -126.0, -126.5, -1e30])])
    x = torch.cat([x, torch.tensor([float("-inf")])])
    y = torch.empty_like(x)
    kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
    want = torch.exp2(x.double())
    normal = x >= -125  # results below 2^-125 may be subnormal: absolute error only
    assert float(((y[normal].double() - want[normal]).abs() / want[normal]).max()) < 8e-5
    tiny = (x < -125) & (x >= -126)
    assert float((y[tiny].double() - want[tiny]).abs().max()) < 1e-41
    assert torch.all(y[x < -126] == 0) and y[-1] == 0


@pytest.mark.triton
def test_tune_script_smoke(triton_interpret, tmp_path, capsys):
    """bench/tune_attention.py (the GPU block-size sweep) end to end on the interpreter."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "tune_attention.py"
    spec = importlib.util.spec_from_file_location("tune_attention", path)
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    out = tmp_path / "tune.json"
    argv = ["--device", "cpu", "--n", "150", "--channels", "16", "--patch-size", "32", "--dtype", "float16"]
    assert tune.main([*argv, "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert len(res["best"]) == 3 and all(r.get("rel_err", 1) < 2e-2 for run in res["runs"][:3] for r in run["rows"])
    assert "best configs" in capsys.readouterr().out


def ptv3_formulation(qkv, order, pad, unpad, cu, heads):
    """Attention as PTv3 writes it: permute + pad a copy of qkv, attend per patch, take each
    point's own slot back through ``inverse = unpad[argsort(order)]``; autograd sums duplicates."""
    c = qkv.shape[1] // 3
    d = c // heads
    padded = qkv[order][pad].view(-1, 3, heads, d)
    outs = []
    for p in range(cu.numel() - 1):
        q, k, v = padded[int(cu[p]) : int(cu[p + 1])].unbind(1)
        attn = torch.softmax(torch.einsum("ihd,jhd->hij", q, k) * d**-0.5, -1)
        outs.append(torch.einsum("hij,jhd->ihd", attn, v).reshape(-1, c))
    inverse = unpad[torch.argsort(order)]
    return torch.cat(outs)[inverse]


@pytest.mark.parametrize("sizes", [[100, 300, 37], [128, 256], [5]])
def test_reference_matches_ptv3_formulation(sizes):
    qkv, order, pad, unpad, cu = make_case(sizes, 64, 2, 16)
    a = qkv.clone().requires_grad_()
    b = qkv.clone().requires_grad_()
    out_a, _ = reference.patch_attention(a, order, pad, unpad, cu, 2)
    out_b = ptv3_formulation(b, order, pad, unpad, cu, 2)
    go = torch.randn_like(out_a)
    (out_a * go).sum().backward()
    (out_b * go).sum().backward()
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(a.grad, b.grad)
    sdpa = reference.patch_attention_sdpa(qkv, order, pad, unpad, cu, 2)
    torch.testing.assert_close(sdpa, out_b)


def test_duplicate_slots_are_keys_and_their_gradients_accumulate():
    """One cloud of K + 1 points: the last patch holds point K and K - 1 duplicates of patch 0."""
    k, heads, d = 8, 1, 16
    qkv, order, pad, unpad, cu = make_case([k + 1], k, heads, d)
    assert cu.tolist() == [0, k, 2 * k]
    idx = ops.patch_index(order, pad, unpad)
    assert (idx.dst >= k + 1).sum() == k - 1 and idx.dup_src.numel() == k - 1
    assert torch.equal(idx.dup_src, order[pad[k + 1 :]])
    # The last point attends to itself and the duplicates: its output is not that of a 1-point patch.
    out = ops.patch_attention(qkv, order, pad, unpad, cu, heads)
    last = order[k]
    assert not torch.allclose(out[last], qkv[last, 2 * heads * d :])
    got, want = run(qkv, order, pad, unpad, cu, heads, torch.float64, "cpu")
    assert_close(got, want, torch.float64)


def test_gradcheck_cpu_float64():
    qkv, order, pad, unpad, cu = make_case([20, 7], 8, 2, 4)
    qkv = qkv.requires_grad_()
    fn = lambda x: ops.patch_attention(x, order, pad, unpad, cu, 2, backend="cpu")
    assert torch.autograd.gradcheck(fn, (qkv,), eps=1e-6, atol=1e-6)


def test_index_cache_4d_input_and_numpy():
    qkv, order, pad, unpad, cu = make_case([100, 30], 64, 2, 16)
    qkv = qkv.float()
    base = ops.patch_attention(qkv, order, pad, unpad, cu, 2)
    idx = ops.patch_index(order, pad, unpad)
    cached = ops.patch_attention(qkv, order, pad, unpad, cu, 2, index=idx, max_seqlen=64, validate=False)
    four_d = ops.patch_attention(qkv.view(-1, 3, 2, 16), order, pad, unpad, cu, 2)
    arr = ops.patch_attention(qkv.numpy(), order.numpy(), pad.numpy(), unpad.numpy(), cu.numpy(), 2)
    assert torch.equal(base, cached) and torch.equal(base, four_d)
    assert isinstance(arr, np.ndarray) and np.array_equal(arr, base.numpy())
    ref = ops.patch_attention(qkv, order, pad, unpad, cu, 2, backend="reference")
    torch.testing.assert_close(base, ref)


def test_scale_argument():
    qkv, order, pad, unpad, cu = make_case([50], 64, 1, 16)
    got = ops.patch_attention(qkv, order, pad, unpad, cu, 1, scale=0.7)
    want, _ = reference.patch_attention(qkv, order, pad, unpad, cu, 1, scale=0.7)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, ops.patch_attention(qkv, order, pad, unpad, cu, 1))


def test_empty_input():
    qkv, order, pad, unpad, cu = make_case([], 64, 2, 16)
    assert cu.tolist() == [0]
    q = qkv.float().requires_grad_()
    out = ops.patch_attention(q, order, pad, unpad, cu, 2)
    assert out.shape == (0, 32)
    out.sum().backward()
    assert q.grad.shape == (0, 96)


def test_opcheck_cpu():
    qkv, order, pad, unpad, cu = make_case([100, 30], 64, 2, 16)
    idx = ops.patch_index(order, pad, unpad)
    args = (qkv.float().requires_grad_(), idx.rows, idx.dst, cu.int(), 2, 64, 0.25, False)
    torch.library.opcheck(torch.ops.pointins.patch_attention.default, args)


@pytest.mark.triton
def test_opcheck_triton(triton_interpret):
    qkv, order, pad, unpad, cu = make_case([40, 20], 32, 1, 16)
    idx = ops.patch_index(order, pad, unpad)
    args = (qkv.float().requires_grad_(), idx.rows, idx.dst, cu.int(), 1, 32, 0.25, True)
    torch.library.opcheck(torch.ops.pointins.patch_attention.default, args)


def test_torch_compile_fullgraph():
    qkv, order, pad, unpad, cu = make_case([100, 30], 64, 2, 16)
    qkv = qkv.float()

    def block(x):
        return ops.patch_attention(x * 2, order, pad, unpad, cu, 2, max_seqlen=64, validate=False).relu()

    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    x1, x2 = qkv.clone().requires_grad_(), qkv.clone().requires_grad_()
    torch.testing.assert_close(compiled(x1), block(qkv))
    compiled(x1).sum().backward()
    block(x2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)


def test_bad_input():
    qkv, order, pad, unpad, cu = make_case([100, 30], 64, 2, 16)
    qkv = qkv.float()
    call = lambda **kw: ops.patch_attention(
        kw.get("qkv", qkv), kw.get("order", order), kw.get("pad", pad), kw.get("unpad", unpad),
        kw.get("cu", cu), kw.get("heads", 2), **kw.get("extra", {}),
    )  # fmt: skip
    with pytest.raises(ValueError, match="divisible by num_heads"):
        call(heads=5)
    with pytest.raises(ValueError, match="num_heads must be a positive int"):
        call(heads=0)
    with pytest.raises(TypeError, match="floating point"):
        call(qkv=qkv.long())
    with pytest.raises(ValueError, match="order must be"):
        call(order=order[:-1])
    with pytest.raises(TypeError, match="pad must be an integer"):
        call(pad=pad.float())
    with pytest.raises(ValueError, match="permutation"):
        call(order=torch.zeros_like(order))
    with pytest.raises(ValueError, match=r"pad\[unpad\[s\]\] == s"):
        call(unpad=unpad.flip(0))
    with pytest.raises(ValueError, match="cu_seqlens must start at 0"):
        call(cu=cu[:-1])
    with pytest.raises(ValueError, match="longer than max_seqlen=32"):
        call(extra={"max_seqlen": 32})
    bad = qkv.clone()
    bad[7, 3] = float("nan")
    with pytest.raises(ValueError, match=r"NaN/Inf .*row 7"):
        call(qkv=bad)
    with pytest.raises(ValueError, match="unknown backend"):
        call(extra={"backend": "cuda-graphs"})
    with pytest.raises(ValueError, match="4-D qkv"):
        call(qkv=qkv.view(-1, 3, 1, 32))


@pytest.mark.triton
def test_triton_bad_input(triton_interpret):
    qkv, order, pad, unpad, cu = make_case([30], 64, 2, 8)
    with pytest.raises(ValueError, match="head dim 8 unsupported"):
        ops.patch_attention(qkv.float(), order, pad, unpad, cu, 2, backend="triton")
    with pytest.raises(TypeError, match="float64"):
        ops.patch_attention(qkv, order, pad, unpad, cu, 2, backend="triton")


# --------------------------------------------------------------------------------------------- GPU


def gpu_case(n_points, clouds, heads, d, patch_size=1024, seed=0, dtype=torch.float64):
    sizes = np.random.default_rng(seed).multinomial(n_points - clouds, [1 / clouds] * clouds) + 1
    return make_case(sizes.tolist(), patch_size, heads, d, seed=seed, device="cuda", dtype=dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("d", [16, 32, 64])
def test_cuda_matches_reference(dtype, d):
    heads = 3 if d == 16 else 2
    qkv, order, pad, unpad, cu = gpu_case(20_000, 5, heads, d)
    got, want = run(qkv, order, pad, unpad, cu, heads, dtype, "triton")
    assert_close(got, want, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("every", [1, 4])
def test_cuda_emulated_exp2(every, monkeypatch):
    from pointins.triton import load

    monkeypatch.setitem(load("attention").EXP2_EMULATION, torch.bfloat16, every)
    qkv, order, pad, unpad, cu = gpu_case(20_000, 5, 3, 16)
    got, want = run(qkv, order, pad, unpad, cu, 3, torch.bfloat16, "triton")
    assert_close(got, want, torch.bfloat16)


@pytest.mark.cuda
def test_cuda_deterministic_mode_is_bitwise_repeatable():
    qkv, order, pad, unpad, cu = gpu_case(50_000, 4, 6, 16)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        a, want = run(qkv, order, pad, unpad, cu, 6, torch.bfloat16, "triton")
        b, _ = run(qkv, order, pad, unpad, cu, 6, torch.bfloat16, "triton")
    finally:
        torch.use_deterministic_algorithms(prev)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert_close(a, want, torch.bfloat16)


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_large_matches_sdpa():
    """1M points, C = 48 (PTv3 stage 1): Triton vs the gather + SDPA + scatter baseline."""
    x, order, pad, unpad, cu = gpu_case(1_000_000, 8, 3, 16, dtype=torch.bfloat16)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = ops.patch_attention(a, order, pad, unpad, cu, 3, max_seqlen=1024)
    base = reference.patch_attention_sdpa(b.float(), order, pad, unpad, cu, 3)
    go = torch.randn_like(base)
    (out.float() * go).sum().backward()
    (base * go).sum().backward()
    assert rel(out, base) < 1e-2 and rel(a.grad, b.grad) < 2e-2


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_past_2_31_elements():
    """qkv with more than 2^31 elements (1.4M points x 3 x 512 channels): int64 row offsets."""
    qkv, order, pad, unpad, cu = gpu_case(1_400_000, 2, 32, 16, dtype=torch.float16)
    assert qkv.numel() > 2**31
    out = ops.patch_attention(qkv, order, pad, unpad, cu, 32, max_seqlen=1024, validate=False)
    base = reference.patch_attention_sdpa(qkv, order, pad, unpad, cu, 32)
    last = order[-4096:]  # rows at the far end of qkv
    assert rel(out[last], base[last]) < 5e-3


def test_block_table_and_compile_checks_cover_every_dtype_head_dim_and_mode():
    """One block table for every dtype made fp32 attention need up to 525 KB of shared memory (H100/H200: 232,448
    B): the table is per operand width and head dim, and the compile check (tools/check_triton_compile.py, run
    under triton 3.6 by tools/gpu_stack_check.sh) covers every combination, so CI sees what a launch would hit."""
    from pointins.triton import load

    mod = load("attention")
    seen = set()
    for name, sig, ce, opts in mod.COMPILE_CHECKS:
        dt = next(v[1:] for k, v in sig.items() if k == "qkv_ptr")
        if ce["EMU"] == 0:
            seen.add((name, dt, ce["D"], ce.get("ATOMIC_DQ")))
        torch_dt = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dt]
        kernel = {"_fwd_kernel": "fwd", "_bwd_kv_kernel": "bwd_kv", "_bwd_q_kernel": "bwd_q"}[name]
        assert (ce["BM"], ce["BN"], opts["num_warps"], opts["num_stages"]) == mod.blocks_for(kernel, torch_dt, ce["D"])
    for dt in ("fp16", "bf16", "fp32"):
        for d in mod.HEAD_DIMS:
            assert ("_fwd_kernel", dt, d, None) in seen and ("_bwd_q_kernel", dt, d, None) in seen
            assert ("_bwd_kv_kernel", dt, d, True) in seen and ("_bwd_kv_kernel", dt, d, False) in seen
    # fp32 tiles are smaller than 16-bit ones where the 3xTF32 splits need the room
    assert mod.blocks_for("bwd_kv", torch.float32, 128)[:2] < mod.blocks_for("bwd_kv", torch.float16, 128)[:2]
    saved = mod.FWD_BLOCKS
    try:
        mod.FWD_BLOCKS = (16, 32, 4, 1)
        assert mod.blocks_for("fwd", torch.float32, 128) == (16, 32, 4, 1)
    finally:
        mod.FWD_BLOCKS = saved


def test_cpu_plan_is_reused_only_for_the_same_live_unchanged_indices():
    """The CPU path's per-call plan is kept for the index tensors of a level (blocks sharing a curve, and the
    backward): found again for the same objects, made anew after an in-place change or for equal new tensors."""
    from pointins.ops import attention as A

    n = 700
    ser = ops.serialize(torch.randint(0, 32, (n, 3)), offsets=torch.tensor([0, 300, n]))
    pad, unpad, cu = ops.patch_partition(torch.tensor([0, 300, n]), patch_size=128)
    idx = ops.patch_index(ser.order[0], pad, unpad)
    p1 = A._plan(idx.rows, idx.dst, cu, n)
    assert A._plan(idx.rows, idx.dst, cu, n) is p1
    rows2 = idx.rows.clone()
    p2 = A._plan(rows2, idx.dst, cu, n)
    assert p2 is not p1 and torch.equal(p2.own, p1.own)
    rows2.add_(0)  # an in-place write bumps the version: the kept plan is not trusted any more
    assert A._plan(rows2, idx.dst, cu, n) is not p2
    qkv = torch.randn(n, 3 * 16, requires_grad=True)
    out = ops.patch_attention(qkv, ser.order[0], pad, unpad, cu, num_heads=2, scale=0.3, index=idx)
    ref = reference.patch_attention(qkv.detach(), ser.order[0], pad, unpad, cu.to(torch.int32), 2, 0.3)[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
