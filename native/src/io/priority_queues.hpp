// The order in which queued IO tasks start (see kvflow::io::Priority): one
// queue per priority, oldest first, highs first, but a waiting low task gets
// its turn after kHighTasksPerLow high ones in a row. No locking: the engine
// holds its mutex around every call.
#pragma once

#include <deque>
#include <utility>
#include <vector>

#include "kvflow/io.hpp"

namespace kvflow::io {

template <class T>
class PriorityQueues {
 public:
  void push(Priority priority, T item) { (priority == Priority::kLow ? low_ : high_).push_back(std::move(item)); }

  [[nodiscard]] bool empty() const noexcept { return high_.empty() && low_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return high_.size() + low_.size(); }

  /// Moves the next item to start into `out` and returns its priority: the
  /// oldest high one, or the oldest low one when no high one is queued or
  /// kHighTasksPerLow highs went first in a row while a low one waited.
  /// Call only when !empty().
  Priority take(T& out) {
    const bool take_low = high_.empty() || (!low_.empty() && high_streak_ >= kHighTasksPerLow);
    std::deque<T>& from = take_low ? low_ : high_;
    out = std::move(from.front());
    from.pop_front();
    high_streak_ = take_low || low_.empty() ? 0 : high_streak_ + 1;
    return take_low ? Priority::kLow : Priority::kHigh;
  }

  /// Everything still queued (highs, then lows, each oldest first); the queues are left empty.
  [[nodiscard]] std::vector<T> drop_all() {
    std::vector<T> out;
    out.reserve(size());
    for (std::deque<T>* q : {&high_, &low_}) {
      for (T& item : *q) out.push_back(std::move(item));
      q->clear();
    }
    high_streak_ = 0;
    return out;
  }

 private:
  std::deque<T> high_;
  std::deque<T> low_;
  unsigned high_streak_ = 0;  // high items taken in a row while a low one waited
};

}  // namespace kvflow::io
