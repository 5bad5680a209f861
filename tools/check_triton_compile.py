"""Compile every Triton kernel of pointins/triton/ for NVIDIA targets without a GPU.

Triton's compiler (front end, MLIR passes, LLVM, ptxas bundled in the wheel) runs on any x86
machine; only launching needs a GPU. Each kernel module lists representative specialisations
in ``COMPILE_CHECKS = [(kernel_name, signature, constexprs[, options]), ...]`` (options: launch
options such as ``num_warps``/``num_stages``); this compiles each for every target, fails on the
first error or on a kernel needing more shared memory than the target has, and reports the
largest shared-memory footprint.

    python tools/check_triton_compile.py [--arch 80 90]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("check_triton_compile: unset TRITON_INTERPRET (the interpreter does not compile)")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from pointins import triton as pt

SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}  # per block, opt-in maximum


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", type=int, nargs="+", default=[80, 90])
    args = ap.parse_args()
    modules = sorted(p.stem for p in Path(pt.__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    count = 0
    most = (0, "")
    t0 = time.perf_counter()
    for name in modules:
        mod = pt.load(name)
        checks = getattr(mod, "COMPILE_CHECKS", None)
        if not checks:
            print(f"check_triton_compile: {name}.py has no COMPILE_CHECKS", file=sys.stderr)
            return 1
        for kernel_name, signature, constexprs, *rest in checks:
            options = dict(rest[0]) if rest else {}
            fn = getattr(mod, kernel_name)
            sig = dict(signature)
            sig.update({k: "constexpr" for k in constexprs})
            for arch in args.arch:
                src = ASTSource(fn=fn, signature=sig, constexprs=dict(constexprs))
                try:
                    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
                except Exception as e:
                    print(f"FAILED {name}.{kernel_name} {constexprs} sm_{arch}: {e}", file=sys.stderr)
                    return 1
                shared = int(getattr(compiled.metadata, "shared", 0))
                if shared > SHARED_LIMIT[arch]:
                    print(
                        f"FAILED {name}.{kernel_name} {constexprs} {options} sm_{arch}: needs {shared} B of shared "
                        f"memory, the target has {SHARED_LIMIT[arch]}",
                        file=sys.stderr,
                    )
                    return 1
                if shared > most[0]:
                    most = (shared, f"{name}.{kernel_name} sm_{arch}")
                count += 1
    dt = time.perf_counter() - t0
    print(
        f"check_triton_compile: {count} kernel specialisations compiled to cubin for "
        f"sm_{'/sm_'.join(map(str, args.arch))} with triton {triton.__version__} in {dt:.1f}s; "
        f"most shared memory: {most[0]} B ({most[1]})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
