// Every CUDA runtime call kvflow makes goes through KVFLOW_CUDA so a failure
// becomes a typed kvflow::Error naming the call, the CUDA error and the site,
// which the glue turns into ERR_CUDA (or ERR_OUT_OF_MEMORY) for JavaScript.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "kvflow/error.hpp"

namespace kvflow::cuda {

/// "cudaErrorInvalidValue: invalid argument".
[[nodiscard]] std::string cuda_error_text(cudaError_t err);

/// The Error a failed `call` maps to: kOutOfMemory for cudaErrorMemoryAllocation,
/// kCuda otherwise. Clears the thread's last CUDA error (non-sticky ones go away).
[[nodiscard]] Error make_cuda_error(cudaError_t err, const char* call, const char* file, int line);

/// Same, for threads that report errors instead of throwing. Never throws.
[[nodiscard]] ErrorPtr cuda_error_ptr(cudaError_t err, const char* call, const char* file, int line) noexcept;

[[noreturn]] void throw_cuda(cudaError_t err, const char* call, const char* file, int line);

inline void check_cuda(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess) throw_cuda(err, call, file, line);
}

}  // namespace kvflow::cuda

#define KVFLOW_CUDA(call) ::kvflow::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define KVFLOW_CUDA_ERROR(err, call) ::kvflow::cuda::cuda_error_ptr((err), (call), __FILE__, __LINE__)
