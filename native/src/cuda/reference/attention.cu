// Causal attention of new tokens over a paged KV cache, read in place: the
// flash scheme (tiles of keys streamed through shared memory, online softmax
// in registers, nothing of the score matrix written out) on the tensor cores
// (mma.sync m16n8k16, bf16 operands, f32 accumulation), native GQA (query
// head h reads kv head h / (heads / kv_heads); nothing is repeated), and the
// causal mask aligned to the lower right: query i sits at position start + i
// and sees keys [0, start + i].
//
// A block takes kBlockM queries of one head, each of its warps 16 * kMT of
// them. Keys come in tiles of 64 rows, double-buffered with cp.async; a row's
// address goes through the block table, so a tile may span several blocks in
// any order. Shared memory rows are swizzled (16-byte chunk c of row r is
// stored at chunk c ^ (r % 8)) so ldmatrix reads them without bank conflicts.
// Head sizes 16, 32, 64 and 128 take this kernel; others (small test models)
// a plain one below.
//
// One block per (query tile, head) leaves SMs idle whenever the blocks do not
// fill whole waves: a cached suffix of 1,792 tokens of a 32-head model is 448
// blocks of near-equal length, 1.7 waves of 264 slots on an H100, so the
// second wave runs 70% full. The balanced launch (stream-K) instead starts
// one block per slot and gives each an equal share of all (query tile, head,
// key tile) work in one fixed order; a block walks its share tile after tile,
// and a (query tile, head) whose keys two or more blocks shared is written
// by each as a partial (normalised O in f32 and its log-sum-exp), merged by a
// second kernel. A block writes at most two partials: the first and the last
// piece of its share. It is variant 4 of attention_variant(); attention()
// takes it where balance::balanced_pays() predicts it faster.
//
// Grouped-query heads may instead be packed into one block's rows (Params::
// pack, variants 5-7): a block takes 128 rows of one KV head, row r being
// query r / group of head r % group of that KV head's group, so every K/V
// tile it brings into shared memory serves all heads of the group (4x fewer
// K/V bytes through L2 for Llama-3-8B), and a tile's rows span 128 / group
// positions, so the causal mask differs per row position, not per row.
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>

#include "../cuda_error.hpp"
#include "balance.hpp"
#include "kernels.hpp"

#ifndef KVFLOW_ATTENTION_PACK
#define KVFLOW_ATTENTION_PACK 1
#endif

namespace kvflow::cuda::ref {

namespace {

constexpr int kBlockN = balance::kKeyTile;  // keys per tile
constexpr int kMaxDevices = 64;  // devices whose occupancy is remembered

struct Params {
  const __nv_bfloat16* q;
  __nv_bfloat16* out;
  const __nv_bfloat16* k;
  const __nv_bfloat16* v;
  std::int64_t block_stride;
  const std::int32_t* table;
  int block_tokens;
  int block_shift;  // log2(block_tokens) when it is a power of two, else -1
  int token_stride;  // kv_heads * head_dim
  int start;
  int count;
  int heads;
  int group;  // heads / kv_heads
  float scale_log2;  // log2(e) / sqrt(head_dim)
  // Rows of a block's tile: with pack 1, row r is query r of one head (a
  // block per (query tile, head)); with pack = group, row r is query r /
  // group of head r % group of one KV head's group (a block per (row tile,
  // KV head)), so each K/V tile a block loads serves the whole group.
  int pack;
  int rows;  // count * pack
};

// Heads the rows are split over: one block's tile holds rows of one of them.
__host__ __device__ __forceinline__ int items_of(const Params& p) { return p.pack == 1 ? p.heads : p.heads / p.group; }

// Query of row `r` of the packed order (see Params::pack).
__device__ __forceinline__ int row_query(const Params& p, int r) { return p.pack == 1 ? r : r / p.pack; }

// Element offset of row `r`'s head vector in q or out ([count][heads][kDim]),
// for a block whose item is `item` (a head, or a KV head where pack > 1).
template <int kDim>
__device__ __forceinline__ std::int64_t row_offset(const Params& p, int item, int r) {
  const int query = row_query(p, r);
  const int head = p.pack == 1 ? item : item * p.pack + (r - query * p.pack);
  return (static_cast<std::int64_t>(query) * p.heads + head) * kDim;
}

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

template <int kDim>
__device__ __forceinline__ int swz(int row, int chunk) {
  constexpr int kChunks = kDim / 8;
  constexpr int kMask = (kChunks < 8 ? kChunks : 8) - 1;
  return row * kDim + ((chunk ^ (row & kMask)) * 8);
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;  // 0: fill with zeros, read nothing
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kN>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kN));
}

__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

__device__ __forceinline__ void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&h);
}

