// CudaStream::copy_batch: many pieces in one operation. Two engines, both
// measured in bench/paged: batched DMA (cudaMemcpyBatchAsync, copy engines
// only, which disturbs concurrent compute least; large batches enqueued by
// more than one thread, DmaHelper) and a gather/scatter kernel through
// device scratch plus one contiguous DMA over PCIe (consecutive batches
// overlapping on two streams, KernelPipe).
#include <algorithm>
#include <array>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>
#include <thread>

#include "cuda_error.hpp"
#include "cuda_stream.hpp"
#include "kernels.hpp"
#include "span_plan.hpp"

namespace kvflow::cuda {

namespace {

// Copies per cudaMemcpyBatchAsync call (it takes any count; one call stays bounded).
constexpr std::size_t kBatchLimit = 65536;

bool all_device(const std::vector<BufferPtr>& buffers) {
  return std::all_of(buffers.begin(), buffers.end(),
                     [](const BufferPtr& b) { return b->kind() == MemoryKind::kDevice; });
}

cudaMemcpyKind direction_of(const Buffer& dst, const Buffer& src) {
  if (dst.kind() == MemoryKind::kDevice) {
    return src.kind() == MemoryKind::kDevice ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice;
  }
  return src.kind() == MemoryKind::kDevice ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost;
}

/// The copies of one batch, as the CUDA calls take them.
struct Copies {
  std::vector<void*> to;
  std::vector<const void*> from;
  std::vector<std::size_t> sizes;
  std::vector<cudaMemcpyKind> kinds;  // for copies made one by one

  void add(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
    to.push_back(dst);
    from.push_back(src);
    sizes.push_back(bytes);
    kinds.push_back(kind);
  }
};

/// Enqueues the copies with cudaMemcpyBatchAsync (copy engines, preferring
/// overlap with compute), or one by one for a single copy and on the legacy
/// default stream, which refuses batches.
void enqueue_copies(const Copies& c, cudaStream_t stream) {
  const std::size_t count = c.to.size();
  if (count == 1 || stream == nullptr) {
    for (std::size_t k = 0; k < count; ++k) KVFLOW_CUDA(cudaMemcpyAsync(c.to[k], c.from[k], c.sizes[k], c.kinds[k], stream));
    return;
  }
  cudaMemcpyAttributes attr{};
  attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;  // sources are written by earlier work on this stream
  attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
  std::size_t attr_index = 0;
  for (std::size_t first = 0; first < count; first += kBatchLimit) {
    const std::size_t n = std::min(kBatchLimit, count - first);
    // The API takes non-const arrays it does not write.
    KVFLOW_CUDA(cudaMemcpyBatchAsync(const_cast<void**>(c.to.data()) + first, const_cast<const void**>(c.from.data()) + first,
                                     const_cast<std::size_t*>(c.sizes.data()) + first, n, &attr, &attr_index, 1, stream));
  }
}

// A DMA batch of at least this many copies is enqueued by two threads at once.
// The driver spends about a microsecond of CPU per copy in
// cudaMemcpyBatchAsync (0.85-0.9 us on an H200, driver 580:
// bench/native/graph_probe.cu), so one thread enqueuing a layer of 440
// pieces of 32 KiB falls behind the copy engines (37-39 GB/s); two threads
// on two streams keep up (52-54 GB/s, 0.98 of a contiguous copy), and more
// gain nothing.
constexpr std::size_t kSplitCopies = 128;
// Threads that enqueue shares of such a batch beside the caller.
constexpr std::size_t kDmaHelpers = 1;

}  // namespace

/// A CUDA stream beside a kvflow stream, with its priority, and N events that
/// order the two: made together, destroyed together (safe with work pending).
template <std::size_t N>
class SideStream {
 public:
  SideStream(int ordinal, cudaStream_t like) : ordinal_(ordinal) {
    int priority = 0;
    KVFLOW_CUDA(cudaStreamGetPriority(like, &priority));
    KVFLOW_CUDA(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, priority));
    for (cudaEvent_t& e : events_) {
      const cudaError_t err = cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
      if (err != cudaSuccess) {
        destroy();
        throw_cuda(err, "cudaEventCreateWithFlags", __FILE__, __LINE__);
      }
    }
  }
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;
  ~SideStream() { destroy(); }

  [[nodiscard]] cudaStream_t stream() const noexcept { return stream_; }
  [[nodiscard]] cudaEvent_t event(std::size_t i) const noexcept { return events_[i]; }
  [[nodiscard]] int ordinal() const noexcept { return ordinal_; }

