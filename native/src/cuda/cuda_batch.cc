// CudaStream::copy_batch: many pieces in one operation. Two engines, both
// measured in bench/paged: batched DMA (cudaMemcpyBatchAsync, copy engines
// only, which disturbs concurrent compute least) and a gather/scatter kernel
// through device scratch plus one contiguous DMA over PCIe.
#include <algorithm>
#include <functional>
#include <string>

#include "cuda_error.hpp"
#include "cuda_stream.hpp"
#include "kernels.hpp"

namespace kvflow::cuda {

namespace {

// cudaMemcpyBatchAsync takes any count; bounded so the pointer arrays stay small.
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

}  // namespace

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
      batch_kernel_locked(dsts, srcs, pieces, c.retained.back().hold);
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
  const cudaStream_t stream = core_->stream;
  if (stream == nullptr) {
    // The legacy default stream refuses batches: one copy per piece.
    for (const CopyPiece& p : pieces) {
      const Buffer& d = *dsts[p.dst];
      const Buffer& s = *srcs[p.src];
      KVFLOW_CUDA(cudaMemcpyAsync(static_cast<char*>(d.ptr()) + p.dst_offset,
                                  static_cast<const char*>(s.ptr()) + p.src_offset, p.bytes, direction_of(d, s), stream));
    }
    return;
  }
  std::vector<void*> to;
  std::vector<const void*> from;
  std::vector<std::size_t> sizes;
  const std::size_t n = std::min(pieces.size(), kBatchLimit);
  to.reserve(n);
  from.reserve(n);
  sizes.reserve(n);
  cudaMemcpyAttributes attr{};
  attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;  // sources are written by earlier work on this stream
  attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
  std::size_t attr_index = 0;
  for (std::size_t first = 0; first < pieces.size(); first += kBatchLimit) {
    const std::size_t count = std::min(kBatchLimit, pieces.size() - first);
    to.clear();
    from.clear();
    sizes.clear();
    for (std::size_t i = first; i < first + count; ++i) {
      const CopyPiece& p = pieces[i];
      to.push_back(static_cast<char*>(dsts[p.dst]->ptr()) + p.dst_offset);
      from.push_back(static_cast<const char*>(srcs[p.src]->ptr()) + p.src_offset);
      sizes.push_back(p.bytes);
    }
    KVFLOW_CUDA(cudaMemcpyBatchAsync(to.data(), from.data(), sizes.data(), count, &attr, &attr_index, 1, stream));
  }
}

