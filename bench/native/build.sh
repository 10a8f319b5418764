#!/usr/bin/env bash
# Builds the same-run baselines (bench/native/copy_baseline.cu,
# paged_baseline.cu and raw_io.cc) into build-bench/ at the repo root, on the development
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
# raw_io (bench/nvme.ts's baseline) is plain C++ without CUDA: first, so it
# builds where nvcc is missing too; libstdc++ is linked statically so the box
# needs only its glibc.
g++ -O2 -pthread -std=c++17 -Wall -Wextra -static-libstdc++ -static-libgcc \
  -o build-bench/raw_io bench/native/raw_io.cc
echo "built build-bench/raw_io"
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
nvcc -O2 -std=c++17 \
  -gencode arch=compute_90,code=sm_90 \
  -gencode arch=compute_90,code=compute_90 \
  -cudart static \
  -o build-bench/graph_probe bench/native/graph_probe.cu
echo "built build-bench/graph_probe"
