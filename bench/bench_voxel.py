"""Voxel hashing and serialization: ours vs the plain-PyTorch references and the pipelines data
loaders use today (torch.unique on packed keys; NumPy FNV hash + argsort + np.unique)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pointins.ops as ops
from pointins.ops import reference as ref

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
GRID = 0.02


def _sizes(quick: bool) -> list[int]:
    return [100_000] if quick else [100_000, 1_000_000]


def _label(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n // 1000}k"


def _scan(n: int, device: str, seed: int = 0) -> torch.Tensor:
    """A room-scale cloud: points on a few planes with noise (about 1.5 points per 2 cm voxel at 1M)."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, 3, generator=g) * torch.tensor([8.0, 6.0, 3.0])
    plane = torch.randint(0, 4, (n,), generator=g)
    p[plane == 0, 2] = 0.0
    p[plane == 1, 0] = 0.0
    p[plane == 2, 1] = 0.0
    p += torch.randn(n, 3, generator=g) * 0.005
    return p.to(device)


def torch_unique_pipeline(coord: torch.Tensor, grid_size: float, seed: int = 0):
    """Grid sampling with plain torch: floor, pack, torch.unique, one random point per voxel."""
    g = torch.floor(coord / grid_size).long()
    g -= g.min(0).values
    keys = (g[:, 0] << 32) | (g[:, 1] << 16) | g[:, 2]
    _, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    order = torch.sort(inverse, stable=True).indices
    start = torch.cumsum(counts, 0) - counts
    gen = torch.Generator(device=coord.device).manual_seed(seed)
    pick = torch.randint(0, 2**31, counts.shape, generator=gen, device=coord.device) % counts
    return inverse, counts, order[start + pick]


def _fnv_hash(arr: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a over the columns (the hash Pointcept-style loaders use for voxel keys)."""
    arr = arr.astype(np.uint64, copy=False)
    h = np.full(arr.shape[0], np.uint64(14695981039346656037), dtype=np.uint64)
    for j in range(arr.shape[1]):
        h *= np.uint64(1099511628211)
        h ^= arr[:, j]
    return h


def numpy_pipeline(coord: np.ndarray, grid_size: float, rng: np.random.Generator):
    """Data-loader grid sampling: FNV hash, argsort, np.unique, one random point per voxel."""
    g = np.floor(coord / grid_size).astype(np.int64)
    g -= g.min(0)
    key = _fnv_hash(g)
    idx_sort = np.argsort(key)
    _, inverse, count = np.unique(key[idx_sort], return_inverse=True, return_counts=True)
    select = np.cumsum(np.insert(count, 0, 0)[:-1]) + rng.integers(0, count.max(), count.size) % count
    return idx_sort[select], inverse, count


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["ours", "torch.unique(packed keys)", "numpy hash+argsort+unique"])
@pytest.mark.parametrize("n", [100_000, 1_000_000])
def bench_voxelize(bench, quick, device, impl, n):
    if n not in _sizes(quick):
        pytest.skip("--bench-quick")
    if impl.startswith("numpy") and device != "cpu":
        pytest.skip("NumPy runs on the CPU")
    coord = _scan(n, device)
    if impl == "ours":
        fn = lambda: ops.voxelize(coord, None, GRID, mode="train", seed=0)
    elif impl.startswith("torch"):
        fn = lambda: torch_unique_pipeline(coord, GRID)
    else:
        c = coord.numpy()
        rng = np.random.default_rng(0)
        fn = lambda: numpy_pipeline(c, GRID, rng)
    bench(
        fn,
        group=f"voxelize train N={_label(n)} {device}",
        impl=impl,
        baseline=impl.startswith("torch"),
        device=device,
        rounds=5 if n >= 1_000_000 else None,
        points=n,
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("order", ["z", "hilbert"])
@pytest.mark.parametrize("impl", ["ours", "reference"])
@pytest.mark.parametrize("n", [100_000, 1_000_000])
def bench_serialize_encode(bench, quick, device, order, impl, n):
    if n not in _sizes(quick):
        pytest.skip("--bench-quick")
    grid = torch.randint(0, 2**16, (n, 3), generator=torch.Generator().manual_seed(0)).to(device)
    batch = torch.randint(0, 8, (n,), generator=torch.Generator().manual_seed(1)).sort().values.to(device)
    if impl == "ours":
        fn = lambda: ops.encode(grid, batch, order, 16)
    else:
        fn = lambda: ref.serialize_encode(grid, batch, 16, order)
    bench(
        fn,
        group=f"encode {order} depth=16 N={_label(n)} {device}",
        impl=impl,
        baseline=impl == "reference",
        device=device,
        rounds=3 if impl == "reference" and n >= 1_000_000 else None,
        points=n,
        bytes=n * (3 * 8 + 8 + 8),  # grid + batch in, code out
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["ours", "searchsorted reference"])
@pytest.mark.parametrize("n", [100_000, 1_000_000])
def bench_kernel_map(bench, quick, device, impl, n):
    if n not in _sizes(quick):
        pytest.skip("--bench-quick")
    vox = ops.voxelize(_scan(int(n * 1.6), device), None, GRID, mode="all")
    grid, batch = vox.grid_coord, vox.batch
    if impl == "ours":
        fn = lambda: ops.kernel_map(grid, batch=batch, kernel_size=3)
    else:
        fn = lambda: ref.kernel_map(grid, batch, 3)
    bench(
        fn,
        group=f"kernel_map k=3 V={_label(grid.shape[0])} {device}",
        impl=impl,
        baseline=impl != "ours",
        device=device,
        rounds=3 if impl != "ours" and n >= 1_000_000 else None,
        points=grid.shape[0],
        bytes=grid.shape[0] * (12 + 8 + 27 * 8),  # grid + batch in, map out
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["ours", "searchsorted reference"])
def bench_hash_query(bench, quick, device, impl):
    n = 100_000 if quick else 1_000_000
    g = torch.Generator().manual_seed(0)
    keys = torch.unique(torch.randint(0, 2**40, (n,), generator=g)).to(device)
    queries = torch.randint(0, 2**40, (n,), generator=g).to(device)
    queries[: n // 2] = keys[: n // 2]
    if impl == "ours":
        table = ops.HashTable(keys)
        fn = lambda: table.query(queries)
    else:
        fn = lambda: ref.hash_lookup(keys, queries)
    bench(
        fn, group=f"hash query keys={_label(keys.numel())} {device}", impl=impl, baseline=impl != "ours", device=device
    )


@pytest.mark.parametrize("device", DEVICES)
def bench_memcpy(bench, quick, device):
    """Copy bandwidth of the device (read + write), the ceiling for the GB/s column."""
    n = 2**24 if quick else 2**27
    src = torch.empty(n, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    bench(lambda: dst.copy_(src), group=f"memcpy {n >> 20} MiB {device}", impl="copy_", device=device, bytes=2 * n)
