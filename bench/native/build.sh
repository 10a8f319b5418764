#!/usr/bin/env bash
# Builds the same-run baselines (bench/native/copy_baseline.cu and
# paged_baseline.cu) into build-bench/ at the repo root, on the development
# machine: the GPU box has nvcc too, but building here keeps its device time
# for measuring. The CUDA runtime is linked statically so the binary only
# needs the box's driver.
# sm_90 SASS for Hopper (H100/H200) plus compute_90 PTX so a newer card can JIT.
# paged_baseline's resource report (-Xptxas -v) shows its busy kernel's
# registers: it must match kvflow's (native/src/cuda/kernels.cu) to load the
# GPU alike.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p build-bench
nvcc -O2 -std=c++17 \
  -gencode arch=compute_90,code=sm_90 \
  -gencode arch=compute_90,code=compute_90 \
  -cudart static \
  -o build-bench/copy_baseline bench/native/copy_baseline.cu
echo "built build-bench/copy_baseline"
nvcc -O2 -std=c++17 \
  -gencode arch=compute_90,code=sm_90 \
  -gencode arch=compute_90,code=compute_90 \
  -cudart static \
  -Xptxas -v \
  -o build-bench/paged_baseline bench/native/paged_baseline.cu
echo "built build-bench/paged_baseline"
