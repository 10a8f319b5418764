// The completion poller of a CUDA device (see poller.hpp).
#include "poller.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <utility>

#include "cuda_error.hpp"
#include "cuda_stream.hpp"
#include "event_pool.hpp"

namespace kvflow::cuda {

namespace {

// Spin (yielding) for a short window after new work or a completion, which
// catches small copies within microseconds (a 64 KiB copy takes ~3 us); then
// sleep 10 us, doubling to 200 us, so an idle-but-busy GPU costs little CPU
// while a completion is still seen well within one layer's transfer time.
constexpr unsigned kSpinRounds = 8;
constexpr auto kSpinWindow = std::chrono::microseconds(50);
constexpr auto kFirstSleep = std::chrono::microseconds(10);
constexpr auto kMaxSleep = std::chrono::microseconds(200);

// A timed event this far past the timing reference moves the reference on.
constexpr float kRebaseMs = 1000.0F;

// KVFLOW_POLL_EVERY=1: every pending entry is queried each round, not each
// stream's first (a benchmarking aid, see poll_once).
bool every_from_env() noexcept {
  const char* v = std::getenv("KVFLOW_POLL_EVERY");
  return v != nullptr && v[0] == '1' && v[1] == '\0';
}

// KVFLOW_POLL_PAUSE_NS: spinning time between two rounds of queries while
// work is fresh, 0 to 1000000 (0, the default: back to back, with a yield;
// anything else is ignored). A benchmarking aid: whether the poller's driver
// calls slow the JS thread's enqueues.
std::chrono::nanoseconds pause_from_env() noexcept {
  const char* v = std::getenv("KVFLOW_POLL_PAUSE_NS");
  if (v == nullptr || *v == '\0') return std::chrono::nanoseconds(0);
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  if (end == v || *end != '\0' || n < 0 || n > 1000000) return std::chrono::nanoseconds(0);
  return std::chrono::nanoseconds(n);
}

}  // namespace

Poller::Poller(int ordinal, Completer& completer, std::shared_ptr<EventPool> events, std::chrono::microseconds idle_spin)
    : ordinal_(ordinal), completer_(completer), events_(std::move(events)), idle_spin_(idle_spin), poll_pause_(pause_from_env()), poll_every_(every_from_env()) {
  // The timing reference exists before any event can be recorded on the
  // device: every timed event completes after it (no timing is lost if this fails).
  if (cudaSetDevice(ordinal_) == cudaSuccess &&
      cudaStreamCreateWithFlags(&clock_stream_, cudaStreamNonBlocking) == cudaSuccess) {
    (void)rebase();
  }
  (void)cudaGetLastError();
  thread_ = std::thread([this] { run(); });
}

Poller::~Poller() {
  stop(std::chrono::milliseconds(0));
  if (cudaSetDevice(ordinal_) == cudaSuccess) {
    if (clock_event_ != nullptr) (void)cudaEventDestroy(clock_event_);
    if (next_clock_ != nullptr) (void)cudaEventDestroy(next_clock_);
    if (clock_stream_ != nullptr) (void)cudaStreamDestroy(clock_stream_);
  }
  (void)cudaGetLastError();
}

bool Poller::rebase() noexcept {
  // Constructor only (no stream of the device exists yet): the first
  // reference is waited for, and takes the host's steady clock, so that
  // times read close to the CPU backend's (only differences mean anything).
  if (clock_stream_ == nullptr) return false;
  cudaEvent_t first = nullptr;
  if (cudaEventCreate(&first) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  if (cudaEventRecord(first, clock_stream_) != cudaSuccess || cudaEventSynchronize(first) != cudaSuccess) {
    (void)cudaEventDestroy(first);
    (void)cudaGetLastError();
    return false;
  }
  const auto now = std::chrono::steady_clock::now().time_since_epoch();
  clock_ms_ = std::chrono::duration<double, std::milli>(now).count();
  clock_event_ = first;
  return true;
}

void Poller::move_reference() noexcept {
  // Never waits: the poller thread must not block on GPU work (a stream held
  // by a gate that only a thread awaiting this poller's completions opens
  // may share a hardware queue with the reference stream). The next
  // reference is recorded now and taken once a later time_of() finds it
  // complete; until then times are read against the current one.
  if (next_clock_ == nullptr) {
    cudaEvent_t next = nullptr;
    if (cudaEventCreate(&next) != cudaSuccess) {
      (void)cudaGetLastError();
      return;
    }
    if (cudaEventRecord(next, clock_stream_) != cudaSuccess) {
      (void)cudaEventDestroy(next);
      (void)cudaGetLastError();
      return;
    }
    next_clock_ = next;
    return;
  }
  const cudaError_t status = cudaEventQuery(next_clock_);
  if (status == cudaErrorNotReady) return;
  float ms = 0;
  if (status == cudaSuccess && cudaEventElapsedTime(&ms, clock_event_, next_clock_) == cudaSuccess) {
    clock_ms_ += static_cast<double>(ms);
    (void)cudaEventDestroy(clock_event_);
    clock_event_ = next_clock_;
  } else {
    (void)cudaEventDestroy(next_clock_);  // a later event records another
  }
  (void)cudaGetLastError();
  next_clock_ = nullptr;
}

double Poller::time_of(cudaEvent_t event) noexcept {
  if (clock_event_ == nullptr) return std::numeric_limits<double>::quiet_NaN();
  if (next_clock_ != nullptr) move_reference();  // take the next reference once it completed
  float ms = 0;
  if (cudaEventElapsedTime(&ms, clock_event_, event) != cudaSuccess) {
    (void)cudaGetLastError();
    return std::numeric_limits<double>::quiet_NaN();
  }
  const double at = clock_ms_ + static_cast<double>(ms);
  if (ms > kRebaseMs && next_clock_ == nullptr) move_reference();
  return at;
}

void Poller::add(PollEntry entry) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    KVFLOW_CHECK(!stopped_, kDisposed, "device is disposed");
    wake = incoming_.empty();
    incoming_.push_back(std::move(entry));
    has_incoming_.store(true, std::memory_order_release);
  }
  // The thread blocks only when it has nothing at all; a non-empty list means
  // it is polling already and will pick the entry up.
  if (wake) cv_.notify_one();
}

