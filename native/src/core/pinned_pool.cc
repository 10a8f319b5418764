#include "kvflow/pinned_pool.hpp"

#include <bit>
#include <condition_variable>
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
  std::uint64_t unpinning = 0;  // bytes taken from the cache, being unpinned outside the lock
  std::condition_variable unpinned;  // unpinning fell
  bool closed = false;          // pool destroyed: returned blocks are freed, not cached

  /// Moves every cached block into `out`, to be unpinned outside the lock
  /// with unpin(): on CUDA unpinning is an implicit synchronisation that can
  /// wait for streams, whose progress may need a buffer returned to this pool
  /// (which takes the lock) meanwhile. Counted against the limit until done.
  void take_cached(std::multimap<std::size_t, void*>& out) {
    unpinning += stats.cached_bytes;
    out.merge(cached);
    cached.clear();
    stats.cached_bytes = 0;
  }

  /// Unpins blocks taken by take_cached(); the lock must not be held.
  void unpin(std::multimap<std::size_t, void*>& blocks) noexcept {
    std::uint64_t bytes = 0;
    for (auto& [size, p] : blocks) {
      free(p, size);
      bytes += size;
    }
    blocks.clear();
    {
      std::lock_guard<std::mutex> lock(mutex);
      unpinning -= bytes;
    }
    unpinned.notify_all();
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
  std::multimap<std::size_t, void*> unpin;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->closed = true;
    state_->take_cached(unpin);
  }
  state_->unpin(unpin);
}

BufferPtr PinnedPool::acquire(std::size_t bytes) {
  KVFLOW_CHECK(bytes > 0, kInvalidArg, "expected a positive size for a pinned buffer, got 0");
  KVFLOW_CHECK(bytes <= (std::size_t{1} << 52), kOutOfMemory,
               "pinned allocation of " + std::to_string(bytes) + " bytes is larger than any host");
  const std::size_t cls = size_class(bytes);
  // Pinning and unpinning run outside the pool's lock (see take_cached).
  State& st = *state_;
  std::multimap<std::size_t, void*> unpin;
  void* ptr = nullptr;
  for (;;) {
    std::unique_lock<std::mutex> lock(st.mutex);
    auto it = st.cached.find(cls);
    if (it != st.cached.end()) {
      ptr = it->second;
      st.cached.erase(it);
      st.stats.cached_bytes -= cls;
      st.stats.in_use_bytes += cls;
      ++st.stats.reuses;
      break;
    }
    // Pinned memory is what is in use, cached, and still being unpinned: the
    // limit holds for all of it at every moment.
    const std::uint64_t pinned = st.stats.in_use_bytes + st.stats.cached_bytes + st.unpinning;
    if (st.limit == 0 || pinned + cls <= st.limit) {
      st.stats.in_use_bytes += cls;  // reserved while pinning
      break;
    }
    // What is in use alone leaves no room: dropping the cache would not help.
    const bool hopeless = st.stats.in_use_bytes + cls > st.limit;
    if (!hopeless && !st.cached.empty()) {
      st.take_cached(unpin);
      lock.unlock();
      st.unpin(unpin);
      continue;
    }
    if (!hopeless && st.unpinning > 0) {
      st.unpinned.wait(lock, [&st] { return st.unpinning == 0; });
      continue;
    }
    KVFLOW_FAIL(kOutOfMemory, "pinned memory limit of " + std::to_string(st.limit) + " bytes reached: " +
                                  std::to_string(st.stats.in_use_bytes) + " in use, " + std::to_string(cls) +
                                  " more requested (raise maxPinnedBytes or KVFLOW_MAX_PINNED_BYTES)");
  }
  if (ptr == nullptr) {
    try {
      ptr = st.alloc(cls);
      if (ptr == nullptr) {
        {
          std::lock_guard<std::mutex> lock(st.mutex);
          st.take_cached(unpin);
        }
        if (!unpin.empty()) {
          st.unpin(unpin);
          ptr = st.alloc(cls);
        }
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(st.mutex);
      st.stats.in_use_bytes -= cls;
      throw;
    }
    std::lock_guard<std::mutex> lock(st.mutex);
    if (ptr == nullptr) {
      st.stats.in_use_bytes -= cls;
      KVFLOW_FAIL(kOutOfMemory, "the system refused to pin " + std::to_string(cls) + " bytes of host memory");
    }
    ++st.stats.allocations;
  }
  std::shared_ptr<State> keep = state_;  // the pool's free functions outlive the pool object
  auto give_back = [keep = std::move(keep), cls](void* p, std::size_t) {
    {
      std::lock_guard<std::mutex> lock(keep->mutex);
      keep->stats.in_use_bytes -= cls;
      if (!keep->closed) {
        keep->cached.emplace(cls, p);
        keep->stats.cached_bytes += cls;
        return;
      }
    }
    keep->free(p, cls);  // the pool is gone: unpinned at once, outside the lock
  };
  try {
    return std::make_shared<Buffer>(state_->kind, state_->owner, ptr, bytes, give_back);
  } catch (...) {
    give_back(ptr, bytes);
    throw;
  }
}

void PinnedPool::trim() {
  std::multimap<std::size_t, void*> unpin;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->take_cached(unpin);
  }
  state_->unpin(unpin);
}

PinnedPoolStats PinnedPool::stats() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->stats;
}

}  // namespace kvflow