void CudaStream::batch_kernel_locked(const std::vector<BufferPtr>& dsts, const std::vector<BufferPtr>& srcs,
                                     const std::vector<CopyPiece>& pieces,
                                     std::vector<std::shared_ptr<const void>>& hold) {
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
  // The host side may be several staging buffers (a store's records live in
  // several arena segments). Each run of touching pieces of one buffer is a
  // span that moves in one DMA; all spans of the batch are packed into the
  // device scratch and one kernel moves every piece between scratch and cache.
  // A gather's spans never cover bytes no piece names (another record's, in a
  // shared arena); a scatter may read across a small gap to save a DMA.
  const auto& host_side = gather ? dsts : srcs;
  KVFLOW_CHECK(std::none_of(host_side.begin(), host_side.end(),
                            [](const BufferPtr& b) { return b->kind() == MemoryKind::kDevice; }),
               kInvalidArg,
               "expected only pinned staging on the host side of a kernel-engine batch, got device memory among it; use "
               "engine 'dma'");
  constexpr std::size_t kReadGap = 64 * 1024;
  struct Span {
    std::uint32_t buffer;
    std::size_t lo, hi;
    std::size_t at;  // offset in scratch
  };
  std::vector<std::uint32_t> order(pieces.size());
  for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  const auto host_of = [&](const CopyPiece& p) { return gather ? p.dst : p.src; };
  const auto offset_of = [&](const CopyPiece& p) { return gather ? p.dst_offset : p.src_offset; };
  std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
    const CopyPiece& x = pieces[a];
    const CopyPiece& y = pieces[b];
    return host_of(x) != host_of(y) ? host_of(x) < host_of(y) : offset_of(x) < offset_of(y);
  });
  std::vector<Span> spans;
  std::vector<std::uint32_t> span_of(pieces.size());
  const std::size_t gap = gather ? 0 : kReadGap;
  for (const std::uint32_t i : order) {
    const CopyPiece& p = pieces[i];
    const std::size_t off = offset_of(p);
    if (spans.empty() || spans.back().buffer != host_of(p) || off > spans.back().hi + gap) {
      spans.push_back({host_of(p), off, off + p.bytes, 0});
    } else {
      spans.back().hi = std::max(spans.back().hi, off + p.bytes);
    }
    span_of[i] = static_cast<std::uint32_t>(spans.size() - 1);
  }
  // Each span keeps its host address modulo 256 in scratch, so pieces that
  // allow 16-byte accesses on the host side still do in scratch.
  std::size_t total = 0;
  for (Span& sp : spans) {
    const std::size_t misalign = reinterpret_cast<std::uintptr_t>(static_cast<char*>(host_side[sp.buffer]->ptr()) + sp.lo) & 255;
    total = (total + 255) / 256 * 256 + misalign;
    sp.at = total;
    total += sp.hi - sp.lo;
  }
  if (!scratch_ || scratch_->bytes() < total) scratch_ = device_.alloc_device(total);
  hold.push_back(scratch_);
  char* scratch = static_cast<char*>(scratch_->ptr());
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const CopyPiece& p = pieces[i];
    const Span& sp = spans[span_of[i]];
    char* in_scratch = scratch + sp.at + (offset_of(p) - sp.lo);
    if (gather) {
      work.push_back({in_scratch, static_cast<const char*>(srcs[p.src]->ptr()) + p.src_offset, p.bytes});
    } else {
      work.push_back({static_cast<char*>(dsts[p.dst]->ptr()) + p.dst_offset, in_scratch, p.bytes});
    }
  }
  if (gather) {
    check_cuda(launch_piece_copy(work.data(), work.size(), sm_count(), stream), "gather kernel", __FILE__, __LINE__);
    move_spans_locked(spans.size(), [&](std::size_t k, void*& to, const void*& from, std::size_t& bytes) {
      const Span& sp = spans[k];
      to = static_cast<char*>(host_side[sp.buffer]->ptr()) + sp.lo;
      from = scratch + sp.at;
      bytes = sp.hi - sp.lo;
    }, cudaMemcpyDeviceToHost);
  } else {
    move_spans_locked(spans.size(), [&](std::size_t k, void*& to, const void*& from, std::size_t& bytes) {
      const Span& sp = spans[k];
      to = scratch + sp.at;
      from = static_cast<const char*>(host_side[sp.buffer]->ptr()) + sp.lo;
      bytes = sp.hi - sp.lo;
    }, cudaMemcpyHostToDevice);
    check_cuda(launch_piece_copy(work.data(), work.size(), sm_count(), stream), "scatter kernel", __FILE__, __LINE__);
  }
}

void CudaStream::move_spans_locked(std::size_t count,
                                   const std::function<void(std::size_t, void*&, const void*&, std::size_t&)>& span,
                                   cudaMemcpyKind kind) {
  const cudaStream_t stream = core_->stream;
  if (count == 1 || stream == nullptr) {
    // One DMA, or the legacy default stream (which refuses batches): one copy per span.
    for (std::size_t k = 0; k < count; ++k) {
      void* to = nullptr;
      const void* from = nullptr;
      std::size_t bytes = 0;
      span(k, to, from, bytes);
      KVFLOW_CUDA(cudaMemcpyAsync(to, from, bytes, kind, stream));
    }
    return;
  }
  std::vector<void*> to(count);
  std::vector<const void*> from(count);
  std::vector<std::size_t> sizes(count);
  for (std::size_t k = 0; k < count; ++k) span(k, to[k], from[k], sizes[k]);
  cudaMemcpyAttributes attr{};
  attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
  std::size_t attr_index = 0;
  for (std::size_t first = 0; first < count; first += kBatchLimit) {
    const std::size_t n = std::min(kBatchLimit, count - first);
    KVFLOW_CUDA(cudaMemcpyBatchAsync(to.data() + first, from.data() + first, sizes.data() + first, n, &attr,
                                     &attr_index, 1, stream));
  }
}

}  // namespace kvflow::cuda
