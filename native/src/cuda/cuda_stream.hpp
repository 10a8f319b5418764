// A kvflow Stream on a cudaStream_t: copies become cudaMemcpyAsync (or host
// functions where CUDA would block the JS thread), events become cudaEvents
// completed by the device's poller, and the buffers of every operation stay
// alive until an event recorded after it completed.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include "kvflow/device.hpp"
#include "kvflow/stream.hpp"
#include "poller.hpp"
#include "stream_core.hpp"

namespace kvflow::cuda {

class EventPool;
class FlagPool;
class DmaHelper;   // cuda_batch.cc
class KernelPipe;  // cuda_batch.cc

/// Pageable <-> device copies bounce through one pinned staging buffer, in
/// chunks of at least kBounceMinChunk and at most kBounceMaxChunks per copy.
/// The driver blocks the enqueuing thread once about 56 alternations of host
/// function and device copy are pending on a stream (measured on an H200,
/// driver 580), so a copy must not be cut into many small chunks.
inline constexpr std::size_t kBounceMinChunk = std::size_t{16} << 20;
inline constexpr std::size_t kBounceMaxChunks = 16;

/// The staging size of a bounced copy of `bytes` bytes (see kBounceMinChunk).
[[nodiscard]] std::size_t bounce_chunk(std::size_t bytes) noexcept;

/// How long close() waits for a stream's work before it gives up on it.
inline constexpr std::chrono::seconds kStreamCloseWait{10};

class CudaStream final : public Stream {
 public:
  /// A new non-blocking stream; priority 0 is normal, 1 is high.
  /// With `flags`, gates are waited on with cuStreamWaitValue32 on flags from
  /// it; without, by host functions.
  [[nodiscard]] static std::unique_ptr<Stream> create(Device& device, int ordinal, int priority,
                                                      std::shared_ptr<EventPool> events,
                                                      std::shared_ptr<Poller> poller,
                                                      std::shared_ptr<FlagPool> flags);
  /// A stream kvflow uses but never destroys; 0 is the legacy default stream.
  [[nodiscard]] static std::unique_ptr<Stream> wrap(Device& device, int ordinal, std::uintptr_t handle,
                                                    std::shared_ptr<EventPool> events,
                                                    std::shared_ptr<Poller> poller,
                                                    std::shared_ptr<FlagPool> flags);

  CudaStream(Device& device, std::shared_ptr<StreamCore> core);
  ~CudaStream() override;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  void copy(const BufferPtr& dst, std::size_t dst_offset, const BufferPtr& src, std::size_t src_offset,
            std::size_t bytes) override;
  void copy_batch(const std::vector<BufferPtr>& dsts, const std::vector<BufferPtr>& srcs,
                  std::vector<CopyPiece> pieces, BatchEngine engine) override;
  void busy(std::uint64_t iterations) override;
  void busy_gemm(std::uint32_t count, std::uint32_t n) override;  // gemm_load.cc
  void launch(std::function<void(std::uintptr_t stream)> fn, std::vector<std::shared_ptr<const void>> hold) override;
  [[nodiscard]] EventPtr record() override;
  [[nodiscard]] EventPtr record_timed() override;
  void wait(const EventPtr& event) override;
  [[nodiscard]] bool idle() override;
  [[nodiscard]] std::uintptr_t handle() const noexcept override;
  void wait_gate(const GatePtr& gate, HostCall before = nullptr) override;
  void host_call(HostCall fn) override;
  void inject_failure(ErrorPtr error) override;
  void close(bool abandon) override;

 private:
  EventPtr record_event(bool timed);
  // Caller holds the mutex. Starts an operation: its sequence number, or 0 when
  // an injected failure takes its place (the operation is then not performed).
  [[nodiscard]] std::uint64_t begin_op_locked();
  // Waits, bounded, for the work enqueued so far; true when it finished.
  [[nodiscard]] bool drain(std::chrono::milliseconds budget) noexcept;
  // stream_gate.cc: wait_gate() on a flag (cuStreamWaitValue32), mutex held.
  // `hold` stays alive until the stream passed the wait.
  void wait_flag_locked(std::uint64_t seq, const GatePtr& gate, std::shared_ptr<const void> hold = nullptr);
  // host_call() with the mutex held.
  // Returns what the host function uses (retained until it ran).
  std::shared_ptr<const void> host_call_locked(HostCall fn);

  // cuda_batch.cc: the two engines of copy_batch, with the mutex held.
  void batch_dma_locked(const std::vector<BufferPtr>& dsts, const std::vector<BufferPtr>& srcs,
                        const std::vector<CopyPiece>& pieces);
  void batch_kernel_locked(const std::vector<BufferPtr>& dsts, const std::vector<BufferPtr>& srcs,
                           const std::vector<CopyPiece>& pieces, std::vector<std::shared_ptr<const void>>& hold,
                           std::uint64_t seq);
  [[nodiscard]] int sm_count();

  Device& device_;  // for bounce buffers and event ids; used only while the stream is open
  std::shared_ptr<StreamCore> core_;
  BufferPtr scratch_;  // device scratch of the kernel engine without a side stream, reused in stream order
  // The kernel engine's two stages on two streams (cuda_batch.cc), made on
  // first use, ended by close().
  std::shared_ptr<KernelPipe> kernel_pipe_;
  bool kernel_pipe_failed_ = false;  // making one failed: both stages run on the stream
  // Set once handle() was read: work kvflow does not see may then be enqueued
  // on the stream, so kernel-engine batches no longer share a fork.
  mutable std::atomic<bool> handle_shared_{false};
  // Enqueue shares of a large DMA batch on streams of their own from threads
  // of their own (cuda_batch.cc), made on first use, ended by close().
  std::vector<std::shared_ptr<DmaHelper>> dma_helpers_;
  bool dma_helper_failed_ = false;  // making one failed: batches are enqueued by one thread
  int sm_count_ = 0;
};

}  // namespace kvflow::cuda
