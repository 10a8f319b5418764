// The part of a CUDA stream that the device's poller shares with it: the
// buffers operations hold, the pending failures and the sweep bookkeeping.
// Split from CudaStream so its lifetime can outlast the stream object.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

#include "kvflow/error.hpp"
#include "kvflow/gate.hpp"
#include "poller.hpp"

namespace kvflow::cuda {

class EventPool;
class FlagPool;

/// The part of a stream the poller shares: held by shared_ptr from the stream
/// and from the poller's entries, so a stream closed and destroyed while the
/// poller still holds one of its events or sweeps is never freed under it.
class StreamCore : public std::enable_shared_from_this<StreamCore> {
 public:
  StreamCore(int ordinal, cudaStream_t stream, bool owned, std::shared_ptr<EventPool> events,
             std::shared_ptr<Poller> poller, std::shared_ptr<FlagPool> flags);

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
  const std::shared_ptr<FlagPool> flags;  // set: gates are waited on with cuStreamWaitValue32

  std::mutex mutex;  // guards everything below; the JS thread and the poller take it
  std::uint64_t op_seq = 0;            // sequence number of the last operation enqueued
  std::list<Retained> retained;        // oldest first
  bool sweep_outstanding = false;      // at most one internal sweep event per stream
  std::uint64_t events_outstanding = 0;  // recorded EventStates not completed yet
  ErrorPtr injected;                   // the next operation fails with it and does nothing
  std::vector<FailureSource> failures; // since the last record(), in operation order
  // failures[0, chained) as segments shared by the host calls of this span:
  // each host call holds the chain as it was, without copying the list.
  struct FailureChain {
    std::vector<FailureSource> items;
    std::shared_ptr<const FailureChain> prev;
  };
  std::shared_ptr<const FailureChain> failure_chain;
  std::size_t chained = 0;

  /// The span's failures so far, shared; call with the mutex held.
  std::shared_ptr<const FailureChain> failures_so_far_locked() {
    if (chained < failures.size()) {
      auto seg = std::make_shared<FailureChain>();
      seg->items.assign(failures.begin() + static_cast<std::ptrdiff_t>(chained), failures.end());
      seg->prev = std::move(failure_chain);
      failure_chain = std::move(seg);
      chained = failures.size();
    }
    return failure_chain;
  }
  /// Ends the span: failures were moved to an event (or dropped).
  void clear_failures_locked() {
    failures.clear();
    failure_chain.reset();
    chained = 0;
  }
  std::vector<GatePtr> gates;          // gates waited on, opened by close(abandon)
  bool closed = false;

  /// Records a sweep when operations hold buffers and none is outstanding, so
  /// buffers are released even if the user never records an event. Caller
  /// holds `mutex`. Never throws: without a sweep the buffers wait for the next
  /// event or close().
  void arm_sweep_locked() noexcept;
};

}  // namespace kvflow::cuda