 private:
  void destroy() noexcept {
    (void)cudaSetDevice(ordinal_);
    for (cudaEvent_t e : events_) {
      if (e != nullptr) (void)cudaEventDestroy(e);
    }
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    (void)cudaGetLastError();
  }

  int ordinal_;
  cudaStream_t stream_ = nullptr;
  std::array<cudaEvent_t, N> events_{};
};

/// Enqueues a share of a batch on its own stream, from its own thread, while
/// the caller enqueues the rest; the caller's stream then waits for it. The
/// caller holds its stream's mutex throughout, as for any CUDA call it makes.
class DmaHelper {
 public:
  DmaHelper(int ordinal, cudaStream_t like) : side_(ordinal, like) { thread_ = std::thread([this] { loop(); }); }
  DmaHelper(const DmaHelper&) = delete;
  DmaHelper& operator=(const DmaHelper&) = delete;
  ~DmaHelper() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  /// Starts enqueuing `theirs` on the helper's stream, after the work already
  /// on `stream`; `theirs` must stay alive until finish() returned.
  void start(const Copies& theirs, cudaStream_t stream) {
    KVFLOW_CUDA(cudaEventRecord(side_.event(kFork), stream));
    KVFLOW_CUDA(cudaStreamWaitEvent(side_.stream(), side_.event(kFork), 0));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &theirs;
      done_ = false;
      failed_ = nullptr;
    }
    cv_.notify_all();
  }

  /// Waits until the share is enqueued; `stream` then waits for it. Returns
  /// the helper's failure, if any (the stream then does not wait for it).
  std::exception_ptr finish(cudaStream_t stream) noexcept {
    std::exception_ptr there;
    bool recorded = false;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return done_; });
      there = failed_;
      recorded = join_recorded_;
    }
    // The stream waits for the helper's stream, so that its later work, the
    // release of the batch's buffers and close() all come after the helper's
    // copies, whether its share was enqueued whole or not. Only when that
    // cannot be arranged (no join recorded, or the wait failed) is the
    // helper's stream waited for here: no copy may outlive the buffers it uses.
    const cudaError_t joined = recorded ? cudaStreamWaitEvent(stream, side_.event(kJoin), 0) : cudaErrorUnknown;
    if (joined != cudaSuccess) {
      (void)cudaStreamSynchronize(side_.stream());
      (void)cudaGetLastError();
    }
    if (there) return there;
    if (joined != cudaSuccess) {
      try {
        throw_cuda(joined, "cudaStreamWaitEvent", __FILE__, __LINE__);
      } catch (...) {
        return std::current_exception();
      }
    }
    return nullptr;
  }

 private:
  void loop() {
    (void)cudaSetDevice(side_.ordinal());
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || job_ != nullptr; });
      if (stop_) return;
      const Copies* job = job_;
      job_ = nullptr;
      lock.unlock();
      std::exception_ptr failed;
      try {
        enqueue_copies(*job, side_.stream());
      } catch (...) {
        failed = std::current_exception();
      }
      const cudaError_t recorded = cudaEventRecord(side_.event(kJoin), side_.stream());
      if (!failed && recorded != cudaSuccess) {
        try {
          throw_cuda(recorded, "cudaEventRecord", __FILE__, __LINE__);
        } catch (...) {
          failed = std::current_exception();
        }
      }
      lock.lock();
      failed_ = failed;
      join_recorded_ = recorded == cudaSuccess;
      done_ = true;
      cv_.notify_all();
    }
  }

  static constexpr std::size_t kFork = 0;
  static constexpr std::size_t kJoin = 1;
  SideStream<2> side_;  // destroyed last, after the thread was joined
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  const Copies* job_ = nullptr;
  bool done_ = false;
  bool join_recorded_ = false;  // the helper's stream's work so far is behind its join event
  bool stop_ = false;
  std::exception_ptr failed_;
};

