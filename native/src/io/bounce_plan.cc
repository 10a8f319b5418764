// See bounce_plan.hpp.
#include "io/bounce_plan.hpp"

#include <string>

#include "kvflow/error.hpp"

namespace kvflow::io {

BouncePlan plan_bounce(std::size_t bytes, std::size_t chunk, unsigned slots) {
  KVFLOW_CHECK(chunk >= 4096 && chunk % 4096 == 0, kInvalidArg,
               "expected a bounce chunk that is a positive multiple of 4096, got " + std::to_string(chunk));
  KVFLOW_CHECK(slots >= 1 && slots <= 64, kInvalidArg, "expected 1..64 bounce slots, got " + std::to_string(slots));
  BouncePlan p;
  p.bytes = bytes;
  if (bytes == 0) {
    p.chunk = chunk;
    return p;  // nothing to move: no chunks, no slots
  }
  const std::size_t spread = (bytes + kMaxBounceChunks - 1) / kMaxBounceChunks;
  const std::size_t wanted = std::max(chunk, (spread + 4095) / 4096 * 4096);
  p.chunk = std::min(wanted, (bytes + 4095) / 4096 * 4096);
  p.count = (bytes + p.chunk - 1) / p.chunk;
  p.slots = std::min<std::size_t>(slots, p.count);
  return p;
}

}  // namespace kvflow::io
