"""PTv3 encoder per scene: pointins kernels vs the same model on reference ops (gather-GEMM-scatter
conv, gather -> SDPA -> scatter attention, scatter_reduce pooling, reference serialization and kernel
maps), forward and forward + backward (training mode: drop path, shuffled orders). CPU: ``tiny`` on a
30k-point room (float32); GPU: ``base`` on a 100k-point room (bf16 autocast), with peak memory.
``points/s`` gives ms per 100k points as 1e8 / (points/s)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from _scenes import peak_mb, room

from pointins.models import build_backbone

CASES = [("cpu", "tiny", 30_000), pytest.param("cuda", "base", 100_000, marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device,preset,n", CASES)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", ["ours", "reference ops"])
def bench_ptv3(bench, quick, device, preset, n, mode, impl):
    if quick:
        n = min(n, 10_000)
    torch.manual_seed(0)
    model = build_backbone(preset, in_channels=6).to(device)
    model.ops = "reference" if impl == "reference ops" else "auto"
    model.train(mode != "fwd")
    batch = room(n, device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()

    def step():
        with amp:
            if mode == "fwd":
                with torch.no_grad():
                    return model(batch).feat
            model.zero_grad(set_to_none=True)
            out = model(batch, return_full=False)
            out.feat.float().square().mean().backward()
            return out.feat

    step()
    bench(
        step,
        group=f"PTv3 {preset} {mode} N={n // 1000}k {device}",
        impl=impl,
        baseline=impl == "reference ops",
        device=device,
        rounds=5 if device == "cuda" else 3,
        points=n,
        peak_mb=peak_mb(step, device),
    )
