"""Quick benchmarks of the headline kernels for bench/gpu_check.sh: ours vs a baseline in the same process, one
Markdown row appended (and flushed) as each finishes, so a kill still leaves the rows done so far.

    python bench/quick.py --out OUT/bench.md [--device cuda] [--scale 1.0] [--budget 90]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _timer(device):
    def run(fn, reps):
        fn()  # warm-up (compilation, caches)
        times = []
        for _ in range(reps):
            if device.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
            else:
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        return statistics.median(times)

    return run


def torch_batched_lloyd(x, offsets, init, k: int, iters: int):
    """Plain PyTorch Lloyd on every set at once (sets padded to the largest, one cdist per iteration): the
    baseline a GPU user writes without our kernels. Same k per set; empty clusters keep their centre."""
    b = offsets.numel() - 1
    sizes = offsets.diff()
    nmax, d = int(sizes.max()), x.shape[1]
    mask = torch.arange(nmax, device=x.device)[None] < sizes[:, None]
    xp = x.new_zeros(b, nmax, d)
    xp[mask] = x
    c = init.view(b, k, d).clone()
    w = mask.to(x.dtype)
    for _ in range(iters):
        lab = torch.cdist(xp, c).argmin(-1)
        sums = x.new_zeros(b, k, d).scatter_add_(1, lab[..., None].expand(-1, -1, d), xp * w[..., None])
        cnt = x.new_zeros(b, k).scatter_add_(1, lab, w)
        c = torch.where(cnt[..., None] > 0, sums / cnt.clamp(min=1)[..., None], c)
    return c.reshape(b * k, d)


def _cuml_kmeans(device):
    """cuML's KMeans per set (same initial centroids) when cuML is importable on a CUDA device, else None."""
    if device.type != "cuda":
        return None
    try:
        from cuml.cluster import KMeans
    except Exception:
        return None

    def run(x, offsets, init, k, iters):
        out = []
        for s in range(offsets.numel() - 1):
            xs = x[offsets[s] : offsets[s + 1]]
            km = KMeans(n_clusters=k, init=init[s * k : (s + 1) * k], n_init=1, max_iter=iters, tol=0.0)
            out.append(torch.as_tensor(km.fit(xs).cluster_centers_, device=x.device))
        return torch.cat(out)

    return run


def cases(device, scale: float):
    import pointins.ops as ops

    g = torch.Generator(device="cpu").manual_seed(0)
    n = max(2000, int(200_000 * scale))
    coord = (torch.rand(n, 3, generator=g) * 8).to(device)
    off = torch.tensor([0, n // 2, n], device=device)
    vox = ops.voxelize(coord, off, 0.02, mode="train", seed=0)
    grid, voff = vox.grid_coord, vox.offsets
    v = grid.shape[0]
    yield "voxelize (train)", lambda: ops.voxelize(coord, off, 0.02, mode="train", seed=0), \
        "torch.unique(packed keys)", lambda: torch.unique(ops.pack_keys(ops.grid_coord(coord, off, 0.02), offsets=off),
                                                          return_inverse=True, return_counts=True)  # fmt: skip
    yield "serialize (4 orders)", lambda: ops.serialize(grid, voff), \
        "reference serialize", lambda: ops.serialize(grid, voff, backend="reference")  # fmt: skip
    feat = torch.randn(v, 64, generator=g).to(device)
    seg = torch.randint(0, max(1, v // 8), (v,), generator=g).to(device)
    yield "segment max (ids)", lambda: ops.segment_reduce(feat, index=seg, reduce="max"), \
        "torch.scatter_reduce amax", lambda: torch.zeros(int(v // 8), 64, device=device).scatter_reduce(
            0, seg[:, None].expand(-1, 64), feat, "amax", include_self=False)  # fmt: skip
    x = torch.randn(v, 64, generator=g).to(device)
    yield "kmeans k=20 x10 (2 sets)", lambda: ops.kmeans(x, voff, 20, iters=10, seed=0), \
        "reference kmeans", lambda: ops.kmeans(x, voff, 20, iters=10, seed=0, backend="reference")  # fmt: skip
    # the GPU peers of issue #24: the same initial centroids, agreement checked before timing
    init = ops.kmeans(x, voff, 20, iters=0, seed=0).centroids
    # one iteration from the same centroids must agree (later ones may part on float ties: Lloyd on unclustered
    # data is chaotic)
    mine = ops.kmeans(x, voff, 20, init=init, iters=1).centroids
    theirs = torch_batched_lloyd(x, voff, init, 20, 1)
    agree = "agree" if torch.allclose(mine, theirs, atol=1e-3, rtol=1e-3) else "DIFFER"
    yield f"kmeans k=20 x10, same init ({agree})", lambda: ops.kmeans(x, voff, 20, init=init, iters=10), \
        "torch batched Lloyd", lambda: torch_batched_lloyd(x, voff, init, 20, 10)  # fmt: skip
    cuml_km = _cuml_kmeans(device)
    if cuml_km is not None:
        yield "kmeans k=20 x10, same init", lambda: ops.kmeans(x, voff, 20, init=init, iters=10), \
            "cuML KMeans per set", lambda: cuml_km(x, voff, init, 20, 10)  # fmt: skip
    kmap = ops.kernel_map(grid, voff)
    w = torch.randn(27, 64, 64, generator=g).to(device) / 40
    dt = torch.float16 if device.type == "cuda" else torch.float32
    yield "sparse_conv 3^3 64->64 fwd", lambda: ops.sparse_conv(x.to(dt), kmap, w.to(dt), validate=False), \
        "reference (gather-GEMM)", lambda: ops.sparse_conv(x.to(dt), kmap, w.to(dt), backend="reference")  # fmt: skip
    s = ops.serialize(grid, voff)
    pad, unpad, cu = ops.patch_partition(voff, 1024)
    qkv = torch.randn(v, 3 * 64, generator=g).to(device).to(dt).requires_grad_()

    def attn(be=None):
        out = ops.patch_attention(qkv, s.order[0], pad, unpad, cu, 4, max_seqlen=1024, validate=False, backend=be)
        out.float().sum().backward()

    yield "patch_attention fwd+bwd (H=4, d=16)", attn, "reference", lambda: attn("reference")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Takes at most --budget seconds; appends one Markdown row per kernel to --out as each finishes.",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--scale", type=float, default=1.0, help="problem size relative to 200k points")
    p.add_argument("--budget", type=float, default=90.0, help="stop starting new rows after this many seconds")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    run = _timer(device)
    t0 = time.perf_counter()
    with open(a.out, "a", buffering=1) as f:
        f.write(f"\n| kernel ({device.type}, scale {a.scale}) | ours ms | baseline | baseline ms | speed-up |\n"
                "|---|---|---|---|---|\n")  # fmt: skip
        for name, ours, base_name, base in cases(device, a.scale):
            if time.perf_counter() - t0 > a.budget:
                f.write(f"| {name} | (time budget spent) | | | |\n")
                continue
            try:
                t_ours = run(ours, a.reps)
                t_base = run(base, max(1, a.reps // 2))
                row = f"| {name} | {t_ours * 1e3:.3f} | {base_name} | {t_base * 1e3:.3f} | {t_base / t_ours:.2f}x |"
                f.write(row + "\n")
            except Exception as e:  # one broken kernel must not hide the others' figures
                f.write(f"| {name} | FAILED: {type(e).__name__}: {str(e)[:120]} | | | |\n")
            print(f"quick bench: {name} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
