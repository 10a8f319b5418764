// How a stream-ordered file transfer is cut into bounce chunks: pure
// arithmetic, no IO.
#pragma once

#include <algorithm>
#include <cstddef>

namespace kvflow::io {

/// `count` chunks of `chunk` bytes (the last one shorter) through `slots`
/// bounce buffers.
struct BouncePlan {
  std::size_t chunk = 0;
  std::size_t count = 0;
  std::size_t slots = 0;
  std::size_t bytes = 0;
  [[nodiscard]] std::size_t length(std::size_t i) const { return std::min(chunk, bytes - i * chunk); }
};

/// At most this many chunks per transfer: each chunk is a host function on
/// the stream, and CUDA blocks the enqueuing thread once a few dozen are
/// pending (seen on an H200, driver 580). Large transfers get larger chunks.
inline constexpr std::size_t kMaxBounceChunks = 32;

/// The plan for `bytes` bytes (none for 0) with chunks of at least `chunk` bytes (a
/// positive multiple of 4096) and at most `slots` (1..64) buffers; kInvalidArg
/// for a bad chunk or slot count.
[[nodiscard]] BouncePlan plan_bounce(std::size_t bytes, std::size_t chunk, unsigned slots);

}  // namespace kvflow::io