/// The two stages of a kernel-engine batch on two streams, so that one
/// batch's second stage overlaps the next batch's first. A scatter's first
/// stage is its DMA into device scratch and its second the kernel into the
/// cache; a gather's first stage is the kernel into scratch and its second the
/// DMA out. The first stage runs on the pipe's side stream, the second on the
/// kvflow stream after it, so everything later on that stream still follows
/// the whole batch. What a first stage reads may only have been written by
/// work on the stream before the batch: the side stream waits for that point
/// (a fork), which consecutive batches of one direction share, since nothing
/// was enqueued between them (an event record enqueues no work). Scratch
/// alternates between two slots; a first stage waits until the second stage
/// that last used its slot is done. On one stream the copy engine thus never
/// waits for the kernels (run in series, they cost 7% of a 14 MB layer on an
/// H200: bench/paged).
class KernelPipe {
 public:
  KernelPipe(int ordinal, cudaStream_t like) : side_(ordinal, like) {}
  KernelPipe(const KernelPipe&) = delete;
  KernelPipe& operator=(const KernelPipe&) = delete;

  /// The scratch slot of the next batch, at least `bytes` long.
  BufferPtr& next_slot(Device& device, std::size_t bytes) {
    BufferPtr& slot = slots_[next_];
    if (!slot || slot->bytes() < bytes) slot = device.alloc_device(bytes);
    return slot;
  }

  /// Enqueues one batch: `first` on the side stream, `second` on `stream`.
  /// `seq` is the batch's operation number on `stream`; `gather` its direction.
  /// `may_chain` false when work kvflow does not see may be enqueued on the
  /// stream (a wrapped stream, or one whose handle was handed out): every
  /// batch then forks afresh.
  template <typename First, typename Second>
  void run(cudaStream_t stream, std::uint64_t seq, bool gather, bool may_chain, First&& first, Second&& second) {
    const int slot = next_;
    next_ ^= 1;
    const int dir = gather ? 1 : 2;
    const bool chained = may_chain && dir_ == dir && seq == seq_ + 1;
    dir_ = 0;  // until this batch is fully enqueued
    bool side_used = false;
    try {
      if (!chained) {
        KVFLOW_CUDA(cudaEventRecord(side_.event(kFork), stream));
        KVFLOW_CUDA(cudaStreamWaitEvent(side_.stream(), side_.event(kFork), 0));
      }
      if (slot_used_[slot]) KVFLOW_CUDA(cudaStreamWaitEvent(side_.stream(), side_.event(kSlotFree + slot), 0));
      side_used = true;
      first(side_.stream());
      KVFLOW_CUDA(cudaEventRecord(side_.event(kFirstDone), side_.stream()));
      KVFLOW_CUDA(cudaStreamWaitEvent(stream, side_.event(kFirstDone), 0));
      side_used = false;  // the stream now waits for the side stream's work
      second(stream);
      KVFLOW_CUDA(cudaEventRecord(side_.event(kSlotFree + slot), stream));
    } catch (...) {
      // The side stream's work may not be behind the stream's. Put it there
      // (the stream waits for it, so nothing it does outlives the buffers the
      // batch holds); only if that fails, wait for it here (which, behind a
      // held stream, waits for the hold). A later batch starts afresh.
      if (side_used) {
        const bool joined = cudaEventRecord(side_.event(kFirstDone), side_.stream()) == cudaSuccess &&
                            cudaStreamWaitEvent(stream, side_.event(kFirstDone), 0) == cudaSuccess;
        if (!joined) (void)cudaStreamSynchronize(side_.stream());
      }
      (void)cudaGetLastError();
      slot_used_[0] = slot_used_[1] = false;
      throw;
    }
    slot_used_[slot] = true;
    dir_ = dir;
    seq_ = seq;
  }

 private:
  static constexpr std::size_t kFork = 0;
  static constexpr std::size_t kFirstDone = 1;
  static constexpr std::size_t kSlotFree = 2;  // and 3: one per scratch slot
  SideStream<4> side_;
  BufferPtr slots_[2];
  bool slot_used_[2] = {false, false};
  int next_ = 0;
  int dir_ = 0;            // direction of the last batch (1 gather, 2 scatter), 0 for none
  std::uint64_t seq_ = 0;  // its operation number on the stream
};

void CudaStream::busy(std::uint64_t iterations) {
  StreamCore& c = *core_;
  std::lock_guard<std::mutex> lock(c.mutex);
  if (begin_op_locked() == 0) return;
  KVFLOW_CUDA(cudaSetDevice(c.ordinal));
  check_cuda(launch_busy(iterations, sm_count(), c.stream), "busy kernel", __FILE__, __LINE__);
}

int CudaStream::sm_count() {
  if (sm_count_ == 0) KVFLOW_CUDA(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, core_->ordinal));
  return sm_count_;
}

