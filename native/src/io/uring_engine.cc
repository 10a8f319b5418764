// The io_uring engine: one thread owns a ring, keeps up to queue_depth tasks
// in it and reaps their completions; an eventfd polled through the same ring
// wakes that thread when tasks arrive. Same contract as the posix engine with
// one thread and a syscall per batch instead of one per task.
#include "io/engine_state.hpp"

#if __has_include(<linux/io_uring.h>)

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <chrono>
#include <deque>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "io/io_error.hpp"
#include "io/uring_ring.hpp"

namespace kvflow::io {

namespace {

constexpr std::uint64_t kWakeTag = 0;  // task slots are tagged index + 1

class UringEngine final : public Engine {
 public:
  UringEngine(const EngineOptions& options, Completer& completer, IdSource next_id)
      : Engine(options, completer, std::move(next_id)), ring_(std::bit_ceil(options.queue_depth + 1)) {
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_fd_ < 0) KVFLOW_FAIL(kUnsupported, "io_uring engine: eventfd failed: " + errno_text(errno));
    slots_.resize(options.queue_depth);
    for (unsigned i = options.queue_depth; i > 0; --i) free_.push_back(i - 1);
    start();
  }

  ~UringEngine() override {
    close(false);
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }

 protected:
  void start() override {
    try {
      thread_ = std::thread([this] { loop(); });
    } catch (const std::system_error& e) {
      close(true);
      KVFLOW_FAIL(kOutOfMemory, std::string("cannot start the io_uring engine's thread: ") + e.what());
    }
  }

  void wake() override {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof one);
    state_->cv.notify_all();  // for the thread once it only fails tasks (see fail_everything)
  }

  void join() override { join_thread(thread_); }

 private:
  /// A task in the ring, and how far it got.
  struct Slot {
    Task task;
    std::size_t moved = 0;
    bool direct = false;
  };

  void loop() noexcept;
  [[nodiscard]] bool prepare(unsigned index) noexcept;
  void on_completion(unsigned index, int res) noexcept;
  void release(unsigned index, ErrorPtr error) noexcept;
  void fail_everything(int err) noexcept;

  // Memory and files of tasks failed while the kernel may still move their
  // bytes (a broken ring): declared before the ring so that they are freed
  // only after it is closed. Written by the ring thread only.
  std::vector<std::shared_ptr<const void>> kept_;
  Ring ring_;
  int wake_fd_ = -1;
  std::thread thread_;
  // Owned by the ring thread.
  std::vector<Slot> slots_;
  std::vector<unsigned> free_;
  std::deque<unsigned> again_;  // slots to submit again: partial transfer, EINTR, EAGAIN
  unsigned in_ring_ = 0;        // slots whose entry the kernel has or will have
};

void UringEngine::loop() noexcept {
  bool armed = false;  // the eventfd poll is in the ring
  for (;;) {
    if (!armed) {
      if (io_uring_sqe* sqe = ring_.next_sqe()) {
        sqe->opcode = IORING_OP_POLL_ADD;
        sqe->fd = wake_fd_;
        sqe->poll32_events = POLLIN;
        sqe->user_data = kWakeTag;
        armed = true;
      }
    }
    while (!again_.empty() && prepare(again_.front())) again_.pop_front();
    while (!free_.empty()) {
      Task task;
      if (!state_->take(task, false)) break;
      if (task.fault != 0 || task.request->failed.load(std::memory_order_acquire)) {
        run_task(task, state_->counters);  // fails or skips without IO
        continue;
      }
      const unsigned index = free_.back();
      free_.pop_back();
      const bool direct = task.direct;
      slots_[index] = Slot{std::move(task), 0, direct};
      if (!prepare(index)) again_.push_back(index);
    }
    if (in_ring_ == 0 && again_.empty() && state_->drained()) return;
    const int r = ring_.submit_and_wait(1);
    if (r == -EAGAIN || r == -EBUSY) {
      // The kernel is short of memory or its completion queue is full: reap, then retry shortly.
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    } else if (r < 0 && r != -EINTR) {
      fail_everything(-r);
      return;
    }
    ring_.reap([&](std::uint64_t tag, int res) {
      if (tag == kWakeTag) {
        armed = false;
        std::uint64_t count;
        [[maybe_unused]] const ssize_t n = ::read(wake_fd_, &count, sizeof count);
        return;
      }
      on_completion(static_cast<unsigned>(tag - 1), res);
    });
  }
}

