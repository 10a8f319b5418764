#include "kvflow/pinned_pool.hpp"

#include <bit>
#include <string>
#include <utility>

#include "kvflow/error.hpp"

namespace kvflow {

struct PinnedPool::State {
  RawAlloc alloc;
  RawFree free;
  std::uint64_t limit = 0;
  const void* owner = nullptr;
  MemoryKind kind = MemoryKind::kPinned;
  std::mutex mutex;
  std::multimap<std::size_t, void*> cached;  // size class -> block
  PinnedPoolStats stats;
  bool closed = false;  // pool destroyed: returned blocks are freed, not cached

  /// Moves every cached block into `out` (to be freed outside the lock).
  void take_cached(std::multimap<std::size_t, void*>& out) {
    out.merge(cached);
    cached.clear();
    stats.cached_bytes = 0;
  }

  void release_all_cached() {
    for (auto& [size, ptr] : cached) free(ptr, size);
    cached.clear();
    stats.cached_bytes = 0;
  }
};

std::size_t PinnedPool::size_class(std::size_t bytes) noexcept {
  constexpr std::size_t kMin = 4096;
  // Small requests round to powers of two (few classes, high reuse); large
  // ones to 2 MiB steps, so that a 48 MiB staging buffer does not pin 64 MiB.
  constexpr std::size_t kPow2Max = std::size_t{1} << 20;
  constexpr std::size_t kLargeStep = std::size_t{2} << 20;
  if (bytes <= kMin) return kMin;
  if (bytes <= kPow2Max) return std::bit_ceil(bytes);
  return (bytes + kLargeStep - 1) / kLargeStep * kLargeStep;
}

PinnedPool::PinnedPool(RawAlloc alloc, RawFree free, std::uint64_t limit_bytes, const void* owner, MemoryKind kind)
    : state_(std::make_shared<State>()) {
  state_->alloc = std::move(alloc);
  state_->free = std::move(free);
  state_->limit = limit_bytes;
  state_->owner = owner;
  state_->kind = kind;
  state_->stats.limit_bytes = limit_bytes;
}

PinnedPool::~PinnedPool() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->closed = true;
  state_->release_all_cached();
}

BufferPtr PinnedPool::acquire(std::size_t bytes) {
  KVFLOW_CHECK(bytes > 0, kInvalidArg, "expected a positive size for a pinned buffer, got 0");
  KVFLOW_CHECK(bytes <= (std::size_t{1} << 52), kOutOfMemory,
               "pinned allocation of " + std::to_string(bytes) + " bytes is larger than any host");
  const std::size_t cls = size_class(bytes);
  // Pinning and unpinning run outside the pool's lock: on CUDA both are
  // implicit synchronisations that can wait for streams, and those streams'
  // progress may need a buffer returned to this pool meanwhile.
  State& st = *state_;
  std::multimap<std::size_t, void*> unpin;
  const auto free_all = [&st](std::multimap<std::size_t, void*>& blocks) {
    for (auto& [size, p] : blocks) st.free(p, size);
    blocks.clear();
  };
  void* ptr = nullptr;
  bool over_limit = false;
  std::uint64_t in_use = 0;
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    auto it = st.cached.find(cls);
    if (it != st.cached.end()) {
      ptr = it->second;
      st.cached.erase(it);
      st.stats.cached_bytes -= cls;
      ++st.stats.reuses;
    } else {
      if (st.limit != 0 && st.stats.in_use_bytes + st.stats.cached_bytes + cls > st.limit) st.take_cached(unpin);
      over_limit = st.limit != 0 && st.stats.in_use_bytes + cls > st.limit;
      in_use = st.stats.in_use_bytes;
    }
    if (!over_limit) st.stats.in_use_bytes += cls;  // reserved while pinning
  }
  if (over_limit) {
    free_all(unpin);
    KVFLOW_FAIL(kOutOfMemory, "pinned memory limit of " + std::to_string(st.limit) + " bytes reached: " +
                                  std::to_string(in_use) + " in use, " + std::to_string(cls) +
                                  " more requested (raise maxPinnedBytes or KVFLOW_MAX_PINNED_BYTES)");
  }
  if (ptr == nullptr) {
    free_all(unpin);
    ptr = st.alloc(cls);
    if (ptr == nullptr) {
      {
        std::lock_guard<std::mutex> lock(st.mutex);
        st.take_cached(unpin);
      }
      if (!unpin.empty()) {
        free_all(unpin);
        ptr = st.alloc(cls);
      }
    }
    std::lock_guard<std::mutex> lock(st.mutex);
    if (ptr == nullptr) {
      st.stats.in_use_bytes -= cls;
      KVFLOW_FAIL(kOutOfMemory, "the system refused to pin " + std::to_string(cls) + " bytes of host memory");
    }
    ++st.stats.allocations;
  }
  std::shared_ptr<State> keep = state_;  // the pool's free functions outlive the pool object
  return std::make_shared<Buffer>(state_->kind, state_->owner, ptr, bytes,
                                  [keep = std::move(keep), cls](void* p, std::size_t) {
                                    std::lock_guard<std::mutex> lock(keep->mutex);
                                    keep->stats.in_use_bytes -= cls;
                                    if (keep->closed) {
                                      keep->free(p, cls);
                                    } else {
                                      keep->cached.emplace(cls, p);
                                      keep->stats.cached_bytes += cls;
                                    }
                                  });
}

void PinnedPool::trim() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->release_all_cached();
}

PinnedPoolStats PinnedPool::stats() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->stats;
}

}  // namespace kvflow
