// Checked reads and summed writes (see checked_io.hpp): one engine request
// per run of contiguous pieces, whose Done callback (on the IO thread that
// finished it) checksums each of its pieces; the last piece to finish
// completes the request's event.
#include "kvflow/checked_io.hpp"

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include "kvflow/checks.hpp"
#include "kvflow/crc32c.hpp"
#include "kvflow/error.hpp"

namespace kvflow::io {

namespace {

/// Shared by a request's pieces. Each piece's slots (errors, sums, bad) are
/// written by the one thread that finished it; the countdown orders them
/// before the last thread reads them all.
struct Batch {
  bool is_read = true;
  FilePtr file;
  BufferPtr buffer;
  char* base = nullptr;
  std::string path;
  std::vector<CheckedPiece> pieces;
  std::vector<ErrorPtr> errors;
  std::vector<std::uint8_t> bad;  // reads: 1 where the check failed
  std::shared_ptr<PieceReport> report;
  EventPtr event;
  Completer* completer = nullptr;
  std::atomic<std::size_t> remaining{0};

  void piece_done(std::size_t i, const ErrorPtr& error) noexcept {
    const CheckedPiece& p = pieces[i];
    char* mem = base + p.buffer_offset;
    if (error) {
      errors[i] = error;
      // A failed read leaves the range partly written: none of it may be used.
      if (is_read) std::memset(mem, 0, p.bytes);
    } else {
      const std::uint32_t sum = crc32c(p.seed, mem, p.bytes);
      report->sums[i] = sum;
      if (is_read && sum != p.crc) {
        bad[i] = 1;
        std::memset(mem, 0, p.bytes);
      }
    }
    count_down();
  }

  void count_down() noexcept {
    if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) finish();
  }

  ErrorPtr checksum_error() const {
    const std::vector<std::uint32_t>& m = report->mismatched;
    const CheckedPiece& p = pieces[m.front()];
    char crcs[64];
    std::snprintf(crcs, sizeof crcs, "expected 0x%08" PRIx32 ", got 0x%08" PRIx32, p.crc, report->sums[m.front()]);
    return std::make_shared<const Error>(
        ErrorCode::kChecksum,
        "CRC32C mismatch in " + std::to_string(m.size()) + " of " + std::to_string(pieces.size()) +
            " pieces read from " + path + " (first: piece " + std::to_string(m.front()) + ", " +
            std::to_string(p.bytes) + " bytes at offset " + std::to_string(p.file_offset) + ", " + crcs +
            "); their destination bytes were zeroed",
        __FILE__, __LINE__);
  }

  void finish() noexcept {
    ErrorPtr result;
    try {
      for (const ErrorPtr& e : errors) {
        if (e) {
          result = e;
          break;
        }
      }
      for (std::size_t i = 0; i < bad.size(); ++i) {
        if (bad[i] != 0) report->mismatched.push_back(static_cast<std::uint32_t>(i));
      }
      if (!result && !report->mismatched.empty()) result = checksum_error();
    } catch (...) {
      if (!result) result = capture_current_exception();
    }
    // Memory and file are let go before the completion is heard of, as for plain requests.
    buffer.reset();
    file.reset();
    if (event->complete(std::move(result))) completer->post(event->id());
  }
};

void check_pieces(const FilePtr& file, const BufferPtr& buffer, const std::vector<CheckedPiece>& pieces,
                  bool is_read) {
  const char* side = is_read ? "destination" : "source";
  KVFLOW_CHECK(file != nullptr, kInvalidArg, "expected an open file, got none");
  KVFLOW_CHECK(!pieces.empty() && pieces.size() <= kMaxCheckedPieces, kInvalidArg,
               "expected 1 to " + std::to_string(kMaxCheckedPieces) + " pieces, got " + std::to_string(pieces.size()));
  check_range(buffer.get(), buffer ? buffer->owner() : nullptr, 0, 0, side);
  KVFLOW_CHECK(buffer->kind() != MemoryKind::kDevice, kInvalidArg,
               std::string("expected a pinned or host buffer for ") + side + ", got a device buffer");
  constexpr auto kMaxOffset = static_cast<std::uint64_t>(INT64_MAX);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const CheckedPiece& p = pieces[i];
    check_range(buffer.get(), buffer->owner(), p.buffer_offset, p.bytes, side);
    KVFLOW_CHECK(p.file_offset <= kMaxOffset && p.bytes <= kMaxOffset - p.file_offset, kOutOfRange,
                 "expected a file range below 2^63 bytes for piece " + std::to_string(i) + ", got offset " +
                     std::to_string(p.file_offset) + " + " + std::to_string(p.bytes) + " bytes");
  }
  if (!is_read) return;
  // Overlapping destinations would let one piece overwrite another after its check.
  std::vector<std::size_t> order;
  order.reserve(pieces.size());
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    if (pieces[i].bytes != 0) order.push_back(i);
  }
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return pieces[a].buffer_offset < pieces[b].buffer_offset; });
  for (std::size_t k = 1; k < order.size(); ++k) {
    const CheckedPiece& prev = pieces[order[k - 1]];
    const CheckedPiece& next = pieces[order[k]];
    KVFLOW_CHECK(prev.buffer_offset + prev.bytes <= next.buffer_offset, kInvalidArg,
                 "expected pieces whose destination ranges do not overlap, got pieces " +
                     std::to_string(order[k - 1]) + " and " + std::to_string(order[k]));
  }
}

