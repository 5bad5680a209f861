"""Host synchronisations per PTv3 forward, with immediate checks (before) and inside
``pointins.ops.deferred_checks()`` (after).

    python bench/count_syncs.py [--device cuda] [--preset tiny] [--points 20000]

On a GPU the count is measured: torch's sync debug mode reports every device-to-host read (``.item()``, ``bool()``,
``tolist()``, also those inside our C++ ops). On a CPU there is nothing to wait for, so the same reads are
counted by instrumentation instead: every device-to-host conversion in Python (``item``, ``bool``, ``int``,
``float``, ``tolist``) plus, for the C++ ops, the flag read-backs and size reads their CUDA implementations
perform (csrc/cuda/*.cpp; a per-op table below), weighted by how often the forward calls each op.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import warnings

import torch

# Host reads of the CUDA implementation of each op (csrc/cuda/*.cpp): (flag read-backs, deferrable; size reads)
CUDA_READS = {
    "grid_coord": (1, 0), "pack_keys": (1, 0), "unpack_keys": (1, 0), "serialize_encode": (1, 0),
    "serialize_decode": (1, 0), "hash_build": (1, 0), "kernel_map": (1, 0), "segment_index_csr": (1, 0),
    "segment_csr": (1, 0), "segment_coo": (2, 0), "voxel_group": (0, 1), "radius_components": (1, 5),
    "kmeans_init": (0, 1), "patch_partition": (0, 0), "patch_attention": (0, 0), "sparse_conv": (0, 0),
}  # fmt: skip


class _OpCounter(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name.startswith("pointins."):
            self.ops[name.split(".", 1)[1]] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _python_reads(device_type: str):
    counts = collections.Counter()
    saved = {}
    for name in ("item", "__bool__", "__int__", "__float__", "tolist"):
        f = getattr(torch.Tensor, name)
        saved[name] = f

        def g(self, *a, _f=f, _n=name, **k):
            if self.device.type == device_type:
                counts[_n] += 1
            return _f(self, *a, **k)

        setattr(torch.Tensor, name, g)
    try:
        yield counts
    finally:
        for name, f in saved.items():
            setattr(torch.Tensor, name, f)


def _batch(n: int, device, seed: int = 0):
    import pointins.ops as ops

    g = torch.Generator().manual_seed(seed)
    coord = torch.rand(n, 3, generator=g) * 4
    vox = ops.voxelize(coord, torch.tensor([0, n // 2, n]), grid_size=0.05, mode="train", seed=0)
    return {"coord": coord[vox.index].to(device), "feat": torch.randn(len(vox), 6, generator=g).to(device),
            "offsets": vox.offsets.to(device), "grid_coord": vox.grid_coord.to(device)}  # fmt: skip


def count(model, batch, device, deferred: bool) -> dict:
    import pointins.ops as ops

    ctx = ops.deferred_checks(device) if deferred else contextlib.nullcontext()
    if device.type == "cuda":
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as rec, torch.no_grad():
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with ctx:
                    model(batch)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        n = sum("synchroniz" in str(w.message) for w in rec)
        return {"measured": n, "total": n}
    with _python_reads(device.type) as py, _OpCounter() as opc, torch.no_grad(), ctx:
        model(batch)
    flag = sum(CUDA_READS.get(op, (0, 0))[0] * c for op, c in opc.ops.items())
    size = sum(CUDA_READS.get(op, (0, 0))[1] * c for op, c in opc.ops.items())
    if deferred:
        flag = 0  # ORed into the device accumulator instead of read back
    py_n = sum(py.values()) - (1 if deferred else 0)  # the block's single final read is reported on its own
    return {"python": py_n, "cuda_flag_reads": flag, "cuda_size_reads": size, "final_check": int(deferred),
            "total": py_n + flag + size + int(deferred), "ops": dict(opc.ops)}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Takes under a minute (tiny preset, 20k points); prints its tables to stdout and writes nothing.",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--points", type=int, default=20000)
    a = p.parse_args(argv)
    from pointins.models import build_backbone

    device = torch.device(a.device)
    model = build_backbone(a.preset, in_channels=6).to(device).eval()
    batch = _batch(a.points, device)
    with torch.no_grad():
        model(batch)  # warm-up (Triton compilation, caches)
    before, after = count(model, batch, device, False), count(model, batch, device, True)
    how = "measured (torch sync debug mode)" if device.type == "cuda" else "counted (CPU instrumentation + CUDA table)"
    print(f"host syncs per PTv3 '{a.preset}' forward on {device} ({how}):")
    for k in ("python", "cuda_flag_reads", "cuda_size_reads", "final_check", "measured", "total"):
        if k in before:
            print(f"  {k:<16} before {before[k]:>4}   after {after[k]:>4}")
    if "ops" in before:
        print("  ops per forward:", before["ops"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