void CudaStream::copy_batch(const std::vector<BufferPtr>& dsts, const std::vector<BufferPtr>& srcs,
                            std::vector<CopyPiece> pieces, BatchEngine engine) {
  StreamCore& c = *core_;
  std::lock_guard<std::mutex> lock(c.mutex);
  const std::uint64_t seq = begin_op_locked();
  if (seq == 0 || pieces.empty()) return;
  StreamCore::Retained keep{seq, {}};
  keep.hold.reserve(dsts.size() + srcs.size() + 1);
  for (const auto& b : dsts) keep.hold.push_back(b);
  for (const auto& b : srcs) keep.hold.push_back(b);
  // Retained before anything is enqueued, so whatever gets enqueued is covered.
  c.retained.push_back(std::move(keep));
  try {
    KVFLOW_CUDA(cudaSetDevice(c.ordinal));
    if (engine == BatchEngine::kKernel) {
      batch_kernel_locked(dsts, srcs, pieces, c.retained.back().hold, seq);
    } else {
      batch_dma_locked(dsts, srcs, pieces);
    }
  } catch (...) {
    c.arm_sweep_locked();
    throw;
  }
  c.arm_sweep_locked();
}

void CudaStream::batch_dma_locked(const std::vector<BufferPtr>& dsts, const std::vector<BufferPtr>& srcs,
                                  const std::vector<CopyPiece>& pieces) {
  Copies copies;
  for (const CopyPiece& p : pieces) {
    const Buffer& d = *dsts[p.dst];
    const Buffer& s = *srcs[p.src];
    copies.add(static_cast<char*>(d.ptr()) + p.dst_offset, static_cast<const char*>(s.ptr()) + p.src_offset, p.bytes,
               direction_of(d, s));
  }
  const cudaStream_t stream = core_->stream;
  if (pieces.size() < kSplitCopies || stream == nullptr) {
    enqueue_copies(copies, stream);
    return;
  }
  if (dma_helpers_.empty() && !dma_helper_failed_) {
    try {
      for (std::size_t i = 0; i < kDmaHelpers; ++i) dma_helpers_.push_back(std::make_shared<DmaHelper>(core_->ordinal, stream));
    } catch (...) {
      dma_helpers_.clear();
      dma_helper_failed_ = true;  // no second stream or thread: this stream enqueues alone, as before
      (void)cudaGetLastError();
    }
  }
  if (dma_helpers_.empty()) {
    enqueue_copies(copies, stream);
    return;
  }
  // Equal shares, the caller's first (each batch's copies may run in any
  // order, so its shares may too).
  const std::size_t parts = dma_helpers_.size() + 1;
  const std::size_t share = (copies.to.size() + parts - 1) / parts;
  std::vector<Copies> theirs(dma_helpers_.size());
  for (std::size_t h = 0; h < theirs.size(); ++h) {
    const std::size_t lo = std::min(copies.to.size(), share * (h + 1));
    const std::size_t hi = std::min(copies.to.size(), share * (h + 2));
    theirs[h].to.assign(copies.to.begin() + lo, copies.to.begin() + hi);
    theirs[h].from.assign(copies.from.begin() + lo, copies.from.begin() + hi);
    theirs[h].sizes.assign(copies.sizes.begin() + lo, copies.sizes.begin() + hi);
    theirs[h].kinds.assign(copies.kinds.begin() + lo, copies.kinds.begin() + hi);
  }
  copies.to.resize(share);
  copies.from.resize(share);
  copies.sizes.resize(share);
  copies.kinds.resize(share);
  std::exception_ptr failed;
  std::size_t started = 0;
  try {
    for (; started < theirs.size(); ++started) dma_helpers_[started]->start(theirs[started], stream);
    enqueue_copies(copies, stream);
  } catch (...) {
    failed = std::current_exception();
  }
  for (std::size_t h = 0; h < started; ++h) {
    std::exception_ptr there = dma_helpers_[h]->finish(stream);
    if (!failed) failed = there;
  }
  if (failed) std::rethrow_exception(failed);
}

