"""Compile every Triton kernel of pointins/triton/ for NVIDIA targets without a GPU.

Triton's compiler (front end, MLIR passes, LLVM, ptxas bundled in the wheel) runs on any x86
machine; only launching needs a GPU. Each kernel module lists representative specialisations
in ``COMPILE_CHECKS = [(kernel_name, signature, constexprs), ...]``; this compiles each for
every target and fails on the first error.

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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", type=int, nargs="+", default=[80, 90])
    args = ap.parse_args()
    modules = sorted(p.stem for p in Path(pt.__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    count = 0
    t0 = time.perf_counter()
    for name in modules:
        mod = pt.load(name)
        checks = getattr(mod, "COMPILE_CHECKS", None)
        if not checks:
            print(f"check_triton_compile: {name}.py has no COMPILE_CHECKS", file=sys.stderr)
            return 1
        for kernel_name, signature, constexprs in checks:
            fn = getattr(mod, kernel_name)
            sig = dict(signature)
            sig.update({k: "constexpr" for k in constexprs})
            for arch in args.arch:
                src = ASTSource(fn=fn, signature=sig, constexprs=dict(constexprs))
                try:
                    triton.compile(src, target=GPUTarget("cuda", arch, 32))
                except Exception as e:
                    print(f"FAILED {name}.{kernel_name} {constexprs} sm_{arch}: {e}", file=sys.stderr)
                    return 1
                count += 1
    dt = time.perf_counter() - t0
    print(
        f"check_triton_compile: {count} kernel specialisations compiled to cubin for "
        f"sm_{'/sm_'.join(map(str, args.arch))} with triton {triton.__version__} in {dt:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
