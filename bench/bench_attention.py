"""Serialized patch attention (PTv3 shapes: K = 1024, head dim 16) vs PyTorch SDPA with explicit
gathers before and after (the fair end-to-end baseline: permute + pad qkv into (patches, H, K, d),
attend, scatter the own slots back), per SDPA backend, and vs ``torch.nn.attention.varlen`` where
present. Forward and forward+backward, bf16 on CUDA (float32 on the CPU).

Rates: FLOPs count the four (forward) / fourteen (forward+backward, FlashAttention's convention)
multiply-adds of K^2 * C per patch; exponentials count the minimum, one per score forward and two
forward+backward. Ceilings to compare with (datasheet leads, H100 SXM): ~990 TFLOP/s dense bf16,
~4200 Gexp/s (16 ex2 per clock per SM x 132 SMs x 1.98 GHz). ``peak MB`` is one call's peak device
memory above what was allocated before it: it should grow linearly with N.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import pytest
import torch

import pointins.ops as ops
from pointins.ops import reference

K = 1024
D = 16
CHANNELS = [48, 96, 192, 384, 512]
SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
}


@functools.lru_cache(maxsize=1)
def _indices(n: int, clouds: int, device: str):
    rng = np.random.default_rng(0)
    sizes = rng.multinomial(n - clouds * (K + 1), [1 / clouds] * clouds) + K + 1  # every cloud > K points
    off = torch.tensor([0, *np.cumsum(sizes).tolist()])
    grid = torch.randint(0, 2000, (n, 3), generator=torch.Generator().manual_seed(0))
    ser = ops.serialize(grid, offsets=off)
    pad, unpad, cu = ops.patch_partition(off, K)
    return ser.order[0].to(device), pad.to(device), unpad.to(device), cu.to(device)


def _case(n: int, clouds: int, channels: int, device: str, dtype: torch.dtype):
    qkv = torch.randn(n, 3 * channels, dtype=dtype, device=device)
    return qkv, *_indices(n, clouds, device)


def _sdpa_context(name: str):
    if name == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[name]))


def _varlen(qkv, order, pad, unpad, cu, heads):
    """Gather into (P, 3, H, d), torch.nn.attention.varlen.varlen_attn, scatter the own slots."""
    from torch.nn.attention.varlen import varlen_attn

    n, c = qkv.shape[0], qkv.shape[1] // 3
    rows = order[pad]
    own = unpad[pad] == torch.arange(pad.numel(), device=pad.device)
    x = qkv[rows].view(-1, 3, heads, c // heads)
    o = varlen_attn(x[:, 0], x[:, 1], x[:, 2], cu, cu, K, K)
    return qkv.new_zeros(n, c).index_copy(0, rows[own], o.reshape(-1, c)[own])


VARIANTS = ["ours (deterministic bwd)", "ours (exp2 emulated 1/4)", "ours (exp2 emulated 1/2)"]
IMPLS = ["ours", *VARIANTS, "SDPA default + gathers", "varlen_attn + gathers"] + [
    f"SDPA {b} + gathers" for b in SDPA_BACKENDS
]


@pytest.mark.cuda
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("n", [100_000, 1_000_000])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def bench_patch_attention_cuda(bench, quick, mode, n, channels, impl):
    if quick and (n > 100_000 or channels not in (48, 512)):
        pytest.skip("--bench-quick")
    if impl == "ours (deterministic bwd)" and mode == "fwd":
        pytest.skip("same forward as ours")
    if impl in VARIANTS and channels not in (48, 512):
        pytest.skip("variants at the narrowest and widest stage only")
    _run(bench, mode, n, channels, impl, "cuda", torch.bfloat16)


@pytest.mark.parametrize("impl", ["ours", "SDPA default + gathers", "reference (patch loop)"])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def bench_patch_attention_cpu(bench, quick, mode, impl):  # the CPU path (no Triton outside the interpreter)
    _run(bench, mode, 20_000 if quick else 60_000, 48, impl, "cpu", torch.float32)


def _run(bench, mode, n, channels, impl, device, dtype):
    heads = channels // D
    qkv, order, pad, unpad, cu = _case(n, 8 if n >= 100_000 else 4, channels, device, dtype)
    buckets = reference.patch_buckets(cu)
    index = ops.patch_index(order, pad, unpad)
    ctx = contextlib.nullcontext()
    if impl.startswith("ours"):
        attend = lambda x: ops.patch_attention(
            x, order, pad, unpad, cu, heads, max_seqlen=K, index=index, validate=False
        )
        if impl == "ours (deterministic bwd)":
            ctx = _deterministic()
        elif "emulated" in impl:
            ctx = _emulated(dtype, int(impl.split("1/")[1].rstrip(")")))
    elif impl == "varlen_attn + gathers":
        pytest.importorskip("torch.nn.attention.varlen")
        attend = lambda x: _varlen(x, order, pad, unpad, cu, heads)
    elif impl == "reference (patch loop)":
        attend = lambda x: reference.patch_attention(x, order, pad, unpad, cu, heads)[0]
    else:
        backend = impl.split()[1]
        ctx = _sdpa_context(backend)
        attend = lambda x: reference.patch_attention_sdpa(x, order, pad, unpad, cu, heads, buckets=buckets)
    x = qkv.clone().requires_grad_(mode != "fwd")
    go = torch.randn(n, channels, dtype=dtype, device=device)

    def step():
        if mode == "fwd":
            with torch.no_grad():
                return attend(x)
        x.grad = None
        attend(x).backward(go)
        return x.grad

    with ctx:
        try:
            step()
        except RuntimeError as e:  # an SDPA backend refusing these shapes/dtype on this GPU
            pytest.skip(f"{impl}: {str(e).splitlines()[0][:160]}")
        peak = None
        if device == "cuda":
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            peak = (torch.cuda.max_memory_allocated() - before) / 2**20
        scores = sum(s.numel() * s.shape[1] for _, s in buckets) * heads  # sum over patches of L^2 * H
        bench(
            step,
            group=f"patch attention {mode} N={n // 1000}k C={channels} d={D} K={K} {str(dtype)[6:]} {device}",
            impl=impl,
            baseline=impl == ("SDPA default + gathers"),
            device=device,
            rounds=5 if device == "cuda" else 3,
            points=n,
            flops=scores * D * (4 if mode == "fwd" else 14),
            exps=scores * (1 if mode == "fwd" else 2),
            peak_mb=peak,
        )


@contextlib.contextmanager
def _emulated(dtype: torch.dtype, every: int):
    """Software exp2 on every ``every``-th key block (pointins/triton/attention.py EXP2_EMULATION)."""
    from pointins.triton import load

    table = load("attention").EXP2_EMULATION
    prev = table.get(dtype, 0)
    table[dtype] = every
    try:
        yield
    finally:
        table[dtype] = prev


@contextlib.contextmanager
def _deterministic():
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)
