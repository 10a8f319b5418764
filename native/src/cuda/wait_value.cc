// cuStreamWaitValue32 gates: the driver entry point, the check that it works
// on a device, and the choice KVFLOW_CUDA_GATE makes (see wait_value.hpp).
#include "wait_value.hpp"

#include <cudaTypedefs.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "cuda_error.hpp"
#include "cuda_probe.hpp"

namespace kvflow {

namespace cuda {

namespace {

// The _v2 ABI of the stream memory operations (CUDA 11.7), on by default
// without the V1 API's kernel module parameter.
constexpr unsigned kWaitValueAbi = 11070;
constexpr unsigned kErrorTextAbi = 6000;
// How long the check gives the GPU to see a flag the host set; it takes
// microseconds on an idle GPU.
constexpr auto kCheckWait = std::chrono::seconds(5);

struct DriverCalls {
  PFN_cuStreamWaitValue32_v11070 wait_value32 = nullptr;
  PFN_cuGetErrorName_v6000 error_name = nullptr;
  PFN_cuGetErrorString_v6000 error_string = nullptr;
  std::string missing;  // why wait_value32 is null
};

// Returns why `symbol` cannot be had, or an empty string with `out` set.
template <class Fn>
std::string entry_point(const char* symbol, unsigned abi, const char* abi_name, Fn& out) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  // Legacy stream semantics: stream 0 (a wrapped default stream) is the
  // legacy default stream, as it is in kvflow's runtime calls.
  const cudaError_t status = cudaGetDriverEntryPointByVersion(symbol, &fn, abi, cudaEnableLegacyStream, &found);
  if (status == cudaSuccess && found == cudaDriverEntryPointSuccess && fn != nullptr) {
    out = reinterpret_cast<Fn>(fn);
    return {};
  }
  (void)cudaGetLastError();
  if (status != cudaSuccess) {
    return std::string("cudaGetDriverEntryPointByVersion(") + symbol + ") failed: " + cuda_error_text(status);
  }
  if (found == cudaDriverEntryPointVersionNotSufficent) {
    return std::string("the NVIDIA driver's ") + symbol + " lacks the CUDA " + abi_name + " ABI kvflow calls";
  }
  return std::string("the NVIDIA driver has no ") + symbol;
}

DriverCalls resolve() {
  DriverCalls calls;
  calls.missing = entry_point("cuStreamWaitValue32", kWaitValueAbi, "11.7", calls.wait_value32);
  (void)entry_point("cuGetErrorName", kErrorTextAbi, "6.0", calls.error_name);
  (void)entry_point("cuGetErrorString", kErrorTextAbi, "6.0", calls.error_string);
  return calls;
}

// Resolved once per process (callers have checked that a driver is there);
// never changed after.
const DriverCalls& driver_calls() {
  static const DriverCalls calls = resolve();
  return calls;
}

std::string driver_error_text(CUresult status) {
  const DriverCalls& calls = driver_calls();
  const char* name = nullptr;
  const char* text = nullptr;
  if (calls.error_name == nullptr || calls.error_name(status, &name) != CUDA_SUCCESS) name = nullptr;
  if (calls.error_string == nullptr || calls.error_string(status, &text) != CUDA_SUCCESS) text = nullptr;
  return (name != nullptr ? std::string(name) : "CUresult " + std::to_string(static_cast<int>(status))) + ": " +
         (text != nullptr ? text : "unknown error");
}

std::string device_text(int ordinal) { return "CUDA device " + std::to_string(ordinal); }

// One wait on a fresh stream, released by the host: proves the driver takes
// the wait on this device and the GPU sees a host store to mapped memory.
// Returns why not, or an empty string. Throws kvflow::Error for CUDA
// runtime failures on the way.
std::string try_wait_value(int ordinal, FlagPool& pool) {
  const DriverCalls& calls = driver_calls();
  if (calls.wait_value32 == nullptr) return calls.missing;
  KVFLOW_CUDA(cudaSetDevice(ordinal));
  int can_map = 0;
  KVFLOW_CUDA(cudaDeviceGetAttribute(&can_map, cudaDevAttrCanMapHostMemory, ordinal));
  if (can_map == 0) {
    return device_text(ordinal) + " cannot map host memory (cudaDevAttrCanMapHostMemory is 0), where the flags live";
  }
  FlagPtr flag = pool.acquire();
  cudaStream_t stream = nullptr;
  KVFLOW_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const CUresult enqueued = calls.wait_value32(stream, flag->device(), 1, CU_STREAM_WAIT_VALUE_GEQ);
  if (enqueued != CUDA_SUCCESS) {
    (void)cudaStreamDestroy(stream);
    (void)cudaGetLastError();
    return "cuStreamWaitValue32 failed on " + device_text(ordinal) + ": " + driver_error_text(enqueued);
  }
  flag->set();
  const auto deadline = std::chrono::steady_clock::now() + kCheckWait;
  auto pause = std::chrono::microseconds(10);
  cudaError_t status = cudaSuccess;
  while ((status = cudaStreamQuery(stream)) == cudaErrorNotReady && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(10000));
  }
  // Safe with the wait pending: CUDA frees the stream once it drained.
  (void)cudaStreamDestroy(stream);
  (void)cudaGetLastError();
  if (status == cudaErrorNotReady) {
    // The GPU may still read the flag: it and its page are kept for good.
    auto* kept = new FlagPtr(std::move(flag));
    (void)kept;
    return "a cuStreamWaitValue32 on " + device_text(ordinal) + " did not see its flag in mapped host memory set within " +
           std::to_string(kCheckWait.count()) + " s";
  }
  if (status != cudaSuccess) {
    // Not a verdict on wait-value: the context itself failed (a sticky error
    // stays), so no gate mode can work; opening the device fails with it.
    throw Error(ErrorCode::kCuda,
                "the CUDA context of " + device_text(ordinal) + " failed during the wait-value check: " +
                    cuda_error_text(status),
                __FILE__, __LINE__, 0, static_cast<int>(status));
  }
  return {};
}

}  // namespace

