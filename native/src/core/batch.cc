// See kvflow/batch.hpp.
#include "kvflow/batch.hpp"

#include <string>

#include "kvflow/checks.hpp"
#include "kvflow/error.hpp"

namespace kvflow {

std::vector<CopyPiece> checked_pieces(std::size_t rows, const PieceRow& row, const std::vector<BufferPtr>& dsts,
                                      const std::vector<BufferPtr>& srcs, const void* owner,
                                      std::vector<std::size_t>* groups) {
  std::vector<CopyPiece> pieces;
  pieces.reserve(rows);
  std::size_t next_group = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    while (groups != nullptr && next_group < groups->size() && (*groups)[next_group] == r) {
      (*groups)[next_group++] = pieces.size();
    }
    const CopyPiece p = row(r);
    KVFLOW_CHECK(p.dst < dsts.size() && p.src < srcs.size(), kOutOfRange,
                 "piece " + std::to_string(r) + " names a buffer past the lists");
    check_range(dsts[p.dst].get(), owner, p.dst_offset, p.bytes, "destination");
    check_range(srcs[p.src].get(), owner, p.src_offset, p.bytes, "source");
    if (p.bytes != 0) pieces.push_back(p);
  }
  while (groups != nullptr && next_group < groups->size()) (*groups)[next_group++] = pieces.size();
  return pieces;
}

std::shared_ptr<const PreparedBatch> PreparedBatch::make(const void* owner, const std::vector<BufferPtr>& dsts,
                                                         const std::vector<BufferPtr>& srcs, std::size_t rows,
                                                         const PieceRow& row, std::vector<std::size_t> groups) {
  KVFLOW_CHECK(groups.size() >= 2 && groups.front() == 0 && groups.back() == rows, kInvalidArg,
               "expected groups from 0 to the piece count");
  for (std::size_t g = 1; g < groups.size(); ++g) {
    KVFLOW_CHECK(groups[g] >= groups[g - 1], kInvalidArg, "expected ascending groups");
  }
  std::shared_ptr<PreparedBatch> batch(new PreparedBatch());
  batch->owner_ = owner;
  batch->dsts_.assign(dsts.begin(), dsts.end());
  batch->srcs_.assign(srcs.begin(), srcs.end());
  batch->groups_ = std::move(groups);
  batch->pieces_ = checked_pieces(rows, row, dsts, srcs, owner, &batch->groups_);
  return batch;
}

void PreparedBatch::enqueue(Stream& stream, const void* owner, std::size_t first, std::size_t count,
                            BatchEngine engine) const {
  KVFLOW_CHECK(owner == owner_, kInvalidArg, "expected a prepared transfer of this stream's device");
  const std::size_t groups = group_count();
  KVFLOW_CHECK(first <= groups && count <= groups - first, kOutOfRange,
               "expected groups within the prepared " + std::to_string(groups));
  const std::size_t lo = groups_[first];
  const std::size_t hi = groups_[first + count];
  if (lo == hi) return;
  const auto live = [](const std::vector<std::weak_ptr<Buffer>>& weak) {
    std::vector<BufferPtr> out;
    out.reserve(weak.size());
    for (const auto& w : weak) {
      BufferPtr buffer = w.lock();
      KVFLOW_CHECK(buffer && !buffer->retired(), kDisposed, "a buffer of this prepared transfer is disposed");
      out.push_back(std::move(buffer));
    }
    return out;
  };
  stream.copy_batch(live(dsts_), live(srcs_), std::vector<CopyPiece>(pieces_.begin() + lo, pieces_.begin() + hi),
                    engine);
}

}  // namespace kvflow
