"""One small call of every CUDA op family, for compute-sanitizer (memcheck, racecheck) in bench/gpu_check.sh.

compute-sanitizer --tool memcheck python bench/sanitize_ops.py [--device cuda]
"""

from __future__ import annotations

import argparse

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Takes seconds, minutes under compute-sanitizer; prints one line per op family, writes nothing.",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    import pointins.ops as ops

    dev = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    coord = (torch.rand(3000, 3, generator=g) * 2).to(dev)
    off = torch.tensor([0, 1000, 3000], device=dev)
    grid = ops.grid_coord(coord, off, 0.05)  # keys
    keys = ops.pack_keys(grid, offsets=off)
    ops.unpack_keys(keys)
    vox = ops.voxelize(coord, off, 0.05, mode="train", seed=0)  # hash / voxelize / kernel map
    ops.HashTable(keys).query(keys)
    kmap = ops.kernel_map(vox.grid_coord, vox.offsets)
    ops.downsample(vox.grid_coord, vox.offsets)
    ops.serialize(vox.grid_coord, vox.offsets)  # serialization + patches
    ops.patch_partition(vox.offsets, 128)
    feat = torch.randn(len(vox), 8, generator=g).to(dev)
    for r in ("sum", "mean", "max", "var"):  # segment reductions, CSR and ids
        ops.segment_reduce(feat, offsets=vox.offsets, reduce=r)
        ops.segment_reduce(feat, index=vox.inverse[: len(vox)] % 7, reduce=r)
    ops.kmeans(feat, vox.offsets, 5, iters=3, seed=0)  # K-means
    be = "cuda" if dev.type == "cuda" else None  # the CUDA kernels also for D < 32 / float64 (not Triton)
    ops.kmeans(feat.double(), vox.offsets, 5, iters=3, seed=0, init="random", backend=be)
    ops.connected_components(coord, off, 0.05, group=torch.randint(0, 3, (3000,), generator=g).to(dev))
    ops.sparse_conv(feat, kmap, torch.randn(27, 8, 4, generator=g).to(dev))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    print(f"sanitize_ops: every op family ran on {dev}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
