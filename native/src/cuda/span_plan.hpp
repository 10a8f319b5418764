// How a kernel-engine batch packs its host side into device scratch: pure
// arithmetic (no CUDA), so it is unit-tested on any host.
//
// The host side may be several staging buffers (a store's records live in
// several arena segments). Each run of touching pieces of one buffer is a
// span that moves in one DMA; all spans of the batch are packed into the
// device scratch and one kernel moves every piece between scratch and cache.
// A gather's spans never cover bytes no piece names (another record's, in a
// shared arena); a scatter may read across a small gap to save a DMA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvflow/stream.hpp"

namespace kvflow::cuda {

/// Host-side bytes [lo, hi) of host buffer `buffer`, at offset `at` in scratch.
struct HostSpan {
  std::uint32_t buffer = 0;
  std::size_t lo = 0;
  std::size_t hi = 0;
  std::size_t at = 0;
};

struct SpanPlan {
  std::vector<HostSpan> spans;         // by buffer, then offset
  std::vector<std::uint32_t> span_of;  // piece i lies in spans[span_of[i]]
  std::size_t scratch_bytes = 0;       // scratch the spans need
};

/// A scatter joins pieces of one buffer this close into one span.
inline constexpr std::size_t kScatterReadGap = 64 * 1024;

/// Plans the spans of `pieces`. The host side is the destinations for a
/// `gather` (device -> host), else the sources; `host_addresses[b]` is the
/// address of host buffer b, so each span keeps its host address modulo 256
/// in scratch and pieces that allow 16-byte accesses on the host side still
/// do in scratch.
[[nodiscard]] SpanPlan plan_spans(const std::vector<CopyPiece>& pieces, bool gather,
                                  const std::vector<std::uintptr_t>& host_addresses);

}  // namespace kvflow::cuda
