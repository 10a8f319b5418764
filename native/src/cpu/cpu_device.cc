// The CPU backend: "device" memory is host memory, streams are ordered worker
// queues. Same API, same semantics and error codes as the CUDA backend.
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "cpu_stream.hpp"
#include "kvflow/device.hpp"
#include "kvflow/error.hpp"
#include "reference_cpu.hpp"

namespace kvflow {

namespace {

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "host CPU";
}

class CpuDevice final : public Device {
 public:
  explicit CpuDevice(const DeviceOptions& options)
      : Device(options.max_pinned_bytes, host_pages_alloc, host_pages_free) {}

  DeviceInfo info() override {
    DeviceInfo info;
    info.backend = "cpu";
    info.name = cpu_model_name();
    info.cores = host_cores();
    info.host_memory = host_memory_bytes();
    info.total_memory = info.host_memory;
    const long avail = sysconf(_SC_AVPHYS_PAGES);
    const long page = sysconf(_SC_PAGE_SIZE);
    info.free_memory = avail > 0 && page > 0 ? static_cast<std::uint64_t>(avail) * static_cast<std::uint64_t>(page) : 0;
    info.pcie_note = "the CPU backend has no PCIe link";
    return info;
  }

  BufferPtr alloc_device(std::size_t bytes) override {
    KVFLOW_CHECK(bytes > 0, kInvalidArg, "expected a positive size for a device buffer, got 0");
    KVFLOW_CHECK(bytes <= (std::size_t{1} << 52), kOutOfMemory,
                 "device allocation of " + std::to_string(bytes) + " bytes is larger than any host");
    void* ptr = host_pages_alloc(bytes);
    KVFLOW_CHECK(ptr != nullptr, kOutOfMemory, "device allocation of " + std::to_string(bytes) + " bytes failed");
    return std::make_shared<Buffer>(MemoryKind::kDevice, this, ptr, bytes, [](void* p, std::size_t n) { host_pages_free(p, n); });
  }

  BufferPtr wrap_device(std::uintptr_t address, std::size_t bytes) override {
    KVFLOW_CHECK(address != 0, kInvalidArg, "expected a non-null address to wrap, got 0");
    KVFLOW_CHECK(bytes > 0, kInvalidArg, "expected a positive size to wrap, got 0");
    return std::make_shared<Buffer>(MemoryKind::kDevice, this, reinterpret_cast<void*>(address), bytes, nullptr);
  }

  std::unique_ptr<Stream> create_stream(int) override {
    return std::make_unique<cpu::CpuStream>(completer(), [this] { return next_id(); });
  }

  std::unique_ptr<Stream> wrap_stream(std::uintptr_t) override {
    KVFLOW_FAIL(kUnsupported, "the CPU backend has no CUDA streams to wrap; open the device with backend 'cuda'");
  }

  std::unique_ptr<ReferenceModel> create_reference(const ModelShape& shape) override {
    return cpu::create_cpu_reference(shape, host_memory_bytes());
  }

  void close() override { completer().close(); }
};

}  // namespace

std::unique_ptr<Device> open_cpu_device(const DeviceOptions& options) { return std::make_unique<CpuDevice>(options); }

}  // namespace kvflow
