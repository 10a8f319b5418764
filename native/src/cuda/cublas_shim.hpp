// cuBLAS loaded at run time: kvflow never links it, so the build needs no
// cuBLAS and the addon loads on hosts without it. The few entry points and
// constants kvflow uses are declared here from cuBLAS's documented ABI (the
// v2 API). KVFLOW_CUBLAS names the library to load; otherwise the usual
// sonames are tried.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

namespace kvflow::cuda::cublas {

using Handle = void*;

inline constexpr int kOpN = 0;           // CUBLAS_OP_N
inline constexpr int kOpT = 1;           // CUBLAS_OP_T
inline constexpr int kBf16 = 14;         // CUDA_R_16BF
inline constexpr int kF32 = 0;           // CUDA_R_32F
inline constexpr int kCompute32F = 68;   // CUBLAS_COMPUTE_32F
inline constexpr int kGemmDefault = -1;  // CUBLAS_GEMM_DEFAULT (tensor cores where the types allow)

/// The loaded library's entry points; every pointer is set, or `missing` says why not.
struct Api {
  int (*create)(Handle*) = nullptr;                         // cublasCreate_v2
  int (*destroy)(Handle) = nullptr;                         // cublasDestroy_v2
  int (*set_stream)(Handle, cudaStream_t) = nullptr;        // cublasSetStream_v2
  int (*set_workspace)(Handle, void*, std::size_t) = nullptr;  // cublasSetWorkspace_v2
  int (*gemm_ex)(Handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* a, int a_type,
                 int lda, const void* b, int b_type, int ldb, const void* beta, void* c, int c_type, int ldc,
                 int compute_type, int algo) = nullptr;  // cublasGemmEx
  std::string library;  // what was loaded
  std::string missing;  // why cuBLAS cannot be used; empty when it can
};

/// The process's cuBLAS, loaded on first use and kept loaded.
[[nodiscard]] const Api& api();

/// Throws kUnsupported with the reason when cuBLAS cannot be used.
const Api& require();

/// Throws kCuda naming `call` when a cuBLAS status is not CUBLAS_STATUS_SUCCESS.
void check(int status, const char* call, const char* file, int line);

}  // namespace kvflow::cuda::cublas

#define KVFLOW_CUBLAS_CALL(expr) ::kvflow::cuda::cublas::check((expr), #expr, __FILE__, __LINE__)
