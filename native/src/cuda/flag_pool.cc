// Flags of wait-value gates (see flag_pool.hpp).
#include "flag_pool.hpp"

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstring>
#include <utility>

#include "cuda_error.hpp"

namespace kvflow::cuda {

namespace {

constexpr std::size_t kPageBytes = 4096;
constexpr std::size_t kFlagsPerPage = kPageBytes / sizeof(std::uint32_t);

}  // namespace

Flag::Flag(std::shared_ptr<FlagPool> pool, std::uint32_t* host, CUdeviceptr device) noexcept
    : pool_(std::move(pool)), host_(host), device_(device) {}

Flag::~Flag() { pool_->release(FlagPool::Slot{host_, device_}); }

void Flag::set() noexcept { std::atomic_ref<std::uint32_t>(*host_).store(1, std::memory_order_release); }

FlagPool::~FlagPool() {
  // Every Flag holds the pool, so no stream can wait on these pages any more.
  if (pages_.empty()) return;
  if (cudaSetDevice(ordinal_) == cudaSuccess) {
    for (void* page : pages_) (void)cudaFreeHost(page);
  }
  (void)cudaGetLastError();
}

void FlagPool::grow_locked() {
  // Reserved first, so a failed allocation leaks no pinned page.
  pages_.reserve(pages_.size() + 1);
  free_.reserve((pages_.size() + 1) * kFlagsPerPage);
  KVFLOW_CUDA(cudaSetDevice(ordinal_));
  void* page = nullptr;
  // Mapped: the GPU reads the flags in place; portable: any context may map
  // them, like the pinned pool's memory. Not write-combined: the host writes
  // single words and must not leave them in a write-combining buffer.
  KVFLOW_CUDA(cudaHostAlloc(&page, kPageBytes, cudaHostAllocMapped | cudaHostAllocPortable));
  void* device = nullptr;
  const cudaError_t status = cudaHostGetDevicePointer(&device, page, 0);
  if (status != cudaSuccess) {
    (void)cudaFreeHost(page);
    throw_cuda(status, "cudaHostGetDevicePointer", __FILE__, __LINE__);
  }
  std::memset(page, 0, kPageBytes);
  pages_.push_back(page);
  auto* host_words = static_cast<std::uint32_t*>(page);
  const auto device_base = reinterpret_cast<CUdeviceptr>(device);
  for (std::size_t i = kFlagsPerPage; i-- > 0;) {
    free_.push_back(Slot{host_words + i, device_base + i * sizeof(std::uint32_t)});
  }
}

FlagPtr FlagPool::acquire() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (free_.empty()) grow_locked();
  // Taken off the list only once the Flag exists: if making it throws, the
  // slot stays free.
  auto flag = std::make_shared<Flag>(shared_from_this(), free_.back().host, free_.back().device);
  free_.pop_back();
  return flag;
}

void FlagPool::release(Slot slot) noexcept {
  // Reset here, before the slot is listed: a wait on it is enqueued only
  // after acquire() took it from the list, so the GPU reads the 0.
  std::atomic_ref<std::uint32_t>(*slot.host).store(0, std::memory_order_seq_cst);
  try {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(slot);  // within the capacity reserved by grow_locked()
  } catch (...) {
    // Locking failed: the slot is lost, never handed out twice.
  }
}

}  // namespace kvflow::cuda
