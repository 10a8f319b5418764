#!/usr/bin/env bash
# Builds attention_check (see its header) into build-cmake/tools/ at the repo root.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../../../.." && pwd)"
out="$root/build-cmake/tools"
mkdir -p "$out"
src="$root/native/src"
nvcc -std=c++17 -O3 -gencode=arch=compute_90,code=sm_90 -I"$root/native/include" -I"$src" \
  "$src/cuda/reference/tools/attention_check.cu" "$src/cuda/reference/attention.cu" \
  "$src/cuda/cuda_error.cc" "$src/core/error.cc" -o "$out/attention_check"
