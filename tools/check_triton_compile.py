"""Compile every Triton kernel of pointins/triton/ for NVIDIA targets without a GPU.

Triton's compiler (front end, MLIR passes, LLVM, ptxas bundled in the wheel) runs on any x86
machine; only launching needs a GPU. Each kernel module lists representative specialisations
in ``COMPILE_CHECKS = [(kernel_name, signature, constexprs[, options]), ...]`` (options: launch
options such as ``num_warps``/``num_stages``); this compiles each for every target, fails on the
first error or on a kernel needing more shared memory than the target has, and prints a table of
every specialisation: shared memory, registers per thread and register spills (``ptxas -v`` on the
PTX, with the ptxas bundled in Triton). With ``--no-spills`` a module that sets ``NO_SPILLS = True``
(the attention kernels, whose block table is chosen for the GPU machine: sm_90 with triton 3.6) also
fails on any spill on sm_90 and later (tools/gpu_stack_check.sh passes it under triton 3.6).

    python tools/check_triton_compile.py [--arch 80 90] [--table FILE.md] [--no-spills]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
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


def ptxas_usage(ptx: str, arch: int) -> tuple[int, int, int]:
    """(registers, spill store bytes, spill load bytes) from ``ptxas -v`` (-1 when unknown)."""
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(ptxas):
        return -1, -1, -1
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        r = subprocess.run([ptxas, "-v", f"--gpu-name={gpu}", src, "-o", os.path.join(d, "k.cubin")],
                           capture_output=True, text=True)  # fmt: skip
    out = r.stdout + r.stderr
    get = lambda pat: int(m.group(1)) if (m := re.search(pat, out)) else -1
    return get(r"Used (\d+) registers"), get(r"(\d+) bytes spill stores"), get(r"(\d+) bytes spill loads")


def _label(constexprs: dict, signature: dict) -> str:
    dtype = next((v[1:] for v in signature.values() if v in ("*fp16", "*bf16", "*fp32") and v != "*fp32"), None)
    dtype = dtype or ("fp32" if "*fp32" in signature.values() else "-")
    keep = {k: v for k, v in constexprs.items() if k in ("D", "BM", "BN", "BD", "ATOMIC_DQ", "DOT", "EMU", "HAS_CONV",
                                                          "ACCUMULATE", "DETERMINISTIC", "BK")}  # fmt: skip
    return f"{dtype} " + " ".join(f"{k}={v}" for k, v in keep.items())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", type=int, nargs="+", default=[80, 90])
    ap.add_argument("--table", default=None, help="also write the table as Markdown to this file")
    ap.add_argument("--no-spills", action="store_true", help="fail on spills in NO_SPILLS modules (sm_90+)")
    args = ap.parse_args()
    rows = [
        "| kernel | specialisation | warps/stages | arch | shared B | regs | spill st/ld B |",
        "|---|---|---|---|---|---|---|",
    ]
    spilled = []
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
                regs, sst, sld = ptxas_usage(compiled.asm.get("ptx", ""), arch)
                ws = f"{options.get('num_warps', '-')}/{options.get('num_stages', '-')}"
                what = f"{name}.{kernel_name} | {_label(constexprs, sig)}"
                rows.append(f"| {what} | {ws} | sm_{arch} | {shared} | {regs} | {sst}/{sld} |")
                if args.no_spills and arch >= 90 and getattr(mod, "NO_SPILLS", False) and (sst > 0 or sld > 0):
                    spilled.append(f"{name}.{kernel_name} {_label(constexprs, sig)} sm_{arch}: {sst}/{sld} B")
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
    print("\n".join(rows))
    if args.table:
        Path(args.table).write_text("\n".join(rows) + "\n")
    if spilled:
        print("FAILED: register spills in kernels that must not spill:\n  " + "\n  ".join(spilled), file=sys.stderr)
        return 1
    print(
        f"check_triton_compile: {count} kernel specialisations compiled to cubin for "
        f"sm_{'/sm_'.join(map(str, args.arch))} with triton {triton.__version__} in {dt:.1f}s; "
        f"most shared memory: {most[0]} B ({most[1]})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
