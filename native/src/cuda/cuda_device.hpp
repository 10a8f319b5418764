// The CUDA backend's Device: device memory from cudaMalloc, pinned memory from
// cudaHostAlloc through the core's PinnedPool, streams on cudaStream_t and one
// completion poller thread. open_cuda_device() (device.hpp) makes one.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>

#include "event_pool.hpp"
#include "kvflow/device.hpp"
#include "poller.hpp"
#include "wait_value.hpp"

namespace kvflow::cuda {

/// How long close() lets the poller finish outstanding events before it
/// aborts them (streams, closed first, have drained by then).
inline constexpr std::chrono::seconds kPollerDrainWait{5};

class CudaDevice final : public Device {
 public:
  explicit CudaDevice(const DeviceOptions& options);
  ~CudaDevice() override;

  [[nodiscard]] DeviceInfo info() override;
  [[nodiscard]] BufferPtr alloc_device(std::size_t bytes) override;
  [[nodiscard]] BufferPtr wrap_device(std::uintptr_t address, std::size_t bytes) override;
  [[nodiscard]] std::unique_ptr<Stream> create_stream(int priority) override;
  [[nodiscard]] std::unique_ptr<Stream> wrap_stream(std::uintptr_t handle) override;
  [[nodiscard]] std::unique_ptr<ReferenceModel> create_reference(const ModelShape& shape) override;
  void bind_thread() override { (void)cudaSetDevice(ordinal_); }
  [[nodiscard]] std::function<void()> hold_completions() override { return poller_->hold(); }
  void close() override;

 private:
  void check_open() const;
  // Throws kInvalidArg unless `address` is device (or managed) memory of this device.
  void check_device_address(std::uintptr_t address, const char* which) const;

  const int ordinal_;
  const GateChoice gate_;  // how streams wait on gates (KVFLOW_CUDA_GATE)
  std::shared_ptr<EventPool> events_;
  std::shared_ptr<Poller> poller_;
  std::atomic<bool> closed_{false};
};

}  // namespace kvflow::cuda
