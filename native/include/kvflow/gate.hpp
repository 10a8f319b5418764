// A one-shot latch a host thread opens. Streams can be made to wait on it.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>

namespace kvflow {

class Gate {
 public:
  void open();
  [[nodiscard]] bool is_open();
  /// Blocks until opened.
  void wait();

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

using GatePtr = std::shared_ptr<Gate>;

}  // namespace kvflow
