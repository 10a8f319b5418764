// How the balanced attention launch (attention.cu) divides its work, as
// plain arithmetic that the kernels and the host share, and that the C++
// unit tests check on the CPU (native/test/planners.cc).
//
// The work is every (head, query tile, key tile) in that order: head-major,
// so the query tiles that read one KV head's keys run side by side. Query
// tile q of kBlockM queries needs key tiles [0, tiles_of(q)) (the causal
// mask: keys [0, start + its last query]). Block c of `ctas` takes positions
// [begin(c), begin(c + 1)) of that order: equal shares to within one tile.
// A (head, query tile) whose key tiles one block took whole is written by
// that block; one that several blocks shared is written by each as a
// partial, into slot 2c of the block's scratch if the piece is the first of
// the block's share and 2c + 1 otherwise (a share has at most two partial
// pieces, its first and its last), and merged afterwards.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define KVFLOW_HD __host__ __device__ __forceinline__
#else
#define KVFLOW_HD inline
#endif

namespace kvflow::cuda::ref::balance {

constexpr int kKeyTile = 64;  // keys per tile

/// Key tiles query tile `q_tile` needs, with `block_m` rows a tile and
/// `count` rows in all. With `pack` > 1 (grouped-query heads packed into the
/// rows: row r is query r / pack of head r % pack of the group) a tile's
/// last row is query ceil(q_end / pack) - 1.
KVFLOW_HD int tiles_of(int start, int count, int block_m, int q_tile, int pack = 1) {
  const int q_end = (q_tile + 1) * block_m < count ? (q_tile + 1) * block_m : count;
  return (start + (q_end + pack - 1) / pack + kKeyTile - 1) / kKeyTile;
}

struct Plan {
  int start = 0;
  int count = 0;  // rows: queries x pack
  int block_m = 0;
  int heads = 0;  // heads the rows are split over: KV heads where pack > 1
  int pack = 1;   // query heads a row group holds (tiles_of)
  int ctas = 0;
  int q_tiles = 0;
  std::int64_t head_work = 0;  // key tiles of one head's query tiles
  std::int64_t work = 0;       // head_work * heads
};

/// The plan for `count` rows (queries at positions start + i / pack) of each
/// of `heads`, or one with no work where the arguments give none.
inline Plan make_plan(int start, int count, int block_m, int heads, int ctas, int pack = 1) {
  Plan p;
  p.start = start;
  p.count = count;
  p.block_m = block_m;
  p.heads = heads;
  p.pack = pack;
  p.ctas = ctas;
  if (count <= 0 || block_m <= 0 || heads <= 0 || ctas <= 0 || pack <= 0) return p;
  p.q_tiles = (count + block_m - 1) / block_m;
  for (int q = 0; q < p.q_tiles; ++q) p.head_work += tiles_of(start, count, block_m, q, pack);
  p.work = p.head_work * heads;
  return p;
}

/// First position of block c's share (c = ctas: the end of the work).
KVFLOW_HD std::int64_t begin(const Plan& p, int c) { return static_cast<std::int64_t>(c) * p.work / p.ctas; }

/// Where the work stands at position `pos`: (head, query tile) and the key
/// tile within it.
struct Cursor {
  int head = 0;
  int q_tile = 0;
  int key_tile = 0;
};
KVFLOW_HD Cursor locate(const Plan& p, std::int64_t pos) {
  Cursor c;
  c.head = static_cast<int>(pos / p.head_work);
  std::int64_t rest = pos - static_cast<std::int64_t>(c.head) * p.head_work;
  for (int t = tiles_of(p.start, p.count, p.block_m, 0, p.pack); rest >= t; t = tiles_of(p.start, p.count, p.block_m, c.q_tile, p.pack)) {
    rest -= t;
    ++c.q_tile;
  }
  c.key_tile = static_cast<int>(rest);
  return c;
}

/// Position of the first key tile of (head, q_tile).
KVFLOW_HD std::int64_t item_begin(const Plan& p, int head, int q_tile) {
  std::int64_t s = static_cast<std::int64_t>(head) * p.head_work;
  for (int i = 0; i < q_tile; ++i) s += tiles_of(p.start, p.count, p.block_m, i, p.pack);
  return s;
}

/// The block whose share holds position `pos` (0 <= pos < work).
KVFLOW_HD int block_at(const Plan& p, std::int64_t pos) {
  int c = static_cast<int>(pos * p.ctas / p.work);
  while (c + 1 < p.ctas && begin(p, c + 1) <= pos) ++c;
  while (c > 0 && begin(p, c) > pos) --c;
  return c;
}

/// The partial slot block c wrote for the item starting at `item_start`,
/// given that its share overlaps that item: 2c where the item holds the
/// start of its share, else 2c + 1.
KVFLOW_HD std::int64_t slot_of(const Plan& p, int c, std::int64_t item_start) {
  return 2 * static_cast<std::int64_t>(c) + (begin(p, c) >= item_start ? 0 : 1);
}

/// One piece of a block's share: key tiles [key_begin, key_end) of (head,
/// q_tile), and the partial slot it is written to (-1: the whole tile's
/// keys, written as the output).
struct Piece {
  int head = 0;
  int q_tile = 0;
  int key_begin = 0;
  int key_end = 0;
  std::int64_t slot = -1;
};

/// Calls f(piece) for each piece of block c's share, in order.
template <typename F>
KVFLOW_HD void for_each_piece(const Plan& p, int c, F&& f) {
  std::int64_t pos = begin(p, c);
  const std::int64_t end = begin(p, c + 1);
  if (pos >= end) return;
  Cursor at = locate(p, pos);
  bool first = true;
  while (pos < end) {
    const int t = tiles_of(p.start, p.count, p.block_m, at.q_tile, p.pack);
    const std::int64_t left = end - pos;
    const int n = left < t - at.key_tile ? static_cast<int>(left) : t - at.key_tile;
    Piece piece;
    piece.head = at.head;
    piece.q_tile = at.q_tile;
    piece.key_begin = at.key_tile;
    piece.key_end = at.key_tile + n;
    if (at.key_tile != 0 || n != t) piece.slot = 2 * static_cast<std::int64_t>(c) + (first ? 0 : 1);
    f(piece);
    pos += n;
    first = false;
    at.key_tile = 0;
    if (++at.q_tile == p.q_tiles) {
      at.q_tile = 0;
      ++at.head;
    }
  }
}

/// Whether the balanced launch is predicted faster than the plain one (one
/// block per (head, query tile), the longest first), in tile-times of one
/// SM. `slots` = SMs x `per_sm` resident blocks; `ctas` (the plan's) may be
/// fewer where the scratch is small. Measured on an H100 (head size 128,
/// attention_check, bench/results "attention: the balanced launch"):
/// - a plain block sharing its SM with per_sm - 1 others takes per_sm
///   tile-times per key tile, so the plain launch takes its waves of
///   mean-length blocks, and at least its longest block, times per_sm;
/// - the balanced launch takes its share of all key tiles at the SM's full
///   rate, plus about 50 tile-times (0.05-0.1 ms) of partial writes and the
///   merge;
/// - where the plain launch fits one wave (items <= slots) the balanced one
///   won 1.05x at one measured shape (256 new tokens over 3,840) and lost at
///   the six others (0.09-0.99x: its fixed cost, and a lone block per SM of
///   the 8-warp shape runs at ~0.77 of the SM's rate): never taken there.
/// A 5% margin: a close call keeps the plain launch.
inline bool balanced_pays(const Plan& p, int sm_count, int per_sm) {
  constexpr double kFixed = 50.0;
  if (p.q_tiles <= 0 || p.ctas <= 0 || sm_count <= 0 || per_sm <= 0) return false;
  const std::int64_t items = static_cast<std::int64_t>(p.q_tiles) * p.heads;
  const std::int64_t slots = static_cast<std::int64_t>(sm_count) * per_sm;
  if (items <= slots) return false;
  const double longest = tiles_of(p.start, p.count, p.block_m, p.q_tiles - 1, p.pack);
  const double mean = static_cast<double>(p.head_work) / p.q_tiles;
  const double waves = static_cast<double>((items + slots - 1) / slots);
  const double plain = (longest > waves * mean ? longest : waves * mean) * per_sm;
  // ctas blocks over the SMs: the busiest SM runs ceil(ctas / SMs) shares,
  // sharing its rate among them (work / SMs when every slot has a block).
  const double busiest = static_cast<double>((static_cast<std::int64_t>(p.ctas) + sm_count - 1) / sm_count);
  const double share = busiest * static_cast<double>(p.work) / p.ctas;
  return (share + kFixed) * 1.05 < plain;
}

}  // namespace kvflow::cuda::ref::balance
