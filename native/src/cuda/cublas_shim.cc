// See cublas_shim.hpp.
#include "cublas_shim.hpp"

#include "kvflow/dl.hpp"
#include "kvflow/error.hpp"

namespace kvflow::cuda::cublas {

namespace {

Api load() {
  Api a;
  const dl::Library lib = dl::open({"libcublas.so.13", "libcublas.so.12", "libcublas.so"}, "KVFLOW_CUBLAS");
  if (!lib) {
    a.missing = "cuBLAS could not be loaded (set KVFLOW_CUBLAS to its path): " + lib.tried();
    return a;
  }
  a.library = lib.name;
  const std::string absent = dl::resolve(lib, {
                                                  dl::symbol("cublasCreate_v2", a.create),
                                                  dl::symbol("cublasDestroy_v2", a.destroy),
                                                  dl::symbol("cublasSetStream_v2", a.set_stream),
                                                  dl::symbol("cublasSetWorkspace_v2", a.set_workspace),
                                                  dl::symbol("cublasGemmEx", a.gemm_ex),
                                              });
  if (!absent.empty()) a.missing = "the cuBLAS library " + a.library + " lacks " + absent;
  return a;  // the library stays loaded for the process
}

}  // namespace

const Api& api() {
  static const Api a = load();
  return a;
}

const Api& require() {
  const Api& a = api();
  KVFLOW_CHECK(a.missing.empty(), kUnsupported, a.missing);
  return a;
}

void check(int status, const char* call, const char* file, int line) {
  if (status == 0) return;
  throw_error(ErrorCode::kCuda, std::string(call) + " failed with cuBLAS status " + std::to_string(status), file,
              line);
}

}  // namespace kvflow::cuda::cublas
