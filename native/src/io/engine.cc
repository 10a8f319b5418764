// The engine contract every engine kind shares: argument checks, splitting
// requests into tasks, completion exactly once, the test hooks, host work on
// a control thread, and an orderly close.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>

#include "io/engine_state.hpp"
#include "io/io_error.hpp"
#include "io/task_split.hpp"
#include "kvflow/checks.hpp"

namespace kvflow::io {

namespace {
constexpr std::size_t kMaxTaskSize = std::size_t{1} << 30;  // io_uring lengths are 32-bit
constexpr unsigned kMaxThreads = 1024;
constexpr unsigned kMaxQueueDepth = 4096;
}  // namespace

const char* engine_kind_name(EngineKind kind) noexcept {
  switch (kind) {
    case EngineKind::kPosix: return "posix";
    case EngineKind::kIoUring: return "io_uring";
  }
  return "unknown";
}

void Request::finish_task(ErrorPtr task_error) noexcept {
  if (task_error) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!error) error = std::move(task_error);
    failed.store(true, std::memory_order_release);
  }
  if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) complete();
}

void Request::complete() noexcept {
  ErrorPtr result;
  {
    std::lock_guard<std::mutex> lock(mutex);
    result = error;
  }
  // Let go of the file and memory before anyone hears of the completion, so
  // an awaited request no longer counts as using its buffer.
  file.reset();
  buffer.reset();
  if (done) {
    try {
      done(result);
    } catch (...) {
    }
  }
  if (event->complete(std::move(result))) completer->post(event->id());
}

std::vector<Task> plan_tasks(const std::shared_ptr<Request>& request, char* mem, std::size_t task_size) {
  const std::vector<TaskSpan> spans = split_tasks(request->offset, request->bytes, reinterpret_cast<std::uintptr_t>(mem),
                                                  task_size, direct_alignment(), request->file->direct());
  std::vector<Task> tasks;
  tasks.reserve(spans.size());
  for (const TaskSpan& s : spans) tasks.push_back(Task{request, mem + (s.offset - request->offset), s.offset, s.len, s.direct, 0});
  return tasks;
}

ErrorPtr short_read_error(const Request& request) {
  std::uint64_t size = 0;
  try {
    size = request.file->size();
  } catch (...) {
  }
  const std::uint64_t end = request.offset + request.bytes;
  const std::uint64_t past = end - std::min(end, std::max(size, request.offset));
  return std::make_shared<const Error>(
      ErrorCode::kIo,
      "short read: " + std::to_string(past) + " bytes past end of file " + request.file->path() + " (read of " +
          std::to_string(request.bytes) + " bytes at offset " + std::to_string(request.offset) + ", the file has " +
          std::to_string(size) + " bytes)",
      __FILE__, __LINE__);
}

ErrorPtr no_progress_error(const Request& request, std::uint64_t offset, std::size_t bytes) {
  return std::make_shared<const Error>(ErrorCode::kIo,
                                       "write of " + std::to_string(bytes) + " bytes at offset " + std::to_string(offset) +
                                           " of " + request.file->path() + " wrote nothing",
                                       __FILE__, __LINE__);
}

ErrorPtr transfer_sync(const Task& task, Counters& counters) {
  const Request& r = *task.request;
  bool direct = task.direct;
  std::size_t moved = 0;
  while (moved < task.len) {
    const int fd = r.file->fd(direct);
    char* p = task.mem + moved;
    const std::size_t n = task.len - moved;
    const auto at = static_cast<off_t>(task.offset + moved);
    const ssize_t got = r.is_read ? ::pread(fd, p, n, at) : ::pwrite(fd, p, n, at);
    if (got < 0) {
      if (errno == EINTR) continue;
      return transfer_failure(r.is_read, r.file->path(), task.offset + moved, n, direct, errno, __FILE__, __LINE__);
    }
    if (got == 0) return r.is_read ? short_read_error(r) : no_progress_error(r, task.offset + moved, n);
    moved += static_cast<std::size_t>(got);
    counters.moved(direct, static_cast<std::size_t>(got));
    // A partial transfer leaves the rest unaligned (end of file, or a full disk): finish it buffered.
    direct = false;
  }
  return nullptr;
}

void run_task(const Task& task, Counters& counters) noexcept {
  Request& r = *task.request;
  if (r.failed.load(std::memory_order_acquire)) {
    r.finish_task(nullptr);
    return;
  }
  ErrorPtr error;
  if (task.fault != 0) {
    error = transfer_failure(r.is_read, r.file->path(), task.offset, task.len, task.direct, task.fault, __FILE__, __LINE__);
  } else {
    try {
      error = transfer_sync(task, counters);
    } catch (...) {
      error = capture_current_exception();
    }
  }
  if (error) counters.failed_tasks.fetch_add(1, std::memory_order_relaxed);
  r.finish_task(std::move(error));
}

