// CudaDevice and open_cuda_device() (see cuda_device.hpp).
#include "cuda_device.hpp"

#include <sstream>
#include <string>

#include "cuda_error.hpp"
#include "cuda_probe.hpp"
#include "cuda_stream.hpp"
#include "kernels.hpp"
#include "pcie.hpp"
#include "reference/cuda_reference.hpp"

namespace kvflow {

namespace cuda {

namespace {

// Threads are not bound to a device: every CUDA call on any thread selects it first.
void set_device(int ordinal) { KVFLOW_CUDA(cudaSetDevice(ordinal)); }

// Portable: pinned for every device's context, as staging for any of them.
PinnedPool::RawAlloc pinned_alloc(int ordinal) {
  return [ordinal](std::size_t bytes) -> void* {
    void* ptr = nullptr;
    if (cudaSetDevice(ordinal) != cudaSuccess || cudaHostAlloc(&ptr, bytes, cudaHostAllocPortable) != cudaSuccess) {
      (void)cudaGetLastError();
      return nullptr;
    }
    return ptr;
  };
}

PinnedPool::RawFree pinned_free(int ordinal) {
  return [ordinal](void* ptr, std::size_t) {
    if (cudaSetDevice(ordinal) == cudaSuccess) (void)cudaFreeHost(ptr);
    (void)cudaGetLastError();
  };
}

std::string hex(std::uintptr_t value) {
  std::ostringstream out;
  out << "0x" << std::hex << value;
  return out.str();
}

std::string describe(const cudaPointerAttributes& attr) {
  switch (attr.type) {
    case cudaMemoryTypeUnregistered: return "host memory unknown to CUDA";
    case cudaMemoryTypeHost: return "pinned host memory";
    case cudaMemoryTypeDevice: return "device memory of CUDA device " + std::to_string(attr.device);
    case cudaMemoryTypeManaged: return "managed memory of CUDA device " + std::to_string(attr.device);
  }
  return "memory of unknown type " + std::to_string(static_cast<int>(attr.type));
}

}  // namespace

CudaDevice::CudaDevice(const DeviceOptions& options)
    : Device(options.max_pinned_bytes, pinned_alloc(options.ordinal), pinned_free(options.ordinal)),
      ordinal_(options.ordinal),
      gate_(choose_gate(options.ordinal, options.cuda_gate)) {
  set_device(ordinal_);
  // Before any stream exists: a lazy module load at a first kernel launch
  // could wait behind a stream held by a gate (seen as a launch stuck in the
  // driver). A failure here surfaces at that launch instead.
  if (load_kernels() != cudaSuccess) (void)cudaGetLastError();
  events_ = std::make_shared<EventPool>(ordinal_);
  poller_ = std::make_shared<Poller>(ordinal_, completer(), events_, std::chrono::microseconds(options.completion_spin_us));
}

CudaDevice::~CudaDevice() { close(); }

void CudaDevice::check_open() const { KVFLOW_CHECK(!closed_.load(), kDisposed, "device is disposed"); }

DeviceInfo CudaDevice::info() {
  check_open();
  set_device(ordinal_);
  DeviceInfo info;
  info.backend = "cuda";
  info.ordinal = ordinal_;
  cudaDeviceProp prop{};
  KVFLOW_CUDA(cudaGetDeviceProperties(&prop, ordinal_));
  info.name = prop.name;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  info.async_engines = prop.asyncEngineCount;
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
  KVFLOW_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  info.free_memory = free_bytes;
  info.total_memory = total_bytes;
  char bus_id[64] = {};
  const cudaError_t bus_status = cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), ordinal_);
  if (bus_status == cudaSuccess) {
    info.pci_bus_id = normalize_pci_bus_id(bus_id);
    read_pcie_link(info.pci_bus_id, info);
  } else {
    (void)cudaGetLastError();
    info.pcie_note = "PCIe link unknown: cudaDeviceGetPCIBusId failed: " + cuda_error_text(bus_status);
  }
  int version = 0;
  if (cudaDriverGetVersion(&version) == cudaSuccess) info.driver_version = version;
  version = 0;
  if (cudaRuntimeGetVersion(&version) == cudaSuccess) info.runtime_version = version;
  (void)cudaGetLastError();
  info.cores = host_cores();
  info.host_memory = host_memory_bytes();
  info.cuda_gate = gate_.wait_value ? "wait-value" : "host";
  info.cuda_gate_reason = gate_.reason;
  return info;
}

