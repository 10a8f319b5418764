// Launchers of the reference model's kernels (kernels.cu, attention.cu). Each
// enqueues on `stream` and throws on a launch error; none synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace kvflow::cuda::ref {

/// bf16 as stored: the kernels convert; host code only moves pointers.
using bf16_t = std::uint16_t;

/// rows x cols bf16 of weight tensor `tensor`, written at `out`: element
/// (r, c) is scale * reference_weight(seed, tensor, r * cols + c) + offset.
void fill_weight_bf16(cudaStream_t stream, bf16_t* out, std::uint64_t rows, std::uint64_t cols, std::uint64_t seed,
                      std::uint32_t tensor, float scale, float offset);
/// `n` f32 of tensor `tensor`: scale * reference_weight(...) + offset.
void fill_weight_f32(cudaStream_t stream, float* out, std::uint64_t n, std::uint64_t seed, std::uint32_t tensor,
                     float scale, float offset);

/// out[r] = rmsnorm(in[r]) * weight for `rows` rows of `dim`; out is bf16, or
/// f32 when `out_f32`.
void rms_norm(cudaStream_t stream, void* out, bool out_f32, const bf16_t* in, const float* weight,
              std::uint32_t rows, std::uint32_t dim, float eps);

/// out[r] = embedding[tokens[r]] for `rows` rows of `dim`.
void embed(cudaStream_t stream, bf16_t* out, const bf16_t* embedding, const std::int32_t* tokens,
           std::uint32_t rows, std::uint32_t dim);

/// dst[i] = pinned[i] for i < n, `pinned` being page-locked host memory
/// (cudaHostAlloc: mapped into the device's address space under unified
/// addressing). A kernel reads it over PCIe, so the copy takes no copy
/// engine: an upload on the compute stream never waits behind loads queued
/// on the copy engines (a cudaMemcpyAsync of a few bytes would, for as long
/// as the loads ahead of it take).
void copy_from_pinned(cudaStream_t stream, std::int32_t* dst, const std::int32_t* pinned, std::uint32_t n);

/// act[r][i] = silu(gu[r][i]) * gu[r][inter + i].
void swiglu(cudaStream_t stream, bf16_t* act, const bf16_t* gu, std::uint32_t rows, std::uint32_t inter);

/// Where a paged cache keeps one layer's K and V: element (token t, kv head
/// h, dim d) of K is k[table[t / block_tokens] * block_stride + (t %
/// block_tokens) * kv_heads * head_dim + h * head_dim + d]; V likewise.
struct PagedView {
  bf16_t* k = nullptr;
  bf16_t* v = nullptr;
  std::int64_t block_stride = 0;  // elements
  const std::int32_t* table = nullptr;  // device memory
  std::uint32_t block_tokens = 0;
};

struct HeadShape {
  std::uint32_t heads = 0;
  std::uint32_t kv_heads = 0;
  std::uint32_t head_dim = 0;
};

/// From the fused projection qkv ([count][(heads + 2 kv_heads) head_dim]):
/// optional RMSNorm of each q and k head (q_norm, k_norm; null for none),
/// RoPE at positions start + i, q into q_out ([count][heads][head_dim]), k and
/// v into the cache.
void qkv_rope(cudaStream_t stream, bf16_t* q_out, const bf16_t* qkv, const PagedView& kv, HeadShape shape,
              std::uint32_t start, std::uint32_t count, float rope_theta, const float* q_norm, const float* k_norm,
              float eps);

/// Device memory attention() may use to spread a launch evenly over the
/// SMs; null (or too small) for none, at the cost of idle SMs where the work
/// does not fill whole waves. Used in stream order: one launch at a time.
struct Scratch {
  void* ptr = nullptr;
  std::size_t bytes = 0;
};
/// The scratch the balanced launch uses at most for this head size on a
/// device of `sm_count` multiprocessors (0: it takes none).
[[nodiscard]] std::size_t attention_scratch_bytes(std::uint32_t head_dim, int sm_count);
/// Whether attention() itself may take the balanced launch (and so use a
/// scratch); attention_variant() 4 takes it whenever given one.
[[nodiscard]] bool attention_takes_scratch() noexcept;

/// Causal attention of `count` queries at positions start + i over keys
/// [0, start + count) read from the cache: out[i][h] (same layout as q).
/// `sm_count` (the device's multiprocessors) picks the kernel's shape.
void attention(cudaStream_t stream, bf16_t* out, const bf16_t* q, const PagedView& kv, HeadShape shape,
               std::uint32_t start, std::uint32_t count, int sm_count, Scratch scratch);
/// attention() with one of the tensor-core kernel's shapes, 0 to
/// attention_variants() - 1 (attention() picks among them); for measuring them.
void attention_variant(cudaStream_t stream, bf16_t* out, const bf16_t* q, const PagedView& kv, HeadShape shape,
                       std::uint32_t start, std::uint32_t count, int variant, int sm_count, Scratch scratch);
[[nodiscard]] int attention_variants() noexcept;
/// Whether attention() supports this head_dim.
[[nodiscard]] bool attention_supports(std::uint32_t head_dim) noexcept;
/// Raises the kernels' shared-memory limits; once per device before use.
void attention_prepare();

}  // namespace kvflow::cuda::ref
