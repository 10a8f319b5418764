// The NVMe tier's file IO, usable without Node: files opened with O_DIRECT
// where the filesystem allows it (probed per directory, never assumed from the
// filesystem's name), and engines that move bytes between host memory and a
// file on threads they own. Every request completes an EventState and posts
// its id to the device's Completer when watched, and may be submitted from any
// thread, so that stream-ordered transfers (HBM <-> pinned bounce <-> file)
// can be built on it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kvflow/buffer.hpp"
#include "kvflow/completer.hpp"
#include "kvflow/error.hpp"
#include "kvflow/event.hpp"

namespace kvflow::io {

/// Direct IO needs memory, file offsets and lengths aligned to this: 4 KiB, or
/// the page size where pages are larger (so buffered IO of a request's
/// unaligned edges never shares a page with another request's direct IO).
[[nodiscard]] std::size_t direct_alignment() noexcept;

enum class DirectMode : int { kAuto = 0, kOn = 1, kOff = 2 };

/// GPUDirect Storage (cuFile): `auto` uses it where the file registers, `on`
/// fails with the reason where it does not, `off` never tries.
enum class GdsMode : int { kAuto = 0, kOn = 1, kOff = 2 };

class CuFileHandle;

/// Whether O_DIRECT works in a directory, and how that was found out.
struct DirectProbe {
  bool supported = false;
  std::string reason;
};

/// Creates a probe file in `dir` with O_DIRECT, writes and reads back one
/// aligned block, and removes it. Blocking (a few disk IOs).
[[nodiscard]] DirectProbe probe_direct(const std::string& dir);

struct FileOptions {
  bool create = false;                   // create with mode 0600 when missing
  DirectMode direct = DirectMode::kAuto;
  std::uint64_t size = 0;                // preallocate at least this many bytes at open
  GdsMode gds = GdsMode::kOff;
};

/// An open regular file: a buffered fd always, and an O_DIRECT fd where the
/// probe succeeded. Closed when the last holder (file handle or request in
/// flight) lets go.
class File {
 public:
  /// Opens or creates the file and probes O_DIRECT in its directory.
  /// Blocking: run it on an engine (Engine::run). `direct: on` where O_DIRECT
  /// is refused throws kUnsupported with the probe's reason.
  [[nodiscard]] static std::shared_ptr<File> open(const std::string& path, const FileOptions& options);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] bool direct() const noexcept { return direct_fd_ >= 0; }
  /// Why direct IO is used or not, e.g. "O_DIRECT refused by the filesystem at /mnt: EINVAL".
  [[nodiscard]] const std::string& direct_reason() const noexcept { return direct_reason_; }
  /// The cuFile registration, or nullptr (see gds_reason()).
  [[nodiscard]] const std::shared_ptr<CuFileHandle>& gds() const noexcept { return gds_; }
  /// Why GPUDirect Storage is used or not.
  [[nodiscard]] const std::string& gds_reason() const noexcept { return gds_reason_; }
  /// The O_DIRECT fd when `direct` and the file has one, else the buffered fd.
  [[nodiscard]] int fd(bool direct) const noexcept { return direct && direct_fd_ >= 0 ? direct_fd_ : buffered_fd_; }

  /// Current size in bytes (fstat).
  [[nodiscard]] std::uint64_t size() const;
  /// Reserves space so that the file is at least `bytes` long: fallocate,
  /// else posix_fallocate, else (sparse) ftruncate where neither is supported.
  /// Blocking.
  void preallocate(std::uint64_t bytes);
  /// fsync: writes completed before the call are durable after it. Blocking.
  void sync();

 private:
  File() = default;
  /// Checks the file type, probes O_DIRECT, preallocates.
  void finish_open(const FileOptions& options);

  std::string path_;
  int buffered_fd_ = -1;
  int direct_fd_ = -1;
  std::string direct_reason_;
  std::shared_ptr<CuFileHandle> gds_;
  std::string gds_reason_;
};

using FilePtr = std::shared_ptr<File>;

enum class EngineKind : int { kPosix = 0, kIoUring = 1 };

[[nodiscard]] const char* engine_kind_name(EngineKind kind) noexcept;

struct EngineOptions {
  EngineKind kind = EngineKind::kPosix;
  unsigned threads = 8;                       // posix: worker threads
  std::size_t task_size = std::size_t{4} << 20;  // largest piece one task moves; a multiple of 4096
  unsigned queue_depth = 32;                  // io_uring: tasks in flight
};

/// Whether an engine kind can run here, and why not.
struct EngineProbe {
  bool available = false;
  std::string reason;
};

