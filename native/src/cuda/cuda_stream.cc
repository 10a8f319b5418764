// CudaStream: kvflow's stream semantics on a cudaStream_t (see cuda_stream.hpp).
#include "cuda_stream.hpp"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <utility>

#include "cuda_error.hpp"
#include "event_pool.hpp"
#include "kvflow/call_trace.hpp"

namespace kvflow::cuda {

namespace {

// What a host function copies. The operation's Retained entry holds it, so it
// lives until the function has run.
struct HostCopy {
  void* dst;
  const void* src;
  std::size_t bytes;
};

// Host functions run on a thread CUDA owns: no CUDA calls, nothing thrown.
void CUDART_CB run_host_copy(void* data) noexcept {
  const auto* job = static_cast<const HostCopy*>(data);
  std::memmove(job->dst, job->src, job->bytes);  // memmove: a copy within one buffer may overlap
}

/// A host call with the failure sources of its span as they were when it
/// was enqueued; evaluated when it runs, by which time the gates among them
/// were passed (so are open), and events waited on may have completed.
/// The first failure among `chain`'s sources, judged on the host now. By
/// the time a host call runs, the gates among them are open and the events
/// waited on have finished on the GPU; an event the poller has not completed
/// yet is judged by its own sources (GPU faults are sticky: they fail
/// everything after them anyway).
ErrorPtr first_failure(const StreamCore::FailureChain* chain) noexcept {
  // Segments link newest to oldest; the first failure in operation order is
  // the one the stream's next event reports, so walk them oldest first.
  std::vector<const StreamCore::FailureChain*> segments;
  try {
    for (const StreamCore::FailureChain* seg = chain; seg != nullptr; seg = seg->prev.get()) segments.push_back(seg);
  } catch (...) {
    return capture_current_exception();  // cannot judge: fail closed
  }
  for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
    for (const FailureSource& s : (*it)->items) {
      if (s.error) return s.error;
      if (!s.event) continue;
      EventStatus status = s.event->status();
      if (status == EventStatus::kPending) {
        if (const std::shared_ptr<const void> early = s.early.lock()) {
          if (ErrorPtr e = first_failure(static_cast<const StreamCore::FailureChain*>(early.get()))) return e;
          continue;
        }
        status = s.event->status();  // its sources went with its completion
      }
      if (status == EventStatus::kFailed) return s.event->error();
    }
  }
  return nullptr;
}

struct HostCallData {
  HostCall fn;
  std::shared_ptr<const StreamCore::FailureChain> sources;

  void run() const noexcept {
    if (!fn) return;
    const ErrorPtr failed = first_failure(sources.get());
    try {
      fn(failed);
    } catch (...) {
    }
  }
};

/// A host-function gate: runs its `before` (a host call folded in), then waits.
struct GateCall {
  Gate* gate;
  HostCallData before;
};

// Holds the stream until the gate opens. It occupies CUDA's host-function
// thread meanwhile, and CUDA runs the host functions of all streams on that
// one thread (seen on an H200 with driver 580): host-to-host and pageable
// copies on other streams wait behind a closed gate too. Tests use it to hold
// a stream deterministically; close(abandon) opens the gate so work drains.

void CUDART_CB run_gate_wait(void* data) noexcept {
  auto* call = static_cast<GateCall*>(data);
  call->before.run();
  try {
    call->gate->wait();
  } catch (...) {
  }
}

void CUDART_CB run_host_call(void* data) noexcept { static_cast<const HostCallData*>(data)->run(); }

void set_device(int ordinal) { KVFLOW_CUDA(cudaSetDevice(ordinal)); }

void launch_host_copy(cudaStream_t stream, HostCopy* job) {
  KVFLOW_CUDA(cudaLaunchHostFunc(stream, &run_host_copy, job));
}

std::string hex(std::uintptr_t value) {
  std::ostringstream out;
  out << "0x" << std::hex << value;
  return out.str();
}

bool is_bad_handle(cudaError_t status) {
  return status == cudaErrorInvalidResourceHandle || status == cudaErrorInvalidValue ||
         status == cudaErrorContextIsDestroyed;
}

}  // namespace

