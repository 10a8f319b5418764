// Stream-ordered file transfers through a bounce ring (see stream_file.hpp).
//
// Read, chunk i in slot i % K: the stream waits on gate i, copies slot -> dst
// and records "slot free"; the engine reads chunk i into the slot once the
// slot's previous copy completed and opens gate i. Write: the stream copies
// src -> slot (after the slot's previous disk write, through a gate) and
// records "copied"; the engine writes the slot once copied; a last gate waits
// for every write. Failures open the remaining gates with the error, so the
// stream's next event fails instead of waiting forever.
#include "kvflow/stream_file.hpp"

#include <algorithm>
#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "io/bounce_plan.hpp"
#include "io/cufile.hpp"
#include "kvflow/gate.hpp"

namespace kvflow::io {

namespace {

using Plan = BouncePlan;

Plan plan_of(std::size_t bytes, const BounceOptions& options) { return plan_bounce(bytes, options.chunk, options.slots); }

/// What the engine side of one transfer shares across threads.
struct Job : std::enable_shared_from_this<Job> {
  EnginePtr engine;
  FilePtr file;
  Plan plan{};
  std::uint64_t file_offset = 0;
  std::vector<BufferPtr> slots;
  std::vector<GatePtr> gates;  // read: data in slot i; write: slot of chunk i free again
  GatePtr done;                // write: every chunk written
  std::mutex mutex;
  ErrorPtr error;              // the first failure
  std::atomic<std::size_t> remaining{0};

  ErrorPtr fail(const ErrorPtr& e) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!error) error = e;
    return error;
  }
  ErrorPtr failure() {
    std::lock_guard<std::mutex> lock(mutex);
    return error;
  }

  void read_chunk(std::size_t i) {
    if (ErrorPtr e = failure()) {
      gates[i]->open(e);
      return;
    }
    auto self = shared_from_this();
    try {
      (void)engine->read(file, slots[i % plan.slots], 0, file_offset + i * plan.chunk, plan.length(i),
                         [self, i](const ErrorPtr& e) { self->gates[i]->open(e ? self->fail(e) : nullptr); });
    } catch (...) {
      gates[i]->open(fail(capture_current_exception()));
    }
  }

  void write_chunk(std::size_t i, const ErrorPtr& copy_error) {
    if (copy_error) (void)fail(copy_error);
    if (ErrorPtr e = failure()) {
      written(i, e);
      return;
    }
    auto self = shared_from_this();
    try {
      (void)engine->write(file, file_offset + i * plan.chunk, slots[i % plan.slots], 0, plan.length(i),
                          [self, i](const ErrorPtr& e) { self->written(i, e ? self->fail(e) : nullptr); });
    } catch (...) {
      written(i, fail(capture_current_exception()));
    }
  }

  void written(std::size_t i, const ErrorPtr& e) {
    gates[i]->open(e);
    count_down();
  }

  void count_down() {
    if (remaining.fetch_sub(1) == 1) done->open(failure());
  }

  /// A failure while enqueuing: every gate opens, so nothing already
  /// enqueued on the stream waits forever.
  void abandon(const ErrorPtr& e) {
    const ErrorPtr first = fail(e);
    for (auto& g : gates) g->open(first);
    done->open(first);
  }
};

std::shared_ptr<Job> make_job(Device& device, const EnginePtr& engine, const FilePtr& file, std::uint64_t file_offset,
                              const Plan& plan) {
  KVFLOW_CHECK(engine != nullptr && file != nullptr, kInvalidArg, "expected an open file and its engine");
  auto job = std::make_shared<Job>();
  job->engine = engine;
  job->file = file;
  job->plan = plan;
  job->file_offset = file_offset;
  for (std::size_t s = 0; s < plan.slots; ++s) job->slots.push_back(device.alloc_pinned(plan.chunk));
  for (std::size_t i = 0; i < plan.count; ++i) job->gates.push_back(std::make_shared<Gate>());
  job->done = std::make_shared<Gate>();
  job->remaining = plan.count;
  return job;
}

/// GPUDirect Storage: chunks move between the file and device memory on the
/// engine's threads with cuFile, after the work enqueued before them (an
/// event), and the stream waits on one gate per chunk, so no bounce ring.
void enqueue_gds(Device& device, Stream& stream, const EnginePtr& engine, const FilePtr& file, const BufferPtr& dev,
                 std::size_t dev_offset, std::uint64_t file_offset, std::size_t bytes, const BounceOptions& options,
                 bool is_read) {
  const Plan plan = plan_of(bytes, options);
  auto job = std::make_shared<Job>();
  job->engine = engine;
  job->file = file;
  job->plan = plan;
  job->file_offset = file_offset;
  for (std::size_t i = 0; i < plan.count; ++i) job->gates.push_back(std::make_shared<Gate>());
  job->done = std::make_shared<Gate>();
  job->remaining = plan.count;
  Device* owner = &device;
  // Device memory is touched only after earlier work: the chunks start from a
  // host call in stream order, folded into the first wait. The last wait
  // holds the buffer too (a keep-alive), so that normally its last reference
  // goes with the stream's sweep, not on an engine thread (where cudaFree's
  // implicit synchronisation could wait for work behind that thread). When
  // the waits end early (close(abandon), a failed enqueue) the engine jobs
  // still hold it: it may then be freed on the engine thread, never used
  // after it was freed.
  HostCall start = [job, dev, dev_offset, owner, is_read](const ErrorPtr& failed) {
    if (failed) (void)job->fail(failed);
    const std::shared_ptr<CuFileHandle> gds = job->file->gds();
    for (std::size_t i = 0; i < job->plan.count; ++i) {
      if (ErrorPtr failed = job->failure()) {
        job->gates[i]->open(failed);
        continue;
      }
      const std::uint64_t at = job->file_offset + i * job->plan.chunk;
      const std::size_t off = dev_offset + i * job->plan.chunk;
      const std::size_t len = job->plan.length(i);
      try {
        EventPtr ran = job->engine->run([gds, dev, off, at, len, owner, is_read] {
          owner->bind_thread();
          if (is_read) gds->read(dev->ptr(), off, at, len);
          else gds->write(dev->ptr(), off, at, len);
        });
        ran->then([job, i](const ErrorPtr& err) { job->gates[i]->open(err ? job->fail(err) : nullptr); });
      } catch (...) {
        job->gates[i]->open(job->fail(capture_current_exception()));
      }
    }
  };
  try {
    for (std::size_t i = 0; i < plan.count; ++i) {
      HostCall before;
      if (i == 0) before = std::move(start);
      else if (i + 1 == plan.count) before = [dev](const ErrorPtr&) {};  // holds the buffer until the last wait passed
      stream.wait_gate(job->gates[i], std::move(before));
    }
  } catch (...) {
    job->abandon(capture_current_exception());
    throw;
  }
}

