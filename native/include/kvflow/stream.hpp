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

#include "kvflow/buffer.hpp"
#include "kvflow/error.hpp"
#include "kvflow/event.hpp"
#include "kvflow/gate.hpp"

namespace kvflow {

class Stream {
 public:
  virtual ~Stream() = default;

  /// Enqueues a copy of `bytes` bytes in stream order; returns at once.
  virtual void copy(const BufferPtr& dst, std::size_t dst_offset, const BufferPtr& src,
                    std::size_t src_offset, std::size_t bytes) = 0;
  /// Marks the current end of the stream; the event completes when all work
  /// enqueued before it has.
  [[nodiscard]] virtual EventPtr record() = 0;
  /// Work enqueued after this waits until `event` completed (GPU-side on CUDA).
  virtual void wait(const EventPtr& event) = 0;
  /// True when nothing enqueued is still pending.
  [[nodiscard]] virtual bool idle() = 0;
  /// cudaStream_t on CUDA; an opaque id on the CPU backend.
  [[nodiscard]] virtual std::uintptr_t handle() const noexcept = 0;

  /// Work enqueued after this waits until `gate` is opened by a host thread.
  virtual void wait_gate(const GatePtr& gate) = 0;
  /// Test hook: the next operation enqueued fails with `error` and does nothing.
  virtual void inject_failure(ErrorPtr error) = 0;

  /// Teardown: waits (bounded) for enqueued work, then frees what the stream
  /// owns. Idempotent. With `abandon`, gates it waits on are treated as open.
  virtual void close(bool abandon) = 0;
};

}  // namespace kvflow
