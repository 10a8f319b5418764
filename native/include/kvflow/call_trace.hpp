// Where the host time of a stream's record() and copy() goes, step by step:
// with KVFLOW_TRACE_CALLS=1 in the environment, each step's calls and
// nanoseconds are summed and printed on stderr when the process exits (one
// line per step: calls, mean ns). Off (the default), a step costs one load
// of a flag that never changes. A measuring aid for bench/copy on the GPU
// box, where no profiler runs.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace kvflow::trace {

enum Step : int {
  kRecordCall,     // StreamWrap::Record, all of it
  kRecordChain,    // the failure chain the event carries
  kRecordAcquire,  // a cudaEvent_t from the pool
  kRecordCuda,     // cudaSetDevice + cudaEventRecord
  kRecordAdopt,    // the EventState and the pool's owner entry
  kRecordPoller,   // the poller's add()
  kRecordWrap,     // the hand-off to JS (the id into the device's event table)
  kCopyCall,       // StreamWrap::Copy, all of it
  kCopyArgs,       // unwrapping and checking the arguments
  kCopyLock,       // the stream's lock and the retained buffers
  kCopyCuda,       // cudaSetDevice + cudaMemcpyAsync
  kCopySweep,      // arming the sweep (a poller add where one is needed)
  kSteps,
};

inline const char* step_name(int s) noexcept {
  static const char* const names[kSteps] = {"record.call",  "record.chain", "record.acquire", "record.cuda",
                                            "record.adopt", "record.poller", "record.wrap",  "copy.call",
                                            "copy.args",    "copy.lock",    "copy.cuda",     "copy.sweep"};
  return s >= 0 && s < kSteps ? names[s] : "?";
}

struct Totals {
  std::atomic<std::uint64_t> calls[kSteps] = {};
  std::atomic<std::uint64_t> ns[kSteps] = {};
  const bool on = [] {
    const char* v = std::getenv("KVFLOW_TRACE_CALLS");
    return v != nullptr && v[0] == '1' && v[1] == '\0';
  }();
  ~Totals() {
    if (!on) return;
    for (int s = 0; s < kSteps; ++s) {
      const std::uint64_t n = calls[s].load(std::memory_order_relaxed);
      if (n == 0) continue;
      std::fprintf(stderr, "kvflow trace %-15s %10llu calls %9.1f ns\n", step_name(s), static_cast<unsigned long long>(n),
                   static_cast<double>(ns[s].load(std::memory_order_relaxed)) / static_cast<double>(n));
    }
  }
};

inline Totals& totals() noexcept {
  static Totals t;
  return t;
}

inline bool on() noexcept { return totals().on; }

inline std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline void add(Step s, std::int64_t since_ns) noexcept {
  Totals& t = totals();
  t.calls[s].fetch_add(1, std::memory_order_relaxed);
  t.ns[s].fetch_add(static_cast<std::uint64_t>(now_ns() - since_ns), std::memory_order_relaxed);
}

/// Times the rest of its scope as `step` when tracing is on.
class Span {
 public:
  explicit Span(Step step) noexcept : step_(step), t0_(on() ? now_ns() : -1) {}
  ~Span() {
    if (t0_ >= 0) add(step_, t0_);
  }
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;

 private:
  Step step_;
  std::int64_t t0_;
};

/// A mark between steps: `lap(step)` adds the time since the last mark (or
/// construction) to `step`.
class Laps {
 public:
  Laps() noexcept : t_(on() ? now_ns() : -1) {}
  void lap(Step step) noexcept {
    if (t_ < 0) return;
    add(step, t_);
    t_ = now_ns();
  }

 private:
  std::int64_t t_;
};

}  // namespace kvflow::trace
