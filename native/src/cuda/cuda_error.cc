// Maps cudaError_t to kvflow::Error (see cuda_error.hpp).
#include "cuda_error.hpp"

#include <cstring>

namespace kvflow::cuda {

namespace {

// KVFLOW_CUDA stringizes the whole call expression; the message names only
// the function ("cudaMemcpyAsync failed: ..."), which is what users search for.
std::string call_name(const char* call) {
  if (call == nullptr) return "CUDA call";
  const char* paren = std::strchr(call, '(');
  return paren == nullptr ? std::string(call) : std::string(call, static_cast<std::size_t>(paren - call));
}

}  // namespace

std::string cuda_error_text(cudaError_t err) {
  const char* name = cudaGetErrorName(err);
  const char* text = cudaGetErrorString(err);
  return std::string(name != nullptr ? name : "cudaError") + ": " + (text != nullptr ? text : "unknown error");
}

Error make_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  // Reset the thread's last error so a later cudaGetLastError (ours or another
  // library's on the same thread) does not report this failure again.
  (void)cudaGetLastError();
  const ErrorCode code = err == cudaErrorMemoryAllocation ? ErrorCode::kOutOfMemory : ErrorCode::kCuda;
  return Error(code, call_name(call) + " failed: " + cuda_error_text(err), file, line, 0, static_cast<int>(err));
}

ErrorPtr cuda_error_ptr(cudaError_t err, const char* call, const char* file, int line) noexcept {
  try {
    return std::make_shared<const Error>(make_cuda_error(err, call, file, line));
  } catch (...) {
    return capture_current_exception();
  }
}

void throw_cuda(cudaError_t err, const char* call, const char* file, int line) {
  throw make_cuda_error(err, call, file, line);
}

}  // namespace kvflow::cuda
