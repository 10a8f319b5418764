// What the engines share: requests and the tasks they are split into, the
// queues of tasks not yet started, one per priority (with the test hooks'
// hold and fault), and the thread that runs blocking host work.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "io/priority_queues.hpp"
#include "kvflow/io.hpp"

namespace kvflow::io {

/// One read or write. Its tasks share it; the last task to finish completes
/// the event, exactly once, with the first failure.
struct Request {
  bool is_read = true;
  Priority priority = Priority::kHigh;
  FilePtr file;
  BufferPtr buffer;
  std::uint64_t offset = 0;  // in the file
  std::size_t bytes = 0;
  EventPtr event;
  Completer* completer = nullptr;
  Engine::Done done;
  std::atomic<std::size_t> remaining{0};
  std::atomic<bool> failed{false};  // later tasks skip their IO
  std::mutex mutex;
  ErrorPtr error;  // the first failure

  /// Any thread, once per task; `error` null for success or a skipped task.
  void finish_task(ErrorPtr error) noexcept;
  /// Completes the event (and calls `done`) with the recorded failure.
  void complete() noexcept;
};

/// A piece of a request that one thread (or one ring entry) moves.
struct Task {
  std::shared_ptr<Request> request;
  char* mem = nullptr;
  std::uint64_t offset = 0;  // in the file
  std::size_t len = 0;
  bool direct = false;  // through the O_DIRECT fd
  int fault = 0;        // errno injected by the test hook: fail without IO
};

/// Splits a request into tasks of at most `task_size` bytes: the aligned
/// middle through the O_DIRECT fd where the file has one and the memory is
/// aligned like the file offset, the unaligned head and tail (or all of it)
/// through the buffered fd, so partial blocks never need a read-modify-write.
[[nodiscard]] std::vector<Task> plan_tasks(const std::shared_ptr<Request>& request, char* mem, std::size_t task_size);

/// The counters behind EngineStats.
struct Counters {
  std::atomic<std::uint64_t> direct_bytes{0};
  std::atomic<std::uint64_t> buffered_bytes{0};
  std::atomic<std::uint64_t> failed_tasks{0};
  std::atomic<std::uint64_t> high_tasks{0};
  std::atomic<std::uint64_t> low_tasks{0};

  void moved(bool direct, std::size_t bytes) noexcept {
    (direct ? direct_bytes : buffered_bytes).fetch_add(bytes, std::memory_order_relaxed);
  }
};

/// Moves a task's bytes with pread/pwrite on the calling thread.
[[nodiscard]] ErrorPtr transfer_sync(const Task& task, Counters& counters);

/// Runs a task taken from the queue: skips it when its request already
/// failed, fails it when a fault was injected, else transfers. Never throws.
void run_task(const Task& task, Counters& counters) noexcept;

/// "short read: N bytes past end of file PATH (...)": reading past the end is
/// an error, never zeros.
[[nodiscard]] ErrorPtr short_read_error(const Request& request);
/// A write that moved nothing without an errno.
[[nodiscard]] ErrorPtr no_progress_error(const Request& request, std::uint64_t offset, std::size_t bytes);

/// Joins a thread, or detaches it when called on that thread itself.
void join_thread(std::thread& thread) noexcept;

struct Engine::State {
  Completer* completer = nullptr;
  IdSource next_id;
  Counters counters;

  std::mutex mutex;
  std::condition_variable cv;  // posix workers wait here for tasks
  PriorityQueues<Task> queues;  // tasks not yet started
  unsigned holds = 0;
  bool stopping = false;
  bool abandon = false;
  std::uint64_t fault_countdown = 0;
  int fault_errno = 0;

  struct Job {
    std::function<void()> work;
    EventPtr event;
  };
  std::mutex jobs_mutex;
  std::condition_variable jobs_cv;
  std::deque<Job> jobs;
  bool jobs_stopping = false;
  std::thread control;

  /// Takes the next task that may start (the oldest high one, or the oldest
  /// low one when no high one is queued or kHighTasksPerLow highs went
  /// first), marking an injected fault on it. With `wait`, blocks until one
  /// may start; returns false once stopping and nothing is left to run.
  /// Without, returns false when none may start now.
  bool take(Task& out, bool wait);
  /// True once stopping and the queues hold nothing more to run.
  bool drained();
  /// Whether any task is queued. Call with `mutex` held.
  [[nodiscard]] bool queued() const noexcept { return !queues.empty(); }
  void control_loop() noexcept;
};

}  // namespace kvflow::io
