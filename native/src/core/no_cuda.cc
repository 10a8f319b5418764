// Linked into addons built without the CUDA backend (node-gyp, or CMake on a
// host without nvcc): the CUDA entry points say why it is missing.
#include "kvflow/device.hpp"
#include "kvflow/error.hpp"

namespace kvflow {

namespace {
constexpr const char* kReason =
    "this kvflow addon was built without the CUDA backend (no nvcc at build time, or the portable node-gyp "
    "build); rebuild with CUDA 13 installed: npm rebuild kvflow";
}

CudaProbe probe_cuda() {
  CudaProbe probe;
  probe.compiled = false;
  probe.available = false;
  probe.reason = kReason;
  return probe;
}

std::unique_ptr<Device> open_cuda_device(const DeviceOptions&) { KVFLOW_FAIL(kUnsupported, kReason); }

CudaGateProbe probe_cuda_gate(int) {
  CudaGateProbe probe;
  probe.reason = kReason;
  return probe;
}

}  // namespace kvflow
