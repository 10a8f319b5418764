// Batched copies checked before they reach a stream: the pieces of a batch
// against their buffers, and a prepared batch (KvCache.prepare) checked once
// and moved many times.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

#include "kvflow/buffer.hpp"
#include "kvflow/stream.hpp"

namespace kvflow {

/// Row `row` of a batch's table, as its caller parsed it.
using PieceRow = std::function<CopyPiece(std::size_t row)>;

/// The pieces of `rows` rows, each checked in row order: its buffer indices
/// within the lists (kOutOfRange), its ranges within its buffers, all of
/// device `owner` (see check_range). Empty pieces are left out. `groups`,
/// when given, holds row indices that cut the rows into runs; they are
/// rewritten as indices into the returned pieces.
[[nodiscard]] std::vector<CopyPiece> checked_pieces(std::size_t rows, const PieceRow& row,
                                                    const std::vector<BufferPtr>& dsts,
                                                    const std::vector<BufferPtr>& srcs, const void* owner,
                                                    std::vector<std::size_t>* groups);

/// A batch checked once and moved many times: its pieces grouped into runs
/// (a layer each), and the buffers they name. It does not keep them alive:
/// a move after one was disposed is kDisposed.
class PreparedBatch {
 public:
  /// Checks the batch: `groups` are row indices, ascending, the first 0 and
  /// the last `rows` (kInvalidArg otherwise); the rows as checked_pieces().
  /// Every buffer must be of device `owner`.
  [[nodiscard]] static std::shared_ptr<const PreparedBatch> make(const void* owner, const std::vector<BufferPtr>& dsts,
                                                                 const std::vector<BufferPtr>& srcs, std::size_t rows,
                                                                 const PieceRow& row, std::vector<std::size_t> groups);

  /// Enqueues the pieces of groups [first, first + count) on `stream`, a
  /// stream of device `owner` (kInvalidArg when the batch is another's).
  /// kOutOfRange past the groups; kDisposed when a buffer was disposed.
  void enqueue(Stream& stream, const void* owner, std::size_t first, std::size_t count, BatchEngine engine) const;

  [[nodiscard]] const void* owner() const noexcept { return owner_; }
  [[nodiscard]] std::size_t group_count() const noexcept { return groups_.size() - 1; }

 private:
  PreparedBatch() = default;
  const void* owner_ = nullptr;
  std::vector<std::weak_ptr<Buffer>> dsts_;
  std::vector<std::weak_ptr<Buffer>> srcs_;
  std::vector<CopyPiece> pieces_;
  std::vector<std::size_t> groups_;  // group g is pieces_[groups_[g], groups_[g + 1])
};

}  // namespace kvflow