CheckedRequest submit(bool is_read, Engine& engine, const FilePtr& file, const BufferPtr& buffer,
                      std::vector<CheckedPiece> pieces, Completer& completer, std::uint64_t event_id,
                      Priority priority) {
  check_pieces(file, buffer, pieces, is_read);
  // Checked here too: a piece refused by the engine would fail the request late instead of throwing now.
  KVFLOW_CHECK(priority == Priority::kHigh || priority == Priority::kLow, kInvalidArg,
               "expected high or low for priority, got " + std::to_string(static_cast<int>(priority)));
  auto batch = std::make_shared<Batch>();
  const std::size_t n = pieces.size();
  batch->is_read = is_read;
  batch->file = file;
  batch->buffer = buffer;
  batch->base = static_cast<char*>(buffer->ptr());
  batch->path = file->path();
  batch->pieces = std::move(pieces);
  batch->errors.resize(n);
  batch->bad.resize(n, 0);
  batch->report = std::make_shared<PieceReport>();
  batch->report->sums.resize(n, 0);
  batch->event = std::make_shared<EventState>(event_id);
  batch->completer = &completer;
  // One count per piece plus one held while submitting, so pieces finishing
  // meanwhile never complete the request early.
  batch->remaining.store(n + 1, std::memory_order_relaxed);
  CheckedRequest out{batch->event, batch->report};
  // Pieces that follow each other in both the buffer and the file (a
  // record's layer extents, say) go to the engine as one request of up to
  // kMergeBytes, which it splits into tasks as any request; each piece is
  // still checksummed on its own, by the thread that completes the request.
  // An IO failure of a merged request fails each of its pieces.
  constexpr std::size_t kMergeBytes = std::size_t{16} << 20;
  std::size_t i = 0;
  try {
    while (i < n) {
      const CheckedPiece& first = batch->pieces[i];
      std::size_t end = i + 1;
      std::size_t bytes = first.bytes;
      while (first.bytes != 0 && end < n) {
        const CheckedPiece& next = batch->pieces[end];
        if (next.bytes == 0 || bytes + next.bytes > kMergeBytes || next.buffer_offset != first.buffer_offset + bytes ||
            next.file_offset != first.file_offset + bytes) {
          break;
        }
        bytes += next.bytes;
        ++end;
      }
      Engine::Done done = [batch, from = i, to = end](const ErrorPtr& e) {
        for (std::size_t k = from; k < to; ++k) batch->piece_done(k, e);
      };
      if (is_read) {
        (void)engine.read(file, buffer, first.buffer_offset, first.file_offset, bytes, std::move(done), priority);
      } else {
        (void)engine.write(file, first.file_offset, buffer, first.buffer_offset, bytes, std::move(done), priority);
      }
      i = end;
    }
  } catch (...) {
    // The engine closed (or memory ran out) part way: pieces already submitted
    // finish on their own; the rest fail without IO, and so does the request.
    if (i == 0) throw;  // nothing was submitted: nothing read, say so at once
    const ErrorPtr error = capture_current_exception();
    for (; i < n; ++i) {
      // A failed piece of a read is zeroed, as the contract says, never left holding stale bytes.
      const CheckedPiece& p = batch->pieces[i];
      if (is_read && p.bytes != 0) std::memset(batch->base + p.buffer_offset, 0, p.bytes);
      batch->errors[i] = error;
      batch->count_down();
    }
  }
  batch->count_down();
  return out;
}

}  // namespace

CheckedRequest read_checked(Engine& engine, const FilePtr& file, const BufferPtr& dst,
                            std::vector<CheckedPiece> pieces, Completer& completer, std::uint64_t event_id,
                            Priority priority) {
  return submit(true, engine, file, dst, std::move(pieces), completer, event_id, priority);
}

CheckedRequest write_summed(Engine& engine, const FilePtr& file, const BufferPtr& src,
                            std::vector<CheckedPiece> pieces, Completer& completer, std::uint64_t event_id,
                            Priority priority) {
  return submit(false, engine, file, src, std::move(pieces), completer, event_id, priority);
}

}  // namespace kvflow::io
