// The completion channel: backend threads post ids of finished work, the JS
// thread drains them in batches. One notify per batch (when the ready list
// turns non-empty), so 10k completions cost a handful of thread hops.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

namespace kvflow {

class Completer {
 public:
  using Notify = std::function<void()>;

  void set_notify(Notify notify);
  /// Any thread. Ids are events' ids or release tickets (see Device::next_id()).
  void post(std::uint64_t id);
  /// JS thread.
  [[nodiscard]] std::vector<std::uint64_t> drain();
  /// No notify after this returns.
  void close();

 private:
  std::mutex mutex_;
  std::vector<std::uint64_t> ready_;
  Notify notify_;
  bool closed_ = false;
};

}  // namespace kvflow
