// Gates the GPU waits on itself: cuStreamWaitValue32 on a flag in mapped host
// memory (flag_pool.hpp) that opening the gate sets. Unlike a host function
// that blocks until the gate opens, it holds no CUDA host-function thread
// (CUDA runs every stream's host functions on one) and does not count
// against the few dozen pending host functions after which CUDA blocks the
// enqueuing thread.
//
// The driver call is found at run time through cudaGetDriverEntryPointByVersion
// (the runtime is linked statically and libcuda never is), once per process.
// No device attribute gates it: CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_MEM_OPS_V1,
// the only "stream memory operations" attribute in CUDA 13's cuda.h, is
// deprecated and describes the V1 API (enabled by a kernel module parameter);
// the _v2 entry points used here are enabled by default, and the V2
// attributes cover only 64-bit operations and CU_STREAM_WAIT_VALUE_NOR. What
// is checked instead: cudaDevAttrCanMapHostMemory (the flags' device
// pointers), then one real wait on a fresh stream that the host releases.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <memory>
#include <string>

#include "flag_pool.hpp"
#include "kvflow/device.hpp"

namespace kvflow::cuda {

/// Enqueues on `stream` a wait until the 32-bit word at `flag` is at least 1
/// (CU_STREAM_WAIT_VALUE_GEQ). Throws ERR_UNSUPPORTED when the driver has no
/// cuStreamWaitValue32, ERR_CUDA when it refuses the wait.
void enqueue_wait_value(cudaStream_t stream, CUdeviceptr flag);

/// How a device's streams wait on gates.
struct GateChoice {
  bool wait_value = false;
  std::shared_ptr<FlagPool> flags;  // set with wait_value
  std::string reason;
};

/// Resolves `requested` for device `ordinal`, trying a wait on the device
/// unless host functions were asked for. Throws ERR_UNSUPPORTED with the
/// reason when wait-value was asked for and cannot work.
[[nodiscard]] GateChoice choose_gate(int ordinal, CudaGate requested);

}  // namespace kvflow::cuda
