// Completion state of one point in a stream. The backend completes it exactly
// once; the JS side "watches" it when someone awaits it, and only watched
// events are delivered through the completion channel.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <vector>

#include "kvflow/error.hpp"

namespace kvflow {

enum class EventStatus : int { kPending = 0, kOk = 1, kFailed = 2 };

class EventState {
 public:
  explicit EventState(std::uint64_t id) : id_(id) {}

  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }

  /// Backend side, any thread, exactly once. Returns true when a watcher must
  /// be told (the caller then posts id() to the Completer).
  [[nodiscard]] bool complete(ErrorPtr error) noexcept;

  /// JS side: marks the event watched and returns its status. When this
  /// returns kPending, the completion will be posted; otherwise it will not.
  [[nodiscard]] EventStatus watch() noexcept;
  /// JS side: watch(), after looking for the completion for up to `spin`
  /// first (a short operation alone on its stream completes within that: the
  /// caller then needs no notice at all). Blocks the calling thread that long
  /// at most; 0 is watch().
  [[nodiscard]] EventStatus watch_spin(std::chrono::nanoseconds spin) noexcept;

  [[nodiscard]] EventStatus status() const noexcept;
  /// The failure, once status() is kFailed.
  [[nodiscard]] ErrorPtr error() const noexcept;

  /// Runs `fn` with the event's error once it completes: at once on this
  /// thread when it already has, else on the completing thread. `fn` must be
  /// quick and must not throw (native pipelines chain work with it).
  void then(std::function<void(const ErrorPtr&)> fn);

  /// Blocking wait, for teardown paths only. Returns false on timeout.
  bool wait_for(std::chrono::milliseconds timeout);

  /// A timed event carries the time it completed at, in milliseconds on a
  /// clock of its device (the GPU's own on CUDA, the host's steady clock on
  /// the CPU backend): set by the backend before the event is handed out.
  void mark_timed() noexcept { timed_ = true; }
  [[nodiscard]] bool timed() const noexcept { return timed_; }
  /// Backend side, before complete(): the completion time (NaN: unknown).
  void set_time_ms(double ms) noexcept { time_ms_ = ms; }
  /// Once status() is not kPending: the completion time, NaN when untimed or unknown.
  [[nodiscard]] double time_ms() const noexcept { return time_ms_; }

 private:
  static constexpr int kDone = 1;
  static constexpr int kWatched = 2;
  std::uint64_t id_;
  std::atomic<int> bits_{0};
  ErrorPtr error_;  // written before kDone is published
  bool timed_ = false;
  double time_ms_ = std::numeric_limits<double>::quiet_NaN();  // written before kDone is published
  std::vector<std::function<void(const ErrorPtr&)>> then_;  // guarded by mutex_
  std::mutex mutex_;
  std::condition_variable cv_;
};

using EventPtr = std::shared_ptr<EventState>;

}  // namespace kvflow