/// Sets up a small ring and checks the operations the engine needs. A kernel
/// or container may forbid io_uring (ENOSYS, EPERM from seccomp or
/// kernel.io_uring_disabled); the reason says which.
[[nodiscard]] EngineProbe probe_io_uring();

/// Which of an engine's queued tasks start first. A KV store shares one
/// engine between latency-critical reads (a prefill waiting on NVMe) and
/// background writes (demotion); without priorities a backlog of writes
/// delays every read queued behind it.
///
/// Tasks of high-priority requests start before queued tasks of low-priority
/// ones; within a priority, in submission order. A task already started is
/// never interrupted. So that lows still progress under a steady stream of
/// highs, after kHighTasksPerLow high tasks in a row have started while a low
/// task waited, the oldest low task starts next.
enum class Priority : int { kHigh = 0, kLow = 1 };

/// High tasks that may start in a row while a low task waits (see Priority).
inline constexpr unsigned kHighTasksPerLow = 8;

/// Bytes an engine moved, by path: what the tests check and metrics will read.
struct EngineStats {
  std::uint64_t direct_bytes = 0;    // through O_DIRECT
  std::uint64_t buffered_bytes = 0;  // through the page cache
  std::uint64_t failed_tasks = 0;    // tasks that ended in an error (injected ones included)
  std::uint64_t high_tasks = 0;      // tasks of high-priority requests taken from the queue
  std::uint64_t low_tasks = 0;       // tasks of low-priority requests taken from the queue
};

/// Moves bytes between host buffers and files. Requests are split into tasks
/// of at most task_size bytes that run in parallel, high-priority requests'
/// tasks first (see Priority); a request's event completes once, when its
/// last task has finished, with the first task's failure if any (tasks not
/// started after a failure are skipped).
class Engine {
 public:
  using IdSource = std::function<std::uint64_t()>;
  /// Called once per request on the completing thread, before its event completes.
  using Done = std::function<void(const ErrorPtr& error)>;

  virtual ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  [[nodiscard]] const EngineOptions& options() const noexcept { return options_; }

  /// Reads `bytes` bytes of `file` at `file_offset` into `dst` at `dst_offset`.
  /// Any thread; returns at once. Reading past the end of the file fails.
  /// High priority unless told otherwise.
  [[nodiscard]] EventPtr read(const FilePtr& file, const BufferPtr& dst, std::size_t dst_offset,
                              std::uint64_t file_offset, std::size_t bytes, Done done = {},
                              Priority priority = Priority::kHigh);
  /// Writes `bytes` bytes of `src` at `src_offset` to `file` at `file_offset`.
  /// Low priority unless told otherwise.
  [[nodiscard]] EventPtr write(const FilePtr& file, std::uint64_t file_offset, const BufferPtr& src,
                               std::size_t src_offset, std::size_t bytes, Done done = {},
                               Priority priority = Priority::kLow);
  /// Runs blocking host work (open, fsync, fallocate) on the engine's own
  /// thread; its exception, if any, becomes the event's error.
  [[nodiscard]] EventPtr run(std::function<void()> work);

  [[nodiscard]] EngineStats stats() const noexcept;

  /// Test hook: no task starts until the returned function is called.
  [[nodiscard]] std::function<void()> hold();
  /// Test hook: the `nth` task started from now on (1: the next one) fails
  /// with `err` (an errno) instead of moving bytes.
  void inject_fault(std::uint64_t nth, int err);

  /// Stops accepting requests, lets queued ones run (or, with `abandon`, fails
  /// them without IO), waits for those in flight, and joins the threads.
  /// Idempotent.
  void close(bool abandon);

 protected:
  struct State;
  Engine(const EngineOptions& options, Completer& completer, IdSource next_id);
  /// Starts the threads that run data tasks (subclass constructors call it last).
  virtual void start() = 0;
  /// Wakes the data threads after the queue or a hold changed.
  virtual void wake() = 0;
  /// Joins the data threads once State says stop.
  virtual void join() = 0;

  EngineOptions options_;
  std::shared_ptr<State> state_;

 private:
  EventPtr submit(bool is_read, const FilePtr& file, const BufferPtr& buffer, std::size_t buffer_offset,
                  std::uint64_t file_offset, std::size_t bytes, Done done, Priority priority);
};

using EnginePtr = std::shared_ptr<Engine>;

/// Creates an engine; throws kUnsupported with the probe's reason when its
/// kind cannot run here, kInvalidArg for options out of range.
[[nodiscard]] EnginePtr create_engine(const EngineOptions& options, Completer& completer, Engine::IdSource next_id);

}  // namespace kvflow::io
