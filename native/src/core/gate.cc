#include "kvflow/gate.hpp"

namespace kvflow {

Gate::Gate() : event_(std::make_shared<EventState>(0)) {}

void Gate::open(ErrorPtr error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (opening_) return;
    opening_ = true;
  }
  // The event completes before the gate reads as open, so whoever sees the
  // wait over sees the error too.
  (void)event_->complete(std::move(error));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = true;
  }
  cv_.notify_all();
}

bool Gate::is_open() {
  std::lock_guard<std::mutex> lock(mutex_);
  return open_;
}

void Gate::wait() {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [this] { return open_; });
}

}  // namespace kvflow
