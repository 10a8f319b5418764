// The reference transformer: a Llama-architecture decoder (RMSNorm, QKV
// projection, optional QK-norm, RoPE, causal GQA attention of the new tokens
// over cached + new tokens read from the paged KV cache in place, output
// projection, SwiGLU MLP, residuals) whose compute is enqueued on a kvflow
// Stream, so loads and compute order by events like any other operation.
// It is the yardstick kvflow's load-or-recompute claim is measured against
// and a worked example of a runtime's per-layer compute; not an inference
// engine (no decoding, no sampling, random weights).
//
// Backends: the CPU backend computes in f32 on the stream's worker; CUDA in
// bf16 (f32 accumulation) with cuBLAS loaded at run time and kernels of its
// own. The KV cache's dtype is the backend's (f32 on CPU, bf16 on CUDA).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kvflow/buffer.hpp"
#include "kvflow/stream.hpp"

namespace kvflow {

/// A model's shapes. `weight_layers` distinct weight sets serve `layers`
/// layers (layer l uses set l % weight_layers): 1 lets Llama-3-70B's compute
/// per layer run on one GPU.
struct ModelShape {
  std::uint32_t layers = 0;
  std::uint32_t weight_layers = 0;
  std::uint32_t hidden = 0;        // model width
  std::uint32_t heads = 0;         // query heads
  std::uint32_t kv_heads = 0;      // divides heads
  std::uint32_t head_dim = 0;
  std::uint32_t intermediate = 0;  // SwiGLU width
  std::uint32_t vocab = 0;
  float rope_theta = 500000.0f;
  float norm_eps = 1e-5f;
  bool qk_norm = false;            // Qwen3: RMSNorm of each head of q and k before RoPE
  std::uint32_t max_tokens = 0;    // most new tokens one call computes (sizes scratch)
  std::uint64_t seed = 0;          // weights are reference_weight(seed, tensor, index)
};

/// The paged KV cache the layer reads and writes in place, as KvLayout
/// describes it: layer-major (one buffer per layer, [K|V][block][token][head]
/// [dim]) or block-major (one buffer, [block][layer][K|V][token][head][dim]).
/// Elements are the backend's dtype.
struct PagedKv {
  std::vector<BufferPtr> buffers;
  bool block_major = false;
  std::uint32_t layers = 0;
  std::uint32_t kv_heads = 0;
  std::uint32_t head_dim = 0;
  std::uint32_t block_tokens = 0;
  std::uint32_t num_blocks = 0;
};

/// One layer over `count` new tokens at positions [start, start + count):
/// `hidden` holds their residual stream (count x hidden, hidden_element_bytes
/// each) and is updated in place; K and V of the new tokens are written into
/// the cache at their positions; attention reads positions [0, start + count)
/// through `blocks` (token t lives in block blocks[t / block_tokens], slot
/// t % block_tokens), so `blocks` covers at least start + count tokens.
struct LayerCall {
  std::uint32_t layer = 0;
  BufferPtr hidden;
  std::uint32_t start = 0;
  std::uint32_t count = 0;
  std::vector<std::int32_t> blocks;
};

class ReferenceModel {
 public:
  virtual ~ReferenceModel() = default;
  [[nodiscard]] virtual const ModelShape& shape() const noexcept = 0;
  /// Bytes of one element of the residual stream (4 on CPU).
  [[nodiscard]] virtual std::size_t hidden_element_bytes() const noexcept = 0;
  /// Bytes of weights held (device memory on CUDA).
  [[nodiscard]] virtual std::size_t weight_bytes() const noexcept = 0;
  /// Enqueues the embedding of `tokens` into `hidden` (tokens.size() rows).
  virtual void embed(Stream& stream, const BufferPtr& hidden, const std::vector<std::int32_t>& tokens) = 0;
  /// Enqueues one decoder layer (see LayerCall).
  virtual void layer(Stream& stream, const PagedKv& kv, const LayerCall& call) = 0;
  /// Enqueues the final RMSNorm of `count` rows of `hidden` into `out`
  /// (f32 on every backend, so results compare across backends).
  virtual void final_norm(Stream& stream, const BufferPtr& out, const BufferPtr& hidden, std::uint32_t count) = 0;
  /// Frees weights and scratch once enqueued work that uses them completed. Idempotent.
  virtual void close() = 0;
};

/// Weight tensor ids: the `tensor` argument of reference_weight(). Every
/// backend builds the same weights from them, so CPU and CUDA results compare.
/// A matrix is [out][in] row-major as a linear layer keeps it (y = W x):
/// element (o, i) has index o * in + i. Scales keep activations O(1):
/// - matrices: reference_weight(...) / sqrt(in) (reference_matrix_weight);
/// - norm weights: 1 + kNormNoise * reference_weight(...) (reference_norm_weight);
/// - the embedding table: reference_weight(...) unscaled.
/// Weight set s (layer l uses s = l % weight_layers) uses the ids
/// layer_tensor(s, kAttnNorm) ... layer_tensor(s, kDown).
namespace reference_tensor {
inline constexpr std::uint32_t kEmbed = 0;      // [vocab][hidden]
inline constexpr std::uint32_t kFinalNorm = 1;  // [hidden]
inline constexpr std::uint32_t kLayerBase = 16;
inline constexpr std::uint32_t kLayerStride = 16;
// Offsets within a weight set.
inline constexpr std::uint32_t kAttnNorm = 0;  // [hidden]
inline constexpr std::uint32_t kWq = 1;        // [heads * head_dim][hidden]
inline constexpr std::uint32_t kWk = 2;        // [kv_heads * head_dim][hidden]
inline constexpr std::uint32_t kWv = 3;        // [kv_heads * head_dim][hidden]
inline constexpr std::uint32_t kWo = 4;        // [hidden][heads * head_dim]
inline constexpr std::uint32_t kQNorm = 5;     // [head_dim], shared by all heads (qk_norm only)
inline constexpr std::uint32_t kKNorm = 6;     // [head_dim], shared by all heads (qk_norm only)
inline constexpr std::uint32_t kMlpNorm = 7;   // [hidden]
inline constexpr std::uint32_t kGate = 8;      // [intermediate][hidden]
inline constexpr std::uint32_t kUp = 9;        // [intermediate][hidden]
inline constexpr std::uint32_t kDown = 10;     // [hidden][intermediate]
inline constexpr float kNormNoise = 0.1f;
/// The id of tensor `offset` of weight set `set`.
[[nodiscard]] constexpr std::uint32_t layer_tensor(std::uint32_t set, std::uint32_t offset) noexcept {
  return kLayerBase + set * kLayerStride + offset;
}
}  // namespace reference_tensor

/// The value of element `index` of weight tensor `tensor` for `seed`: uniform
/// in [-1, 1), the same on every backend (a counter-based hash), so weights
/// need no storage to reproduce and backends can be compared. The model scales
/// it per tensor so that activations stay O(1).
[[nodiscard]] inline float reference_weight(std::uint64_t seed, std::uint32_t tensor, std::uint64_t index) noexcept {
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ULL ^ (static_cast<std::uint64_t>(tensor) << 40) ^ index;
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/// Element `index` of a matrix with `fan_in` inputs (see reference_tensor).
[[nodiscard]] inline float reference_matrix_weight(std::uint64_t seed, std::uint32_t tensor, std::uint64_t index,
                                                   std::uint32_t fan_in) noexcept {
  return reference_weight(seed, tensor, index) / std::sqrt(static_cast<float>(fan_in));
}

/// Element `index` of a norm's weight vector (see reference_tensor).
[[nodiscard]] inline float reference_norm_weight(std::uint64_t seed, std::uint32_t tensor, std::uint64_t index) noexcept {
  return 1.0f + reference_tensor::kNormNoise * reference_weight(seed, tensor, index);
}

}  // namespace kvflow
