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

// Holds the stream until the gate opens. It occupies CUDA's host-function
// thread meanwhile, so host functions of other streams (host-to-host and
// pageable copies) may wait behind it too. Tests use it to hold a stream
// deterministically; close(abandon) opens the gate so the stream can drain.
void CUDART_CB run_gate_wait(void* data) noexcept {
  try {
    static_cast<Gate*>(data)->wait();
  } catch (...) {
  }
}

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

StreamCore::StreamCore(int ordinal_in, cudaStream_t stream_in, bool owned_in, std::shared_ptr<EventPool> events_in,
                       std::shared_ptr<Poller> poller_in)
    : ordinal(ordinal_in),
      stream(stream_in),
      owned(owned_in),
      events(std::move(events_in)),
      poller(std::move(poller_in)) {}

void StreamCore::on_completed(std::uint64_t covers, bool sweep) noexcept {
  std::list<Retained> done;  // destroyed after unlocking: freeing buffers may call CUDA
  std::lock_guard<std::mutex> lock(mutex);
  auto end = retained.begin();
  while (end != retained.end() && end->seq <= covers) ++end;
  done.splice(done.end(), retained, retained.begin(), end);
  if (sweep) {
    sweep_outstanding = false;
  } else if (events_outstanding > 0) {
    --events_outstanding;
  }
  arm_sweep_locked();
}

void StreamCore::arm_sweep_locked() noexcept {
  if (closed || sweep_outstanding || retained.empty()) return;
  cudaEvent_t event = nullptr;
  try {
    event = events->acquire();
    KVFLOW_CUDA(cudaSetDevice(ordinal));
    KVFLOW_CUDA(cudaEventRecord(event, stream));
    PollEntry entry;
    entry.event = event;
    entry.stream = shared_from_this();
    entry.covers = op_seq;
    poller->add(std::move(entry));
    sweep_outstanding = true;
  } catch (...) {
    if (event != nullptr) events->release(event);
  }
}

std::unique_ptr<Stream> CudaStream::create(Device& device, int ordinal, int priority, std::shared_ptr<EventPool> events,
                                           std::shared_ptr<Poller> poller) {
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
    auto core = std::make_shared<StreamCore>(ordinal, stream, true, std::move(events), std::move(poller));
    return std::make_unique<CudaStream>(device, std::move(core));
  } catch (...) {
    (void)cudaStreamDestroy(stream);
    throw;
  }
}

