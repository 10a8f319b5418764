#include "kvflow/event.hpp"

#include <thread>

namespace kvflow {

bool EventState::complete(ErrorPtr error) noexcept {
  std::vector<std::function<void(const ErrorPtr&)>> then;
  int before = 0;
  {
    // kDone is published under the mutex so that then() never queues a
    // callback after the list was taken.
    std::lock_guard<std::mutex> lock(mutex_);
    if ((bits_.load(std::memory_order_acquire) & kDone) != 0) return false;
    error_ = std::move(error);
    then.swap(then_);
    before = bits_.fetch_or(kDone, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  for (auto& fn : then) {
    try {
      fn(error_);
    } catch (...) {
    }
  }
  return (before & kDone) == 0 && (before & kWatched) != 0;
}

void EventState::then(std::function<void(const ErrorPtr&)> fn) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if ((bits_.load(std::memory_order_acquire) & kDone) == 0) {
      then_.push_back(std::move(fn));
      return;
    }
  }
  fn(error_);
}

EventStatus EventState::watch() noexcept {
  const int before = bits_.fetch_or(kWatched, std::memory_order_acq_rel);
  if ((before & kDone) == 0) return EventStatus::kPending;
  return status();
}

EventStatus EventState::watch_spin(std::chrono::nanoseconds spin) noexcept {
  if (spin.count() > 0 && (bits_.load(std::memory_order_acquire) & kDone) == 0) {
    // The completing thread must get a core too: a yield every 64 rounds
    // lets it run where cores are few.
    const auto until = std::chrono::steady_clock::now() + spin;
    unsigned rounds = 0;
    do {
      if ((++rounds & 63U) == 0) {
        std::this_thread::yield();
      } else {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        asm volatile("yield");
#endif
      }
    } while ((bits_.load(std::memory_order_acquire) & kDone) == 0 && std::chrono::steady_clock::now() < until);
  }
  return watch();
}

EventStatus EventState::status() const noexcept {
  if ((bits_.load(std::memory_order_acquire) & kDone) == 0) return EventStatus::kPending;
  std::lock_guard<std::mutex> lock(const_cast<std::mutex&>(mutex_));
  return error_ ? EventStatus::kFailed : EventStatus::kOk;
}

ErrorPtr EventState::error() const noexcept {
  std::lock_guard<std::mutex> lock(const_cast<std::mutex&>(mutex_));
  return error_;
}

bool EventState::wait_for(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return cv_.wait_for(lock, timeout, [this] { return (bits_.load(std::memory_order_acquire) & kDone) != 0; });
}

}  // namespace kvflow
