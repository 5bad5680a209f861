#!/usr/bin/env bash
# The GPU machine's exact stack, built and checked on a machine without a GPU (run by .ci/run).
#
# The registry's torch==2.11.0 for Linux x86-64 is the lent GPU machine's 2.11.0+cu130 and pulls its
# triton==3.6.0. In a separate virtual environment (reused when it already holds that torch) this
#   1. builds pointins with POINTINS_FORCE_CUDA=1 for sm_90 with the local nvcc: the real CUDA extension,
#      kernels/*.cu and csrc/cuda/*.cpp compiled and linked (out of tree: the CPU build is untouched);
#   2. imports it and checks that build_info() reports the CUDA build and its archs;
#   3. runs CPU tests against that build (the compiled CPU ops are in the same extension);
#   4. compiles every Triton kernel specialisation for sm_90 with triton 3.6 (tools/check_triton_compile.py:
#      shared memory against the 232,448-byte limit, registers and spills).
#
#   bash tools/gpu_stack_check.sh            # POINTINS_GPU_VENV picks the venv folder
#
# Environment: POINTINS_GPU_VENV (default ~/.cache/pointins/gpu-stack-venv), POINTINS_GPU_STACK_TESTS (pytest
# selection for step 3, default a CPU subset that exercises every compiled op family), MAX_JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${POINTINS_GPU_VENV:-$HOME/.cache/pointins/gpu-stack-venv}
TORCH_PIN=2.11.0
t0=$(date +%s)
stamp() { echo "[gpu-stack $(( $(date +%s) - t0 ))s] $*"; }

have_stack() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<EOF 2>/dev/null
import torch, triton
assert torch.__version__.split("+")[0] == "$TORCH_PIN" and torch.version.cuda, torch.__version__
import pytest, hypothesis, numpy, scipy, setuptools, ninja
EOF
}

if have_stack; then
  stamp "reusing $VENV"
else
  stamp "creating $VENV (torch==$TORCH_PIN, the GPU machine's CUDA 13.0 build; a few GB)"
  rm -rf "$VENV"
  python -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "torch==$TORCH_PIN" numpy ninja "setuptools>=70.1" wheel \
    pytest hypothesis scipy
  have_stack || { echo "gpu-stack: the venv at $VENV does not hold torch $TORCH_PIN+cuda"; exit 1; }
fi
"$VENV/bin/python" -c "import torch, triton; print('gpu-stack: torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"

# 1. the real CUDA extension, built out of tree (a copy of the tracked sources) and installed into the venv
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git ls-files -z | (cd "$ROOT" && xargs -0 cp --parents -t "$work/")
stamp "building pointins with CUDA for sm_90 (POINTINS_FORCE_CUDA=1)"
(
  cd "$work"
  TORCH_CUDA_ARCH_LIST=9.0 POINTINS_FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-2} \
    "$VENV/bin/pip" install -v --no-build-isolation --no-deps --disable-pip-version-check . > "$work/build.log" 2>&1 \
    || { tail -80 "$work/build.log"; echo "gpu-stack: BUILD FAILED"; exit 1; }
  n_nvcc=$(grep -c "nvcc.*sm_90" "$work/build.log" || true)
  echo "gpu-stack: $n_nvcc nvcc compile commands for sm_90 in the build log, e.g.:"
  grep -m 2 -o "nvcc .*-c [^ ]*kernels/[a-z_]*\.cu.*code=sm_90[^ ]*" "$work/build.log" | cut -c 1-400 || true
  grep -m 1 -o "g++ .*-shared.*_C[^ ]*\.so" "$work/build.log" | grep -o "\-lcudart\|-lc10_cuda\|-ltorch_cuda\|_C[^ ]*\.so" \
    | tr '\n' ' ' | sed 's/^/gpu-stack: linked with: /' || true
  echo
)
so=$(cd / && "$VENV/bin/python" -c "import importlib.util; print(importlib.util.find_spec('pointins._C').origin)")
stamp "built $so"
# the CUDA objects really are in the binary: device code for sm_90 and the kernels' symbols
"$VENV/bin/python" - "$so" <<'EOF'
import subprocess, sys
so = sys.argv[1]
syms = subprocess.run(["nm", "-D", "-C", so], capture_output=True, text=True).stdout
n = sum("pointins_" in line and " T " in line for line in syms.splitlines())
blob = open(so, "rb").read()
assert b"sm_90" in blob or b".nv.fatbin" in blob or b"__nv_module_id" in blob or n, "no CUDA code in the extension"
print(f"gpu-stack: {so.split('/')[-1]}: {len(blob) / 2**20:.1f} MiB, {n} exported pointins_* kernel launchers, "
      f"sm_90 device code {'present' if b'sm_90' in blob else 'embedded'}")
EOF

# 2. import + build_info from outside the source tree (the installed build, not the checkout's package)
cd "$work"
mv pointins pointins.src
"$VENV/bin/python" - <<'EOF'
import pointins.ops as ops
info = ops.build_info()
print("gpu-stack: build_info", {k: info[k] for k in ("torch", "torch_cuda", "extension", "built_with_cuda", "cuda_archs", "triton")})
assert info["extension"] == "loaded", info
assert info["built_with_cuda"] is True, info
assert "9.0" in str(info["cuda_archs"]), info
assert info["triton"].startswith("3.6"), info
EOF

# 3. CPU tests against that build
sel=${POINTINS_GPU_STACK_TESTS:-"tests/test_keys.py tests/test_voxel.py tests/test_serialize.py tests/test_segment.py tests/test_components.py tests/test_kmeans.py tests/test_ops_infra.py tests/test_hostile_ops.py"}
stamp "CPU tests against the CUDA build: $sel"
# shellcheck disable=SC2086
# (-m "not triton": the GPU runs Triton compiled, checked in step 4; triton 3.6's CPU interpreter trips over NumPy 2's
# stricter int() of one-element arrays, which the interpreter tests meet on the main stack's newer triton instead)
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "not slow and not triton" $sel 2>&1 | tail -5
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "gpu-stack: TESTS FAILED"; exit 1; }

# 4. Triton kernels compiled for sm_90 with the GPU machine's triton
mv pointins.src pointins
stamp "Triton compile check (sm_90, triton 3.6)"
"$VENV/bin/python" tools/check_triton_compile.py --arch 90 --no-spills
stamp "done"
