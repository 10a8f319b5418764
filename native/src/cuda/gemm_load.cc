// CudaStream::busy_gemm: a bf16 GEMM from cuBLAS as the concurrent compute of
// the contention benchmark (bench/paged), beside the FMA kernel of busy().
// cuBLAS is loaded at run time (kvflow never links it); its few entry points
// and constants are declared here from cuBLAS's documented ABI
// (cublasGemmEx of the v2 API), so the build needs no cuBLAS headers.
#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "cuda_error.hpp"
#include "cuda_stream.hpp"

namespace kvflow::cuda {

namespace {

using CublasHandle = void*;
using CublasCreate = int (*)(CublasHandle*);
using CublasSetStream = int (*)(CublasHandle, cudaStream_t);
using CublasGemmEx = int (*)(CublasHandle, int transa, int transb, int m, int n, int k, const void* alpha,
                             const void* a, int a_type, int lda, const void* b, int b_type, int ldb, const void* beta,
                             void* c, int c_type, int ldc, int compute_type, int algo);
constexpr int kOpN = 0;            // CUBLAS_OP_N
constexpr int kBf16 = 14;          // CUDA_R_16BF
constexpr int kCompute32F = 68;    // CUBLAS_COMPUTE_32F
constexpr int kGemmDefault = -1;   // CUBLAS_GEMM_DEFAULT
constexpr std::uint32_t kMaxGemms = 4096;  // per call

struct Cublas {
  CublasCreate create = nullptr;
  CublasSetStream set_stream = nullptr;
  CublasGemmEx gemm = nullptr;
  std::string missing;  // why it cannot be used; empty when it can
};

Cublas load() {
  Cublas c;
  std::string tried;
  void* lib = nullptr;
  const char* env = std::getenv("KVFLOW_CUBLAS");
  for (const char* name : {env, "libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
    if (name == nullptr || *name == '\0') continue;
    lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib != nullptr) break;
    const char* why = dlerror();
    tried += std::string(tried.empty() ? "" : "; ") + name + ": " + (why != nullptr ? why : "not found");
  }
  if (lib == nullptr) {
    c.missing = "cuBLAS could not be loaded (set KVFLOW_CUBLAS to its path): " + tried;
    return c;
  }
  c.create = reinterpret_cast<CublasCreate>(dlsym(lib, "cublasCreate_v2"));
  c.set_stream = reinterpret_cast<CublasSetStream>(dlsym(lib, "cublasSetStream_v2"));
  c.gemm = reinterpret_cast<CublasGemmEx>(dlsym(lib, "cublasGemmEx"));
  if (c.create == nullptr || c.set_stream == nullptr || c.gemm == nullptr) {
    c.missing = "the cuBLAS library found lacks cublasCreate_v2, cublasSetStream_v2 or cublasGemmEx";
  }
  return c;  // the library stays loaded for the process
}

const Cublas& cublas() {
  static const Cublas c = load();
  return c;
}

/// A device's handle and matrices, made on first use and kept for the
/// process (a benchmark's load; freeing them would synchronise the device).
struct GemmState {
  CublasHandle handle = nullptr;
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
GemmState& gemm_state_locked(const Cublas& lib, int ordinal, std::uint32_t n) {
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
  const Cublas& lib = cublas();
  KVFLOW_CHECK(lib.missing.empty(), kUnsupported, lib.missing);
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
    const int r = lib.gemm(s.handle, kOpN, kOpN, size, size, size, &alpha, s.a, kBf16, size, s.b, kBf16, size, &beta,
                           s.c, kBf16, size, kCompute32F, kGemmDefault);
    KVFLOW_CHECK(r == 0, kCuda, "cublasGemmEx failed with status " + std::to_string(r));
  }
}

}  // namespace kvflow::cuda
