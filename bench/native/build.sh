#!/usr/bin/env bash
# Builds the same-run baselines and probes (bench/native/copy_baseline.cu,
# paged_baseline.cu, graph_probe.cu and raw_io.cc) into build-bench/ at the repo root, on the development
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
# cuda NAME [nvcc flags...]: bench/native/NAME.cu into build-bench/NAME.
cuda() {
  local name=$1
  shift
  nvcc -O2 -std=c++17 \
    -gencode arch=compute_90,code=sm_90 \
    -gencode arch=compute_90,code=compute_90 \
    -cudart static \
    "$@" \
    -o "build-bench/$name" "bench/native/$name.cu"
  echo "built build-bench/$name"
}
cuda copy_baseline
cuda paged_baseline -Xptxas -v
cuda graph_probe
