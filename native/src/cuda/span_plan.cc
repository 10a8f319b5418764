// See span_plan.hpp.
#include "cuda/span_plan.hpp"

#include <algorithm>

namespace kvflow::cuda {

SpanPlan plan_spans(const std::vector<CopyPiece>& pieces, bool gather, const std::vector<std::uintptr_t>& host_addresses) {
  const auto host_of = [&](const CopyPiece& p) { return gather ? p.dst : p.src; };
  const auto offset_of = [&](const CopyPiece& p) { return gather ? p.dst_offset : p.src_offset; };
  std::vector<std::uint32_t> order(pieces.size());
  for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
    const CopyPiece& x = pieces[a];
    const CopyPiece& y = pieces[b];
    return host_of(x) != host_of(y) ? host_of(x) < host_of(y) : offset_of(x) < offset_of(y);
  });
  SpanPlan plan;
  plan.span_of.resize(pieces.size());
  const std::size_t gap = gather ? 0 : kScatterReadGap;
  for (const std::uint32_t i : order) {
    const CopyPiece& p = pieces[i];
    const std::size_t off = offset_of(p);
    if (plan.spans.empty() || plan.spans.back().buffer != host_of(p) || off > plan.spans.back().hi + gap) {
      plan.spans.push_back({host_of(p), off, off + p.bytes, 0});
    } else {
      plan.spans.back().hi = std::max(plan.spans.back().hi, off + p.bytes);
    }
    plan.span_of[i] = static_cast<std::uint32_t>(plan.spans.size() - 1);
  }
  std::size_t total = 0;
  for (HostSpan& sp : plan.spans) {
    const std::size_t misalign = (host_addresses[sp.buffer] + sp.lo) & 255;
    total = (total + 255) / 256 * 256 + misalign;
    sp.at = total;
    total += sp.hi - sp.lo;
  }
  plan.scratch_bytes = total;
  return plan;
}

}  // namespace kvflow::cuda
