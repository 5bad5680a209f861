#!/usr/bin/env python3
"""Which kernels and lines of kernels/*.cu the emulated tests executed (gcov on the emulation build).

    cmake -S . -B build/emu-cov -DPOINTINS_WITH_CUDA=OFF -DPOINTINS_EMU=ON -DPOINTINS_EMU_COVERAGE=ON
    cmake --build build/emu-cov -j 2 && ctest --test-dir build/emu-cov
    python tools/emu_coverage.py build/emu-cov [--min-lines 90] [--require-all-kernels]

Every ``__global__`` function of kernels/*.cu is listed with the number of CUDA threads that ran
it (summed over its template instantiations), then each file's executable-line coverage. Line
numbers are those of kernels/*.cu itself: the rewritten sources carry ``#line`` directives.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL_RE = re.compile(r"__global__\s+void\s+(\w+)\s*\(")


def kernels_in_sources() -> dict[str, list[tuple[str, int]]]:
    """kernel name -> [(file, line)] for every __global__ function in kernels/*.cu."""
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for cu in sorted((ROOT / "kernels").glob("*.cu")):
        text = cu.read_text()
        for m in KERNEL_RE.finditer(text):
            out[m.group(1)].append((cu.name, text.count("\n", 0, m.start()) + 1))
    return out


def gcov_json(build: Path) -> list[dict]:
    gcdas = sorted(build.resolve().glob("CMakeFiles/pointins_kernels_emu.dir/**/*.gcda"))
    if not gcdas:
        sys.exit(f"no .gcda files under {build}: build with -DPOINTINS_EMU_COVERAGE=ON and run ctest first")
    files: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["gcov", "--json-format", "--preserve-paths", *map(str, gcdas)],
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for gz in Path(tmp).glob("*.gcov.json.gz"):
            with gzip.open(gz, "rt") as fh:
                files.extend(json.load(fh)["files"])
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build", type=Path, help="the coverage build folder (after ctest)")
    ap.add_argument("--min-lines", type=float, default=0.0, help="fail below this line coverage (percent)")
    ap.add_argument("--require-all-kernels", action="store_true", help="fail if any __global__ kernel never ran")
    args = ap.parse_args()

    kernels = kernels_in_sources()
    lines: dict[str, dict[int, int]] = defaultdict(dict)
    runs: dict[str, int] = defaultdict(int)
    for f in gcov_json(args.build):
        name = Path(f["file"]).name
        if Path(f["file"]).parent.name != "kernels" or not name.endswith(".cu"):
            continue
        for ln in f["lines"]:
            n = ln["line_number"]
            lines[name][n] = lines[name].get(n, 0) + ln["count"]
        for fn in f["functions"]:
            # e.g. "void (anonymous namespace)::cells_kernel<float>(float const*, ...)"
            name = fn["demangled_name"].replace("(anonymous namespace)::", "")
            m = re.search(r"(\w+)\s*(?:<[^()]*>)?\s*\(", name)
            base = m.group(1) if m else name
            if base in kernels:
                runs[base] += fn["execution_count"]

    print("kernel                         file            line   threads run")
    missing = []
    for k in sorted(kernels, key=lambda k: kernels[k][0]):
        file, line = kernels[k][0]
        print(f"{k:30s} {file:15s} {line:5d}   {runs.get(k, 0):>12,d}")
        if runs.get(k, 0) == 0:
            missing.append(k)
    print()
    total_hit = total = 0
    print("file            lines run / executable")
    for name in sorted(lines):
        hit = sum(1 for c in lines[name].values() if c > 0)
        n = len(lines[name])
        total_hit += hit
        total += n
        unrun = sorted(ln for ln, c in lines[name].items() if c == 0)
        print(f"{name:15s} {hit:4d} / {n:4d}  {100.0 * hit / max(n, 1):5.1f}%   not run: {unrun if unrun else '-'}")
    pct = 100.0 * total_hit / max(total, 1)
    print(f"{'all':15s} {total_hit:4d} / {total:4d}  {pct:5.1f}%")
    rare = sorted((c, f, ln) for f in lines for ln, c in lines[f].items() if 0 < c < 10)
    if rare:
        print("lines run fewer than 10 times: " + ", ".join(f"{f}:{ln} ({c}x)" for c, f, ln in rare[:12]))
    print(f"{len(kernels) - len(missing)} of {len(kernels)} __global__ kernels executed")
    status = 0
    if args.require_all_kernels and missing:
        print(f"kernels never executed: {', '.join(missing)}", file=sys.stderr)
        status = 1
    if pct < args.min_lines:
        print(f"line coverage {pct:.1f}% is below --min-lines {args.min_lines}", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
