#!/usr/bin/env python3
"""Show that the sanitized CPU emulation of kernels/ catches planted bugs.

Each mutant is a copy of one kernels/*.cu with a known bug put back in (a removed barrier, the
pre-fix union-find final pass, a removed bounds clamp). The script rewrites and compiles the copy
with the flags of the sanitizer build, links it into that build's test program in place of the
real file, runs the test family that exercises it, and expects the sanitizer (or the comparison
with the reference) to report it. Exit status 1 if any mutant goes unnoticed.

    cmake -S . -B build/emu-tsan -DPOINTINS_WITH_CUDA=OFF -DPOINTINS_EMU=ON -DPOINTINS_EMU_SANITIZE=thread
    cmake -S . -B build/emu-asan -DPOINTINS_WITH_CUDA=OFF -DPOINTINS_EMU=ON -DPOINTINS_EMU_SANITIZE=address
    cmake --build build/emu-tsan && cmake --build build/emu-asan
    python tools/emu_mutants.py --tsan build/emu-tsan --asan build/emu-asan
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Mutant:
    name: str
    sanitizer: str  # "thread" | "address"
    file: str  # kernels/<file>
    old: str
    new: str
    family: str  # test family to run
    expect: tuple[str, ...]  # any of these in the output counts as caught
    args: tuple[str, ...] = ()


MUTANTS = [
    Mutant(
        name="greedy k-means++ without the barrier between the chunk sums and thread 0 reading them",
        sanitizer="thread",
        file="kmeans.cu",
        old="    csum[threadIdx.x] = s;\n    __syncthreads();\n",
        new="    csum[threadIdx.x] = s;\n",
        family="kmeans",
        expect=("ThreadSanitizer: data race",),
    ),
    Mutant(
        name="greedy k-means++ without the barrier after thread 0 publishes the candidates",
        sanitizer="thread",
        file="kmeans.cu",
        old="          cand_sh[q] = pick;\n        }\n      }\n      __syncthreads();\n",
        new="          cand_sh[q] = pick;\n        }\n      }\n",
        family="kmeans",
        expect=("ThreadSanitizer: data race", "differ from the reference"),
    ),
    Mutant(
        name="connected components: the pre-fix final pass (path-halving find, plain store of the root)",
        sanitizer="thread",
        file="components.cu",
        old="    if (group[i] >= 0) store_relaxed(&parent[i], uf_root(parent, i));",
        new="    if (group[i] >= 0) parent[i] = uf_find(parent, i);",
        family="components",
        expect=("ThreadSanitizer: data race", "differ from brute force"),
    ),
    Mutant(
        name="segment reductions without the offset clamp (bad offsets read out of bounds)",
        sanitizer="address",
        file="segment.cu",
        old="  *start = a < 0 ? 0 : (a > n ? n : a);\n  *end = b < *start ? *start : (b > n ? n : b);",
        new="  *start = a;\n  *end = b;",
        family="segment",
        expect=("AddressSanitizer: heap-buffer-overflow", "AddressSanitizer: SEGV", "AddressSanitizer:"),
    ),
    Mutant(
        name="grid_coord warp reduction on a partial warp (loop bound not rounded to the warp)",
        sanitizer="thread",
        file="keys.cu",
        old="  const int64_t n_round = (n + 31) / 32 * 32;",
        new="  const int64_t n_round = n;",
        family="keys",
        expect=("warp operation", "pointins CUDA emulator"),
    ),
]


def compile_command(build: Path, source_name: str) -> dict:
    db = json.loads((build / "compile_commands.json").read_text())
    for entry in db:
        if entry["file"].endswith("/" + source_name):
            return entry
    sys.exit(f"{build}: no compile command for {source_name} (configure with the emulation enabled)")


def link_objects(build: Path, skip: str) -> list[str]:
    tests = sorted((build / "CMakeFiles" / "pointins_emu_tests.dir").rglob("*.o"))
    kernels = sorted((build / "CMakeFiles" / "pointins_kernels_emu.dir").rglob("*.o"))
    kernels = [k for k in kernels if not k.name.startswith(skip)]
    runtime = build / "libpointins_emu_runtime.a"
    return [*map(str, tests), *map(str, kernels), str(runtime)]


def run_mutant(m: Mutant, build: Path, tmp: Path) -> bool:
    src = (ROOT / "kernels" / m.file).read_text()
    if m.old not in src:
        print(f"  the code this mutant changes is gone from kernels/{m.file}: update tools/emu_mutants.py")
        return False
    stem = m.file[: -len(".cu")]
    mutated = tmp / m.file
    mutated.write_text(src.replace(m.old, m.new, 1))
    rewritten = tmp / f"{stem}.emu.cpp"
    subprocess.run(
        ["cmake", f"-DIN={mutated}", f"-DOUT={rewritten}", "-P", str(ROOT / "kernels" / "emu" / "rewrite.cmake")],
        check=True,
    )
    entry = compile_command(build, f"{stem}.emu.cpp")
    cmd = shlex.split(entry["command"])
    obj = tmp / f"{stem}.o"
    out_i = cmd.index("-o")
    cmd[out_i + 1] = str(obj)
    cmd[cmd.index("-c") + 1] = str(rewritten)
    cmd += ["-I", str(ROOT / "kernels")]
    subprocess.run(cmd, check=True, cwd=entry["directory"])
    exe = tmp / "mutant_tests"
    san = ["-fsanitize=thread"] if m.sanitizer == "thread" else ["-fsanitize=address,undefined"]
    subprocess.run(
        ["g++", *san, "-o", str(exe), *link_objects(build, f"{stem}.emu.cpp"), str(obj), "-lpthread"], check=True
    )
    env = dict(os.environ, POINTINS_EMU_SCHEDULES="quick")
    env["TSAN_OPTIONS"] = "halt_on_error=1:history_size=4"
    env["ASAN_OPTIONS"] = "detect_leaks=0"
    t0 = time.time()
    try:
        r = subprocess.run([str(exe), m.family, *m.args], env=env, capture_output=True, text=True, timeout=900)
        output, code = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        output, code = (e.stdout or b"").decode() + (e.stderr or b"").decode(), -1
    caught = code != 0 and any(e in output for e in m.expect)
    for line in output.splitlines():
        if any(e in line for e in m.expect) or "SUMMARY:" in line:
            print(f"    {line.strip()[:160]}")
            break
    print(f"  {'caught' if caught else 'NOT CAUGHT'} (exit status {code}, {time.time() - t0:.1f} s)")
    return caught


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tsan", type=Path, required=True, help="the ThreadSanitizer emulation build folder")
    ap.add_argument("--asan", type=Path, required=True, help="the AddressSanitizer emulation build folder")
    args = ap.parse_args()
    survived = []
    for m in MUTANTS:
        build = args.tsan if m.sanitizer == "thread" else args.asan
        print(f"mutant: {m.name}  [{m.sanitizer} sanitizer, kernels/{m.file}, tests '{m.family}']", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            if not run_mutant(m, build.resolve(), Path(tmp)):
                survived.append(m.name)
    if survived:
        print(f"{len(survived)} mutant(s) not caught: {survived}", file=sys.stderr)
        return 1
    print(f"all {len(MUTANTS)} planted bugs caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
