// An ordered queue of operations on one device. Backends implement it; the
// checks on buffers and ranges happen before an operation reaches it
// (see checks.hpp), so implementations may trust their arguments.
//
// Error semantics, on every backend: when an operation fails, the next event
// recorded on the stream fails with that error; a stream that waits on a
// failed event inherits the failure into its own next event. The waiting
// stream is still released: a failure never leaves a wait hanging.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kvflow/buffer.hpp"
#include "kvflow/error.hpp"
#include "kvflow/event.hpp"
#include "kvflow/gate.hpp"

namespace kvflow {

/// One contiguous piece of a batched copy; `dst` and `src` index the batch's
/// destination and source buffer lists.
struct CopyPiece {
  std::uint32_t dst = 0;
  std::uint32_t src = 0;
  std::size_t dst_offset = 0;
  std::size_t src_offset = 0;
  std::size_t bytes = 0;
};

/// How a batch moves on CUDA: batched DMA (cudaMemcpyBatchAsync) or a
/// gather/scatter kernel through device scratch plus one contiguous DMA.
/// The CPU backend moves every piece with memcpy whatever is asked.
enum class BatchEngine : int { kDma = 0, kKernel = 1 };

/// Work a stream runs on a host thread in stream order (Stream::host_call):
/// `failed` is the first failure known on the host among the stream's work
/// since its last recorded event (an injected failure, a gate opened with an
/// error, an event waited on that failed), or null.
using HostCall = std::function<void(const ErrorPtr& failed)>;

class Stream {
 public:
  virtual ~Stream() = default;

  /// Enqueues a copy of `bytes` bytes in stream order; returns at once.
  virtual void copy(const BufferPtr& dst, std::size_t dst_offset, const BufferPtr& src,
                    std::size_t src_offset, std::size_t bytes) = 0;
  /// Enqueues many copies as one operation (pieces may run in any order
  /// among themselves, so destinations must not overlap). Buffers are device
  /// or pinned memory, checked before this is called.
  virtual void copy_batch(const std::vector<BufferPtr>& dsts, const std::vector<BufferPtr>& srcs,
                          std::vector<CopyPiece> pieces, BatchEngine engine) = 0;
  /// A compute load for benchmarks: keeps every SM busy (the CPU backend: the
  /// stream's thread) for `iterations` rounds.
  virtual void busy(std::uint64_t iterations) = 0;
  /// A compute load for benchmarks: `count` bf16 GEMMs of n x n x n from
  /// cuBLAS, loaded at run time (CUDA only; ERR_UNSUPPORTED elsewhere or
  /// without cuBLAS).
  virtual void busy_gemm(std::uint32_t count, std::uint32_t n) {
    (void)count;
    (void)n;
    KVFLOW_FAIL(kUnsupported, "a GEMM load needs the CUDA backend");
  }
  /// Compute in stream order (the reference model's kernels): on CUDA `fn`
  /// runs at once on the calling thread with the cudaStream_t and enqueues
  /// its kernels there (an operation like any other: it takes a sequence
  /// number, an injected failure skips it); on the CPU backend `fn` runs on
  /// the stream's worker, in order, with 0 and does the work itself. `hold`
  /// stays alive until an event recorded after this completed.
  virtual void launch(std::function<void(std::uintptr_t stream)> fn, std::vector<std::shared_ptr<const void>> hold) {
    (void)fn;
    (void)hold;
    KVFLOW_FAIL(kUnsupported, "this stream cannot run compute");
  }
  /// Marks the current end of the stream; the event completes when all work
  /// enqueued before it has.
  [[nodiscard]] virtual EventPtr record() = 0;
  /// As record(), and the event carries its completion time (EventState::time_ms):
  /// from GPU timestamps on CUDA, from the host's steady clock on the CPU
  /// backend's worker. Costs a timing-enabled event on CUDA.
  [[nodiscard]] virtual EventPtr record_timed() { KVFLOW_FAIL(kUnsupported, "this stream cannot record timed events"); }
  /// Work enqueued after this waits until `event` completed (GPU-side on CUDA).
  virtual void wait(const EventPtr& event) = 0;
  /// True when nothing enqueued is still pending.
  [[nodiscard]] virtual bool idle() = 0;
  /// cudaStream_t on CUDA; an opaque id on the CPU backend.
  [[nodiscard]] virtual std::uintptr_t handle() const noexcept = 0;

  /// Work enqueued after this waits until `gate` is opened by a host thread.
  /// `before`, when given, runs on a host thread in stream order just before
  /// the wait, as host_call() would (on CUDA with host-function gates, in the
  /// same host function: a chain of transfers pends half as many).
  virtual void wait_gate(const GatePtr& gate, HostCall before = nullptr) = 0;
  /// Runs `fn` on a host thread in stream order, once the work enqueued
  /// before it ran (on CUDA, a host function). `fn` must neither block nor
  /// call CUDA: work that must keep a stream moving (a bounce ring's next disk
  /// read, say) goes here rather than behind an event, whose completion is
  /// noticed by a thread that calls CUDA and so can stall behind another
  /// thread's implicit synchronisation (cudaHostAlloc, cudaFree) that waits
  /// for this very stream. Not a user operation: an injected failure does not
  /// skip it, and it runs after failed work too (unless the context is lost).
  virtual void host_call(HostCall fn) = 0;
  /// Test hook: the next operation enqueued fails with `error` and does nothing
  /// (a gate wait still waits: only its failure is injected).
  virtual void inject_failure(ErrorPtr error) = 0;

  /// Teardown: waits (bounded) for enqueued work, then frees what the stream
  /// owns. Idempotent. With `abandon`, gates it waits on are treated as open.
  virtual void close(bool abandon) = 0;
};

/// Makes `stream` wait for an event that a host thread completes (an IO
/// request's, say) rather than a stream: work enqueued after this runs once
/// it completed, and a failure carries into the stream's next event. On every
/// backend the wait goes through a Gate that the event's completion opens,
/// so it never hangs on a failed request; a completed event is not waited
/// for, only its failure inherited.
void wait_host_event(Stream& stream, const EventPtr& event);

}  // namespace kvflow
