// cudaEvent_t objects are reused (creating one costs a driver call), and the
// device must find the cudaEvent_t behind an EventState to make another stream
// wait on it on the GPU. EventPool does both: it hands out timing-free events
// and remembers which EventState owns which, until that EventState dies.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "kvflow/event.hpp"

namespace kvflow::cuda {

class EventPool : public std::enable_shared_from_this<EventPool> {
 public:
  explicit EventPool(int ordinal) : ordinal_(ordinal) {}
  ~EventPool();
  EventPool(const EventPool&) = delete;
  EventPool& operator=(const EventPool&) = delete;

  /// A cudaEvent_t of this device, created with cudaEventDisableTiming
  /// (`timed`: with timing, from a pool of its own). Throws ERR_CUDA.
  [[nodiscard]] cudaEvent_t acquire(bool timed = false);
  /// Any thread. Back to the pool it came from, or destroyed once the pool is closed.
  void release(cudaEvent_t event, bool timed = false) noexcept;

  /// An EventState that owns `event` (already recorded by the caller): when the
  /// last EventPtr goes, the cudaEvent_t returns to the pool. Until then no
  /// other EventState or sweep can be handed the same cudaEvent_t, so a stream
  /// told to wait on it never waits on someone else's record.
  /// `timed`: `event` came from acquire(true); the EventState is marked timed.
  /// `sources`: what can fail the event, as its stream knew when it was
  /// recorded (StreamCore::FailureChain, opaque here; null when nothing can):
  /// a stream that waits on the event while it is pending lets its host
  /// calls judge it before the poller completes it. Dropped with the event,
  /// or by drop_sources(). One lock and one map entry per event.
  [[nodiscard]] EventPtr adopt(std::uint64_t id, cudaEvent_t event, bool timed = false,
                               std::shared_ptr<const void> sources = nullptr);
  /// An event of ours: its cudaEvent_t (null once retired) and its sources (see adopt()).
  struct Owned {
    cudaEvent_t event = nullptr;
    std::shared_ptr<const void> sources;
  };
  /// A stream's wait on an EventState made by adopt() that was pending when
  /// the caller looked: nullopt when it is not one of ours; otherwise its
  /// sources and, unless it was retired meanwhile (then it is complete and
  /// the returned event is null: the caller reads its status again),
  /// `stream` made to wait on its cudaEvent_t. The wait is enqueued under the
  /// pool's lock, so that retire() cannot hand the cudaEvent_t to another
  /// record between the lookup and the wait. Throws ERR_CUDA.
  [[nodiscard]] std::optional<Owned> wait_on(const EventState* state, cudaStream_t stream);
  /// Poller, after complete(): drops the event's sources and returns its
  /// cudaEvent_t to the pool now (a completed event is never waited on on
  /// the GPU, and its time was read), not when its last EventPtr goes, which
  /// for a user's event is when its JS object is garbage collected.
  void retire(const EventState* state) noexcept;
  /// Drops an event's sources once it completed (call after complete()).
  void drop_sources(const EventState* state) noexcept;

  /// Destroys the pooled events; events still owned are destroyed when released.
  void close() noexcept;

 private:
  // Deleter of adopted EventStates; holds the pool so it outlives them.
  struct Deleter {
    std::shared_ptr<EventPool> pool;
    cudaEvent_t event;
    bool timed;
    void operator()(EventState* state) const noexcept;
  };
  // Forgets `state`; false when its cudaEvent_t was retired (already back in the pool).
  bool forget(const EventState* state) noexcept;

  const int ordinal_;
  std::mutex mutex_;
  std::vector<cudaEvent_t> free_;
  std::vector<cudaEvent_t> timed_free_;
  std::unordered_map<const EventState*, Owned> owners_;
  bool closed_ = false;
};

}  // namespace kvflow::cuda
