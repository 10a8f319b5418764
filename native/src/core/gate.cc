#include "kvflow/gate.hpp"

namespace kvflow {

void Gate::open() {
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
