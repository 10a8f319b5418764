// A device: the CUDA GPU or the CPU stand-in. Owns the completion channel, the
// pinned pool and the id space of events and release tickets.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kvflow/buffer.hpp"
#include "kvflow/completer.hpp"
#include "kvflow/pinned_pool.hpp"
#include "kvflow/reference.hpp"
#include "kvflow/stream.hpp"

namespace kvflow {

/// How a CUDA stream waits on a Gate (KVFLOW_CUDA_GATE). kHost blocks a
/// host function (cudaLaunchHostFunc) until the gate opens; kWaitValue makes
/// the GPU wait for a flag in mapped host memory (cuStreamWaitValue32) that
/// opening the gate sets; kAuto is kWaitValue where it works, else kHost.
/// The CPU backend ignores it.
enum class CudaGate : int { kHost = 0, kWaitValue = 1, kAuto = 2 };

struct DeviceOptions {
  int ordinal = 0;
  std::uint64_t max_pinned_bytes = 0;  // 0: no limit but the system's
  CudaGate cuda_gate = CudaGate::kHost;
  // How long the CUDA completion poller, with nothing left to poll, keeps
  // looking for new work before it sleeps (KVFLOW_COMPLETION_SPIN_US).
  std::uint32_t completion_spin_us = 50;
};

struct DeviceInfo {
  std::string backend;  // "cuda" | "cpu"
  std::string name;
  int ordinal = 0;
  std::uint64_t total_memory = 0;
  std::uint64_t free_memory = 0;
  int cc_major = 0;
  int cc_minor = 0;
  int multiprocessors = 0;
  int async_engines = 0;
  std::string pci_bus_id;
  int pcie_gen = 0;  // 0: unknown (see pcie_note)
  int pcie_width = 0;
  int pcie_max_gen = 0;
  int pcie_max_width = 0;
  std::string pcie_note;
  int driver_version = 0;   // e.g. 13000 for CUDA 13.0
  int runtime_version = 0;
  int cores = 0;            // host CPU cores
  std::uint64_t host_memory = 0;
  std::string cuda_gate;         // "host" | "wait-value"; empty on the CPU backend
  std::string cuda_gate_reason;  // why that one
};

/// What the CUDA backend can do on this host, and why not when it cannot.
struct CudaProbe {
  bool compiled = false;   // this addon was built with the CUDA backend
  bool available = false;  // a device can be opened
  std::string reason;      // why not, with the fix, when !available
  int device_count = 0;
  int driver_version = 0;
  int runtime_version = 0;
};

/// Whether CUDA device `ordinal` can wait on gates with cuStreamWaitValue32,
/// and why not when it cannot.
struct CudaGateProbe {
  bool available = false;
  std::string reason;
};

class Device {
 public:
  explicit Device(std::uint64_t max_pinned_bytes, PinnedPool::RawAlloc alloc, PinnedPool::RawFree free);
  virtual ~Device() = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  [[nodiscard]] virtual DeviceInfo info() = 0;
  [[nodiscard]] virtual BufferPtr alloc_device(std::size_t bytes) = 0;
  [[nodiscard]] virtual BufferPtr wrap_device(std::uintptr_t address, std::size_t bytes) = 0;
  [[nodiscard]] virtual std::unique_ptr<Stream> create_stream(int priority) = 0;
  [[nodiscard]] virtual std::unique_ptr<Stream> wrap_stream(std::uintptr_t handle) = 0;
  /// The reference transformer on this device (reference.hpp); weights are
  /// made from shape.seed on the device.
  [[nodiscard]] virtual std::unique_ptr<ReferenceModel> create_reference(const ModelShape& shape) {
    (void)shape;
    KVFLOW_FAIL(kUnsupported, "this backend has no reference model");
  }
  /// Makes the calling thread's device calls go to this device (CUDA binds
  /// the thread to its ordinal; the CPU backend needs nothing). IO threads
  /// that hand device memory to other libraries (cuFile) call it first.
  virtual void bind_thread() {}
  /// Test hook: the thread that notices completed device work (CUDA: the
  /// completion poller) stops noticing until the returned function is called.
  /// The CPU backend has no such thread (its streams complete their own
  /// events): nothing to hold.
  [[nodiscard]] virtual std::function<void()> hold_completions() {
    return [] {};
  }
  /// Stops the device's own threads. Streams are closed by their owners first.
  virtual void close() = 0;

  [[nodiscard]] BufferPtr alloc_pinned(std::size_t bytes) { return pinned_.acquire(bytes); }
  /// Pageable host memory, 4 KiB aligned.
  [[nodiscard]] BufferPtr alloc_host(std::size_t bytes);

  [[nodiscard]] Completer& completer() noexcept { return completer_; }
  [[nodiscard]] PinnedPool& pinned_pool() noexcept { return pinned_; }
  [[nodiscard]] std::uint64_t next_id() noexcept { return next_id_.fetch_add(1, std::memory_order_relaxed); }

 private:
  Completer completer_;
  PinnedPool pinned_;
  std::atomic<std::uint64_t> next_id_{1};
};

[[nodiscard]] std::unique_ptr<Device> open_cpu_device(const DeviceOptions& options);
/// Throws kUnsupported with CudaProbe::reason when no device can be opened.
[[nodiscard]] std::unique_ptr<Device> open_cuda_device(const DeviceOptions& options);
[[nodiscard]] CudaProbe probe_cuda();
/// Never throws; creates the device's CUDA context to try a wait.
[[nodiscard]] CudaGateProbe probe_cuda_gate(int ordinal);

/// Host facts shared by both backends' info().
/// Host memory for buffers, 4 KiB aligned: from the allocator below 256 KiB,
/// else its own anonymous mapping, so that freeing a large buffer returns
/// its pages to the system (the C allocator would keep them in its heap once
/// its dynamic mmap threshold has risen, and a long-running process's
/// resident size would only grow). `host_pages_free` takes the same size.
[[nodiscard]] void* host_pages_alloc(std::size_t bytes) noexcept;
void host_pages_free(void* ptr, std::size_t bytes) noexcept;

[[nodiscard]] int host_cores() noexcept;
[[nodiscard]] std::uint64_t host_memory_bytes() noexcept;

}  // namespace kvflow