bool use_gds(const FilePtr& file, const BufferPtr& buffer) {
  return file && file->gds() && buffer->kind() == MemoryKind::kDevice;
}

}  // namespace

void enqueue_read_file(Device& device, Stream& stream, const EnginePtr& engine, const FilePtr& file,
                       const BufferPtr& dst, std::size_t dst_offset, std::uint64_t file_offset, std::size_t bytes,
                       const BounceOptions& options) {
  if (bytes == 0) return;
  if (use_gds(file, dst)) {
    enqueue_gds(device, stream, engine, file, dst, dst_offset, file_offset, bytes, options, true);
    return;
  }
  const Plan plan = plan_of(bytes, options);
  auto job = make_job(device, engine, file, file_offset, plan);
  // The first reads start before anything is enqueued (CUDA can block the
  // enqueuing thread once many host functions are pending on a stream, and
  // the stream must be able to make progress meanwhile). Once a chunk's copy
  // is done, a host call in stream order starts the read that reuses its
  // slot: folded into the next wait (one host function per chunk with
  // host-function gates). Host calls, not events: noticing an event takes a
  // thread that calls CUDA, which can stall behind another thread's implicit
  // synchronisation (cudaHostAlloc, cudaFree) that waits for this very
  // stream, and then neither would ever finish. A host call learns of the
  // failures of the stream's work since its last event, and the job then
  // reads no more; they stay with the stream too and fail its next event, as
  // a failed read does through the job's last gate.
  for (std::size_t i = 0; i < plan.slots; ++i) job->read_chunk(i);
  const auto copied = [&job](std::size_t i) -> HostCall {
    return [job, i](const ErrorPtr& failed) {
      try {
        if (failed) (void)job->fail(failed);  // then the remaining chunks are not read
        if (i + job->plan.slots < job->plan.count) job->read_chunk(i + job->plan.slots);
      } catch (...) {
        job->abandon(capture_current_exception());  // every gate opens: nothing waits forever
      }
      job->count_down();
    };
  };
  try {
    for (std::size_t i = 0; i < plan.count; ++i) {
      stream.wait_gate(job->gates[i], i > 0 ? copied(i - 1) : nullptr);
      stream.copy(dst, dst_offset + i * plan.chunk, job->slots[i % plan.slots], 0, plan.length(i));
    }
    stream.wait_gate(job->done, copied(plan.count - 1));
  } catch (...) {
    job->abandon(capture_current_exception());
    throw;
  }
}

void enqueue_write_file(Device& device, Stream& stream, const EnginePtr& engine, const FilePtr& file,
                        std::uint64_t file_offset, const BufferPtr& src, std::size_t src_offset, std::size_t bytes,
                        const BounceOptions& options) {
  if (bytes == 0) return;
  if (use_gds(file, src)) {
    enqueue_gds(device, stream, engine, file, src, src_offset, file_offset, bytes, options, false);
    return;
  }
  const Plan plan = plan_of(bytes, options);
  auto job = make_job(device, engine, file, file_offset, plan);
  // Once a chunk's copy into its slot is done, a host call in stream order
  // (see enqueue_read_file) starts its disk write, folded into the next wait
  // where there is one; the last wait is for every write.
  // A failure before the copy (the copy itself skipped, say) means the slot
  // does not hold the source: nothing more is written.
  const auto copied = [&job](std::size_t i) -> HostCall {
    return [job, i](const ErrorPtr& failed) {
      try {
        job->write_chunk(i, failed);
      } catch (...) {
        job->abandon(capture_current_exception());  // every gate opens: nothing waits forever
      }
    };
  };
  try {
    for (std::size_t i = 0; i < plan.count; ++i) {
      if (i >= plan.slots) {
        stream.wait_gate(job->gates[i - plan.slots], copied(i - 1));
      } else if (i > 0) {
        stream.host_call(copied(i - 1));
      }
      stream.copy(job->slots[i % plan.slots], 0, src, src_offset + i * plan.chunk, plan.length(i));
    }
    stream.wait_gate(job->done, copied(plan.count - 1));
  } catch (...) {
    job->abandon(capture_current_exception());
    throw;
  }
}

}  // namespace kvflow::io
