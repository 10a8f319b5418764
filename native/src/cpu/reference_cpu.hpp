// The CPU backend's reference model: f32 on the stream's worker thread.
#pragma once

#include <memory>

#include "kvflow/reference.hpp"

namespace kvflow::cpu {

/// Builds every weight from shape.seed in host memory; kOutOfMemory when the
/// f32 weights would not fit `host_memory` bytes (half of it, at most).
[[nodiscard]] std::unique_ptr<ReferenceModel> create_cpu_reference(const ModelShape& shape, std::uint64_t host_memory);

}  // namespace kvflow::cpu
