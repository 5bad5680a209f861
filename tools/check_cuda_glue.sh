#!/usr/bin/env bash
# Compile-check the torch CUDA glue (csrc/cuda/*.cpp) on a machine whose torch is a CPU build.
# The CPU wheel ships the c10/cuda headers but not one generated config header, so a one-line
# stand-in is supplied; with the toolkit's cuda_runtime_api.h the glue then parses exactly as it
# will on the GPU machine, catching API misuse and typos before a GPU is ever lent.
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_INC=${CUDA_HOME:-/usr/local/cuda}/include
[ -f "$CUDA_INC/cuda_runtime_api.h" ] || { echo "cuda_runtime_api.h not found under $CUDA_INC (set CUDA_HOME)"; exit 1; }
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
mkdir -p "$shim/c10/cuda/impl"
echo '#pragma once' > "$shim/c10/cuda/impl/cuda_cmake_macros.h"
mapfile -t TORCH_INC < <(python -c "from torch.utils.cpp_extension import include_paths; print('\n'.join(include_paths()))")
flags=(-std=c++20 -fsyntax-only -Wall -Werror -DPOINTINS_WITH_CUDA -Ikernels/include -Icsrc)
for p in "${TORCH_INC[@]}"; do flags+=(-isystem "$p"); done
flags+=(-isystem "$shim" -isystem "$CUDA_INC")
n=0
for f in csrc/cuda/*.cpp; do
  g++ "${flags[@]}" "$f"
  n=$((n + 1))
done
echo "check_cuda_glue: $n CUDA glue file(s) compile (syntax + types) against torch $(python -c 'import torch; print(torch.__version__)')"
