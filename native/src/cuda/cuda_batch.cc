// CudaStream::copy_batch: many pieces in one operation. Two engines, both
// measured in bench/paged: batched DMA (cudaMemcpyBatchAsync, copy engines
// only, which disturbs concurrent compute least) and a gather/scatter kernel
// through device scratch plus one contiguous DMA over PCIe.
#include <algorithm>
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
  const auto& host_side = gather ? dsts : srcs;
  KVFLOW_CHECK(host_side.size() == 1, kInvalidArg,
               "expected one staging buffer on the host side of a kernel-engine batch, got " +
                   std::to_string(host_side.size()) + "; use engine 'dma'");
  // The span of staging the pieces touch moves in one contiguous DMA.
  std::size_t lo = SIZE_MAX;
  std::size_t hi = 0;
  for (const CopyPiece& p : pieces) {
    const std::size_t off = gather ? p.dst_offset : p.src_offset;
    lo = std::min(lo, off);
    hi = std::max(hi, off + p.bytes);
  }
  const std::size_t span = hi - lo;
  if (!scratch_ || scratch_->bytes() < span) scratch_ = device_.alloc_device(span);
  hold.push_back(scratch_);
  char* scratch = static_cast<char*>(scratch_->ptr());
  char* staging = static_cast<char*>(host_side.front()->ptr()) + lo;
  for (const CopyPiece& p : pieces) {
    if (gather) {
      work.push_back({scratch + (p.dst_offset - lo), static_cast<const char*>(srcs[p.src]->ptr()) + p.src_offset, p.bytes});
    } else {
      work.push_back({static_cast<char*>(dsts[p.dst]->ptr()) + p.dst_offset, scratch + (p.src_offset - lo), p.bytes});
    }
  }
  if (gather) {
    check_cuda(launch_piece_copy(work.data(), work.size(), sm_count(), stream), "gather kernel", __FILE__, __LINE__);
    KVFLOW_CUDA(cudaMemcpyAsync(staging, scratch, span, cudaMemcpyDeviceToHost, stream));
  } else {
    KVFLOW_CUDA(cudaMemcpyAsync(scratch, staging, span, cudaMemcpyHostToDevice, stream));
    check_cuda(launch_piece_copy(work.data(), work.size(), sm_count(), stream), "scatter kernel", __FILE__, __LINE__);
  }
}

}  // namespace kvflow::cuda