void Poller::stop(std::chrono::milliseconds budget) noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!stopping_) {
      stopping_ = true;
      stop_asked_.store(true, std::memory_order_release);
      deadline_ = Clock::now() + budget;
    }
  }
  cv_.notify_all();
  try {
    if (!thread_.joinable()) return;
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();  // cannot join itself; it exits after this call returns
    } else {
      thread_.join();
    }
  } catch (...) {
    // join() throws only for a thread that is not joinable, checked above.
  }
}

std::function<void()> Poller::hold() {
  held_->fetch_add(1, std::memory_order_acq_rel);
  auto once = std::make_shared<std::atomic<bool>>(false);
  return [held = held_, once] {
    if (!once->exchange(true)) held->fetch_sub(1, std::memory_order_acq_rel);
  };
}

void Poller::run() noexcept {
  // Threads are not bound to a device: bind this one once, for its queries and
  // the sweeps it records.
  (void)cudaSetDevice(ordinal_);
  (void)cudaGetLastError();
  std::vector<PollEntry> active;
  unsigned idle_rounds = 0;
  Clock::time_point spin_until = Clock::now();
  Clock::time_point idle_until = Clock::now();
  for (;;) {
    try {
      bool give_up = false;
      // While polling with nothing new and no stop asked, the lock is not
      // taken: add() on the JS thread never waits behind a poll round's check.
      const bool quiet = !active.empty() && !has_incoming_.load(std::memory_order_acquire) &&
                         !stop_asked_.load(std::memory_order_acquire);
      if (!quiet) {
        std::unique_lock<std::mutex> lock(mutex_);
        if (active.empty() && incoming_.empty()) {
          if (stopping_) break;
          // With nothing left to poll, keep looking for new work (without the
          // lock) until the idle window after the last completion or addition
          // ends: a caller that waits for one operation and then issues the
          // next (a small copy's round trip) finds the thread awake instead of
          // paying a wake-up. stop() is seen at the window's end at the latest.
          if (Clock::now() < idle_until) {
            lock.unlock();
            while (Clock::now() < idle_until && !has_incoming_.load(std::memory_order_acquire)) std::this_thread::yield();
            continue;
          }
          cv_.wait(lock, [this] { return stopping_ || !incoming_.empty(); });
          if (incoming_.empty()) break;
        }
        // Reserve first, so a failed allocation loses no entry.
        active.reserve(active.size() + incoming_.size());
        // New work may finish soon: poll it at the shortest sleep again.
        if (!incoming_.empty()) {
          idle_rounds = std::min(idle_rounds, kSpinRounds);
          spin_until = Clock::now() + kSpinWindow;
          idle_until = spin_until + idle_spin_;
        }
        std::move(incoming_.begin(), incoming_.end(), std::back_inserter(active));
        incoming_.clear();
        has_incoming_.store(false, std::memory_order_relaxed);
        give_up = stopping_ && Clock::now() >= deadline_;
      }
      if (give_up) {
        (void)poll_once(active);  // what did finish completes normally
        abort_all(active);
        active.clear();
        continue;  // then exit once nothing new came in
      }
      if (held_->load(std::memory_order_acquire) > 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      if (poll_once(active)) {
        idle_rounds = 0;
        spin_until = Clock::now() + kSpinWindow;
        idle_until = Clock::now() + idle_spin_;
      } else if (idle_rounds < kSpinRounds || Clock::now() < spin_until) {
        ++idle_rounds;
        if (poll_pause_.count() > 0) {
          // Paced: the next query waits this long (no driver call meanwhile),
          // unless new work comes in.
          const Clock::time_point until = Clock::now() + poll_pause_;
          while (Clock::now() < until && !has_incoming_.load(std::memory_order_acquire)) {
          }
        } else {
          std::this_thread::yield();
        }
      } else {
        const unsigned doublings = std::min(idle_rounds - kSpinRounds, 5U);
        if (doublings < 5U) ++idle_rounds;  // stays put at the longest sleep
        std::this_thread::sleep_for(std::min<std::chrono::microseconds>(kFirstSleep * (1U << doublings), kMaxSleep));
      }
    } catch (...) {
      // Only allocation can fail above; back off and try again.
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  // Entries added between the last check and now are aborted, not lost.
  std::vector<PollEntry> late;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopped_ = true;
    late.swap(incoming_);
  }
  abort_all(active);
  abort_all(late);
}

bool Poller::poll_once(std::vector<PollEntry>& active) noexcept {
  // Entries stay in the order they were added: an event a stream waited on was
  // recorded (and added) before the waiting stream's next event, so it is
  // finished first when both complete in the same round.
  //
  // A stream runs its work in order, and its entries were added in the order
  // their events were recorded on it (under its lock): once one of a stream's
  // entries is not finished this round, none after it can be, and they are
  // not queried. A round then costs one cudaEventQuery per stream with work
  // pending, not one per event (a prefill has dozens pending), and the driver
  // calls this thread makes (each takes a lock the JS thread's enqueues also
  // take) stay few. KVFLOW_POLL_EVERY=1 queries every entry (a probe).
  bool progress = false;
  std::size_t kept = 0;
  blocked_.clear();
  for (std::size_t i = 0; i < active.size(); ++i) {
    PollEntry& entry = active[i];
    if (entry.event == nullptr) {
      if (try_sweep(entry)) continue;
    } else {
      const StreamCore* stream = entry.stream.get();
      const bool behind = !poll_every_ && stream != nullptr &&
                          std::find(blocked_.begin(), blocked_.end(), stream) != blocked_.end();
      if (!behind) {
        if (try_finish(entry)) {
          progress = true;
          continue;
        }
        if (stream != nullptr && !poll_every_) {
          try {
            blocked_.push_back(stream);
          } catch (...) {
            // Out of memory: later entries of this stream are queried, as before.
          }
        }
      }
    }
    if (kept != i) active[kept] = std::move(active[i]);
    ++kept;
  }
  active.erase(active.begin() + static_cast<std::ptrdiff_t>(kept), active.end());
  return progress;
}

bool Poller::try_sweep(PollEntry& entry) noexcept {
  if (std::chrono::steady_clock::now() < entry.due) return false;
  if (entry.stream) entry.stream->on_sweep_due();
  entry = PollEntry{};
  return true;
}

bool Poller::try_finish(PollEntry& entry) noexcept {
  const cudaError_t status = cudaEventQuery(entry.event);
  if (status == cudaErrorNotReady) return false;
  ErrorPtr error;
  if (status != cudaSuccess) {
    error = KVFLOW_CUDA_ERROR(status, "cudaEventQuery");
  } else {
    // A waited event completes on the GPU before this one, but its EventState
    // may not be completed yet: finish this entry in a later round.
    for (const FailureSource& source : entry.failures) {
      if (source.event && source.event->status() == EventStatus::kPending) return false;
    }
    for (const FailureSource& source : entry.failures) {
      error = source.error ? source.error : (source.event ? source.event->error() : nullptr);
      if (error) break;
    }
  }
  finish(entry, std::move(error));
  return true;
}

void Poller::finish(PollEntry& entry, ErrorPtr error) noexcept {
  // Buffers go first, so whoever sees the event done also sees them released.
  if (entry.stream) entry.stream->on_completed(entry.covers, !entry.user);
  if (entry.user) {
    if (!error && entry.user->timed()) entry.user->set_time_ms(time_of(entry.event));
    try {
      if (entry.user->complete(std::move(error))) completer_.post(entry.user->id());
    } catch (...) {
      // post() failed to allocate: the watcher cannot be told.
    }
    // Complete: host calls read its status now, and no wait needs its
    // cudaEvent_t any more (its time was read above): back to the pool.
    events_->retire(entry.user.get());
  } else {
    events_->release(entry.event);
  }
  entry = PollEntry{};  // drop the EventState and stream references on this thread, now
}

void Poller::abort_all(std::vector<PollEntry>& entries) noexcept {
  // The GPU may still be using these entries' buffers, so the streams keep them
  // (closed streams keep them for good); only the EventStates are settled.
  ErrorPtr aborted;
  try {
    aborted = std::make_shared<const Error>(
        ErrorCode::kAborted, "the CUDA device was closed before the work of this event completed");
  } catch (...) {
    aborted = capture_current_exception();
  }
  for (PollEntry& entry : entries) {
    if (entry.user) {
      try {
        if (entry.user->complete(aborted)) completer_.post(entry.user->id());
      } catch (...) {
      }
      events_->drop_sources(entry.user.get());
    } else if (entry.event != nullptr) {
      events_->release(entry.event);
    }
    entry = PollEntry{};
  }
  entries.clear();
}

}  // namespace kvflow::cuda
