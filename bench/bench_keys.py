"""grid_coord / pack_keys / unpack_keys: compiled kernels vs the plain-PyTorch reference, and
the packed-key unique vs torch.unique(dim=0) (what DESIGN.md's "pack keys first" rule saves)."""

from __future__ import annotations

import pytest
import torch

import pointins.ops as ops
from pointins.ops import reference as ref

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _size(device: str, quick: bool) -> int:
    if quick:
        return 100_000
    return 1_000_000 if device == "cpu" else 10_000_000


def _cloud(n: int, device: str, samples: int = 8):
    g = torch.Generator().manual_seed(0)
    coord = (torch.rand(n, 3, generator=g) * torch.tensor([20.0, 20.0, 4.0])).to(device)
    counts = torch.full((samples,), n // samples)
    counts[-1] += n - int(counts.sum())
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]).to(device)
    return coord, offsets


def _label(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n // 1000}k"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["ours", "reference"])
def bench_grid_coord(bench, quick, device, impl):
    n = _size(device, quick)
    coord, offsets = _cloud(n, device)
    fn = {
        "ours": lambda: ops.grid_coord(coord, offsets, 0.02),
        "reference": lambda: ref.grid_coord(coord, offsets, [0.02] * 3),
    }[impl]
    bench(
        fn,
        group=f"grid_coord N={_label(n)} B=8 {device}",
        impl=impl,
        baseline=impl == "reference",
        device=device,
        points=n,
        bytes=n * 24,
    )


def _impls(device):
    return ["ours", "reference"] + (["triton"] if device == "cuda" else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["ours", "reference", "triton"])
def bench_pack_keys(bench, quick, device, impl):
    if impl not in _impls(device):
        pytest.skip("Triton runs on the GPU only (the CPU interpreter is not a benchmark)")
    n = _size(device, quick)
    coord, offsets = _cloud(n, device)
    grid = ops.grid_coord(coord, offsets, 0.02)
    batch = ref.offsets_to_batch(offsets)
    fn = {
        "ours": lambda: ops.pack_keys(grid, batch),
        "triton": lambda: ops.pack_keys(grid, batch, backend="triton"),
        "reference": lambda: ref.pack_keys(grid, batch),
    }[impl]
    bench(fn, group=f"pack_keys N={_label(n)} {device}", impl=impl, baseline=impl == "reference", device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["ours", "reference", "triton"])
def bench_unpack_keys(bench, quick, device, impl):
    if impl not in _impls(device):
        pytest.skip("Triton runs on the GPU only (the CPU interpreter is not a benchmark)")
    n = _size(device, quick)
    coord, offsets = _cloud(n, device)
    keys = ops.pack_keys(ops.grid_coord(coord, offsets, 0.02), offsets=offsets)
    fn = {
        "ours": lambda: ops.unpack_keys(keys),
        "triton": lambda: ops.unpack_keys(keys, backend="triton"),
        "reference": lambda: ref.unpack_keys(keys),
    }[impl]
    bench(fn, group=f"unpack_keys N={_label(n)} {device}", impl=impl, baseline=impl == "reference", device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["pack_keys+unique", "torch.unique(dim=0)"])
def bench_unique_voxels(bench, quick, device, impl):
    n = _size(device, quick)
    coord, offsets = _cloud(n, device)
    grid = ops.grid_coord(coord, offsets, 0.05)
    batch = ref.offsets_to_batch(offsets)
    rows = torch.cat([batch[:, None].int(), grid], 1)

    def ours():
        return torch.unique(ops.pack_keys(grid, batch), return_inverse=True)

    def rowwise():
        return torch.unique(rows, dim=0, return_inverse=True)

    fn = ours if impl == "pack_keys+unique" else rowwise
    bench(
        fn,
        group=f"unique voxels N={_label(n)} {device}",
        impl=impl,
        baseline=impl == "torch.unique(dim=0)",
        device=device,
    )
