// The reference transformer on CUDA (see kvflow/reference.hpp): bf16 weights
// made on the device, bf16 activations with f32 accumulation, GEMMs through
// cuBLAS loaded at run time, attention of its own reading the paged cache.
#pragma once

#include <memory>

#include "kvflow/device.hpp"
#include "kvflow/reference.hpp"

namespace kvflow::cuda {

/// Makes the model's weights and scratch on device `ordinal` of `device`
/// (synchronously: the call returns once the weights exist).
[[nodiscard]] std::unique_ptr<ReferenceModel> create_cuda_reference(Device& device, int ordinal,
                                                                    const ModelShape& shape);

}  // namespace kvflow::cuda
