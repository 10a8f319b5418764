// Pinned host memory is slow to allocate (it is page-locked and mapped for the
// device), so freed pinned buffers return to this pool and are reused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "kvflow/buffer.hpp"

namespace kvflow {

struct PinnedPoolStats {
  std::uint64_t in_use_bytes = 0;     // held by live buffers
  std::uint64_t cached_bytes = 0;     // pinned, free for reuse
  std::uint64_t limit_bytes = 0;      // 0: no limit but the system's
  std::uint64_t allocations = 0;      // times real pinned memory was allocated
  std::uint64_t reuses = 0;           // times a request was served from the cache
};

class PinnedPool {
 public:
  /// Returns nullptr when the system refuses.
  using RawAlloc = std::function<void*(std::size_t bytes)>;
  using RawFree = std::function<void(void* ptr, std::size_t bytes)>;

  PinnedPool(RawAlloc alloc, RawFree free, std::uint64_t limit_bytes, const void* owner,
             MemoryKind kind = MemoryKind::kPinned);
  ~PinnedPool();
  PinnedPool(const PinnedPool&) = delete;
  PinnedPool& operator=(const PinnedPool&) = delete;

  /// Throws kOutOfMemory when the limit or the system refuses (after trimming).
  [[nodiscard]] BufferPtr acquire(std::size_t bytes);
  /// Releases every cached block.
  void trim();
  [[nodiscard]] PinnedPoolStats stats();
  /// The size class a request of `bytes` is served from: powers of two up to
  /// 1 MiB, then multiples of 2 MiB.
  [[nodiscard]] static std::size_t size_class(std::size_t bytes) noexcept;

 private:
  struct State;
  std::shared_ptr<State> state_;  // buffers keep it alive past the pool
};

}  // namespace kvflow