std::size_t bounce_chunk(std::size_t bytes) noexcept {
  if (bytes <= kBounceMinChunk) return bytes;
  constexpr std::size_t kAlign = std::size_t{1} << 20;
  const std::size_t even = (bytes + kBounceMaxChunks - 1) / kBounceMaxChunks;
  return std::max(kBounceMinChunk, (even + kAlign - 1) / kAlign * kAlign);
}

std::unique_ptr<Stream> CudaStream::create(Device& device, int ordinal, int priority, std::shared_ptr<EventPool> events,
                                           std::shared_ptr<Poller> poller, std::shared_ptr<FlagPool> flags) {
  KVFLOW_CHECK(priority == 0 || priority == 1, kInvalidArg,
               "expected stream priority 0 (normal) or 1 (high), got " + std::to_string(priority));
  set_device(ordinal);
  int least = 0;
  int greatest = 0;
  KVFLOW_CUDA(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  cudaStream_t stream = nullptr;
  // Non-blocking: kvflow's copies must not serialize with the legacy default stream.
  KVFLOW_CUDA(cudaStreamCreateWithPriority(&stream, cudaStreamNonBlocking, priority == 1 ? greatest : least));
  try {
    auto core =
        std::make_shared<StreamCore>(ordinal, stream, true, std::move(events), std::move(poller), std::move(flags));
    return std::make_unique<CudaStream>(device, std::move(core));
  } catch (...) {
    (void)cudaStreamDestroy(stream);
    throw;
  }
}

std::unique_ptr<Stream> CudaStream::wrap(Device& device, int ordinal, std::uintptr_t handle,
                                         std::shared_ptr<EventPool> events, std::shared_ptr<Poller> poller,
                                         std::shared_ptr<FlagPool> flags) {
  // Only a live handle can be checked: a dangling one may crash inside the
  // driver, which is why the JS entry point is named ...Unsafe.
  const auto stream = reinterpret_cast<cudaStream_t>(handle);
  set_device(ordinal);
  // Asked first because it is legal during capture, where cudaStreamQuery
  // would invalidate the owner's capture.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  cudaError_t status = cudaStreamIsCapturing(stream, &capture);
  if (status == cudaSuccess && capture == cudaStreamCaptureStatusNone) status = cudaStreamQuery(stream);
  if (is_bad_handle(status)) {
    (void)cudaGetLastError();
    KVFLOW_FAIL(kInvalidArg, "expected a live CUDA stream handle to wrap, got " + hex(handle) + " (" +
                                 cuda_error_text(status) + ")");
  }
  if (capture != cudaStreamCaptureStatusNone || status == cudaErrorStreamCaptureImplicit) {
    (void)cudaGetLastError();
    KVFLOW_FAIL(kInvalidArg, "expected a CUDA stream that is not being captured into a graph, got " + hex(handle));
  }
  if (status != cudaSuccess && status != cudaErrorNotReady) throw_cuda(status, "cudaStreamQuery", __FILE__, __LINE__);
  int stream_device = -1;
  if (cudaStreamGetDevice(stream, &stream_device) == cudaSuccess) {
    KVFLOW_CHECK(stream_device == ordinal, kInvalidArg,
                 "expected a stream of CUDA device " + std::to_string(ordinal) + ", got a stream of CUDA device " +
                     std::to_string(stream_device));
  } else {
    (void)cudaGetLastError();
  }
  auto core =
      std::make_shared<StreamCore>(ordinal, stream, false, std::move(events), std::move(poller), std::move(flags));
  return std::make_unique<CudaStream>(device, std::move(core));
}

CudaStream::CudaStream(Device& device, std::shared_ptr<StreamCore> core) : device_(device), core_(std::move(core)) {}

CudaStream::~CudaStream() { close(true); }

std::uint64_t CudaStream::begin_op_locked() {
  StreamCore& c = *core_;
  KVFLOW_CHECK(!c.closed, kDisposed, "stream is disposed");
  if (c.injected) {
    c.failures.push_back(FailureSource{c.injected, nullptr});
    c.injected.reset();
    ++c.op_seq;
    return 0;
  }
  return ++c.op_seq;
}

void CudaStream::copy(const BufferPtr& dst, std::size_t dst_offset, const BufferPtr& src, std::size_t src_offset,
                      std::size_t bytes) {
  StreamCore& c = *core_;
  trace::Laps laps;
  std::lock_guard<std::mutex> lock(c.mutex);
  const std::uint64_t seq = begin_op_locked();
  if (seq == 0 || bytes == 0) return;
  char* to = static_cast<char*>(dst->ptr()) + dst_offset;
  const char* from = static_cast<const char*>(src->ptr()) + src_offset;
  const bool device_side = dst->kind() == MemoryKind::kDevice || src->kind() == MemoryKind::kDevice;
  // cudaMemcpyAsync with pageable memory returns only once the bytes are
  // staged, blocking the JS thread: bounce through pinned memory instead, the
  // host side of it done by host functions in stream order.
  const bool bounce_in = device_side && src->kind() == MemoryKind::kHost;
  const bool bounce_out = device_side && dst->kind() == MemoryKind::kHost;
  // Explicit directions, never cudaMemcpyDefault: with Default, a device
  // pointer the driver no longer knows (freed behind a wrap) is taken for host
  // memory and read by the CPU, crashing the process instead of failing.
  const cudaMemcpyKind to_device =
      src->kind() == MemoryKind::kDevice ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice;
  const cudaMemcpyKind direction = dst->kind() == MemoryKind::kDevice ? to_device : cudaMemcpyDeviceToHost;

  StreamCore::Retained keep{seq, {dst, src}};
  BufferPtr staging;
  char* stage = nullptr;
  // Never resized once filled: host functions hold pointers to its elements.
  std::shared_ptr<std::vector<HostCopy>> jobs;
  if (!device_side || bounce_in || bounce_out) jobs = std::make_shared<std::vector<HostCopy>>();
  if (bounce_in || bounce_out) {
    // One staging buffer reused chunk after chunk: stream order runs each host
    // function only after the previous chunk's DMA, so a large copy pins a
    // fraction of its size.
    const std::size_t chunk = bounce_chunk(bytes);
    staging = device_.alloc_pinned(chunk);
    stage = static_cast<char*>(staging->ptr());
    jobs->reserve((bytes + chunk - 1) / chunk);
    for (std::size_t done = 0; done < bytes; done += chunk) {
      const std::size_t n = std::min(chunk, bytes - done);
      jobs->push_back(bounce_in ? HostCopy{stage, from + done, n} : HostCopy{to + done, stage, n});
    }
    keep.hold.push_back(staging);
  } else if (!device_side) {
    jobs->push_back(HostCopy{to, from, bytes});
  }
  if (jobs) keep.hold.push_back(jobs);
  // Retained before anything is enqueued, so whatever gets enqueued is covered.
  c.retained.push_back(std::move(keep));
  laps.lap(trace::kCopyLock);
  try {
    set_device(c.ordinal);
    if (bounce_in || bounce_out) {
      std::size_t done = 0;
      for (HostCopy& job : *jobs) {
        if (bounce_in) {
          launch_host_copy(c.stream, &job);
          KVFLOW_CUDA(cudaMemcpyAsync(to + done, stage, job.bytes, cudaMemcpyHostToDevice, c.stream));
        } else {
          KVFLOW_CUDA(cudaMemcpyAsync(stage, from + done, job.bytes, cudaMemcpyDeviceToHost, c.stream));
          launch_host_copy(c.stream, &job);
        }
        done += job.bytes;
      }
    } else if (device_side) {
      KVFLOW_CUDA(cudaMemcpyAsync(to, from, bytes, direction, c.stream));
    } else {
      launch_host_copy(c.stream, &jobs->front());
    }
  } catch (...) {
    c.arm_sweep_locked();
    throw;
  }
  laps.lap(trace::kCopyCuda);
  c.arm_sweep_locked();
  laps.lap(trace::kCopySweep);
}

void CudaStream::launch(std::function<void(std::uintptr_t stream)> fn, std::vector<std::shared_ptr<const void>> hold) {
  KVFLOW_CHECK(fn != nullptr, kInvalidArg, "expected a function to launch, got none");
  StreamCore& c = *core_;
  std::lock_guard<std::mutex> lock(c.mutex);
  // A sequence number like any operation: an injected failure skips it, and
  // the kernel engine's next batch does not take the fork of the one before.
  const std::uint64_t seq = begin_op_locked();
  if (seq == 0) return;
  // Retained before anything is enqueued, so whatever gets enqueued is covered.
  c.retained.push_back(StreamCore::Retained{seq, std::move(hold)});
  try {
    set_device(c.ordinal);
    fn(reinterpret_cast<std::uintptr_t>(c.stream));
  } catch (...) {
    c.arm_sweep_locked();
    throw;
  }
  c.arm_sweep_locked();
}

EventPtr CudaStream::record() { return record_event(false); }

EventPtr CudaStream::record_timed() { return record_event(true); }

EventPtr CudaStream::record_event(bool timed) {
  StreamCore& c = *core_;
  std::lock_guard<std::mutex> lock(c.mutex);
  KVFLOW_CHECK(!c.closed, kDisposed, "stream is disposed");
  trace::Laps laps;
  // What can fail it, for host calls of streams that wait on it before it
  // completes. Built before the record, so a failure leaves nothing to undo
  // (the chain stays a valid view of the span's failures).
  std::shared_ptr<const StreamCore::FailureChain> sources = c.failures_so_far_locked();
  if (c.injected) {
    auto seg = std::make_shared<StreamCore::FailureChain>();
    seg->items.push_back(FailureSource{c.injected, nullptr});
    seg->prev = std::move(sources);
    sources = std::move(seg);
  }
  laps.lap(trace::kRecordChain);
  set_device(c.ordinal);
  cudaEvent_t cuda_event = c.events->acquire(timed);
  laps.lap(trace::kRecordAcquire);
  const cudaError_t status = cudaEventRecord(cuda_event, c.stream);
  if (status != cudaSuccess) {
    c.events->release(cuda_event, timed);
    throw_cuda(status, "cudaEventRecord", __FILE__, __LINE__);
  }
  laps.lap(trace::kRecordCuda);
  // Owns cuda_event from here, and its sources: one pool lock and one map entry.
  EventPtr event = c.events->adopt(device_.next_id(), cuda_event, timed, std::move(sources));
  laps.lap(trace::kRecordAdopt);
  PollEntry entry;
  entry.event = cuda_event;
  entry.user = event;
  entry.stream = core_;
  entry.covers = c.op_seq;
  entry.failures = c.failures;  // a copy: kept for the next event if add() throws
  if (c.injected) entry.failures.push_back(FailureSource{c.injected, nullptr});
  c.poller->add(std::move(entry));
  laps.lap(trace::kRecordPoller);
  c.clear_failures_locked();
  c.injected.reset();
  ++c.events_outstanding;
  c.covered = c.op_seq;  // no sweep is needed for what this event covers
  return event;
}

void CudaStream::wait(const EventPtr& event) {
  KVFLOW_CHECK(event != nullptr, kInvalidArg, "expected an event to wait on, got none");
  StreamCore& c = *core_;
  std::lock_guard<std::mutex> lock(c.mutex);
  if (begin_op_locked() == 0) return;
  c.failures.reserve(c.failures.size() + 1);  // no allocation may fail once the wait is enqueued
  const EventStatus status = event->status();
  if (status != EventStatus::kPending) {
    // Completed: nothing to wait for on the GPU, only its failure to inherit.
    if (status == EventStatus::kFailed) c.failures.push_back(FailureSource{event->error(), nullptr});
    return;
  }
  set_device(c.ordinal);
  // The wait captures the event's current record (enqueued under the pool's
  // lock: its cudaEvent_t goes back to the pool once it completes); the
  // EventPtr kept below lets this stream's next event inherit the waited
  // event's failure.
  const auto owned = c.events->wait_on(event.get(), c.stream);
  KVFLOW_CHECK(owned.has_value(), kInvalidArg,
               "expected an event of CUDA device " + std::to_string(c.ordinal) +
                   " to wait on (an event of another device only once it completed), got a pending event of another "
                   "device");
  if (owned->event == nullptr) {
    // Completed since the check above (it is retired only after complete()).
    if (event->status() == EventStatus::kFailed) c.failures.push_back(FailureSource{event->error(), nullptr});
    return;
  }
  c.failures.push_back(FailureSource{nullptr, event, owned->sources});
}

void CudaStream::wait_gate(const GatePtr& gate, HostCall before) {
  KVFLOW_CHECK(gate != nullptr, kInvalidArg, "expected a gate to wait on, got none");
  StreamCore& c = *core_;
  std::lock_guard<std::mutex> lock(c.mutex);
  KVFLOW_CHECK(!c.closed, kDisposed, "stream is disposed");
  // An injected failure fails the span but the wait still happens: what
  // follows it (a bounce slot's reuse, say) must never run before the gate opens.
  if (c.injected) c.failures.push_back(FailureSource{std::exchange(c.injected, nullptr), nullptr});
  // With a flag wait, `before` is a host call of its own, whose captures the
  // wait's entry holds too: they live until the stream passed the wait, as
  // they do when folded into a host-function gate.
  std::shared_ptr<const void> before_hold;
  if (before && c.flags) before_hold = host_call_locked(std::move(before));
  const std::uint64_t seq = ++c.op_seq;
  if (c.flags) {
    wait_flag_locked(seq, gate, std::move(before_hold));
    return;
  }
  std::erase_if(c.gates, [](const GatePtr& g) { return g->is_open(); });
  c.gates.push_back(gate);
  auto call = std::make_shared<GateCall>(GateCall{gate.get(), HostCallData{std::move(before), {}}});
  if (call->before.fn) call->before.sources = c.failures_so_far_locked();
  c.retained.push_back(StreamCore::Retained{seq, {gate, call}});  // the host function uses raw pointers
  c.failures.push_back(FailureSource{nullptr, gate->event()});  // a gate opened with an error fails the next event
  try {
    set_device(c.ordinal);
    KVFLOW_CUDA(cudaLaunchHostFunc(c.stream, &run_gate_wait, call.get()));
  } catch (...) {
    c.arm_sweep_locked();
    throw;
  }
  c.arm_sweep_locked();
}

void CudaStream::host_call(HostCall fn) {
  std::lock_guard<std::mutex> lock(core_->mutex);
  (void)host_call_locked(std::move(fn));
}

std::shared_ptr<const void> CudaStream::host_call_locked(HostCall fn) {
  StreamCore& c = *core_;
  KVFLOW_CHECK(!c.closed, kDisposed, "stream is disposed");
  const std::uint64_t seq = ++c.op_seq;  // not a user operation: an injected failure is left for the next one
  auto call = std::make_shared<HostCallData>(HostCallData{std::move(fn), c.failures_so_far_locked()});
  // Freed by the sweep once an event after it completed, never by the host
  // function itself (whose captures may own pinned memory, and a host
  // function must not call CUDA).
  c.retained.push_back(StreamCore::Retained{seq, {call}});
  try {
    set_device(c.ordinal);
    KVFLOW_CUDA(cudaLaunchHostFunc(c.stream, &run_host_call, call.get()));
  } catch (...) {
    c.arm_sweep_locked();
    throw;
  }
  c.arm_sweep_locked();
  return call;
}

void CudaStream::inject_failure(ErrorPtr error) {
  StreamCore& c = *core_;
  std::lock_guard<std::mutex> lock(c.mutex);
  c.injected = std::move(error);
}

bool CudaStream::idle() {
  StreamCore& c = *core_;
  std::lock_guard<std::mutex> lock(c.mutex);
  if (c.closed) return true;
  if (!c.retained.empty() || c.events_outstanding != 0) return false;
  // A wrapped stream also runs its owner's work; only kvflow's own counts.
  if (!c.owned) return true;
  set_device(c.ordinal);
  const cudaError_t status = cudaStreamQuery(c.stream);
  if (status == cudaErrorNotReady) return false;
  // A failed context runs nothing more: nothing is pending.
  if (status != cudaSuccess) (void)cudaGetLastError();
  return true;
}

std::uintptr_t CudaStream::handle() const noexcept {
  handle_shared_.store(true, std::memory_order_relaxed);
  return reinterpret_cast<std::uintptr_t>(core_->stream);
}

bool CudaStream::drain(std::chrono::milliseconds budget) noexcept {
  StreamCore& c = *core_;
  // A marker event waits only for work enqueued so far; a wrapped stream's
  // owner may keep adding its own.
  cudaEvent_t marker = nullptr;
  try {
    marker = c.events->acquire();
  } catch (...) {
  }
  if (cudaSetDevice(c.ordinal) != cudaSuccess) {
    (void)cudaGetLastError();
    if (marker != nullptr) c.events->release(marker);
    return true;  // the device is gone: nothing enqueued on it will run
  }
  if (marker != nullptr && cudaEventRecord(marker, c.stream) != cudaSuccess) {
    (void)cudaGetLastError();
    c.events->release(marker);
    marker = nullptr;
  }
  const auto deadline = std::chrono::steady_clock::now() + budget;
  auto pause = std::chrono::microseconds(10);
  cudaError_t status = cudaSuccess;
  while ((status = marker != nullptr ? cudaEventQuery(marker) : cudaStreamQuery(c.stream)) == cudaErrorNotReady) {
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
  if (status != cudaSuccess && status != cudaErrorNotReady) (void)cudaGetLastError();
  if (marker != nullptr) c.events->release(marker);
  // An error means the context failed: its queued work will never run.
  return status != cudaErrorNotReady;
}

void CudaStream::close(bool abandon) {
  try {
    StreamCore& c = *core_;
    std::vector<GatePtr> gates;
    {
      std::lock_guard<std::mutex> lock(c.mutex);
      if (c.closed) return;
      c.closed = true;  // from here no sweep is recorded on the stream
      gates.swap(c.gates);
      c.injected.reset();
    }
    if (abandon) {
      // The work behind an abandoned wait runs, but its events say the wait never ended.
      const auto aborted = std::make_shared<const Error>(ErrorCode::kAborted, "the stream was closed while it waited");
      for (const GatePtr& gate : gates) gate->open(aborted);
    }
    const bool finished = drain(kStreamCloseWait);
    std::list<StreamCore::Retained> released;  // freed after unlocking
    {
      std::lock_guard<std::mutex> lock(c.mutex);
      if (finished) {
        released.swap(c.retained);
      } else {
        // The GPU may still read or write these buffers: freeing them would let
        // it corrupt memory that is reused, so they are kept for good.
        auto* kept = new std::list<StreamCore::Retained>();
        kept->swap(c.retained);
      }
      c.clear_failures_locked();
    }
    dma_helpers_.clear();  // joins their threads; their streams' work is behind this stream's
    kernel_pipe_.reset();  // its side stream's work is behind this stream's too
    if (c.owned) {
      // Safe even with work pending: CUDA frees the stream once it drained.
      (void)cudaSetDevice(c.ordinal);
      (void)cudaStreamDestroy(c.stream);
      (void)cudaGetLastError();
    }
  } catch (...) {
    // close() never throws; the stream is marked closed whatever failed.
  }
}

}  // namespace kvflow::cuda