void join_thread(std::thread& thread) noexcept {
  if (!thread.joinable()) return;
  try {
    if (thread.get_id() == std::this_thread::get_id()) {
      thread.detach();
    } else {
      thread.join();
    }
  } catch (...) {
  }
}

bool Engine::State::take(Task& out, bool wait) {
  std::unique_lock<std::mutex> lock(mutex);
  auto ready = [this] { return (queued() && (holds == 0 || stopping)) || (stopping && (abandon || !queued())); };
  if (wait) {
    cv.wait(lock, ready);
  }
  if (!queued() || (holds > 0 && !stopping) || (stopping && abandon)) return false;
  // Highs first, but a waiting low gets its turn after kHighTasksPerLow highs
  // in a row, so demotion keeps moving while reads never stop coming.
  const Priority taken = queues.take(out);
  (taken == Priority::kLow ? counters.low_tasks : counters.high_tasks).fetch_add(1, std::memory_order_relaxed);
  if (fault_countdown > 0 && --fault_countdown == 0) out.fault = fault_errno;
  return true;
}

bool Engine::State::drained() {
  std::lock_guard<std::mutex> lock(mutex);
  return stopping && (abandon || !queued());
}

void Engine::State::control_loop() noexcept {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(jobs_mutex);
      jobs_cv.wait(lock, [this] { return jobs_stopping || !jobs.empty(); });
      if (jobs.empty()) return;
      job = std::move(jobs.front());
      jobs.pop_front();
    }
    ErrorPtr error;
    try {
      job.work();
    } catch (...) {
      error = capture_current_exception();
    }
    job.work = nullptr;  // what the work captured goes before the completion is heard of
    if (job.event->complete(std::move(error))) completer->post(job.event->id());
  }
}

Engine::Engine(const EngineOptions& options, Completer& completer, IdSource next_id)
    : options_(options), state_(std::make_shared<State>()) {
  state_->completer = &completer;
  state_->next_id = std::move(next_id);
  try {
    state_->control = std::thread([state = state_.get()] { state->control_loop(); });
  } catch (const std::system_error& e) {
    KVFLOW_FAIL(kOutOfMemory, std::string("cannot start an IO engine thread: ") + e.what());
  }
}

Engine::~Engine() {
  // Subclasses close (their threads use their members); this is the backstop for the control thread.
  {
    std::lock_guard<std::mutex> lock(state_->jobs_mutex);
    state_->jobs_stopping = true;
  }
  state_->jobs_cv.notify_all();
  join_thread(state_->control);
}

EventPtr Engine::read(const FilePtr& file, const BufferPtr& dst, std::size_t dst_offset, std::uint64_t file_offset,
                      std::size_t bytes, Done done, Priority priority) {
  return submit(true, file, dst, dst_offset, file_offset, bytes, std::move(done), priority);
}

EventPtr Engine::write(const FilePtr& file, std::uint64_t file_offset, const BufferPtr& src, std::size_t src_offset,
                       std::size_t bytes, Done done, Priority priority) {
  return submit(false, file, src, src_offset, file_offset, bytes, std::move(done), priority);
}

EventPtr Engine::submit(bool is_read, const FilePtr& file, const BufferPtr& buffer, std::size_t buffer_offset,
                        std::uint64_t file_offset, std::size_t bytes, Done done, Priority priority) {
  const char* side = is_read ? "destination" : "source";
  KVFLOW_CHECK(file != nullptr, kInvalidArg, "expected an open file, got none");
  KVFLOW_CHECK(priority == Priority::kHigh || priority == Priority::kLow, kInvalidArg,
               "expected high or low for priority, got " + std::to_string(static_cast<int>(priority)));
  // The engine has no device of its own: the glue checked the buffer's device, this checks the rest.
  check_range(buffer.get(), buffer ? buffer->owner() : nullptr, buffer_offset, bytes, side);
  KVFLOW_CHECK(buffer->kind() != MemoryKind::kDevice, kInvalidArg,
               std::string("expected a pinned or host buffer for ") + side + ", got a device buffer");
  constexpr auto kMaxOffset = static_cast<std::uint64_t>(INT64_MAX);
  KVFLOW_CHECK(file_offset <= kMaxOffset && bytes <= kMaxOffset - file_offset, kOutOfRange,
               "expected a file range below 2^63 bytes, got offset " + std::to_string(file_offset) + " + " +
                   std::to_string(bytes) + " bytes");

  auto request = std::make_shared<Request>();
  request->is_read = is_read;
  request->priority = priority;
  request->file = file;
  request->buffer = buffer;
  request->offset = file_offset;
  request->bytes = bytes;
  request->event = std::make_shared<EventState>(state_->next_id());
  request->completer = state_->completer;
  request->done = std::move(done);
  EventPtr event = request->event;
  if (bytes == 0) {
    request->complete();
    return event;
  }
  std::vector<Task> tasks = plan_tasks(request, static_cast<char*>(buffer->ptr()) + buffer_offset, options_.task_size);
  request->remaining.store(tasks.size(), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    KVFLOW_CHECK(!state_->stopping, kDisposed, "IO engine is closed");
    for (Task& t : tasks) state_->queues.push(priority, std::move(t));
  }
  wake();
  return event;
}