// The kernel's shape: kWarps warps of kMT 16-row tiles each; Q fragments
// kept in registers (kQRegs) or read from shared memory at every tile.
template <int kDim, int kWarps, int kMT, bool kQRegs>
struct Config {
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBlockM = kWarps * 16 * kMT;
  static constexpr int kSmem = (kBlockM + 4 * kBlockN) * kDim * 2;
};

// The rows of a K/V tile one thread copies: kThreads / kChunks apart.
template <int kDim, int kThreads>
struct TileRows {
  static constexpr int kChunks = kDim / 8;
  static_assert(kThreads % kChunks == 0, "each thread keeps one chunk column");
  static constexpr int kStep = kThreads / kChunks;
  static constexpr int kCount = (kBlockN + kStep - 1) / kStep;  // rows per thread, at most
};

// The block-table entries of the rows this thread copies for keys [key0,
// key0 + kBlockN) (-1 past `total`), all read before any copy is issued: one
// table latency per tile, not one per row (5-6% off 1,792-token suffixes of
// 16k prompts on an H100 against reading each row's entry beside its
// copy). Reading them a tile ahead was slower (more registers, more spills).
template <int kDim, int kThreads>
__device__ __forceinline__ void tile_blocks(int (&blk)[TileRows<kDim, kThreads>::kCount], const Params& p,
                                            int key0, int total) {
  using R = TileRows<kDim, kThreads>;
#pragma unroll
  for (int i = 0; i < R::kCount; ++i) {
    const int row = static_cast<int>(threadIdx.x) / R::kChunks + i * R::kStep;
    const int t = key0 + row;
    blk[i] = -1;
    if (row < kBlockN && t < total) blk[i] = p.table[p.block_shift >= 0 ? t >> p.block_shift : t / p.block_tokens];
  }
}

// Copies keys [key0, key0 + kBlockN) of kv head `kvh` into a tile, each of
// this thread's rows from the block `blk` names (tile_blocks); rows past
// `total` are zeros.
template <int kDim, int kThreads>
__device__ __forceinline__ void copy_kv_tile(__nv_bfloat16* ks, __nv_bfloat16* vs, const Params& p, int kvh,
                                             int key0, const int (&blk)[TileRows<kDim, kThreads>::kCount]) {
  using R = TileRows<kDim, kThreads>;
  const int chunk = threadIdx.x % R::kChunks;
#pragma unroll
  for (int i = 0; i < R::kCount; ++i) {
    const int row = static_cast<int>(threadIdx.x) / R::kChunks + i * R::kStep;
    if (row >= kBlockN) break;
    const int t = key0 + row;
    const bool valid = blk[i] >= 0;
    std::int64_t off = 0;
    if (valid) {
      const int slot = p.block_shift >= 0 ? (t & (p.block_tokens - 1)) : t - (t / p.block_tokens) * p.block_tokens;
      off = static_cast<std::int64_t>(blk[i]) * p.block_stride + static_cast<std::int64_t>(slot) * p.token_stride +
            static_cast<std::int64_t>(kvh) * kDim + chunk * 8;
    }
    cp_async16(ks + swz<kDim>(row, chunk), p.k + off, valid);
    cp_async16(vs + swz<kDim>(row, chunk), p.v + off, valid);
  }
}

// Loads keys [key0, key0 + kBlockN) of kv head `kvh` into a tile; rows past
// `total` are zeros.
template <int kDim, int kThreads>
__device__ __forceinline__ void load_kv_tile(__nv_bfloat16* ks, __nv_bfloat16* vs, const Params& p, int kvh,
                                             int key0, int total) {
  int blk[TileRows<kDim, kThreads>::kCount];
  tile_blocks<kDim, kThreads>(blk, p, key0, total);
  copy_kv_tile<kDim, kThreads>(ks, vs, p, kvh, key0, blk);
}

