// A one-shot latch a host thread opens. Streams can be made to wait on it.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>

#include "kvflow/error.hpp"
#include "kvflow/event.hpp"

namespace kvflow {

class Gate {
 public:
  Gate();
  /// Opens the gate; with an error, the stream that waited on it fails its
  /// next event with that error (the wait still ends). Only the first call counts.
  void open(ErrorPtr error = nullptr);
  [[nodiscard]] bool is_open();
  /// Blocks until opened.
  void wait();
  /// Completed when the gate opens, with its error: what a stream's next
  /// event inherits.
  [[nodiscard]] const EventPtr& event() const noexcept { return event_; }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool opening_ = false;  // the first open() won
  bool open_ = false;     // set once the event is complete: waiters see its error
  EventPtr event_;
};

using GatePtr = std::shared_ptr<Gate>;

}  // namespace kvflow