void CudaStream::batch_kernel_locked(const std::vector<BufferPtr>& dsts, const std::vector<BufferPtr>& srcs,
                                     const std::vector<CopyPiece>& pieces,
                                     std::vector<std::shared_ptr<const void>>& hold, std::uint64_t seq) {
  const cudaStream_t stream = core_->stream;
  const bool gather = all_device(srcs) && !all_device(dsts);
  const bool scatter = all_device(dsts) && !all_device(srcs);
  std::vector<DevicePiece> work;
  work.reserve(pieces.size());
  if (!gather && !scatter) {
    if (!all_device(dsts) || !all_device(srcs)) {
      KVFLOW_FAIL(kInvalidArg,
                  "expected device memory on one side of a kernel-engine batch, got pinned memory on both; use engine 'dma'");
    }
    for (const CopyPiece& p : pieces) {
      work.push_back({static_cast<char*>(dsts[p.dst]->ptr()) + p.dst_offset,
                      static_cast<const char*>(srcs[p.src]->ptr()) + p.src_offset, p.bytes});
    }
    check_cuda(launch_piece_copy(work.data(), work.size(), sm_count(), stream), "piece copy kernel", __FILE__, __LINE__);
    return;
  }
  // The host side's runs of pieces move as spans through device scratch (span_plan.hpp).
  const auto& host_side = gather ? dsts : srcs;
  KVFLOW_CHECK(std::none_of(host_side.begin(), host_side.end(),
                            [](const BufferPtr& b) { return b->kind() == MemoryKind::kDevice; }),
               kInvalidArg,
               "expected only pinned staging on the host side of a kernel-engine batch, got device memory among it; use "
               "engine 'dma'");
  const auto offset_of = [&](const CopyPiece& p) { return gather ? p.dst_offset : p.src_offset; };
  std::vector<std::uintptr_t> host_addresses;
  host_addresses.reserve(host_side.size());
  for (const BufferPtr& b : host_side) host_addresses.push_back(reinterpret_cast<std::uintptr_t>(b->ptr()));
  const SpanPlan plan = plan_spans(pieces, gather, host_addresses);
  const std::size_t total = plan.scratch_bytes;
  // Two stages on two streams where the stream can have a side stream (not
  // the legacy default stream, which orders itself against every other).
  if (stream != nullptr && !kernel_pipe_ && !kernel_pipe_failed_) {
    try {
      kernel_pipe_ = std::make_shared<KernelPipe>(core_->ordinal, stream);
    } catch (...) {
      kernel_pipe_failed_ = true;  // no side stream: both stages on the stream, in series
      (void)cudaGetLastError();
    }
  }
  BufferPtr scratch_buffer;
  if (stream != nullptr && kernel_pipe_) {
    scratch_buffer = kernel_pipe_->next_slot(device_, total);
  } else {
    if (!scratch_ || scratch_->bytes() < total) scratch_ = device_.alloc_device(total);
    scratch_buffer = scratch_;
  }
  hold.push_back(scratch_buffer);
  char* scratch = static_cast<char*>(scratch_buffer->ptr());
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const CopyPiece& p = pieces[i];
    const HostSpan& sp = plan.spans[plan.span_of[i]];
    char* in_scratch = scratch + sp.at + (offset_of(p) - sp.lo);
    if (gather) {
      work.push_back({in_scratch, static_cast<const char*>(srcs[p.src]->ptr()) + p.src_offset, p.bytes});
    } else {
      work.push_back({static_cast<char*>(dsts[p.dst]->ptr()) + p.dst_offset, in_scratch, p.bytes});
    }
  }
  Copies copies;
  for (const HostSpan& sp : plan.spans) {
    char* host = static_cast<char*>(host_side[sp.buffer]->ptr()) + sp.lo;
    if (gather) copies.add(host, scratch + sp.at, sp.hi - sp.lo, cudaMemcpyDeviceToHost);
    else copies.add(scratch + sp.at, host, sp.hi - sp.lo, cudaMemcpyHostToDevice);
  }
  const int sms = sm_count();
  const auto kernel = [&](cudaStream_t on) {
    check_cuda(launch_piece_copy(work.data(), work.size(), sms, on), gather ? "gather kernel" : "scatter kernel",
               __FILE__, __LINE__);
  };
  const auto dma = [&](cudaStream_t on) { enqueue_copies(copies, on); };
  if (stream != nullptr && kernel_pipe_) {
    const bool may_chain = core_->owned && !handle_shared_.load(std::memory_order_relaxed);
    if (gather) kernel_pipe_->run(stream, seq, true, may_chain, kernel, dma);
    else kernel_pipe_->run(stream, seq, false, may_chain, dma, kernel);
  } else if (gather) {
    kernel(stream);
    dma(stream);
  } else {
    dma(stream);
    kernel(stream);
  }
}

}  // namespace kvflow::cuda
