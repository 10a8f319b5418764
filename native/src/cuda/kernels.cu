// Gather/scatter of paged KV pieces inside device memory, and a compute load
// for benchmarks. The copy kernel is memory-bound: 16-byte accesses when a
// piece allows them, several blocks per large piece so it fills the GPU.
#include "kernels.hpp"

#include <algorithm>

namespace kvflow::cuda {

namespace {

struct PieceBatch {
  DevicePiece pieces[kPiecesPerLaunch];
};

constexpr int kThreads = 256;
constexpr std::size_t kSegmentBytes = 64 * 1024;  // what one block moves per piece per round

__global__ void __launch_bounds__(kThreads) piece_copy_kernel(const __grid_constant__ PieceBatch batch, unsigned count) {
  for (unsigned p = blockIdx.x; p < count; p += gridDim.x) {
    const DevicePiece piece = batch.pieces[p];
    const bool vec = ((reinterpret_cast<std::uintptr_t>(piece.dst) | reinterpret_cast<std::uintptr_t>(piece.src) |
                       piece.bytes) & 15) == 0;
    for (std::size_t seg = std::size_t{blockIdx.y} * kSegmentBytes; seg < piece.bytes;
         seg += std::size_t{gridDim.y} * kSegmentBytes) {
      const std::size_t end = min(piece.bytes, seg + kSegmentBytes);
      if (vec) {
        auto* d = reinterpret_cast<uint4*>(piece.dst + seg);
        const auto* s = reinterpret_cast<const uint4*>(piece.src + seg);
        const std::size_t n = (end - seg) / 16;
        for (std::size_t i = threadIdx.x; i < n; i += kThreads) d[i] = s[i];
      } else {
        for (std::size_t i = seg + threadIdx.x; i < end; i += kThreads) piece.dst[i] = piece.src[i];
      }
    }
  }
}

__global__ void busy_kernel(std::uint64_t iterations, float* sink) {
  float a = threadIdx.x * 1e-3f;
  float b = 1.0001f;
  for (std::uint64_t i = 0; i < iterations; ++i) {
    a = fmaf(a, b, 1e-7f);
    b = fmaf(b, 0.99999f, 1e-6f);
  }
  if (a == -1.0f) *sink = b;  // never true; keeps the loop from being optimized away
}

}  // namespace

cudaError_t launch_piece_copy(const DevicePiece* pieces, std::size_t count, int sm_count, cudaStream_t stream) noexcept {
  PieceBatch batch;
  for (std::size_t first = 0; first < count; first += kPiecesPerLaunch) {
    const std::size_t n = std::min(kPiecesPerLaunch, count - first);
    std::size_t largest = 0;
    for (std::size_t i = 0; i < n; ++i) {
      batch.pieces[i] = pieces[first + i];
      largest = std::max(largest, pieces[first + i].bytes);
    }
    // Enough blocks to cover every SM a few times over, split along large pieces.
    const unsigned gx = static_cast<unsigned>(std::min<std::size_t>(n, 65535));
    const std::size_t segments = (largest + kSegmentBytes - 1) / kSegmentBytes;
    const std::size_t want_y = std::max<std::size_t>(1, (static_cast<std::size_t>(sm_count) * 4 + gx - 1) / gx);
    const unsigned gy = static_cast<unsigned>(std::max<std::size_t>(1, std::min<std::size_t>({segments, want_y, 65535})));
    piece_copy_kernel<<<dim3(gx, gy), kThreads, 0, stream>>>(batch, static_cast<unsigned>(n));
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

cudaError_t load_kernels() noexcept {
  // Asking for a kernel's attributes loads its module now (CUDA loads modules
  // lazily by default): a later first launch then needs no module load,
  // which can wait for work already queued on the device, such as a stream
  // blocked on a gate that only the launching thread would open.
  cudaFuncAttributes attributes{};
  cudaError_t err = cudaFuncGetAttributes(&attributes, piece_copy_kernel);
  if (err == cudaSuccess) err = cudaFuncGetAttributes(&attributes, busy_kernel);
  return err;
}

cudaError_t launch_busy(std::uint64_t iterations, int sm_count, cudaStream_t stream) noexcept {
  busy_kernel<<<sm_count * 8, 256, 0, stream>>>(iterations, nullptr);
  return cudaGetLastError();
}

}  // namespace kvflow::cuda
