// A kvflow Stream on a cudaStream_t: copies become cudaMemcpyAsync (or host
// functions where CUDA would block the JS thread), events become cudaEvents
// completed by the device's poller, and the buffers of every operation stay
// alive until an event recorded after it completed.
#pragma once

#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

#include "kvflow/device.hpp"
#include "kvflow/stream.hpp"
#include "poller.hpp"

namespace kvflow::cuda {

class EventPool;

/// How long close() waits for a stream's work before it gives up on it.
inline constexpr std::chrono::seconds kStreamCloseWait{10};

/// The part of a stream the poller shares: held by shared_ptr from the stream
/// and from the poller's entries, so a stream closed and destroyed while the
/// poller still holds one of its events or sweeps is never freed under it.
class StreamCore : public std::enable_shared_from_this<StreamCore> {
 public:
  StreamCore(int ordinal, cudaStream_t stream, bool owned, std::shared_ptr<EventPool> events,
             std::shared_ptr<Poller> poller);

  /// Poller thread: the event recorded after operation `covers` completed.
  /// Releases what those operations held and, for a sweep, records the next
  /// sweep when newer operations still hold buffers.
  void on_completed(std::uint64_t covers, bool sweep) noexcept;

  /// What operations hold until an event recorded after them completes.
  struct Retained {
    std::uint64_t seq = 0;
    std::vector<std::shared_ptr<const void>> hold;
  };

  const int ordinal;
  const cudaStream_t stream;
  const bool owned;  // false for a wrapped stream, which kvflow never destroys
  const std::shared_ptr<EventPool> events;
  const std::shared_ptr<Poller> poller;

  std::mutex mutex;  // guards everything below; the JS thread and the poller take it
  std::uint64_t op_seq = 0;            // sequence number of the last operation enqueued
  std::list<Retained> retained;        // oldest first
  bool sweep_outstanding = false;      // at most one internal sweep event per stream
  std::uint64_t events_outstanding = 0;  // recorded EventStates not completed yet
  ErrorPtr injected;                   // the next operation fails with it and does nothing
  std::vector<FailureSource> failures; // since the last record(), in operation order
  std::vector<GatePtr> gates;          // gates waited on, opened by close(abandon)
  bool closed = false;

  /// Records a sweep when operations hold buffers and none is outstanding, so
  /// buffers are released even if the user never records an event. Caller
  /// holds `mutex`. Never throws: without a sweep the buffers wait for the next
  /// event or close().
  void arm_sweep_locked() noexcept;
};

class CudaStream final : public Stream {
 public:
  /// A new non-blocking stream; priority 0 is normal, 1 is high.
  [[nodiscard]] static std::unique_ptr<Stream> create(Device& device, int ordinal, int priority,
                                                      std::shared_ptr<EventPool> events,
                                                      std::shared_ptr<Poller> poller);
  /// A stream kvflow uses but never destroys; 0 is the legacy default stream.
  [[nodiscard]] static std::unique_ptr<Stream> wrap(Device& device, int ordinal, std::uintptr_t handle,
                                                    std::shared_ptr<EventPool> events,
                                                    std::shared_ptr<Poller> poller);

  CudaStream(Device& device, std::shared_ptr<StreamCore> core);
  ~CudaStream() override;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  void copy(const BufferPtr& dst, std::size_t dst_offset, const BufferPtr& src, std::size_t src_offset,
            std::size_t bytes) override;
  [[nodiscard]] EventPtr record() override;
  void wait(const EventPtr& event) override;
  [[nodiscard]] bool idle() override;
  [[nodiscard]] std::uintptr_t handle() const noexcept override;
  void wait_gate(const GatePtr& gate) override;
  void inject_failure(ErrorPtr error) override;
  void close(bool abandon) override;

 private:
  // Caller holds the mutex. Starts an operation: its sequence number, or 0 when
  // an injected failure takes its place (the operation is then not performed).
  [[nodiscard]] std::uint64_t begin_op_locked();
  // Waits, bounded, for the work enqueued so far; true when it finished.
  [[nodiscard]] bool drain(std::chrono::milliseconds budget) noexcept;

  Device& device_;  // for bounce buffers and event ids; used only while the stream is open
  std::shared_ptr<StreamCore> core_;
};

}  // namespace kvflow::cuda
