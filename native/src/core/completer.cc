#include "kvflow/completer.hpp"

namespace kvflow {

void Completer::set_notify(Notify notify) {
  std::lock_guard<std::mutex> lock(mutex_);
  notify_ = std::move(notify);
}

void Completer::post(std::uint64_t id) {
  Notify notify;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    const bool was_empty = ready_.empty();
    ready_.push_back(id);
    if (!was_empty) return;  // a notify for this batch is already on its way
    notify = notify_;
  }
  if (notify) notify();
}

std::vector<std::uint64_t> Completer::drain() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::uint64_t> out;
  out.swap(ready_);
  return out;
}

void Completer::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
  notify_ = nullptr;
}

}  // namespace kvflow