BufferPtr CudaDevice::alloc_device(std::size_t bytes) {
  check_open();
  KVFLOW_CHECK(bytes > 0, kInvalidArg, "expected a positive size for a device buffer, got 0");
  set_device(ordinal_);
  void* ptr = nullptr;
  const cudaError_t status = cudaMalloc(&ptr, bytes);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    throw Error(status == cudaErrorMemoryAllocation ? ErrorCode::kOutOfMemory : ErrorCode::kCuda,
                "cudaMalloc of " + std::to_string(bytes) + " bytes failed: " + cuda_error_text(status), __FILE__,
                __LINE__, 0, static_cast<int>(status));
  }
  // The last reference may drop on the poller thread or any other: the free
  // function selects the device itself.
  const int ordinal = ordinal_;
  Buffer::Free free_fn = [ordinal](void* p, std::size_t) {
    if (cudaSetDevice(ordinal) == cudaSuccess) (void)cudaFree(p);
    (void)cudaGetLastError();
  };
  try {
    return std::make_shared<Buffer>(MemoryKind::kDevice, static_cast<const Device*>(this), ptr, bytes, free_fn);
  } catch (...) {
    free_fn(ptr, bytes);
    throw;
  }
}

void CudaDevice::check_device_address(std::uintptr_t address, const char* which) const {
  cudaPointerAttributes attr{};
  const cudaError_t status = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(address));
  const std::string expected = "expected device memory of CUDA device " + std::to_string(ordinal_) + " for " +
                               which + " " + hex(address) + ", got ";
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    KVFLOW_FAIL(kInvalidArg, expected + "an address CUDA rejects (" + cuda_error_text(status) + ")");
  }
  const bool on_device = attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
  KVFLOW_CHECK(on_device && attr.device == ordinal_, kInvalidArg, expected + describe(attr));
}

BufferPtr CudaDevice::wrap_device(std::uintptr_t address, std::size_t bytes) {
  check_open();
  KVFLOW_CHECK(address != 0, kInvalidArg, "expected a non-null address to wrap, got 0");
  KVFLOW_CHECK(bytes > 0, kInvalidArg, "expected a positive size to wrap, got 0");
  const std::uintptr_t last = address + (bytes - 1);
  KVFLOW_CHECK(last >= address, kInvalidArg,
               "expected a range inside the address space, got " + hex(address) + " + " + std::to_string(bytes) +
                   " bytes");
  set_device(ordinal_);
  // Both ends: catches a size that runs past the allocation into unmapped or
  // host memory (the middle of a range cannot be checked through the runtime).
  check_device_address(address, "address");
  check_device_address(last, "the range's last byte at");
  return std::make_shared<Buffer>(MemoryKind::kDevice, static_cast<const Device*>(this),
                                  reinterpret_cast<void*>(address), bytes, Buffer::Free{});
}

std::unique_ptr<Stream> CudaDevice::create_stream(int priority) {
  check_open();
  return CudaStream::create(*this, ordinal_, priority, events_, poller_, gate_.flags);
}

std::unique_ptr<Stream> CudaDevice::wrap_stream(std::uintptr_t handle) {
  check_open();
  return CudaStream::wrap(*this, ordinal_, handle, events_, poller_, gate_.flags);
}

std::unique_ptr<ReferenceModel> CudaDevice::create_reference(const ModelShape& shape) {
  check_open();
  set_device(ordinal_);
  return create_cuda_reference(*this, ordinal_, shape);
}

void CudaDevice::close() {
  if (closed_.exchange(true)) return;
  poller_->stop(kPollerDrainWait);  // posts its last completions, then never touches the Completer
  events_->close();
  completer().close();
}

}  // namespace cuda

std::unique_ptr<Device> open_cuda_device(const DeviceOptions& options) {
  cuda::require_device(options.ordinal);
  return std::make_unique<cuda::CudaDevice>(options);
}

}  // namespace kvflow
