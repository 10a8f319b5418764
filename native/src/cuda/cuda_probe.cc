// kvflow::probe_cuda() for addons built with the CUDA backend. The runtime is
// linked statically, so the addon loads on hosts without a driver; this probe
// then finds the first missing piece (driver, driver version, device) and says
// how to fix it instead of letting a CUDA call fail with a bare error code.
#include "cuda_probe.hpp"

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <string>

#include "cuda_error.hpp"
#include "kvflow/dl.hpp"
#include "kvflow/error.hpp"

namespace kvflow {

namespace {

// CUDA 13's runtime needs a driver of the 580 series (it reports 13000).
constexpr int kMinDriverVersion = 13000;

// The driver library is loaded only to ask its version; the prototype is
// declared here so the build never needs the driver's headers or library.
using DriverGetVersion = int (*)(int*);

std::string version_text(int version) {
  return std::to_string(version / 1000) + "." + std::to_string((version % 1000) / 10);
}

std::string visible_devices_text() {
  const char* env = std::getenv("CUDA_VISIBLE_DEVICES");
  if (env == nullptr) return "unset";
  // Appended piece by piece: GCC 12 warns (-Wrestrict, a false positive) on "'" + std::string(env) + "'".
  std::string text(1, '\'');
  text.append(env);
  text.push_back('\'');
  return text;
}

// Returns the reason the driver is unusable, or an empty string.
std::string check_driver() {
  dl::Library lib = dl::open({"libcuda.so.1"});
  if (!lib) {
    return std::string("no NVIDIA driver: libcuda.so.1 not found (") +
           (lib.failed.empty() ? std::string("unknown") : lib.failed.front().why) +
           "); install the NVIDIA driver 580 or newer";
  }
  std::string reason;
  DriverGetVersion fn = nullptr;
  int version = 0;
  if (!dl::resolve(lib, {dl::symbol("cuDriverGetVersion", fn)}).empty()) {
    reason = "the NVIDIA driver's libcuda.so.1 has no cuDriverGetVersion; reinstall the NVIDIA driver 580 or newer";
  } else if (fn(&version) != 0) {
    reason = "the NVIDIA driver did not report its version (cuDriverGetVersion failed); reinstall the NVIDIA "
             "driver 580 or newer";
  } else if (version < kMinDriverVersion) {
    reason = "the NVIDIA driver supports CUDA " + version_text(version) +
             "; kvflow's CUDA backend is built with CUDA 13.0, which needs driver 580 or newer";
  }
  dl::close(lib);
  return reason;
}

CudaProbe run_probe() {
  CudaProbe probe;
  probe.compiled = true;
  int runtime = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess) probe.runtime_version = runtime;
  probe.reason = check_driver();
  if (!probe.reason.empty()) return probe;
  int driver = 0;
  if (cudaDriverGetVersion(&driver) == cudaSuccess) probe.driver_version = driver;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  (void)cudaGetLastError();
  if (err == cudaErrorNoDevice || (err == cudaSuccess && count == 0)) {
    probe.reason = "no CUDA device visible (CUDA_VISIBLE_DEVICES=" + visible_devices_text() + ")";
    return probe;
  }
  if (err != cudaSuccess) {
    probe.reason = "cudaGetDeviceCount failed: " + cuda::cuda_error_text(err) +
                   " (CUDA_VISIBLE_DEVICES=" + visible_devices_text() + "); check `nvidia-smi` works";
    return probe;
  }
  probe.device_count = count;
  probe.available = true;
  return probe;
}

}  // namespace

CudaProbe probe_cuda() {
  try {
    return run_probe();
  } catch (...) {
    // Only allocation can throw here; report it rather than let it escape.
    CudaProbe probe;
    probe.compiled = true;
    try {
      probe.reason = "the CUDA probe failed: out of host memory";
    } catch (...) {
    }
    return probe;
  }
}

namespace cuda {

void require_device(int ordinal) {
  const CudaProbe probe = probe_cuda();
  KVFLOW_CHECK(probe.available, kUnsupported, probe.reason);
  KVFLOW_CHECK(ordinal >= 0 && ordinal < probe.device_count, kInvalidArg,
               "expected a CUDA device ordinal in [0, " + std::to_string(probe.device_count) + "), got " +
                   std::to_string(ordinal));
}

}  // namespace cuda

}  // namespace kvflow
