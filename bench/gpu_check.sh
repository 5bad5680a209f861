#!/usr/bin/env bash
# What matters most on a lent GPU machine, as ONE staged call of at most 8 minutes (device time is 15 minutes per
# session, the machine start included). Every stage has a time limit and streams its results to OUTDIR as it
# goes, so a kill at any point still returns what ran. At most 8 files:
#
#   summary.md    stage, status (ok / FAILED rc / TIMEOUT / skipped), seconds -- one line written per stage
#   env.txt       preflight: GPU, driver, nvcc, python/torch/triton, every import the script needs
#   build.log     pip install --no-build-isolation -e . with CUDA (offline), and build_info()
#   tests.jsonl   pytest -m cuda, one JSON line per test as it finishes (name, outcome, seconds, first lines
#                 of a failure)
#   tests.log     the pytest output
#   bench.md      quick benchmarks of the headline kernels (ours vs baseline), a row as each finishes
#   sanitizer.log compute-sanitizer memcheck + racecheck on a small call of every CUDA op family (if time is left)
#
#   bash bench/gpu_check.sh OUTDIR                 # on the GPU machine (16 cores, no network)
#   bash bench/gpu_check.sh --rehearse OUTDIR      # on a CPU: the same stages and files with CPU stand-ins
#
# Limits (seconds) can be changed with POINTINS_GPU_BUDGET (total, default 470), and the stage variables below.
set -uo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then  # the header above is the help
  sed -n '2,/^set -uo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 0
fi
REHEARSE=0
if [ "${1:-}" = "--rehearse" ]; then REHEARSE=1; shift; fi
OUT=${1:?usage: bash bench/gpu_check.sh [--rehearse] OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} PYTHONPATH="$(pwd)/bench${PYTHONPATH:+:$PYTHONPATH}"
BUDGET=${POINTINS_GPU_BUDGET:-470}
T_BUILD=${POINTINS_T_BUILD:-240}
T_TESTS=${POINTINS_T_TESTS:-150}
T_BENCH=${POINTINS_T_BENCH:-60}
T0=$(date +%s)
status=0
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

echo "| stage | status | seconds |" > "$OUT/summary.md"
echo "|---|---|---|" >> "$OUT/summary.md"
record() { echo "| $1 | $2 | $3 |" >> "$OUT/summary.md"; echo "gpu_check: $1: $2 ($3 s, $(left) s left)"; }

# stage NAME LIMIT CMD... : runs CMD under `timeout` (never past the total budget), records the outcome
stage() {
  local name=$1 limit=$2
  shift 2
  local remain
  remain=$(left)
  if [ "$remain" -le 5 ]; then record "$name" "skipped (budget spent)" 0; return 1; fi
  [ "$limit" -gt "$remain" ] && limit=$remain
  local t=$(date +%s)
  timeout --kill-after=5 "$limit" bash -c "$*"  # the stage functions are exported below
  local rc=$?
  local dt=$(( $(date +%s) - t ))
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then record "$name" "TIMEOUT after ${limit}s" "$dt"; status=1; return 1; fi
  if [ $rc -ne 0 ]; then record "$name" "FAILED rc $rc" "$dt"; status=1; return 1; fi
  record "$name" ok "$dt"
}

preflight() {
  {
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    echo "mode: $([ $REHEARSE = 1 ] && echo rehearsal on CPU || echo GPU)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi: absent"
    nvcc --version 2>&1 | tail -2 || echo "nvcc: absent"
    command -v compute-sanitizer || echo "compute-sanitizer: absent"
    python - <<'EOF'
import importlib, sys
import torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
missing = []
for name in ("numpy", "triton", "pytest", "hypothesis", "scipy", "sklearn", "pytest_benchmark", "setuptools", "ninja"):
    try:
        m = importlib.import_module(name)
        print(f"  {name} {getattr(m, '__version__', '')}")
    except Exception as e:  # report every missing import, then fail
        missing.append(f"{name} ({type(e).__name__})")
if missing:
    sys.exit("preflight: missing imports: " + ", ".join(missing))
EOF
  } > "$OUT/env.txt" 2>&1
}

