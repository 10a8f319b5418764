// One thread per CUDA device turns finished cudaEvents into completions: it
// queries the events of recorded EventStates and of internal sweeps, completes
// the EventStates (posting their ids to the Completer) and lets streams release
// the buffers their finished operations held. Nothing on the JS thread or a
// libuv worker ever blocks on the GPU.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kvflow/completer.hpp"
#include "kvflow/event.hpp"

namespace kvflow::cuda {

class EventPool;
class StreamCore;

/// A failure the next recorded event of a stream reports: known now (an
/// injected failure, a waited event that had already failed) or the failure of
/// a waited event once it completes.
struct FailureSource {
  ErrorPtr error;
  EventPtr event;
  // For a pending event waited on: its own sources (a StreamCore::FailureChain)
  // so that host calls can judge it before the poller completes it. Weak: the
  // event pool drops them when the event completes (then its status says).
  std::weak_ptr<const void> early{};
};

/// What the poller watches: a recorded event (a user's, or an internal
/// sweep's), or, with no event, a sweep that `stream` asked for, due at `due`
/// (StreamCore::arm_sweep_locked: sweeps are deferred, so that an event the
/// caller records meanwhile makes one needless, and one stream's sweeps come
/// at most once per kSweepDelay).
struct PollEntry {
  cudaEvent_t event = nullptr;  // recorded on `stream`; null: a deferred sweep
  EventPtr user;                // null: an internal sweep, whose event goes back to the pool
  std::shared_ptr<StreamCore> stream;
  std::uint64_t covers = 0;             // the stream's operations up to this sequence number
  std::vector<FailureSource> failures;  // user events only, in operation order
  std::chrono::steady_clock::time_point due{};  // a deferred sweep: when it is recorded
};

class Poller {
 public:
  /// `idle_spin`: with nothing left to poll, how long the thread keeps
  /// looking for new work (no lock taken) before it sleeps; 0 sleeps at once.
  Poller(int ordinal, Completer& completer, std::shared_ptr<EventPool> events, std::chrono::microseconds idle_spin);
  ~Poller();
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

  /// Any thread. Throws kDisposed once the poller stopped.
  void add(PollEntry entry);
  /// Test hook: nothing is polled until the returned function is called.
  [[nodiscard]] std::function<void()> hold();

  /// Completes what is outstanding, waiting at most `budget`; what is still
  /// pending then is completed with ERR_ABORTED. Idempotent; joins the thread.
  /// After this the poller never touches the Completer again.
  void stop(std::chrono::milliseconds budget) noexcept;

 private:
  using Clock = std::chrono::steady_clock;

  void run() noexcept;
  // Finishes what completed, in order; true when an event did (a deferred
  // sweep coming due is not progress: it must not keep the thread spinning).
  bool poll_once(std::vector<PollEntry>& active) noexcept;
  [[nodiscard]] bool try_finish(PollEntry& entry) noexcept;
  // A deferred sweep: asks its stream for the sweep once due; true when it did.
  [[nodiscard]] static bool try_sweep(PollEntry& entry) noexcept;
  void finish(PollEntry& entry, ErrorPtr error) noexcept;
  void abort_all(std::vector<PollEntry>& entries) noexcept;
  // Timed events: the completion time of `event` (complete, timing-enabled)
  // in milliseconds on the device's clock, from GPU timestamps: the elapsed
  // time since a reference event (recorded on a stream of the poller's own),
  // plus the reference's time. The first reference is waited for in the
  // constructor; later ones move it on once an event is more than a second
  // past it (so the float elapsed time keeps sub-microsecond resolution),
  // without waiting: a next reference is taken once it completed. NaN when
  // CUDA refused.
  double time_of(cudaEvent_t event) noexcept;
  bool rebase() noexcept;
  void move_reference() noexcept;

  const int ordinal_;
  Completer& completer_;
  std::shared_ptr<EventPool> events_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<PollEntry> incoming_;
  std::atomic<bool> has_incoming_{false};  // incoming_ is not empty (read without the mutex while spinning)
  const std::chrono::microseconds idle_spin_;
  const std::chrono::nanoseconds poll_pause_;  // between query rounds while work is fresh (KVFLOW_POLL_PAUSE_NS)
  const bool poll_every_;                       // query every entry, not each stream's first pending (KVFLOW_POLL_EVERY)
  std::vector<const StreamCore*> blocked_;      // poll_once: streams with an unfinished entry this round (this thread only)
  bool stopping_ = false;
  std::atomic<bool> stop_asked_{false};  // stopping_, read without the mutex between polls
  std::shared_ptr<std::atomic<int>> held_ = std::make_shared<std::atomic<int>>(0);
  bool stopped_ = false;
  Clock::time_point deadline_{};
  std::thread thread_;
  // The timing reference (poller thread only, after the constructor).
  cudaStream_t clock_stream_ = nullptr;
  cudaEvent_t clock_event_ = nullptr;
  cudaEvent_t next_clock_ = nullptr;  // recorded, not yet taken as the reference
  double clock_ms_ = 0;
};

}  // namespace kvflow::cuda
