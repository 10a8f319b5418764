// CudaStream::busy_gemm: a bf16 GEMM from cuBLAS as the concurrent compute of
// the contention benchmark (bench/paged), beside the FMA kernel of busy().
// cuBLAS is loaded at run time through cublas_shim (kvflow never links it).
#include <map>
#include <mutex>
#include <string>

#include "cublas_shim.hpp"
#include "cuda_error.hpp"
#include "cuda_stream.hpp"

namespace kvflow::cuda {

namespace {

constexpr std::uint32_t kMaxGemms = 4096;  // per call
using cublas::Handle;

/// A device's handle and matrices, made on first use and kept for the
/// process (a benchmark's load; freeing them would synchronise the device).
struct GemmState {
  Handle handle = nullptr;
  void* a = nullptr;
  void* b = nullptr;
  void* c = nullptr;
  std::uint32_t n = 0;
};

std::mutex gemm_mutex;  // cuBLAS handles are used by one thread at a time
std::map<int, GemmState> gemm_states;

}  // namespace

namespace {

/// The device's handle and matrices of at least n x n, made first when needed.
/// Called without the stream's lock: making them may wait for the device,
/// which a held stream would never let finish.
GemmState& gemm_state_locked(const cublas::Api& lib, int ordinal, std::uint32_t n) {
  GemmState& s = gemm_states[ordinal];
  if (s.handle == nullptr) {
    const int status = lib.create(&s.handle);
    if (status != 0) {
      s.handle = nullptr;
      KVFLOW_FAIL(kCuda, "cublasCreate failed with status " + std::to_string(status));
    }
  }
  if (s.n < n) {
    // Never freed (see GemmState): a larger size takes new matrices.
    const std::size_t bytes = std::size_t{n} * n * 2;
    void* m[3] = {nullptr, nullptr, nullptr};
    for (void*& p : m) {
      const cudaError_t err = cudaMalloc(&p, bytes);
      if (err != cudaSuccess) {
        for (void* q : m) {
          if (q != nullptr) (void)cudaFree(q);
        }
        throw_cuda(err, "cudaMalloc", __FILE__, __LINE__);
      }
    }
    // bf16 0x3c3c (about 0.0115) everywhere: finite, non-zero operands.
    for (void* p : m) KVFLOW_CUDA(cudaMemset(p, 0x3c, bytes));
    s.a = m[0];
    s.b = m[1];
    s.c = m[2];
    s.n = n;
  }
  return s;
}

}  // namespace

void CudaStream::busy_gemm(std::uint32_t count, std::uint32_t n) {
  KVFLOW_CHECK(n >= 16 && n <= 32768 && n % 16 == 0, kInvalidArg,
               "expected a GEMM size from 16 to 32768, a multiple of 16, got " + std::to_string(n));
  // Enqueuing blocks once CUDA's launch queue is full; keep one call bounded.
  KVFLOW_CHECK(count <= kMaxGemms, kInvalidArg,
               "expected at most " + std::to_string(kMaxGemms) + " GEMMs per call, got " + std::to_string(count));
  const cublas::Api& lib = cublas::require();
  StreamCore& c = *core_;
  {
    KVFLOW_CUDA(cudaSetDevice(c.ordinal));
    std::lock_guard<std::mutex> g(gemm_mutex);
    (void)gemm_state_locked(lib, c.ordinal, n);
  }
  std::lock_guard<std::mutex> lock(c.mutex);
  if (begin_op_locked() == 0 || count == 0) return;
  KVFLOW_CUDA(cudaSetDevice(c.ordinal));
  std::lock_guard<std::mutex> g(gemm_mutex);
  GemmState& s = gemm_state_locked(lib, c.ordinal, n);  // made above: nothing is made here
  // One handle serves every stream of the device; cublasSetStream puts it on
  // its default workspace, which GEMMs in flight on two streams may share.
  // The load's results are never read, so that is harmless here.
  const int status = lib.set_stream(s.handle, c.stream);
  KVFLOW_CHECK(status == 0, kCuda, "cublasSetStream failed with status " + std::to_string(status));
  const float alpha = 1.0f;
  const float beta = 0.0f;
  const int size = static_cast<int>(n);
  for (std::uint32_t i = 0; i < count; ++i) {
    const int r = lib.gemm_ex(s.handle, cublas::kOpN, cublas::kOpN, size, size, size, &alpha, s.a, cublas::kBf16, size, s.b, cublas::kBf16, size, &beta,
                           s.c, cublas::kBf16, size, cublas::kCompute32F, cublas::kGemmDefault);
    KVFLOW_CHECK(r == 0, kCuda, "cublasGemmEx failed with status " + std::to_string(r));
  }
}

}  // namespace kvflow::cuda
