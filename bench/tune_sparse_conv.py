"""Sweep the Triton sparse-convolution block sizes on the GPU in one call, checking every config.

For the implicit-GEMM kernel (forward; the input gradient runs the same kernel) and the weight
gradient (atomic and deterministic), every candidate config is run on a grid-sampled room, its
result compared with the default config's (one that disagrees is reported, not timed) and timed
with ``triton.testing.do_bench`` (median). Prints one table per kernel and channel width and the
best configs; ``--json`` saves everything, ready to paste into ``pointins/triton/sparse_conv.py``
(CONV_BLOCKS, WGRAD_BLOCKS).

    python bench/tune_sparse_conv.py --n 400000 --channels 48 96 192 384 --json OUT/tune_sparse_conv.json

``--device cpu`` runs a tiny smoke version under ``TRITON_INTERPRET=1`` (timings meaningless).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune_attention import sweep  # the shared check / time / print loop

# (BM, BN, BK, num_warps, num_stages) and (BM, BC, BN, num_warps, num_stages)
CONV_GRID = [[32, 64, 128], [32, 64, 128], [16, 32, 64], [4, 8], [2, 3, 4]]
WGRAD_GRID = [[32, 64, 128], [32, 64], [32, 64, 128], [4, 8], [2, 3]]
QUICK_CONV = [[16, 32], [16], [16], [4], [2]]
QUICK_WGRAD = [[16], [16], [16, 32], [4], [2]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Takes minutes on a GPU (seconds with --device cpu); tables on stdout, everything with --json FILE.",
    )
    ap.add_argument("--n", type=int, default=400_000, help="voxels of the room")
    ap.add_argument("--channels", type=int, nargs="+", default=[48, 96, 192, 384], help="C_in = C_out")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--json", default=None, help="write all timings here")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch
    from _scenes import room

    if args.device == "cuda" and not torch.cuda.is_available():
        print("tune_sparse_conv: no CUDA GPU; use --device cpu for the interpreter smoke run", file=sys.stderr)
        return 2
    import pointins.ops as ops
    from pointins.triton import load

    mod = load("sparse_conv")
    dtype = getattr(torch, args.dtype)
    quick = args.device == "cpu"
    batch = room(args.n, device=args.device)
    kmap = ops.kernel_map(batch["grid_coord"], batch["offsets"])
    results: dict = {"device": "cpu (interpreter)" if quick else torch.cuda.get_device_name(), "runs": []}
    best_all = {}
    for c in args.channels:
        g = torch.Generator(device=args.device).manual_seed(0)
        x = torch.randn(args.n, c, device=args.device, generator=g).to(dtype)
        w = (torch.randn(27, c, c, device=args.device, generator=g) / (27 * c) ** 0.5).to(dtype)
        go = torch.randn(args.n, c, device=args.device, generator=g).to(dtype)
        kernels = _kernels(mod, x, kmap, w, go, quick)
        for name, attr, grid, fn in kernels:
            title = f"{name} C={c} N={args.n} {args.dtype}"
            rows, best = sweep(mod, attr, itertools.product(*grid), fn, lambda r: r, fn().float(), quick, title)
            results["runs"].append(dict(kernel=name, channels=c, rows=rows, default=getattr(mod, attr)))
            if best:
                best_all[(name, c)] = best
    print("\nbest configs:")
    for (name, c), cfg in best_all.items():
        print(f"  {name:<28} C={c:<4} {cfg}")
    results["best"] = [dict(kernel=k[0], channels=k[1], config=v) for k, v in best_all.items()]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _kernels(mod, x, kmap, w, go, quick):
    """(name, block attribute, candidate grid, call) of each kernel to tune."""
    conv_grid, wgrad_grid = (QUICK_CONV, QUICK_WGRAD) if quick else (CONV_GRID, WGRAD_GRID)
    return [
        ("conv (fwd / input grad)", "CONV_BLOCKS", conv_grid, lambda: mod.conv(x, kmap, w)),
        ("weight grad (atomic)", "WGRAD_BLOCKS", wgrad_grid, lambda: mod.weight_grad(x, kmap, go, False)),
        ("weight grad (deterministic)", "WGRAD_BLOCKS", wgrad_grid, lambda: mod.weight_grad(x, kmap, go, True)),
    ]


if __name__ == "__main__":
    sys.exit(main())
