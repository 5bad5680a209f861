"""Segment reductions: ours (segment ids and CSR offsets) vs torch.scatter_reduce, index_add_ and
torch.segment_reduce, at N = 1M rows, C = 64 channels, S = 10k / 100k segments."""

from __future__ import annotations

import pytest
import torch

import pointins.ops as ops

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
C = 64


def _data(n: int, s: int, device: str):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, C, generator=g).to(device)
    idx = torch.randint(0, s, (n,), generator=g).to(device)
    sorted_idx = idx.sort().values
    counts = torch.bincount(sorted_idx, minlength=s)
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return x, idx, sorted_idx, counts, offsets


def _scatter(x, idx, s, reduce):
    out = torch.zeros(s, x.shape[1], device=x.device, dtype=x.dtype)
    return out.scatter_reduce(0, idx[:, None].expand_as(x), x, reduce=reduce, include_self=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("s", [10_000, 100_000])
@pytest.mark.parametrize(
    "impl", ["ours (ids)", "ours (CSR)", "torch.scatter_reduce", "index_add_", "torch.segment_reduce (CSR)"]
)
def bench_segment_reduce(bench, quick, device, reduce, s, impl):
    n = 100_000 if quick else 1_000_000
    if impl == "index_add_" and reduce != "sum":
        pytest.skip("index_add_ only sums")
    x, idx, _, counts, offsets = _data(n, s, device)
    torch_reduce = {"sum": "sum", "mean": "mean", "max": "amax"}[reduce]
    if impl == "ours (ids)":
        fn = lambda: ops.segment_reduce(x, index=idx, num_segments=s, reduce=reduce)
    elif impl == "ours (CSR)":
        fn = lambda: ops.segment_reduce(x, offsets=offsets, reduce=reduce)
    elif impl == "torch.scatter_reduce":
        fn = lambda: _scatter(x, idx, s, torch_reduce)
    elif impl == "index_add_":
        fn = lambda: torch.zeros(s, C, device=device).index_add_(0, idx, x)
    else:
        fn = lambda: torch.segment_reduce(x, reduce, lengths=counts, axis=0, unsafe=True)
    bench(
        fn,
        group=f"segment {reduce} N={n // 1000}k C={C} S={s // 1000}k {device}",
        impl=impl,
        baseline=impl == "torch.scatter_reduce",
        device=device,
        points=n,
        bytes=n * C * 4 + n * 8,
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["ours (ids)", "torch two-pass index_add_"])
def bench_segment_var(bench, quick, device, impl):
    n, s = (100_000 if quick else 1_000_000), 10_000
    x, idx, *_ = _data(n, s, device)

    def torch_var():
        cnt = torch.bincount(idx, minlength=s).clamp(min=1)[:, None]
        mean = torch.zeros(s, C, device=device).index_add_(0, idx, x) / cnt
        return torch.zeros(s, C, device=device).index_add_(0, idx, (x - mean[idx]) ** 2) / cnt

    fn = (
        (lambda: ops.segment_reduce(x, index=idx, num_segments=s, reduce="var"))
        if impl.startswith("ours")
        else torch_var
    )
    bench(
        fn,
        group=f"segment var N={n // 1000}k C={C} S=10k {device}",
        impl=impl,
        baseline=not impl.startswith("ours"),
        device=device,
        points=n,
    )
