// Checksummed file IO for the KV store's slab files: vectored reads whose
// pieces are verified against a CRC32C on the IO thread that read them (and
// zeroed there when they fail, before anyone hears of the completion), and
// vectored writes that report each piece's CRC32C, computed on an IO thread.
// Bytes that fail a check never reach whoever waits on the request.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kvflow/buffer.hpp"
#include "kvflow/completer.hpp"
#include "kvflow/event.hpp"
#include "kvflow/io.hpp"

namespace kvflow::io {

/// One extent: `bytes` bytes at `file_offset`, at `buffer_offset` in memory,
/// whose CRC32C continuing from `seed` is `crc` (reads only).
struct CheckedPiece {
  std::size_t buffer_offset = 0;
  std::uint64_t file_offset = 0;
  std::size_t bytes = 0;
  std::uint32_t seed = 0;
  std::uint32_t crc = 0;
};

/// The most pieces one request may have.
inline constexpr std::size_t kMaxCheckedPieces = 65536;

/// What a checked read or summed write found. Written by IO threads; read it
/// only once the request's event has completed.
struct PieceReport {
  /// Per piece: CRC32C of the bytes read (of the bytes written, for writes);
  /// 0 for a piece whose IO failed.
  std::vector<std::uint32_t> sums;
  /// Reads: indices of the pieces that failed their check, ascending.
  std::vector<std::uint32_t> mismatched;
};

struct CheckedRequest {
  /// Completes once for the whole request: with the lowest-indexed piece's IO
  /// failure if any, else ERR_CHECKSUM when a piece failed its check.
  EventPtr event;
  std::shared_ptr<const PieceReport> report;
};

/// Reads every piece of `file` into `dst` on `engine`. On the thread that
/// completes a piece, its CRC32C is compared with the expected one; a piece
/// that does not match, or whose read failed, has its bytes in `dst` zeroed
/// before the event completes. Destination ranges must not overlap. Throws
/// (nothing read) for bad arguments. The event gets `event_id` and is posted
/// to `completer` when watched. Every piece is a request of `priority`.
[[nodiscard]] CheckedRequest read_checked(Engine& engine, const FilePtr& file, const BufferPtr& dst,
                                          std::vector<CheckedPiece> pieces, Completer& completer,
                                          std::uint64_t event_id, Priority priority = Priority::kHigh);

/// Writes every piece of `src` to `file` on `engine`; once a piece is
/// written, an IO thread computes CRC32C(seed, its bytes in `src`) into the
/// report. The event fails with the lowest-indexed piece's IO failure, if any.
/// Every piece is a request of `priority`.
[[nodiscard]] CheckedRequest write_summed(Engine& engine, const FilePtr& file, const BufferPtr& src,
                                          std::vector<CheckedPiece> pieces, Completer& completer,
                                          std::uint64_t event_id, Priority priority = Priority::kLow);

}  // namespace kvflow::io
