"""Submanifold sparse convolution 3x3x3 (the PTv3 CPE) on a grid-sampled room: ours (CPU: chunked
implicit GEMM; CUDA: fused Triton implicit GEMM, atomic and deterministic weight gradient) vs the
gather-GEMM-scatter reference (per kernel offset: gather the neighbour rows, one GEMM, index_add),
forward and forward + backward. ``flops`` counts only the valid (output, neighbour) pairs."""

from __future__ import annotations

import pytest
import torch
from _scenes import peak_mb, room

import pointins.ops as ops
from pointins.ops import reference

IMPLS = ["ours", "ours (deterministic wgrad)", "reference gather-GEMM-scatter"]


@pytest.mark.parametrize(
    "device,dtype,channels",
    [("cpu", torch.float32, 48), ("cpu", torch.float32, 96)]
    + [pytest.param("cuda", torch.bfloat16, c, marks=pytest.mark.cuda) for c in (48, 96, 192, 384)],
)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
def bench_subm_conv(bench, quick, device, dtype, channels, mode, impl):
    if impl == "ours (deterministic wgrad)" and (mode == "fwd" or device == "cpu"):
        pytest.skip("only the GPU weight gradient has an atomic / deterministic choice")
    n = 20_000 if quick else (50_000 if device == "cpu" else 400_000)
    b = room(n, device=device)
    kmap = ops.kernel_map(b["grid_coord"], b["offsets"])
    kmap_t = kmap.flip(1)
    pairs = int((kmap >= 0).sum())
    g = torch.Generator(device=device).manual_seed(0)
    feat = torch.randn(n, channels, device=device, generator=g).to(dtype).requires_grad_(mode != "fwd")
    w = (torch.randn(27, channels, channels, device=device, generator=g) / (27 * channels) ** 0.5).to(dtype)
    w.requires_grad_(mode != "fwd")
    bias = torch.zeros(channels, device=device, dtype=dtype)
    go = torch.randn(n, channels, device=device, generator=g).to(dtype)
    if impl == "reference gather-GEMM-scatter":
        conv = lambda: reference.sparse_conv(feat, kmap, w, bias)
    else:
        det = impl == "ours (deterministic wgrad)"
        conv = lambda: ops.sparse_conv(feat, kmap, w, bias, kernel_map_t=kmap_t, deterministic=det, validate=False)

    def step():
        if mode == "fwd":
            with torch.no_grad():
                return conv()
        feat.grad = w.grad = None
        conv().backward(go)
        return feat.grad

    step()
    bench(
        step,
        group=f"subm conv 3^3 {mode} N={n // 1000}k C={channels} {str(dtype)[6:]} {device}",
        impl=impl,
        baseline=impl.startswith("reference"),
        device=device,
        rounds=5 if device == "cuda" else 3,
        points=n,
        flops=2 * pairs * channels * channels * (1 if mode == "fwd" else 3),
        peak_mb=peak_mb(step, device),
    )
