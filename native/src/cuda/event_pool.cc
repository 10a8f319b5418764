// Pool of cudaEvent_t and the EventState -> cudaEvent_t map (see event_pool.hpp).
#include "event_pool.hpp"

#include <utility>

#include "cuda_error.hpp"

namespace kvflow::cuda {

namespace {

// Per pool (timed and untimed): room for every event in flight on the
// device's streams, so records in steady state reuse them. A user's event
// comes back when the poller completes it (retire()); one that is not
// completed normally (device teardown) comes back when its last EventPtr
// goes, for a user's event the finalizer of its JS object, and after a
// garbage collection many come back at once. A cudaEvent_t is a small
// driver object, and close() destroys them all.
constexpr std::size_t kMaxPooled = 16384;

}  // namespace

EventPool::~EventPool() { close(); }

cudaEvent_t EventPool::acquire(bool timed) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    KVFLOW_CHECK(!closed_, kDisposed, "device is disposed");
    std::vector<cudaEvent_t>& free = timed ? timed_free_ : free_;
    if (!free.empty()) {
      cudaEvent_t event = free.back();
      free.pop_back();
      return event;
    }
  }
  KVFLOW_CUDA(cudaSetDevice(ordinal_));
  cudaEvent_t event = nullptr;
  KVFLOW_CUDA(cudaEventCreateWithFlags(&event, timed ? cudaEventDefault : cudaEventDisableTiming));
  return event;
}

void EventPool::release(cudaEvent_t event, bool timed) noexcept {
  if (event == nullptr) return;
  try {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<cudaEvent_t>& free = timed ? timed_free_ : free_;
    if (!closed_ && free.size() < kMaxPooled) {
      free.push_back(event);
      return;
    }
  } catch (...) {
    // push_back could not grow: destroy the event instead.
  }
  if (cudaSetDevice(ordinal_) == cudaSuccess) (void)cudaEventDestroy(event);
  (void)cudaGetLastError();
}

EventPtr EventPool::adopt(std::uint64_t id, cudaEvent_t event, bool timed, std::shared_ptr<const void> sources) {
  std::unique_ptr<EventState> raw;
  Deleter deleter{nullptr, event, timed};
  try {
    deleter.pool = shared_from_this();
    raw = std::make_unique<EventState>(id);
  } catch (...) {
    release(event, timed);
    throw;
  }
  if (timed) raw->mark_timed();
  // From here the deleter owns the event: if allocating the control block
  // throws, shared_ptr calls it, which returns the event to the pool.
  EventPtr state(raw.release(), std::move(deleter));
  // Declared before the lock, so that on throw both die after it is released:
  // `state` releases the event (its deleter's forget() takes the lock), and
  // the sources may hold the last reference to another event of this pool.
  Owned owned{event, std::move(sources)};
  std::lock_guard<std::mutex> lock(mutex_);
  owners_.emplace(state.get(), std::move(owned));
  return state;
}

std::optional<EventPool::Owned> EventPool::wait_on(const EventState* state, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = owners_.find(state);
  if (it == owners_.end()) return std::nullopt;
  Owned owned = it->second;  // a copy: the map keeps its own reference to the sources
  if (owned.event != nullptr) KVFLOW_CUDA(cudaStreamWaitEvent(stream, owned.event, cudaEventWaitDefault));
  return owned;
}

void EventPool::retire(const EventState* state) noexcept {
  std::shared_ptr<const void> dropped;  // released after the lock, as in drop_sources
  cudaEvent_t event = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = owners_.find(state);
    if (it == owners_.end()) return;
    dropped = std::move(it->second.sources);
    event = std::exchange(it->second.event, nullptr);
  }
  release(event, state->timed());  // null: retired already
}

void EventPool::drop_sources(const EventState* state) noexcept {
  std::shared_ptr<const void> dropped;  // released after the lock: it may hold other events of this pool
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = owners_.find(state);
  if (it != owners_.end()) dropped = std::move(it->second.sources);
}

bool EventPool::forget(const EventState* state) noexcept {
  std::shared_ptr<const void> dropped;  // as in drop_sources
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = owners_.find(state);
  if (it == owners_.end()) return true;  // adopt() failed to list it: the event is still the deleter's
  dropped = std::move(it->second.sources);
  const bool attached = it->second.event != nullptr;
  owners_.erase(it);
  return attached;
}

void EventPool::close() noexcept {
  std::vector<cudaEvent_t> events;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    events.swap(free_);
    events.insert(events.end(), timed_free_.begin(), timed_free_.end());
    timed_free_.clear();
  }
  if (events.empty()) return;
  if (cudaSetDevice(ordinal_) == cudaSuccess) {
    for (cudaEvent_t event : events) (void)cudaEventDestroy(event);
  }
  (void)cudaGetLastError();
}

void EventPool::Deleter::operator()(EventState* state) const noexcept {
  // Forget the address before freeing it, so a new EventState at the same
  // address is never mistaken for this one.
  const bool attached = pool->forget(state);
  delete state;
  if (attached) pool->release(event, timed);  // else retire() returned it when the event completed
}

}  // namespace kvflow::cuda