build() {
  if [ $REHEARSE = 1 ]; then
    # the CPU build is already installed in CI; check it imports, as the GPU build step would
    python -c "import pointins.ops as o; print(o.build_info())" > "$OUT/build.log" 2>&1
  else
    # pip needs setuptools >= 70.1 for an editable build without isolation; the machine is offline, so with an
    # older setuptools fall back to an in-place build (the tests run from the repository root either way)
    export POINTINS_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
    if ! python -m pip install --no-build-isolation --no-index --no-deps -e . > "$OUT/build.log" 2>&1; then
      echo "== pip install failed; falling back to python setup.py build_ext --inplace" >> "$OUT/build.log"
      python setup.py build_ext --inplace >> "$OUT/build.log" 2>&1 || return 1
    fi
    python -c "import pointins.ops as o; i = o.build_info(); print(i); assert i['built_with_cuda'], i" \
      >> "$OUT/build.log" 2>&1
  fi
}

tests() {
  POINTINS_STREAM="$OUT/tests.jsonl" python -m pytest tests -m cuda -q -rs -p no:cacheprovider -p stream_results \
    > "$OUT/tests.log" 2>&1
}

benchmarks() {
  local dev=cuda scale=1.0
  [ $REHEARSE = 1 ] && { dev=cpu; scale=0.01; }
  python bench/quick.py --out "$OUT/bench.md" --device $dev --scale $scale --budget $(( T_BENCH - 15 ))
}

sanitizers() {
  if [ $REHEARSE = 1 ] || ! command -v compute-sanitizer > /dev/null; then
    echo "compute-sanitizer absent$([ $REHEARSE = 1 ] && echo ' (rehearsal)'): running the op calls without it" \
      > "$OUT/sanitizer.log"
    python bench/sanitize_ops.py >> "$OUT/sanitizer.log" 2>&1
    return
  fi
  local rc=0
  for tool in memcheck racecheck; do
    echo "== $tool" >> "$OUT/sanitizer.log"
    compute-sanitizer --tool $tool --error-exitcode 9 python bench/sanitize_ops.py >> "$OUT/sanitizer.log" 2>&1 || rc=1
  done
  return $rc
}

export REHEARSE OUT T_BENCH
export -f preflight build tests benchmarks sanitizers
if [ $REHEARSE = 1 ]; then  # the time limits themselves: a stage past its limit is cut and recorded
  stage "time-limit self-test (expects TIMEOUT)" 2 "sleep 30"
  grep -q "time-limit self-test (expects TIMEOUT) | TIMEOUT" "$OUT/summary.md" || { echo "gpu_check: time limit broken"; exit 1; }
  status=0
fi
stage preflight 60 preflight || { cat "$OUT/env.txt"; echo "gpu_check: preflight failed"; exit 1; }
stage build "$T_BUILD" build || { tail -40 "$OUT/build.log"; cat "$OUT/summary.md"; exit 1; }
stage "tests (-m cuda)" "$T_TESTS" tests
python - "$OUT/tests.jsonl" <<'EOF' | tee -a "$OUT/summary.md"
import collections, json, sys
try:
    recs = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
except OSError:
    recs = []
c = collections.Counter(r["outcome"] for r in recs if "outcome" in r)
print(f"\ntests: {dict(c)}")
for r in recs:
    if r.get("outcome") == "failed":
        print(f"- FAILED {r['test']}: {r.get('error', '').splitlines()[0] if r.get('error') else ''}")
EOF
stage benchmarks "$T_BENCH" benchmarks
[ -f "$OUT/bench.md" ] && cat "$OUT/bench.md"
stage sanitizers "$(left)" sanitizers
echo "gpu_check: status $status after $(( $(date +%s) - T0 )) s; results in $OUT ($(ls "$OUT" | wc -l) files)"
cat "$OUT/summary.md"
exit $status
