"""Sweep the Triton patch-attention block sizes on the GPU in one call, checking every config.

For each kernel (forward, backward dK/dV(+atomic dQ), deterministic dQ) and each channel width,
every (BM, BN, num_warps, num_stages) candidate is run, its result compared with the default
config's (a config that disagrees is reported as wrong, not timed), and timed with
``triton.testing.do_bench`` (median). The software-exp2 fractions are then timed on the best
forward and backward configs. Prints one table per kernel and the best configs; ``--json``
saves everything, ready to paste into ``pointins/triton/attention.py`` (FWD_BLOCKS, ...).

    python bench/tune_attention.py --n 1000000 --channels 48 512 --json OUT/tune_attention.json

``--device cpu`` runs a tiny smoke version under ``TRITON_INTERPRET=1`` (timings meaningless).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

FWD_GRID = dict(bm=[64, 128], bn=[32, 64, 128], warps=[4, 8], stages=[1, 2, 3])
KV_GRID = dict(bm=[32, 64, 128], bn=[64, 128], warps=[4, 8], stages=[1, 2])
Q_GRID = dict(bm=[64, 128], bn=[32, 64], warps=[4, 8], stages=[1, 2])
QUICK_GRID = dict(bm=[16, 32], bn=[16], warps=[4], stages=[1])
EMULATION = [0, 4, 2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Takes minutes on a GPU (seconds with --device cpu); tables on stdout, everything with --json FILE.",
    )
    ap.add_argument("--n", type=int, default=1_000_000, help="points")
    ap.add_argument("--channels", type=int, nargs="+", default=[48, 512], help="C (head dim 16)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--patch-size", type=int, default=1024)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--json", default=None, help="write all timings here")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("tune_attention: no CUDA GPU; use --device cpu for the interpreter smoke run", file=sys.stderr)
        return 2
    import pointins.ops as ops
    from pointins.triton import load

    mod = load("attention")
    dtype = getattr(torch, args.dtype)
    quick = args.device == "cpu"
    results: dict = {"device": torch.cuda.get_device_name() if not quick else "cpu (interpreter)", "runs": []}
    best_all = {}
    for channels in args.channels:
        _tune_width(mod, ops, torch, args, channels, dtype, quick, results, best_all)
    print("\nbest configs (BM, BN, num_warps, num_stages):")
    for (name, channels), cfg in best_all.items():
        print(f"  {name:<28} C={channels:<4} {cfg}")
    results["best"] = [dict(kernel=k[0], channels=k[1], config=v) for k, v in best_all.items()]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _tune_width(mod, ops, torch, args, channels, dtype, quick, results, best_all):
    heads = channels // 16
    qkv, order, pad, unpad, cu = _case(args.n, channels, args.patch_size, args.device, dtype)
    idx = ops.patch_index(order, pad, unpad)
    go = torch.randn(args.n, channels, dtype=dtype, device=args.device)
    scale = 16**-0.5
    kmax = args.patch_size

    def fwd():
        return mod.forward(qkv, idx.rows, idx.dst, cu, heads, kmax, scale)

    out, lse = fwd()

    def bwd(deterministic):
        return mod.backward(go, qkv, out, lse, idx.rows, idx.dst, idx.dup_src, cu, heads, kmax, scale, deterministic)

    ref_out = out.float()
    ref_grad = bwd(True).float()
    kernels = [
        ("forward", "FWD_BLOCKS", FWD_GRID, fwd, lambda r: r[0], ref_out),
        ("backward (atomic dQ)", "BWD_KV_BLOCKS", KV_GRID, lambda: bwd(False), lambda r: r, ref_grad),
        ("backward (deterministic dQ)", "BWD_Q_BLOCKS", Q_GRID, lambda: bwd(True), lambda r: r, ref_grad),
    ]
    for name, attr, grid, fn, pick, ref in kernels:
        title = f"{name} C={channels} N={args.n} {args.dtype}"
        configs = _configs(QUICK_GRID if quick else grid)
        table = mod.blocks_for({"FWD_BLOCKS": "fwd", "BWD_KV_BLOCKS": "bwd_kv", "BWD_Q_BLOCKS": "bwd_q"}[attr], dtype,
                               channels // heads)  # fmt: skip
        rows, best = sweep(mod, attr, configs, fn, lambda r, pick=pick: pick(r), ref, quick, title, default=table)
        results["runs"].append(dict(kernel=name, channels=channels, rows=rows, default=table))
        if best:
            best_all[(name, channels)] = best
    # Software exp2 on the best forward / atomic-backward configs
    if dtype != torch.float32:
        for name, attr, fn in (("forward", "FWD_BLOCKS", fwd), ("backward (atomic dQ)", "BWD_KV_BLOCKS", None)):
            run = fn if fn is not None else (lambda: bwd(False))
            saved_cfg, saved_emu = getattr(mod, attr), mod.EXP2_EMULATION.get(dtype, 0)
            if (name, channels) in best_all:
                setattr(mod, attr, best_all[(name, channels)])
            line = []
            for every in EMULATION:
                mod.EXP2_EMULATION[dtype] = every
                ms = _time(run, quick)
                line.append(dict(every=every, ms=ms))
            setattr(mod, attr, saved_cfg)
            mod.EXP2_EMULATION[dtype] = saved_emu
            label = lambda every: f"1/{every}" if every else "off"
            text = ", ".join(f"{label(r['every'])}: {r['ms']:.3f} ms" for r in line)
            print(f"exp2 emulation, {name} C={channels}: {text}")
            results["runs"].append(dict(kernel=f"{name} exp2 emulation", channels=channels, rows=line))


def sweep(mod, attr, configs, fn, pick, ref, quick, title, default=None):
    """Run ``fn`` with ``mod.<attr>`` set to each config; check ``pick(result)`` against ``ref``
    (a config that disagrees is reported, not timed), time the others, print the table.
    Returns (rows, best config or None); ``mod.<attr>`` is restored. ``default``: the config used when the
    attribute is unset (the attention kernels' per-dtype/head-dim table)."""
    saved = getattr(mod, attr)
    default = saved if saved is not None else default
    rows = []
    for cfg in configs:
        setattr(mod, attr, cfg)
        try:
            got = pick(fn()).float()
            err = float((got - ref).norm() / ref.norm().clamp_min(1e-30))
            ms = _time(fn, quick) if err < 2e-2 else float("nan")
            rows.append(dict(config=cfg, ms=ms, rel_err=err))
        except Exception as e:  # out of shared memory / registers for this config
            rows.append(dict(config=cfg, ms=float("nan"), error=str(e).splitlines()[0][:120]))
        finally:
            setattr(mod, attr, saved)
    ok = [r for r in rows if not math.isnan(r["ms"])]
    default_ms = next((r["ms"] for r in rows if default is not None and tuple(r["config"]) == tuple(default)),
                      float("nan"))  # fmt: skip
    _print(title, rows, default, default_ms)
    return rows, (min(ok, key=lambda r: r["ms"])["config"] if ok else None)


def _case(n, channels, patch_size, device, dtype):
    import numpy as np
    import torch

    import pointins.ops as ops

    clouds = max(1, min(8, n // (2 * patch_size)))
    sizes = np.random.default_rng(0).multinomial(n - clouds, [1 / clouds] * clouds) + 1
    off = torch.tensor([0, *np.cumsum(sizes).tolist()])
    grid = torch.randint(0, 2000, (n, 3), generator=torch.Generator().manual_seed(0))
    order = ops.serialize(grid, offsets=off).order[0]
    pad, unpad, cu = ops.patch_partition(off, patch_size)
    qkv = torch.randn(n, 3 * channels, dtype=dtype, device=device)
    return qkv, order.to(device), pad.to(device), unpad.to(device), cu.to(device)


def _configs(grid):
    yield from itertools.product(grid["bm"], grid["bn"], grid["warps"], grid["stages"])


def _time(fn, quick: bool) -> float:
    if quick:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _print(title, rows, default, default_ms):
    print(f"\n== {title} (default {default}: {default_ms:.3f} ms)")
    for r in sorted(rows, key=lambda r: (math.isnan(r["ms"]), r["ms"])):
        note = r.get("error") or f"rel err {r['rel_err']:.1e}"
        print(f"  {r['config']!s:<20} {r['ms']:>9.3f} ms  {note}")


if __name__ == "__main__":
    sys.exit(main())
