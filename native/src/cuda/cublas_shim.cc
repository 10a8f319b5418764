// See cublas_shim.hpp.
#include "cublas_shim.hpp"

#include <dlfcn.h>

#include <cstdlib>

#include "kvflow/error.hpp"

namespace kvflow::cuda::cublas {

namespace {

template <typename Fn>
void bind(void* lib, const char* name, Fn& out, std::string& missing) {
  out = reinterpret_cast<Fn>(dlsym(lib, name));
  if (out == nullptr) missing += std::string(missing.empty() ? "" : ", ") + name;
}

Api load() {
  Api a;
  std::string tried;
  void* lib = nullptr;
  const char* env = std::getenv("KVFLOW_CUBLAS");
  for (const char* name : {env, "libcublas.so.13", "libcublas.so.12", "libcublas.so"}) {
    if (name == nullptr || *name == '\0') continue;
    lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib != nullptr) {
      a.library = name;
      break;
    }
    const char* why = dlerror();
    tried += std::string(tried.empty() ? "" : "; ") + name + ": " + (why != nullptr ? why : "not found");
  }
  if (lib == nullptr) {
    a.missing = "cuBLAS could not be loaded (set KVFLOW_CUBLAS to its path): " + tried;
    return a;
  }
  std::string absent;
  bind(lib, "cublasCreate_v2", a.create, absent);
  bind(lib, "cublasDestroy_v2", a.destroy, absent);
  bind(lib, "cublasSetStream_v2", a.set_stream, absent);
  bind(lib, "cublasSetWorkspace_v2", a.set_workspace, absent);
  bind(lib, "cublasGemmEx", a.gemm_ex, absent);
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
