#!/usr/bin/env bash
# The CUDA kernels of kernels/ executed on the CPU (SIMT emulation, kernels/emu/README.md), as CI runs them:
#   1. plain build with gcov: every test family under four schedules, then which kernels and lines ran
#   2. ThreadSanitizer build, 3. AddressSanitizer + UBSan build (two schedules each)
#   4. planted bugs (a removed barrier, the pre-fix union-find pass, a removed bounds clamp, a
#      partial-warp shuffle) must be reported
# Usage: bash tools/emu_check.sh [BUILD_ROOT]   (default build/; folders emu-cov, emu-tsan, emu-asan)
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-build}"
jobs="${POINTINS_EMU_JOBS:-2}"

stage() { echo "-- $1 ($(date +%T))"; }
build() {  # folder, extra cmake args...
  local dir="$1"
  shift
  cmake -S . -B "$dir" -DPOINTINS_WITH_CUDA=OFF -DPOINTINS_EMU=ON "$@" >/dev/null
  cmake --build "$dir" -j "$jobs" >/dev/null
}

start=$SECONDS
stage "plain + coverage build"
build "$root/emu-cov" -DPOINTINS_EMU_COVERAGE=ON
find "$root/emu-cov" -name '*.gcda' -delete
ctest --test-dir "$root/emu-cov" --output-on-failure
python3 tools/emu_coverage.py "$root/emu-cov" --require-all-kernels --min-lines 90

stage "ThreadSanitizer build"
build "$root/emu-tsan" -DPOINTINS_EMU_SANITIZE=thread
ctest --test-dir "$root/emu-tsan" --output-on-failure

stage "AddressSanitizer + UndefinedBehaviorSanitizer build"
build "$root/emu-asan" -DPOINTINS_EMU_SANITIZE=address
ctest --test-dir "$root/emu-asan" --output-on-failure

stage "planted bugs"
python3 tools/emu_mutants.py --tsan "$root/emu-tsan" --asan "$root/emu-asan"
echo "emulation check passed in $((SECONDS - start)) s"
