#!/usr/bin/env bash
# Everything worth doing on a CUDA machine, in one call:
#   build pointins._C with CUDA (offline), run the whole test-suite (cuda tests included),
#   build + run the standalone kernels/ library (CMake), run the benchmarks,
#   and write the results (JSON + Markdown + logs) to OUTDIR.
#
#   bash bench/gpu_check.sh OUTDIR [extra pytest args for the benchmarks]
#
# Exit status: non-zero if the build, the tests or the benchmarks failed. Writes at most 8 files.
# POINTINS_TUNE=1 also sweeps the Triton patch-attention and sparse-conv block sizes
# (bench/tune_attention.py, bench/tune_sparse_conv.py; several minutes each: better as their own
# calls, `python bench/tune_attention.py --json OUT/tune.json`).
set -uo pipefail
OUT=${1:?usage: bash bench/gpu_check.sh OUTDIR [pytest args]}
shift
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 POINTINS_FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
status=0

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  nvcc --version | tail -2
  python -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== build (pip install --no-build-isolation -e ., offline)"
if ! python -m pip install --no-build-isolation --no-index --no-deps -e . > "$OUT/build.log" 2>&1; then
  tail -60 "$OUT/build.log"
  echo "BUILD FAILED (full log: $OUT/build.log)"
  exit 1
fi
python -c "import pointins.ops as o; print(o.backends()); print(o.build_info())" 2>&1 | tee -a "$OUT/env.txt"

echo "== tests (all, cuda included)"
python -m pytest tests -q -rs -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" | tail -40
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== kernels/ standalone (CMake, sm_90) + C API run"
{
  cmake -S . -B build/cmake-gpu -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release &&
    cmake --build build/cmake-gpu -j "$MAX_JOBS" &&
    ctest --test-dir build/cmake-gpu --output-on-failure &&
    build/cmake-gpu/pointins_c_api_check
} > "$OUT/cmake.log" 2>&1
c=$?
tail -5 "$OUT/cmake.log"
[ $c -eq 0 ] || { echo "CMAKE BUILD/RUN FAILED"; status=1; }

echo "== benchmarks"
python -m pytest bench -q --benchmark-json "$OUT/bench-raw.json" --ratio-json "$OUT/bench.json" \
  --ratio-md "$OUT/bench.md" "$@" 2>&1 | tail -60
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
[ -f "$OUT/bench.md" ] && cat "$OUT/bench.md"

if [ "${POINTINS_TUNE:-0}" = "1" ]; then
  echo "== Triton patch-attention block-size sweep"
  python bench/tune_attention.py --json "$OUT/tune_attention.json" 2>&1 | tail -40
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  echo "== Triton sparse-conv block-size sweep"
  python bench/tune_sparse_conv.py 2>&1 | tail -30  # printed only: keeps OUT at 8 files
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
echo "gpu_check: status $status, results in $OUT"
exit $status