EventPtr Engine::run(std::function<void()> work) {
  auto event = std::make_shared<EventState>(state_->next_id());
  {
    std::lock_guard<std::mutex> lock(state_->jobs_mutex);
    KVFLOW_CHECK(!state_->jobs_stopping, kDisposed, "IO engine is closed");
    state_->jobs.push_back(State::Job{std::move(work), event});
  }
  state_->jobs_cv.notify_one();
  return event;
}

EngineStats Engine::stats() const noexcept {
  const Counters& c = state_->counters;
  return {c.direct_bytes.load(std::memory_order_relaxed), c.buffered_bytes.load(std::memory_order_relaxed),
          c.failed_tasks.load(std::memory_order_relaxed), c.high_tasks.load(std::memory_order_relaxed),
          c.low_tasks.load(std::memory_order_relaxed)};
}

std::function<void()> Engine::hold() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    KVFLOW_CHECK(!state_->stopping, kDisposed, "IO engine is closed");
    ++state_->holds;
  }
  // Released at most once; the release outlives the engine harmlessly.
  auto released = std::make_shared<std::atomic<bool>>(false);
  std::weak_ptr<State> weak = state_;
  return [this, weak, released] {
    if (released->exchange(true)) return;
    auto state = weak.lock();
    if (!state) return;
    bool stopping;
    {
      std::lock_guard<std::mutex> lock(state->mutex);
      --state->holds;
      stopping = state->stopping;
    }
    if (!stopping) wake();
  };
}

void Engine::inject_fault(std::uint64_t nth, int err) {
  KVFLOW_CHECK(nth > 0, kInvalidArg, "expected a positive task count for nth, got 0");
  KVFLOW_CHECK(err > 0, kInvalidArg, "expected a positive errno for err, got " + std::to_string(err));
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->fault_countdown = nth;
  state_->fault_errno = err;
}

void Engine::close(bool abandon) {
  std::vector<Task> dropped;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (state_->stopping) return;
    state_->stopping = true;
    state_->abandon = abandon;
    if (abandon) dropped = state_->queues.drop_all();
  }
  const auto closed = std::make_shared<const Error>(ErrorCode::kAborted, "the IO engine was closed before this request ran");
  for (Task& t : dropped) t.request->finish_task(closed);
  dropped.clear();
  wake();
  join();
  std::deque<State::Job> jobs;
  {
    std::lock_guard<std::mutex> lock(state_->jobs_mutex);
    state_->jobs_stopping = true;
    if (abandon) jobs.swap(state_->jobs);
  }
  state_->jobs_cv.notify_all();
  for (State::Job& job : jobs) {
    if (job.event->complete(closed)) state_->completer->post(job.event->id());
  }
  join_thread(state_->control);
}

EnginePtr make_posix_engine(const EngineOptions& options, Completer& completer, Engine::IdSource next_id);
EnginePtr make_uring_engine(const EngineOptions& options, Completer& completer, Engine::IdSource next_id);

EnginePtr create_engine(const EngineOptions& options, Completer& completer, Engine::IdSource next_id) {
  KVFLOW_CHECK(options.threads >= 1 && options.threads <= kMaxThreads, kInvalidArg,
               "expected 1 to " + std::to_string(kMaxThreads) + " for threads, got " + std::to_string(options.threads));
  KVFLOW_CHECK(options.queue_depth >= 1 && options.queue_depth <= kMaxQueueDepth, kInvalidArg,
               "expected 1 to " + std::to_string(kMaxQueueDepth) + " for queueDepth, got " +
                   std::to_string(options.queue_depth));
  KVFLOW_CHECK(options.task_size >= 4096 && options.task_size <= kMaxTaskSize && options.task_size % 4096 == 0,
               kInvalidArg,
               "expected a multiple of 4096 from 4096 to 2^30 for taskSize, got " + std::to_string(options.task_size));
  EngineOptions effective = options;
  // Direct tasks must start aligned: round up where pages are larger than 4 KiB.
  const std::size_t align = direct_alignment();
  effective.task_size = (options.task_size + align - 1) / align * align;
  if (options.kind == EngineKind::kIoUring) return make_uring_engine(effective, completer, std::move(next_id));
  return make_posix_engine(effective, completer, std::move(next_id));
}

}  // namespace kvflow::io
