// Launchers of kvflow's CUDA kernels (kernels.cu), callable from plain C++.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace kvflow::cuda {

/// One piece of a gather/scatter kernel: device addresses on both sides.
struct DevicePiece {
  char* dst;
  const char* src;
  std::size_t bytes;
};

/// Pieces per launch: they travel as a kernel parameter (CUDA allows 32 KiB
/// of parameters on every architecture kvflow builds for), so no upload.
inline constexpr std::size_t kPiecesPerLaunch = 1024;

/// Copies every piece (any order among them) with one launch per
/// kPiecesPerLaunch pieces on `stream`. Returns the launch error.
[[nodiscard]] cudaError_t launch_piece_copy(const DevicePiece* pieces, std::size_t count, int sm_count,
                                            cudaStream_t stream) noexcept;

/// A load that keeps every SM busy for `iterations` rounds of FMAs: the
/// concurrent compute of the contention benchmark.
/// Loads the module of kvflow's kernels (called when a device opens): no
/// first launch has to load it later. Returns the first error.
[[nodiscard]] cudaError_t load_kernels() noexcept;
[[nodiscard]] cudaError_t launch_busy(std::uint64_t iterations, int sm_count, cudaStream_t stream) noexcept;

}  // namespace kvflow::cuda