void enqueue_wait_value(cudaStream_t stream, CUdeviceptr flag) {
  const DriverCalls& calls = driver_calls();
  KVFLOW_CHECK(calls.wait_value32 != nullptr, kUnsupported, calls.missing);
  const CUresult status = calls.wait_value32(stream, flag, 1, CU_STREAM_WAIT_VALUE_GEQ);
  if (status != CUDA_SUCCESS) {
    throw Error(status == CUDA_ERROR_OUT_OF_MEMORY ? ErrorCode::kOutOfMemory : ErrorCode::kCuda,
                "cuStreamWaitValue32 failed: " + driver_error_text(status), __FILE__, __LINE__, 0,
                static_cast<int>(status));
  }
}

GateChoice choose_gate(int ordinal, CudaGate requested) {
  GateChoice choice;
  if (requested == CudaGate::kHost) {
    choice.reason = "host functions were requested";
    return choice;
  }
  auto pool = std::make_shared<FlagPool>(ordinal);
  std::string why;
  try {
    why = try_wait_value(ordinal, *pool);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kCuda) throw;  // a failed context: no fallback can help
    why = e.what();
  }
  const bool forced = requested == CudaGate::kWaitValue;
  if (why.empty()) {
    choice.wait_value = true;
    choice.flags = std::move(pool);  // the page the check used serves the streams
    choice.reason = forced ? "wait-value was requested and works on " + device_text(ordinal)
                           : "auto: wait-value works on " + device_text(ordinal);
    return choice;
  }
  KVFLOW_CHECK(!forced, kUnsupported,
               "the wait-value CUDA gate cannot be used: " + why + " (ask for 'auto' or 'host': KVFLOW_CUDA_GATE)");
  choice.reason = "auto: wait-value is unavailable (" + why + ")";
  return choice;
}

}  // namespace cuda

CudaGateProbe probe_cuda_gate(int ordinal) {
  CudaGateProbe probe;
  try {
    const CudaProbe cuda = probe_cuda();
    if (!cuda.available) {
      probe.reason = cuda.reason;
      return probe;
    }
    if (ordinal < 0 || ordinal >= cuda.device_count) {
      probe.reason = "no CUDA device " + std::to_string(ordinal) + " (" + std::to_string(cuda.device_count) + " visible)";
      return probe;
    }
    auto pool = std::make_shared<cuda::FlagPool>(ordinal);
    try {
      probe.reason = cuda::try_wait_value(ordinal, *pool);
    } catch (const Error& e) {
      probe.reason = e.what();
    }
    probe.available = probe.reason.empty();
    if (probe.available) probe.reason = "cuStreamWaitValue32 works on " + cuda::device_text(ordinal);
  } catch (...) {
    // Only allocation can throw here; report it rather than let it escape.
    probe.available = false;
    try {
      probe.reason = "the wait-value probe failed: out of host memory";
    } catch (...) {
    }
  }
  return probe;
}

}  // namespace kvflow