std::unique_ptr<Stream> CudaStream::wrap(Device& device, int ordinal, std::uintptr_t handle,
                                         std::shared_ptr<EventPool> events, std::shared_ptr<Poller> poller) {
  // Only a live handle can be checked: a dangling one may crash inside the
  // driver, which is why the JS entry point is named ...Unsafe.
  const auto stream = reinterpret_cast<cudaStream_t>(handle);
  set_device(ordinal);
  const cudaError_t status = cudaStreamQuery(stream);
  if (is_bad_handle(status)) {
    (void)cudaGetLastError();
    KVFLOW_FAIL(kInvalidArg, "expected a live CUDA stream handle to wrap, got " + hex(handle) + " (" +
                                 cuda_error_text(status) + ")");
  }
  if (status == cudaErrorStreamCaptureUnsupported) {
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
  auto core = std::make_shared<StreamCore>(ordinal, stream, false, std::move(events), std::move(poller));
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
  std::lock_guard<std::mutex> lock(c.mutex);
  const std::uint64_t seq = begin_op_locked();
  if (seq == 0 || bytes == 0) return;
  char* to = static_cast<char*>(dst->ptr()) + dst_offset;
  const char* from = static_cast<const char*>(src->ptr()) + src_offset;
  const bool device_side = dst->kind() == MemoryKind::kDevice || src->kind() == MemoryKind::kDevice;
  // cudaMemcpyAsync with pageable memory returns only once the bytes are
  // staged, blocking the JS thread: bounce through pinned memory instead, the
  // host side of it done by a host function in stream order.
  const bool bounce_in = device_side && src->kind() == MemoryKind::kHost;
  const bool bounce_out = device_side && dst->kind() == MemoryKind::kHost;

  StreamCore::Retained keep{seq, {dst, src}};
  BufferPtr bounce;
  std::shared_ptr<HostCopy> job;
  if (bounce_in || bounce_out) {
    bounce = device_.alloc_pinned(bytes);
    job = std::make_shared<HostCopy>(bounce_in ? HostCopy{bounce->ptr(), from, bytes}
                                               : HostCopy{to, bounce->ptr(), bytes});
    keep.hold.push_back(bounce);
    keep.hold.push_back(job);
  } else if (!device_side) {
    job = std::make_shared<HostCopy>(HostCopy{to, from, bytes});
    keep.hold.push_back(job);
  }
  // Retained before anything is enqueued, so whatever gets enqueued is covered.
  c.retained.push_back(std::move(keep));
  try {
    set_device(c.ordinal);
    if (bounce_in) {
      launch_host_copy(c.stream, job.get());
      KVFLOW_CUDA(cudaMemcpyAsync(to, bounce->ptr(), bytes, cudaMemcpyDefault, c.stream));
    } else if (bounce_out) {
      KVFLOW_CUDA(cudaMemcpyAsync(bounce->ptr(), from, bytes, cudaMemcpyDefault, c.stream));
      launch_host_copy(c.stream, job.get());
    } else if (device_side) {
      KVFLOW_CUDA(cudaMemcpyAsync(to, from, bytes, cudaMemcpyDefault, c.stream));
    } else {
      launch_host_copy(c.stream, job.get());
    }
  } catch (...) {
    c.arm_sweep_locked();
    throw;
  }
  c.arm_sweep_locked();
}

EventPtr CudaStream::record() {
  StreamCore& c = *core_;
  std::lock_guard<std::mutex> lock(c.mutex);
  KVFLOW_CHECK(!c.closed, kDisposed, "stream is disposed");
  set_device(c.ordinal);
  cudaEvent_t cuda_event = c.events->acquire();
  const cudaError_t status = cudaEventRecord(cuda_event, c.stream);
  if (status != cudaSuccess) {
    c.events->release(cuda_event);
    throw_cuda(status, "cudaEventRecord", __FILE__, __LINE__);
  }
  EventPtr event = c.events->adopt(device_.next_id(), cuda_event);  // owns cuda_event from here
  PollEntry entry;
  entry.event = cuda_event;
  entry.user = event;
  entry.stream = core_;
  entry.covers = c.op_seq;
  entry.failures = c.failures;  // a copy: kept for the next event if add() throws
  if (c.injected) entry.failures.push_back(FailureSource{c.injected, nullptr});
  c.poller->add(std::move(entry));
  c.failures.clear();
  c.injected.reset();
  ++c.events_outstanding;
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
  const auto cuda_event = c.events->find(event.get());
  KVFLOW_CHECK(cuda_event.has_value(), kInvalidArg,
               "expected an event of CUDA device " + std::to_string(c.ordinal) +
                   " to wait on (an event of another device only once it completed), got a pending event of another "
                   "device");
  set_device(c.ordinal);
  // The wait captures the event's current record: the EventPtr keeps that
  // cudaEvent_t from being reused until then, and the failure check below
  // needs the EventState itself.
  KVFLOW_CUDA(cudaStreamWaitEvent(c.stream, *cuda_event, cudaEventWaitDefault));
  c.failures.push_back(FailureSource{nullptr, event});
}

void CudaStream::wait_gate(const GatePtr& gate) {
  KVFLOW_CHECK(gate != nullptr, kInvalidArg, "expected a gate to wait on, got none");
  StreamCore& c = *core_;
  std::lock_guard<std::mutex> lock(c.mutex);
  const std::uint64_t seq = begin_op_locked();
  if (seq == 0) return;
  std::erase_if(c.gates, [](const GatePtr& g) { return g->is_open(); });
  c.gates.push_back(gate);
  c.retained.push_back(StreamCore::Retained{seq, {gate}});  // the host function uses the raw pointer
  try {
    set_device(c.ordinal);
    KVFLOW_CUDA(cudaLaunchHostFunc(c.stream, &run_gate_wait, gate.get()));
  } catch (...) {
    c.arm_sweep_locked();
    throw;
  }
  c.arm_sweep_locked();
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

std::uintptr_t CudaStream::handle() const noexcept { return reinterpret_cast<std::uintptr_t>(core_->stream); }

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
      for (const GatePtr& gate : gates) gate->open();
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
      c.failures.clear();
    }
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
