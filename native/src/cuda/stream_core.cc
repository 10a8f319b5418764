// StreamCore: release of what finished operations held, and sweeps (see stream_core.hpp).
#include "stream_core.hpp"

#include <utility>

#include "cuda_error.hpp"
#include "event_pool.hpp"

namespace kvflow::cuda {

StreamCore::StreamCore(int ordinal_in, cudaStream_t stream_in, bool owned_in, std::shared_ptr<EventPool> events_in,
                       std::shared_ptr<Poller> poller_in, std::shared_ptr<FlagPool> flags_in)
    : ordinal(ordinal_in),
      stream(stream_in),
      owned(owned_in),
      events(std::move(events_in)),
      poller(std::move(poller_in)),
      flags(std::move(flags_in)) {}

void StreamCore::on_completed(std::uint64_t covers, bool sweep) noexcept {
  std::list<Retained> done;  // destroyed after unlocking: freeing buffers may call CUDA
  std::lock_guard<std::mutex> lock(mutex);
  auto end = retained.begin();
  while (end != retained.end() && end->seq <= covers) ++end;
  done.splice(done.end(), retained, retained.begin(), end);
  if (sweep) {
    sweep_outstanding = false;
  } else if (events_outstanding > 0) {
    --events_outstanding;
  }
  arm_sweep_locked();
}

void StreamCore::on_sweep_due() noexcept {
  std::lock_guard<std::mutex> lock(mutex);
  sweep_outstanding = false;
  record_sweep_locked();
}

void StreamCore::arm_sweep_locked() noexcept {
  if (sweep_outstanding || !needs_sweep_locked()) return;
  try {
    PollEntry entry;
    entry.stream = shared_from_this();
    entry.due = std::chrono::steady_clock::now() + kSweepDelay;
    poller->add(std::move(entry));
    sweep_outstanding = true;
  } catch (...) {
    // The poller stopped (the device is closing) or memory ran out: the
    // buffers wait for the next event or close(), as with a failed record.
  }
}

void StreamCore::record_sweep_locked() noexcept {
  if (sweep_outstanding || !needs_sweep_locked()) return;
  cudaEvent_t event = nullptr;
  try {
    event = events->acquire();
    KVFLOW_CUDA(cudaSetDevice(ordinal));
    KVFLOW_CUDA(cudaEventRecord(event, stream));
    PollEntry entry;
    entry.event = event;
    entry.stream = shared_from_this();
    entry.covers = op_seq;
    poller->add(std::move(entry));
    sweep_outstanding = true;
    covered = op_seq;
  } catch (...) {
    if (event != nullptr) events->release(event);
  }
}

}  // namespace kvflow::cuda