// Attention of query tile `q_tile` of item `head` (a head; a KV head where
// p.pack > 1) over key tiles [j0, j1).
// With `part_o` null the tile's keys are all there are, and the output is
// written; otherwise O normalised over these keys (f32, [kBlockM][kDim]) and
// each row's log2-sum-exp (part_lse, [kBlockM], -inf where the row saw no
// key) go to the partial for combine_kernel.
template <int kDim, int kWarps, int kMT, bool kQRegs, bool kSkipRescale>
__device__ __forceinline__ void attend(const Params& p, unsigned char* smem_raw, int head, int q_tile, int j0,
                                       int j1, float* part_o, float* part_lse) {
  using C = Config<kDim, kWarps, kMT, kQRegs>;
  constexpr int kThreads = C::kThreads;
  constexpr int kBlockM = C::kBlockM;
  constexpr int kChunks = kDim / 8;
  constexpr int kSteps = kDim / 16;  // k-steps of Q K^T
  constexpr int kNTiles = kBlockN / 8;
  constexpr int kDTiles = kDim / 8;
  constexpr int kWarpRows = 16 * kMT;
  __nv_bfloat16* qs = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* ks = qs + kBlockM * kDim;  // [2][kBlockN * kDim]
  __nv_bfloat16* vs = ks + 2 * kBlockN * kDim;

  const int kvh = p.pack == 1 ? head / p.group : head;
  const int q0 = q_tile * kBlockM;  // first row
  const int total = p.start + p.count;

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int t4 = lane % 4;

  for (int i = threadIdx.x; i < kBlockM * kChunks; i += kThreads) {
    const int row = i / kChunks;
    const int chunk = i % kChunks;
    const int qi = q0 + row;
    const bool valid = qi < p.rows;
    const __nv_bfloat16* src = valid ? p.q + row_offset<kDim>(p, head, qi) + chunk * 8 : p.q;
    cp_async16(qs + swz<kDim>(row, chunk), src, valid);
  }
  load_kv_tile<kDim, kThreads>(ks, vs, p, kvh, j0 * kBlockN, total);
  cp_commit();

  unsigned qf[kQRegs ? kMT : 1][kQRegs ? kSteps : 1][4];
  float o[kMT][kDTiles][4];
  float m_run[kMT][2];  // running maxima, in units of scale_log2
  float l_run[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int d = 0; d < kDTiles; ++d) o[mt][d][0] = o[mt][d][1] = o[mt][d][2] = o[mt][d][3] = 0.0f;
    m_run[mt][0] = m_run[mt][1] = -INFINITY;
    l_run[mt][0] = l_run[mt][1] = 0.0f;
  }
  const int warp_row0 = warp * kWarpRows;
  const int warp_first_pos = p.start + row_query(p, q0 + warp_row0);
  const int warp_last_pos = p.start + row_query(p, q0 + warp_row0 + kWarpRows - 1);
  // Positions of this thread's rows (g and g + 8 of each 16-row tile).
  int row_pos[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
    row_pos[mt][0] = p.start + row_query(p, q0 + warp_row0 + mt * 16 + g);
    row_pos[mt][1] = p.start + row_query(p, q0 + warp_row0 + mt * 16 + g + 8);
  }
  const float scale = p.scale_log2;

  for (int j = j0; j < j1; ++j) {
    const int buf = (j - j0) & 1;
    if (j + 1 < j1) {
      load_kv_tile<kDim, kThreads>(ks + (buf ^ 1) * kBlockN * kDim, vs + (buf ^ 1) * kBlockN * kDim, p, kvh,
                                   (j + 1) * kBlockN, total);
      cp_commit();
      cp_wait<1>();
    } else {
      cp_wait<0>();
    }
    __syncthreads();
    if constexpr (kQRegs) {
      if (j == j0) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
          for (int st = 0; st < kSteps; ++st) {
            const int m = lane / 8;
            const int row = warp_row0 + mt * 16 + (lane & 7) + (m & 1) * 8;
            ldmatrix_x4(qf[mt][st], qs + swz<kDim>(row, st * 2 + (m >> 1)));
          }
        }
      }
    }
    const int key0 = j * kBlockN;
    // A warp whose queries all precede this tile has nothing to add.
    if (key0 <= warp_last_pos) {
      const __nv_bfloat16* kt = ks + buf * kBlockN * kDim;
      const __nv_bfloat16* vt = vs + buf * kBlockN * kDim;
      float s[kMT][kNTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int n = 0; n < kNTiles; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.0f;
      }
#pragma unroll
      for (int st = 0; st < kSteps; ++st) {
        unsigned qa[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          if constexpr (kQRegs) {
#pragma unroll
            for (int r = 0; r < 4; ++r) qa[mt][r] = qf[mt][st][r];
          } else {
            const int m = lane / 8;
            const int row = warp_row0 + mt * 16 + (lane & 7) + (m & 1) * 8;
            ldmatrix_x4(qa[mt], qs + swz<kDim>(row, st * 2 + (m >> 1)));
          }
        }
#pragma unroll
        for (int n = 0; n < kNTiles; n += 2) {
          const int m = lane / 8;
          const int row = n * 8 + (lane & 7) + (m >> 1) * 8;
          unsigned b[4];
          ldmatrix_x4(b, kt + swz<kDim>(row, st * 2 + (m & 1)));
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            mma16816(s[mt][n], qa[mt], b[0], b[1]);
            mma16816(s[mt][n + 1], qa[mt], b[2], b[3]);
          }
        }
      }
      const bool masked = key0 + kBlockN - 1 > warp_first_pos;
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        // Mask, and the running maximum of each of the two rows.
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < kNTiles; ++n) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            if (masked) {
              const int key = key0 + n * 8 + 2 * t4 + (e & 1);
              if (key > row_pos[mt][e >> 1]) s[mt][n][e] = -INFINITY;
            }
            mx[e >> 1] = fmaxf(mx[e >> 1], s[mt][n][e]);
          }
        }
        float alpha[2];
        float ref[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
          mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
          const float m_new = fmaxf(m_run[mt][r], mx[r] * scale);
          ref[r] = m_new == -INFINITY ? 0.0f : m_new;
          alpha[r] = ex2(m_run[mt][r] - ref[r]);
          m_run[mt][r] = m_new;
        }
        float sum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int n = 0; n < kNTiles; ++n) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float pe = ex2(fmaf(s[mt][n][e], scale, -ref[e >> 1]));
            s[mt][n][e] = pe;
            sum[e >> 1] += pe;
          }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) l_run[mt][r] = l_run[mt][r] * alpha[r] + sum[r];
        // Past the first tiles a row's maximum seldom moves: kSkipRescale
        // skips rescaling O when no row of the warp's tile needs it (alpha
        // is exactly 1).
        if (!kSkipRescale || __any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
          for (int d = 0; d < kDTiles; ++d) {
            o[mt][d][0] *= alpha[0];
            o[mt][d][1] *= alpha[0];
            o[mt][d][2] *= alpha[1];
            o[mt][d][3] *= alpha[1];
          }
        }
      }
      // O += P V, P from the score registers (the accumulator layout of two
      // adjacent n-tiles is the A-operand layout of one k-step).
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        unsigned a[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          a[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          a[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          a[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          a[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int d = 0; d < kDTiles; d += 2) {
          const int m = lane / 8;
          const int row = kk * 16 + (m & 1) * 8 + (lane & 7);
          unsigned b[4];
          ldmatrix_x4_trans(b, vt + swz<kDim>(row, d + (m >> 1)));
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            mma16816(o[mt][d], a[mt], b[0], b[1]);
            mma16816(o[mt][d + 1], a[mt], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();  // the next iteration's loads overwrite this buffer's other half
  }

  // Normalise and write this thread's rows (or the partial).
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = l_run[mt][r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const int row = warp_row0 + mt * 16 + g + r * 8;
      const int qi = q0 + row;
      if (qi >= p.rows) continue;
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      if (part_o == nullptr) {
        __nv_bfloat16* dst = p.out + row_offset<kDim>(p, head, qi) + 2 * t4;
#pragma unroll
        for (int d = 0; d < kDTiles; ++d) {
          *reinterpret_cast<unsigned*>(dst + d * 8) = pack_bf16(o[mt][d][2 * r] * inv, o[mt][d][2 * r + 1] * inv);
        }
      } else {
        float* dst = part_o + row * kDim + 2 * t4;
#pragma unroll
        for (int d = 0; d < kDTiles; ++d) {
          *reinterpret_cast<float2*>(dst + d * 8) = make_float2(o[mt][d][2 * r] * inv, o[mt][d][2 * r + 1] * inv);
        }
        if (t4 == 0) part_lse[row] = l > 0.0f ? m_run[mt][r] + __log2f(l) : -INFINITY;
      }
    }
  }
}

template <int kDim, int kWarps, int kMT, bool kQRegs, bool kSkipRescale>
__global__ void __launch_bounds__(kWarps * 32) flash_paged_kernel(Params p) {
  constexpr int kBlockM = Config<kDim, kWarps, kMT, kQRegs>::kBlockM;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int q_tile = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);  // the longest rows first
  attend<kDim, kWarps, kMT, kQRegs, kSkipRescale>(p, smem_raw, static_cast<int>(blockIdx.y), q_tile, 0,
                                                  balance::tiles_of(p.start, p.rows, kBlockM, q_tile, p.pack),
                                                  nullptr, nullptr);
}

// The balanced launch: its division of the work (balance.hpp) and each
// block's scratch for two partials.
struct Balance {
  balance::Plan plan;
  float* part_o;    // [ctas][2][kBlockM][kDim]
  float* part_lse;  // [ctas][2][kBlockM]
};

template <int kDim, int kWarps, int kMT, bool kQRegs, bool kSkipRescale>
__global__ void __launch_bounds__(kWarps * 32) flash_balanced_kernel(Params p, Balance b) {
  constexpr int kBlockM = Config<kDim, kWarps, kMT, kQRegs>::kBlockM;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  balance::for_each_piece(b.plan, static_cast<int>(blockIdx.x), [&](const balance::Piece& piece) {
    float* po = nullptr;
    float* pl = nullptr;
    if (piece.slot >= 0) {  // another block has the rest of this tile's keys
      po = b.part_o + piece.slot * kBlockM * kDim;
      pl = b.part_lse + piece.slot * kBlockM;
    }
    attend<kDim, kWarps, kMT, kQRegs, kSkipRescale>(p, smem_raw, piece.head, piece.q_tile, piece.key_begin,
                                                    piece.key_end, po, pl);
  });
}

// One block per (head, query tile): where blocks of the balanced launch
// shared its keys, merges their partials (weights 2^(lse - max)) into the
// output; otherwise returns at once (the one block wrote it).
template <int kDim, int kBlockM>
__global__ void __launch_bounds__(256) combine_kernel(Params p, Balance b) {
  const balance::Plan& plan = b.plan;
  const int head = static_cast<int>(blockIdx.x) / plan.q_tiles;
  const int q = static_cast<int>(blockIdx.x) % plan.q_tiles;
  const std::int64_t s = balance::item_begin(plan, head, q);
  const std::int64_t e = s + balance::tiles_of(p.start, p.rows, kBlockM, q, p.pack);
  const int c0 = balance::block_at(plan, s);
  if (balance::begin(plan, c0 + 1) >= e) return;
  constexpr int kQuads = kDim / 4;
  for (int idx = threadIdx.x; idx < kBlockM * kQuads; idx += blockDim.x) {
    const int row = idx / kQuads;
    const int col = (idx % kQuads) * 4;
    const int qi = q * kBlockM + row;
    if (qi >= p.rows) break;  // rows only grow with idx
    float mx = -INFINITY;
    for (int c = c0; c < plan.ctas; ++c) {
      const std::int64_t lo = balance::begin(plan, c);
      if (lo >= e) break;
      if (lo == balance::begin(plan, c + 1)) continue;  // an empty share wrote nothing
      mx = fmaxf(mx, b.part_lse[balance::slot_of(plan, c, s) * kBlockM + row]);
    }
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    float wsum = 0.0f;
    for (int c = c0; c < plan.ctas; ++c) {
      const std::int64_t lo = balance::begin(plan, c);
      if (lo >= e) break;
      if (lo == balance::begin(plan, c + 1)) continue;
      const std::int64_t slot = balance::slot_of(plan, c, s);
      const float lse = b.part_lse[slot * kBlockM + row];
      if (lse == -INFINITY) continue;
      const float w = ex2(lse - mx);
      const float4 v = *reinterpret_cast<const float4*>(b.part_o + (slot * kBlockM + row) * kDim + col);
      acc[0] += w * v.x;
      acc[1] += w * v.y;
      acc[2] += w * v.z;
      acc[3] += w * v.w;
      wsum += w;
    }
    const float inv = wsum > 0.0f ? 1.0f / wsum : 0.0f;
    __nv_bfloat16* dst = p.out + row_offset<kDim>(p, head, qi) + col;
    *reinterpret_cast<uint2*>(dst) =
        make_uint2(pack_bf16(acc[0] * inv, acc[1] * inv), pack_bf16(acc[2] * inv, acc[3] * inv));
  }
}

// Head sizes the tensor-core kernel does not take (not 16, 32, 64 or 128) or
// a cache not aligned to 16 bytes: one warp per query and head, keys split
// over the lanes, each lane's running softmax merged at the end. Correct,
// not fast: for small test models.
template <int kMaxDim>
__global__ void attention_simple_kernel(Params p, int hd) {
  const int warps = blockDim.x / 32;
  const std::int64_t item = static_cast<std::int64_t>(blockIdx.x) * warps + threadIdx.x / 32;
  if (item >= static_cast<std::int64_t>(p.count) * p.heads) return;
  const int qi = static_cast<int>(item / p.heads);
  const int head = static_cast<int>(item % p.heads);
  const int kvh = head / p.group;
  const int lane = threadIdx.x % 32;
  const __nv_bfloat16* qrow = p.q + (static_cast<std::int64_t>(qi) * p.heads + head) * hd;
  float q[kMaxDim];
  float acc[kMaxDim];
#pragma unroll
  for (int d = 0; d < kMaxDim; ++d) {
    q[d] = d < hd ? __bfloat162float(qrow[d]) : 0.0f;
    acc[d] = 0.0f;
  }
  float m = -INFINITY;
  float l = 0.0f;
  const int last = p.start + qi;
  for (int t = lane; t <= last; t += 32) {
    const std::int64_t off = static_cast<std::int64_t>(p.table[t / p.block_tokens]) * p.block_stride +
                             static_cast<std::int64_t>(t % p.block_tokens) * p.token_stride +
                             static_cast<std::int64_t>(kvh) * hd;
    float dot = 0.0f;
#pragma unroll
    for (int d = 0; d < kMaxDim; ++d) {
      if (d < hd) dot += q[d] * __bfloat162float(p.k[off + d]);
    }
    const float x = dot * p.scale_log2;
    const float m_new = fmaxf(m, x);
    const float a = exp2f(m - m_new);
    const float e = exp2f(x - m_new);
    l = l * a + e;
#pragma unroll
    for (int d = 0; d < kMaxDim; ++d) {
      if (d < hd) acc[d] = acc[d] * a + e * __bfloat162float(p.v[off + d]);
    }
    m = m_new;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m_o = __shfl_xor_sync(0xffffffffu, m, o);
    const float l_o = __shfl_xor_sync(0xffffffffu, l, o);
    const float m_new = fmaxf(m, m_o);
    const float a = m_new == -INFINITY ? 0.0f : exp2f(m - m_new);
    const float b = m_new == -INFINITY ? 0.0f : exp2f(m_o - m_new);
#pragma unroll
    for (int d = 0; d < kMaxDim; ++d) {
      const float acc_o = __shfl_xor_sync(0xffffffffu, acc[d], o);
      acc[d] = acc[d] * a + acc_o * b;
    }
    l = l * a + l_o * b;
    m = m_new;
  }
  if (lane == 0) {
    __nv_bfloat16* dst = p.out + (static_cast<std::int64_t>(qi) * p.heads + head) * hd;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int d = 0; d < kMaxDim; ++d) {
      if (d < hd) dst[d] = __float2bfloat16(acc[d] * inv);
    }
  }
}

void run_simple(cudaStream_t stream, const Params& p, int hd) {
  const int warps = 4;
  const std::int64_t items = static_cast<std::int64_t>(p.count) * p.heads;
  const unsigned blocks = static_cast<unsigned>((items + warps - 1) / warps);
  if (hd <= 64) {
    attention_simple_kernel<64><<<blocks, warps * 32, 0, stream>>>(p, hd);
  } else {
    attention_simple_kernel<256><<<blocks, warps * 32, 0, stream>>>(p, hd);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda(err, "attention_simple_kernel", __FILE__, __LINE__);
}

template <int kDim, int kWarps, int kMT, bool kQRegs, bool kSkip>
void run_config(cudaStream_t stream, const Params& p) {
  using C = Config<kDim, kWarps, kMT, kQRegs>;
  const dim3 grid((p.rows + C::kBlockM - 1) / C::kBlockM, items_of(p));
  flash_paged_kernel<kDim, kWarps, kMT, kQRegs, kSkip><<<grid, C::kThreads, C::kSmem, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda(err, "flash_paged_kernel", __FILE__, __LINE__);
}

template <int kDim, int kWarps, int kMT, bool kQRegs, bool kSkip>
void prepare_config() {
  using C = Config<kDim, kWarps, kMT, kQRegs>;
  KVFLOW_CUDA(cudaFuncSetAttribute(flash_paged_kernel<kDim, kWarps, kMT, kQRegs, kSkip>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
}

// The balanced launch runs variant 3's shape (4 warps x 32 rows, Q read from
// shared memory, O rescaled only where a row's maximum moved).
template <int kDim>
using BalancedConfig = Config<kDim, 4, 2, false>;

template <int kDim>
void prepare_balanced() {
  KVFLOW_CUDA(cudaFuncSetAttribute(flash_balanced_kernel<kDim, 4, 2, false, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   BalancedConfig<kDim>::kSmem));
}

// Blocks of the balanced kernel resident on one SM (two on an H100: 96 KiB
// of shared memory each for head size 128); the launch starts that many per SM.
// Asked once per device (a process may drive GPUs of different kinds); two
// threads asking at once both ask, and store the same answer.
template <int kDim>
int balanced_blocks_per_sm() {
  static std::atomic<int> known[kMaxDevices] = {};
  int device = 0;
  KVFLOW_CUDA(cudaGetDevice(&device));
  std::atomic<int>* slot = device >= 0 && device < kMaxDevices ? &known[device] : nullptr;
  if (slot != nullptr) {
    const int n = slot->load(std::memory_order_relaxed);
    if (n > 0) return n;
  }
  using C = BalancedConfig<kDim>;
  prepare_balanced<kDim>();
  int blocks = 0;
  KVFLOW_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, flash_balanced_kernel<kDim, 4, 2, false, true>, C::kThreads, C::kSmem));
  const int n = blocks > 1 ? blocks : 1;
  if (slot != nullptr) slot->store(n, std::memory_order_relaxed);
  return n;
}

// Scratch of one block of the balanced launch: two partials.
template <int kDim>
constexpr std::size_t balanced_block_bytes() {
  return std::size_t{2} * BalancedConfig<kDim>::kBlockM * (kDim + 1) * sizeof(float);
}

template <int kDim>
std::size_t balanced_scratch_bytes(int sm_count) {
  return balanced_block_bytes<kDim>() * static_cast<std::size_t>(sm_count) * balanced_blocks_per_sm<kDim>();
}

// Launches the balanced kernel and its merge; false (nothing launched) where
// the scratch holds no block's partials, or `only_if_pays` and the plain
// launch is predicted as fast.
template <int kDim>
bool run_balanced(cudaStream_t stream, const Params& p, int sm_count, Scratch scratch, bool only_if_pays) {
  using C = BalancedConfig<kDim>;
  constexpr int kBlockM = C::kBlockM;
  const std::size_t fit = scratch.ptr == nullptr ? 0 : scratch.bytes / balanced_block_bytes<kDim>();
  const std::size_t want = static_cast<std::size_t>(sm_count > 0 ? sm_count : 1) * balanced_blocks_per_sm<kDim>();
  const int ctas = static_cast<int>(std::min(fit, want));
  if (ctas < 1) return false;
  Balance b{};
  b.plan = balance::make_plan(p.start, p.rows, kBlockM, items_of(p), ctas, p.pack);
  if (b.plan.work > (std::int64_t{1} << 40)) return false;  // begin(c) = c * work / ctas stays in 64 bits
  if (only_if_pays && !balance::balanced_pays(b.plan, sm_count, balanced_blocks_per_sm<kDim>())) return false;
  b.part_o = static_cast<float*>(scratch.ptr);
  b.part_lse = b.part_o + static_cast<std::size_t>(ctas) * 2 * kBlockM * kDim;
  flash_balanced_kernel<kDim, 4, 2, false, true><<<ctas, C::kThreads, C::kSmem, stream>>>(p, b);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda(err, "flash_balanced_kernel", __FILE__, __LINE__);
  const unsigned items = static_cast<unsigned>(b.plan.q_tiles) * static_cast<unsigned>(b.plan.heads);
  combine_kernel<kDim, kBlockM><<<items, 256, 0, stream>>>(p, b);
  err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda(err, "combine_kernel", __FILE__, __LINE__);
  return true;
}

// The shapes attention_variant() offers:
//   0: 4 warps x 32 rows, Q read from shared memory at each tile (128 queries
//      a block; each K and V fragment serves two row tiles; two blocks fit an SM)
//   1: 4 warps x 16 rows, Q in registers (64 queries a block)
//   2: 8 warps x 16 rows, Q in registers (128 queries a block)
//   3: as 0, rescaling O only where a row's maximum moved
//   4: 3's shape in the balanced launch (3 where the scratch is too small)
//   5, 6, 7: 3, 4 and attention()'s own choice with the heads of a KV head's
//      group packed into one block's rows (Params::pack; as 3, 4 and the
//      choice without packing where a KV head serves one query head)
constexpr int kVariants = 8;
constexpr int kAuto = -1;
// Whether attention() packs grouped-query heads (variant 7's choice). On:
// attention_check on an H200 (bench/results "attention: grouped-query heads
// packed") measured whole prompts 4-10% faster packed (Llama-3-8B 8k 2.31 ->
// 2.10 ms, Llama-3-70B 4k 1.21 -> 1.09) and cached suffixes within 1%
// either way: there the balanced launch already keeps every SM busy.
constexpr bool kPackByDefault = KVFLOW_ATTENTION_PACK;
// Whether attention() takes the balanced launch where balance::balanced_pays()
// predicts a gain (see kAuto below). On since attention_check checked it
// against the f64 reference on an H100 and bench/prefill measured the gain
// (Llama-3-8B 16k at 90% cached: the suffix 4.5% faster).
constexpr bool kBalancedByDefault = true;

template <int kDim>
void run_variant(cudaStream_t stream, const Params& p, int variant, int sm_count, Scratch scratch) {
  switch (variant) {
    case kAuto: {
      // Measured on an H100 (bench/results/reference.json, attention_check):
      // the 4x32 shape (rescaling only where needed) is the fastest once its
      // 128-query blocks cover every SM; below that 8 warps of 16 rows a
      // block hide latency better. The balanced launch (variant 4) is taken
      // where the plain launch needs more than one wave and the wave model
      // (balance::balanced_pays) predicts it 5% faster: a cached suffix's
      // near-equal blocks leave the last wave part-empty.
      if (kBalancedByDefault && run_balanced<kDim>(stream, p, sm_count, scratch, true)) break;
      const std::int64_t blocks = (std::int64_t{p.rows} + 127) / 128 * items_of(p);
      if (blocks < sm_count) {
        run_config<kDim, 8, 1, true, false>(stream, p);
      } else {
        run_config<kDim, 4, 2, false, true>(stream, p);
      }
      break;
    }
    case 1: run_config<kDim, 4, 1, true, false>(stream, p); break;
    case 2: run_config<kDim, 8, 1, true, false>(stream, p); break;
    case 4:
      if (run_balanced<kDim>(stream, p, sm_count, scratch, false)) break;
      [[fallthrough]];
    case 3: run_config<kDim, 4, 2, false, true>(stream, p); break;
    default: run_config<kDim, 4, 2, false, false>(stream, p); break;
  }
}

template <int kDim>
void prepare_dim() {
  prepare_config<kDim, 4, 2, false, false>();
  prepare_config<kDim, 4, 1, true, false>();
  prepare_config<kDim, 8, 1, true, false>();
  prepare_config<kDim, 4, 2, false, true>();
  prepare_balanced<kDim>();
}

void run(cudaStream_t stream, bf16_t* out, const bf16_t* q, const PagedView& kv, HeadShape shape, std::uint32_t start,
         std::uint32_t count, int variant, int sm_count, Scratch scratch) {
  if (count == 0) return;
  Params p{};
  p.q = reinterpret_cast<const __nv_bfloat16*>(q);
  p.out = reinterpret_cast<__nv_bfloat16*>(out);
  p.k = reinterpret_cast<const __nv_bfloat16*>(kv.k);
  p.v = reinterpret_cast<const __nv_bfloat16*>(kv.v);
  p.block_stride = kv.block_stride;
  p.table = kv.table;
  p.block_tokens = static_cast<int>(kv.block_tokens);
  p.block_shift = -1;
  for (int b = 0; b < 31; ++b) {
    if ((1u << b) == kv.block_tokens) p.block_shift = b;
  }
  p.token_stride = static_cast<int>(shape.kv_heads * shape.head_dim);
  p.start = static_cast<int>(start);
  p.count = static_cast<int>(count);
  p.heads = static_cast<int>(shape.heads);
  p.group = static_cast<int>(shape.heads / shape.kv_heads);
  p.scale_log2 = 1.4426950408889634f / sqrtf(static_cast<float>(shape.head_dim));
  p.pack = 1;
  p.rows = p.count;
  bool packed = variant == kAuto ? kPackByDefault : variant >= 5;
  if (variant >= 5) variant = variant == 5 ? 3 : variant == 6 ? 4 : kAuto;
  // Rows and their tile arithmetic ((q_tile + 1) * 128, rows + 127) stay in int.
  if (packed && p.group > 1 && std::int64_t{p.count} * p.group <= std::int64_t{INT32_MAX} - 2 * 128) {
    p.pack = p.group;
    p.rows = p.count * p.group;
  }
  // The tensor-core kernel reads 16-byte pieces of Q, K and V rows, and its
  // merge writes 8-byte pieces of `out`: anything less aligned takes the
  // plain kernel.
  const auto at16 = [](const void* ptr) { return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0; };
  const bool aligned = at16(kv.k) && at16(kv.v) && at16(q) && at16(out) && kv.block_stride % 8 == 0;
  switch (aligned ? shape.head_dim : 0) {
    case 16: run_variant<16>(stream, p, variant, sm_count, scratch); break;
    case 32: run_variant<32>(stream, p, variant, sm_count, scratch); break;
    case 64: run_variant<64>(stream, p, variant, sm_count, scratch); break;
    case 128: run_variant<128>(stream, p, variant, sm_count, scratch); break;
    default:
      KVFLOW_CHECK(attention_supports(shape.head_dim), kUnsupported,
                   "attention supports head_dim 1 to 256, got " + std::to_string(shape.head_dim));
      run_simple(stream, p, static_cast<int>(shape.head_dim));
  }
}

}  // namespace

bool attention_supports(std::uint32_t head_dim) noexcept { return head_dim >= 1 && head_dim <= 256; }

void attention_prepare() {
  prepare_dim<16>();
  prepare_dim<32>();
  prepare_dim<64>();
  prepare_dim<128>();
}

bool attention_takes_scratch() noexcept { return kBalancedByDefault; }

std::size_t attention_scratch_bytes(std::uint32_t head_dim, int sm_count) {
  switch (head_dim) {
    case 16: return balanced_scratch_bytes<16>(sm_count);
    case 32: return balanced_scratch_bytes<32>(sm_count);
    case 64: return balanced_scratch_bytes<64>(sm_count);
    case 128: return balanced_scratch_bytes<128>(sm_count);
    default: return 0;
  }
}

void attention(cudaStream_t stream, bf16_t* out, const bf16_t* q, const PagedView& kv, HeadShape shape,
               std::uint32_t start, std::uint32_t count, int sm_count, Scratch scratch) {
  run(stream, out, q, kv, shape, start, count, kAuto, sm_count, scratch);
}

int attention_variants() noexcept { return kVariants; }

void attention_variant(cudaStream_t stream, bf16_t* out, const bf16_t* q, const PagedView& kv, HeadShape shape,
                       std::uint32_t start, std::uint32_t count, int variant, int sm_count, Scratch scratch) {
  KVFLOW_CHECK(variant >= 0 && variant < kVariants, kInvalidArg,
               "expected an attention variant in [0, " + std::to_string(kVariants) + "), got " +
                   std::to_string(variant));
  run(stream, out, q, kv, shape, start, count, variant, sm_count, scratch);
}

}  // namespace kvflow::cuda::ref
