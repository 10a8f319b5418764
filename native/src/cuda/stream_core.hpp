// The part of a CUDA stream that the device's poller shares with it: the
// buffers operations hold, the pending failures and the sweep bookkeeping.
// Split from CudaStream so its lifetime can outlast the stream object.
#pragma once

#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

#include "kvflow/error.hpp"
#include "kvflow/gate.hpp"
#include "poller.hpp"

namespace kvflow::cuda {

/// How long after an operation that holds buffers its stream's sweep is
/// recorded (see StreamCore::arm_sweep_locked), when no event recorded in
/// between covers it. The sweep is enqueued behind whatever the stream got
/// in the meantime, so a release with no event after it can wait that long,
/// plus the poller's wake-up, plus the work enqueued in those 100 us (a long
/// kernel or copy right after a small copy holds the small copy's buffers
/// until it ends). Memory is held longer, never freed early.
inline constexpr std::chrono::microseconds kSweepDelay{100};

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
  /// Releases what those operations held and, for a sweep, asks for the next
  /// sweep when newer operations still hold buffers.
  void on_completed(std::uint64_t covers, bool sweep) noexcept;
  /// Poller thread: a deferred sweep came due; records it unless an event
  /// recorded since covers every operation that holds buffers.
  void on_sweep_due() noexcept;

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
  bool sweep_outstanding = false;      // at most one internal sweep per stream, deferred or recorded
  std::uint64_t covered = 0;           // op_seq when the latest event (a user's or a sweep) was recorded
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

  /// Asks the poller for a sweep, kSweepDelay from now, when operations no
  /// recorded event covers hold buffers and no sweep is outstanding, so
  /// buffers are released even if the user never records an event. Caller
  /// holds `mutex`. Never throws: without a sweep the buffers wait for the next
  /// event or close().
  ///
  /// Deferred rather than recorded at once: a small copy followed by
  /// record() (a round trip) then records one event, not two, and a stream
  /// of copies enqueued back to back gets one sweep per kSweepDelay rather
  /// than one each time the previous sweep completed, which, with the poller
  /// seeing completions within microseconds, was nearly one per copy,
  /// recorded by the poller on the stream the caller was enqueuing on.
  void arm_sweep_locked() noexcept;

 private:
  // Records the sweep now; caller holds `mutex`. Never throws.
  void record_sweep_locked() noexcept;
  [[nodiscard]] bool needs_sweep_locked() const noexcept {
    return !closed && !retained.empty() && retained.back().seq > covered;
  }
};

}  // namespace kvflow::cuda