bool UringEngine::prepare(unsigned index) noexcept {
  io_uring_sqe* sqe = ring_.next_sqe();
  if (sqe == nullptr) return false;
  const Slot& s = slots_[index];
  const Request& r = *s.task.request;
  sqe->opcode = r.is_read ? IORING_OP_READ : IORING_OP_WRITE;
  sqe->fd = r.file->fd(s.direct);
  sqe->off = s.task.offset + s.moved;
  sqe->addr = reinterpret_cast<std::uintptr_t>(s.task.mem + s.moved);
  sqe->len = static_cast<unsigned>(s.task.len - s.moved);
  sqe->user_data = index + 1;
  ++in_ring_;
  return true;
}

void UringEngine::on_completion(unsigned index, int res) noexcept {
  --in_ring_;
  Slot& s = slots_[index];
  const Request& r = *s.task.request;
  const std::uint64_t at = s.task.offset + s.moved;
  const std::size_t left = s.task.len - s.moved;
  if (res == -EINTR || res == -EAGAIN) {
    again_.push_back(index);
  } else if (res < 0) {
    release(index, transfer_failure(r.is_read, r.file->path(), at, left, s.direct, -res, __FILE__, __LINE__));
  } else if (res == 0) {
    release(index, r.is_read ? short_read_error(r) : no_progress_error(r, at, left));
  } else {
    state_->counters.moved(s.direct, static_cast<std::size_t>(res));
    s.moved += static_cast<std::size_t>(res);
    if (s.moved == s.task.len || r.failed.load(std::memory_order_acquire)) {
      release(index, nullptr);
    } else {
      // A partial transfer leaves the rest unaligned (end of file, or a full disk): finish it buffered.
      s.direct = false;
      again_.push_back(index);
    }
  }
}

void UringEngine::release(unsigned index, ErrorPtr error) noexcept {
  if (error) state_->counters.failed_tasks.fetch_add(1, std::memory_order_relaxed);
  Task task = std::move(slots_[index].task);
  slots_[index] = Slot{};
  free_.push_back(index);
  task.request->finish_task(std::move(error));
}

void UringEngine::fail_everything(int err) noexcept {
  // io_uring_enter failing otherwise than EINTR/EAGAIN/EBUSY means the ring
  // is unusable: fail what it held and whatever comes, never leave a request hanging.
  const auto broken = std::make_shared<const Error>(
      ErrorCode::kIo, "io_uring_enter failed: " + errno_text(err) + "; the io_uring engine cannot continue (use 'posix')",
      __FILE__, __LINE__, err);
  for (unsigned i = 0; i < slots_.size(); ++i) {
    const std::shared_ptr<Request>& r = slots_[i].task.request;
    if (!r) continue;
    try {
      kept_.push_back(r->buffer);
      kept_.push_back(r->file);
    } catch (...) {
      // Out of memory here: the request still fails; its memory may then be reused early.
    }
    release(i, broken);
  }
  again_.clear();
  in_ring_ = 0;
  Task task;
  while (state_->take(task, true)) {
    task.request->finish_task(broken);
    task = Task{};
  }
}

}  // namespace

EngineProbe probe_io_uring() {
  try {
    Ring ring(4);
    return {true, "io_uring works here (ring set up; READ, WRITE and POLL_ADD supported)"};
  } catch (const std::exception& e) {
    return {false, e.what()};
  }
}

EnginePtr make_uring_engine(const EngineOptions& options, Completer& completer, Engine::IdSource next_id) {
  return std::make_shared<UringEngine>(options, completer, std::move(next_id));
}

}  // namespace kvflow::io

#else  // no <linux/io_uring.h> at build time

namespace kvflow::io {

namespace {
constexpr const char* kNoHeader =
    "io_uring is unavailable: this kvflow addon was built without <linux/io_uring.h> (install the kernel headers, "
    "e.g. linux-libc-dev, and rebuild)";
}

EngineProbe probe_io_uring() { return {false, kNoHeader}; }

EnginePtr make_uring_engine(const EngineOptions&, Completer&, Engine::IdSource) { KVFLOW_FAIL(kUnsupported, kNoHeader); }

}  // namespace kvflow::io

#endif
