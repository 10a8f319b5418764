// CudaReferenceModel: the reference transformer (kvflow/reference.hpp) on a
// CUDA device. Weights are made on the device from reference_weight() with
// the tensor ids and scales of reference_tensor (the CPU backend's), in bf16;
// q, k and v come from one fused projection and gate and up from another, as
// runtimes fuse them. Activations are bf16 with f32 accumulation; the
// residual adds ride on the output and down projections (cuBLAS's beta = 1).
//
// A call validates its arguments, then enqueues everything through
// Stream::launch: no host synchronisation and no allocation beyond the pinned
// staging of its block table or token ids (from the device's pinned pool),
// which the launch holds until the work is done. Scratch is sized from
// max_tokens at create and shared by the model's calls, so the model orders
// its calls itself: each waits on the GPU for the one enqueued before it (an
// event the model records after each call), whatever their streams. Calls on
// several streams are correct, and run one after another.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <mutex>
#include <string>

#include "../cublas_shim.hpp"
#include "../cuda_error.hpp"
#include "cuda_reference.hpp"
#include "kernels.hpp"

namespace kvflow::cuda {

namespace {

using ref::bf16_t;
namespace rt = reference_tensor;

constexpr std::size_t kBf16 = 2;
constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;
// Block-table entries one call may pass (4 MiB of device memory).
constexpr std::size_t kTableCapacity = std::size_t{1} << 20;

struct LayerWeights {
  BufferPtr attn_norm;  // f32 [hidden]
  BufferPtr mlp_norm;   // f32 [hidden]
  BufferPtr q_norm;     // f32 [head_dim], qk_norm only
  BufferPtr k_norm;
  BufferPtr qkv;        // bf16 [(heads + 2 kv_heads) head_dim][hidden]
  BufferPtr wo;         // bf16 [hidden][heads head_dim]
  BufferPtr gate_up;    // bf16 [2 intermediate][hidden]
  BufferPtr down;       // bf16 [hidden][intermediate]
};

/// What enqueued work uses: held by every launch, so it outlives close()
/// until the last of that work completed.
struct State {
  ModelShape shape;
  int ordinal = 0;
  BufferPtr embedding;   // bf16 [vocab][hidden]
  BufferPtr final_norm;  // f32 [hidden]
  std::vector<LayerWeights> sets;
  std::size_t weight_bytes = 0;
  // Scratch, reused call after call in stream order.
  BufferPtr xn;      // bf16 [max_tokens][hidden]
  BufferPtr wide;    // bf16 [max_tokens][max(qkv width, 2 intermediate)]
  BufferPtr q;       // bf16 [max_tokens][heads][head_dim]
  BufferPtr attn;    // bf16 [max_tokens][heads][head_dim]
  BufferPtr act;     // bf16 [max_tokens][intermediate]
  BufferPtr table;   // i32 [kTableCapacity]
  BufferPtr tokens;  // i32 [max_tokens]
  BufferPtr workspace;
  BufferPtr attn_scratch;  // ref::attention_scratch_bytes(); may be empty
  cublas::Handle handle = nullptr;
  cudaEvent_t order = nullptr;  // recorded after each call; the next one waits on it
  int sm_count = 0;
  std::mutex mutex;  // one thread at a time enqueues with the handle and scratch

  ~State() {
    (void)cudaSetDevice(ordinal);
    if (handle != nullptr) (void)cublas::api().destroy(handle);
    if (order != nullptr) (void)cudaEventDestroy(order);
  }

  ref::Scratch scratch() const {
    return attn_scratch ? ref::Scratch{attn_scratch->ptr(), attn_scratch->bytes()} : ref::Scratch{};
  }

  /// Enqueues `work` on `cs` after every earlier call of the model, on any stream.
  template <typename Work>
  void ordered(cudaStream_t cs, Work&& work) {
    KVFLOW_CUDA(cudaStreamWaitEvent(cs, order, 0));
    work();
    KVFLOW_CUDA(cudaEventRecord(order, cs));
  }
};

bf16_t* bf(const BufferPtr& b, std::size_t elements = 0) { return static_cast<bf16_t*>(b->ptr()) + elements; }
float* f32(const BufferPtr& b) { return static_cast<float*>(b->ptr()); }

std::string str(std::uint64_t v) { return std::to_string(v); }

/// y[rows][out] (+)= x[rows][in] W^T, W [out][in] row-major, all bf16.
void linear(const cublas::Api& lib, cublas::Handle h, bf16_t* y, const bf16_t* x, const bf16_t* w,
            std::uint32_t rows, std::uint32_t out, std::uint32_t in, bool accumulate) {
  const float alpha = 1.0f;
  const float beta = accumulate ? 1.0f : 0.0f;
  KVFLOW_CUBLAS_CALL(lib.gemm_ex(h, cublas::kOpT, cublas::kOpN, static_cast<int>(out), static_cast<int>(rows),
                                 static_cast<int>(in), &alpha, w, cublas::kBf16, static_cast<int>(in), x,
                                 cublas::kBf16, static_cast<int>(in), &beta, y, cublas::kBf16, static_cast<int>(out),
                                 cublas::kCompute32F, cublas::kGemmDefault));
}

class CudaReferenceModel final : public ReferenceModel {
 public:
  CudaReferenceModel(Device& device, std::shared_ptr<State> state)
      : device_(device), shape_(state->shape), state_(std::move(state)) {}
  ~CudaReferenceModel() override { close(); }

  const ModelShape& shape() const noexcept override { return shape_; }
  std::size_t hidden_element_bytes() const noexcept override { return kBf16; }
  std::size_t weight_bytes() const noexcept override { return weight_bytes_cached(); }

  void embed(Stream& stream, const BufferPtr& hidden, const std::vector<std::int32_t>& tokens) override {
    std::shared_ptr<State> st = open_state();
    const std::size_t n = tokens.size();
    KVFLOW_CHECK(n >= 1 && n <= shape_.max_tokens, kInvalidArg,
                 "expected 1 to " + str(shape_.max_tokens) + " tokens (maxTokens) to embed, got " + str(n));
    for (std::size_t i = 0; i < n; ++i) {
      KVFLOW_CHECK(tokens[i] >= 0 && static_cast<std::uint32_t>(tokens[i]) < shape_.vocab, kOutOfRange,
                   "expected token ids in [0, " + str(shape_.vocab) + "), got " + std::to_string(tokens[i]) +
                       " at " + str(i));
    }
    check_device_buffer(hidden, n * shape_.hidden * kBf16, "hidden");
    BufferPtr staging = device_.alloc_pinned(n * sizeof(std::int32_t));
    std::memcpy(staging->ptr(), tokens.data(), n * sizeof(std::int32_t));
    std::lock_guard<std::mutex> g(st->mutex);
    State* s = st.get();
    stream.launch(
        [s, staging, hidden, n](std::uintptr_t handle) {
          auto cs = reinterpret_cast<cudaStream_t>(handle);
          s->ordered(cs, [&] {
            ref::copy_from_pinned(cs, static_cast<std::int32_t*>(s->tokens->ptr()),
                                  static_cast<const std::int32_t*>(staging->ptr()), static_cast<std::uint32_t>(n));
            ref::embed(cs, bf(hidden), bf(s->embedding), static_cast<const std::int32_t*>(s->tokens->ptr()),
                       static_cast<std::uint32_t>(n), s->shape.hidden);
          });
        },
        {st, staging, hidden});
  }

  void layer(Stream& stream, const PagedKv& kv, const LayerCall& call) override {
    std::shared_ptr<State> st = open_state();
    const ModelShape& m = shape_;
    KVFLOW_CHECK(call.layer < m.layers, kOutOfRange,
                 "expected a layer in [0, " + str(m.layers) + "), got " + str(call.layer));
    KVFLOW_CHECK(call.count >= 1 && call.count <= m.max_tokens, kInvalidArg,
                 "expected 1 to " + str(m.max_tokens) + " new tokens (maxTokens) for count, got " + str(call.count));
    check_device_buffer(call.hidden, std::size_t{call.count} * m.hidden * kBf16, "hidden");
    const ref::PagedView view0 = check_cache(kv, call.layer);
    const std::uint64_t context = std::uint64_t{call.start} + call.count;
    KVFLOW_CHECK(context <= 0x7fffffffULL, kOutOfRange, "expected start + count below 2^31, got " + str(context));
    const std::size_t needed = static_cast<std::size_t>((context + kv.block_tokens - 1) / kv.block_tokens);
    KVFLOW_CHECK(call.blocks.size() >= needed, kInvalidArg,
                 "expected at least " + str(needed) + " blocks for " + str(context) + " tokens, got " +
                     str(call.blocks.size()));
    KVFLOW_CHECK(needed <= kTableCapacity, kOutOfRange,
                 "expected at most " + str(kTableCapacity) + " blocks per call, got " + str(needed));
    for (std::size_t i = 0; i < needed; ++i) {
      KVFLOW_CHECK(call.blocks[i] >= 0 && static_cast<std::uint32_t>(call.blocks[i]) < kv.num_blocks, kOutOfRange,
                   "expected block ids in [0, " + str(kv.num_blocks) + "), got " + std::to_string(call.blocks[i]) +
                       " at " + str(i));
    }
    BufferPtr staging = device_.alloc_pinned(needed * sizeof(std::int32_t));
    std::memcpy(staging->ptr(), call.blocks.data(), needed * sizeof(std::int32_t));

    std::vector<std::shared_ptr<const void>> hold{st, staging, call.hidden};
    for (const BufferPtr& b : kv.buffers) hold.push_back(b);
    const cublas::Api& lib = cublas::require();
    std::lock_guard<std::mutex> g(st->mutex);
    State* s = st.get();
    const LayerWeights& w = s->sets[call.layer % m.weight_layers];
    const std::uint32_t start = call.start;
    const std::uint32_t count = call.count;
    BufferPtr hidden = call.hidden;
    stream.launch(
        [s, &lib, &w, view0, staging, hidden, needed, start, count](std::uintptr_t handle) {
          auto cs = reinterpret_cast<cudaStream_t>(handle);
          const ModelShape& m = s->shape;
          const std::uint32_t qkv_width = (m.heads + 2 * m.kv_heads) * m.head_dim;
          const std::uint32_t attn_width = m.heads * m.head_dim;
          ref::PagedView view = view0;
          view.table = static_cast<const std::int32_t*>(s->table->ptr());
          s->ordered(cs, [&] {
            // Not cudaMemcpyAsync: it would queue behind the loads on the copy
            // engines and hold this layer's compute back until they land.
            ref::copy_from_pinned(cs, static_cast<std::int32_t*>(s->table->ptr()),
                                  static_cast<const std::int32_t*>(staging->ptr()), static_cast<std::uint32_t>(needed));
            KVFLOW_CUBLAS_CALL(lib.set_stream(s->handle, cs));
            // cublasSetStream puts the handle back on its own workspace: ours again.
            KVFLOW_CUBLAS_CALL(lib.set_workspace(s->handle, s->workspace->ptr(), s->workspace->bytes()));
            bf16_t* x = bf(hidden);
            ref::rms_norm(cs, bf(s->xn), false, x, f32(w.attn_norm), count, m.hidden, m.norm_eps);
            linear(lib, s->handle, bf(s->wide), bf(s->xn), bf(w.qkv), count, qkv_width, m.hidden, false);
            const ref::HeadShape heads{m.heads, m.kv_heads, m.head_dim};
            ref::qkv_rope(cs, bf(s->q), bf(s->wide), view, heads, start, count, m.rope_theta,
                          w.q_norm ? f32(w.q_norm) : nullptr, w.k_norm ? f32(w.k_norm) : nullptr, m.norm_eps);
            ref::attention(cs, bf(s->attn), bf(s->q), view, heads, start, count, s->sm_count, s->scratch());
            linear(lib, s->handle, x, bf(s->attn), bf(w.wo), count, m.hidden, attn_width, true);
            ref::rms_norm(cs, bf(s->xn), false, x, f32(w.mlp_norm), count, m.hidden, m.norm_eps);
            linear(lib, s->handle, bf(s->wide), bf(s->xn), bf(w.gate_up), count, 2 * m.intermediate, m.hidden, false);
            ref::swiglu(cs, bf(s->act), bf(s->wide), count, m.intermediate);
            linear(lib, s->handle, x, bf(s->act), bf(w.down), count, m.hidden, m.intermediate, true);
          });
        },
        std::move(hold));
  }

  void final_norm(Stream& stream, const BufferPtr& out, const BufferPtr& hidden, std::uint32_t count) override {
    std::shared_ptr<State> st = open_state();
    KVFLOW_CHECK(count >= 1 && count <= shape_.max_tokens, kInvalidArg,
                 "expected 1 to " + str(shape_.max_tokens) + " rows (maxTokens) for count, got " + str(count));
    check_device_buffer(hidden, std::size_t{count} * shape_.hidden * kBf16, "hidden");
    check_device_buffer(out, std::size_t{count} * shape_.hidden * sizeof(float), "out");
    std::lock_guard<std::mutex> g(st->mutex);
    State* s = st.get();
    stream.launch(
        [s, out, hidden, count](std::uintptr_t handle) {
          auto cs = reinterpret_cast<cudaStream_t>(handle);
          s->ordered(cs, [&] {
            ref::rms_norm(cs, out->ptr(), true, bf(hidden), f32(s->final_norm), count, s->shape.hidden,
                          s->shape.norm_eps);
          });
        },
        {st, out, hidden});
  }

  void close() override {
    std::lock_guard<std::mutex> g(close_mutex_);
    state_.reset();  // freed once the last launch holding it completed
  }

 private:
  std::shared_ptr<State> open_state() {
    std::lock_guard<std::mutex> g(close_mutex_);
    KVFLOW_CHECK(state_ != nullptr, kDisposed, "reference model is disposed");
    return state_;
  }
  std::size_t weight_bytes_cached() const noexcept {
    std::lock_guard<std::mutex> g(close_mutex_);
    return state_ ? state_->weight_bytes : 0;
  }

  void check_device_buffer(const BufferPtr& b, std::size_t bytes, const char* what) const {
    KVFLOW_CHECK(b != nullptr, kInvalidArg, std::string("expected a device buffer for ") + what + ", got none");
    KVFLOW_CHECK(b->kind() == MemoryKind::kDevice && b->owner() == &device_, kInvalidArg,
                 std::string("expected device memory of this device for ") + what + ", got " +
                     memory_kind_name(b->kind()) + " memory");
    KVFLOW_CHECK(!b->retired(), kDisposed, std::string(what) + " buffer is disposed");
    KVFLOW_CHECK(b->bytes() >= bytes, kOutOfRange,
                 std::string("expected at least ") + str(bytes) + " bytes for " + what + ", got " + str(b->bytes()));
  }

  // The cache's K and V of `layer`, with its table pointer left for the launch.
  ref::PagedView check_cache(const PagedKv& kv, std::uint32_t layer) const {
    const ModelShape& m = shape_;
    KVFLOW_CHECK(kv.kv_heads == m.kv_heads && kv.head_dim == m.head_dim, kInvalidArg,
                 "expected a cache of " + str(m.kv_heads) + " kv heads x " + str(m.head_dim) + ", got " +
                     str(kv.kv_heads) + " x " + str(kv.head_dim));
    KVFLOW_CHECK(kv.layers == m.layers, kInvalidArg,
                 "expected a cache of " + str(m.layers) + " layers, got " + str(kv.layers));
    KVFLOW_CHECK(kv.block_tokens >= 1 && kv.num_blocks >= 1, kInvalidArg,
                 "expected a cache of at least one block of at least one token, got " + str(kv.num_blocks) + " x " +
                     str(kv.block_tokens));
    const std::size_t slab = std::size_t{kv.block_tokens} * kv.kv_heads * kv.head_dim;  // one block's K (elements)
    ref::PagedView v;
    v.block_tokens = kv.block_tokens;
    if (kv.block_major) {
      KVFLOW_CHECK(kv.buffers.size() == 1, kInvalidArg,
                   "expected one buffer for a block-major cache, got " + str(kv.buffers.size()));
      check_device_buffer(kv.buffers[0], std::size_t{kv.num_blocks} * kv.layers * 2 * slab * kBf16, "kv cache");
      v.k = bf(kv.buffers[0], std::size_t{layer} * 2 * slab);
      v.v = v.k + slab;
      v.block_stride = static_cast<std::int64_t>(std::size_t{kv.layers} * 2 * slab);
    } else {
      KVFLOW_CHECK(kv.buffers.size() == kv.layers, kInvalidArg,
                   "expected one buffer per layer (" + str(kv.layers) + ") for a layer-major cache, got " +
                       str(kv.buffers.size()));
      check_device_buffer(kv.buffers[layer], std::size_t{kv.num_blocks} * 2 * slab * kBf16, "kv cache");
      v.k = bf(kv.buffers[layer]);
      v.v = v.k + std::size_t{kv.num_blocks} * slab;
      v.block_stride = static_cast<std::int64_t>(slab);
    }
    return v;
  }

  Device& device_;
  const ModelShape shape_;
  mutable std::mutex close_mutex_;
  std::shared_ptr<State> state_;
};

void check_shape(const ModelShape& m) {
  KVFLOW_CHECK(m.layers >= 1 && m.weight_layers >= 1 && m.weight_layers <= m.layers, kInvalidArg,
               "expected 1 <= weightLayers <= layers, got " + str(m.weight_layers) + " and " + str(m.layers));
  KVFLOW_CHECK(m.hidden >= 1 && m.intermediate >= 1 && m.vocab >= 1 && m.max_tokens >= 1, kInvalidArg,
               "expected hidden, intermediate, vocab and maxTokens of at least 1");
  KVFLOW_CHECK(m.heads >= 1 && m.kv_heads >= 1 && m.heads % m.kv_heads == 0, kInvalidArg,
               "expected kvHeads to divide heads, got " + str(m.heads) + " and " + str(m.kv_heads));
  KVFLOW_CHECK(ref::attention_supports(m.head_dim) && m.head_dim % 2 == 0, kUnsupported,
               "the CUDA reference model supports an even headDim up to 256, got " + str(m.head_dim));
  const std::uint64_t widest =
      std::max<std::uint64_t>({m.hidden, 2ULL * m.intermediate, std::uint64_t{m.heads + 2 * m.kv_heads} * m.head_dim});
  KVFLOW_CHECK(widest <= 0x7fffffffULL && std::uint64_t{m.max_tokens} * widest < (1ULL << 40), kOutOfRange,
               "model too large for the CUDA reference model");
}

}  // namespace

std::unique_ptr<ReferenceModel> create_cuda_reference(Device& device, int ordinal, const ModelShape& shape) {
  check_shape(shape);
  const cublas::Api& lib = cublas::require();
  KVFLOW_CUDA(cudaSetDevice(ordinal));
  ref::attention_prepare();
  auto st = std::make_shared<State>();
  st->shape = shape;
  st->ordinal = ordinal;
  const ModelShape& m = shape;
  const std::uint64_t seed = m.seed;
  const std::size_t hd = m.head_dim;
  const std::size_t qrows = std::size_t{m.heads} * hd;
  const std::size_t kvrows = std::size_t{m.kv_heads} * hd;
  const std::size_t qkv_width = qrows + 2 * kvrows;

  auto dev = [&](std::size_t bytes, bool weight) {
    BufferPtr b = device.alloc_device(bytes);
    if (weight) st->weight_bytes += bytes;
    return b;
  };
  cudaStream_t cs = nullptr;
  KVFLOW_CUDA(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking));
  struct StreamGuard {
    cudaStream_t s;
    ~StreamGuard() { (void)cudaStreamDestroy(s); }
  } guard{cs};

  const float norm_scale = rt::kNormNoise;
  auto matrix = [&](bf16_t* out, std::size_t rows, std::size_t fan_in, std::uint32_t tensor) {
    ref::fill_weight_bf16(cs, out, rows, fan_in, seed, tensor, 1.0f / std::sqrt(static_cast<float>(fan_in)), 0.0f);
  };
  auto norm = [&](std::size_t n, std::uint32_t tensor) {
    BufferPtr b = dev(n * sizeof(float), true);
    ref::fill_weight_f32(cs, f32(b), n, seed, tensor, norm_scale, 1.0f);
    return b;
  };

  st->embedding = dev(std::size_t{m.vocab} * m.hidden * kBf16, true);
  ref::fill_weight_bf16(cs, bf(st->embedding), m.vocab, m.hidden, seed, rt::kEmbed, 1.0f, 0.0f);
  st->final_norm = norm(m.hidden, rt::kFinalNorm);
  for (std::uint32_t set = 0; set < m.weight_layers; ++set) {
    LayerWeights w;
    auto id = [set](std::uint32_t offset) { return rt::layer_tensor(set, offset); };
    w.attn_norm = norm(m.hidden, id(rt::kAttnNorm));
    w.mlp_norm = norm(m.hidden, id(rt::kMlpNorm));
    if (m.qk_norm) {
      w.q_norm = norm(hd, id(rt::kQNorm));
      w.k_norm = norm(hd, id(rt::kKNorm));
    }
    w.qkv = dev(qkv_width * m.hidden * kBf16, true);
    matrix(bf(w.qkv), qrows, m.hidden, id(rt::kWq));
    matrix(bf(w.qkv, qrows * m.hidden), kvrows, m.hidden, id(rt::kWk));
    matrix(bf(w.qkv, (qrows + kvrows) * m.hidden), kvrows, m.hidden, id(rt::kWv));
    w.wo = dev(std::size_t{m.hidden} * qrows * kBf16, true);
    matrix(bf(w.wo), m.hidden, qrows, id(rt::kWo));
    w.gate_up = dev(2 * std::size_t{m.intermediate} * m.hidden * kBf16, true);
    matrix(bf(w.gate_up), m.intermediate, m.hidden, id(rt::kGate));
    matrix(bf(w.gate_up, std::size_t{m.intermediate} * m.hidden), m.intermediate, m.hidden, id(rt::kUp));
    w.down = dev(std::size_t{m.hidden} * m.intermediate * kBf16, true);
    matrix(bf(w.down), m.hidden, m.intermediate, id(rt::kDown));
    st->sets.push_back(std::move(w));
  }
  const std::size_t n = m.max_tokens;
  st->xn = dev(n * m.hidden * kBf16, false);
  st->wide = dev(n * std::max<std::size_t>(qkv_width, 2 * std::size_t{m.intermediate}) * kBf16, false);
  st->q = dev(n * qrows * kBf16, false);
  st->attn = dev(n * qrows * kBf16, false);
  st->act = dev(n * m.intermediate * kBf16, false);
  st->table = dev(kTableCapacity * sizeof(std::int32_t), false);
  st->tokens = dev(n * sizeof(std::int32_t), false);
  st->workspace = dev(kWorkspaceBytes, false);
  KVFLOW_CUDA(cudaEventCreateWithFlags(&st->order, cudaEventDisableTiming));
  KVFLOW_CUDA(cudaDeviceGetAttribute(&st->sm_count, cudaDevAttrMultiProcessorCount, ordinal));
  if (ref::attention_takes_scratch()) {
    if (const std::size_t bytes = ref::attention_scratch_bytes(m.head_dim, st->sm_count); bytes > 0) {
      st->attn_scratch = dev(bytes, false);
    }
  }
  KVFLOW_CUBLAS_CALL(lib.create(&st->handle));
  // One small product now, so cuBLAS's lazy set-up (which may allocate and
  // synchronise) happens here rather than inside a layer.
  KVFLOW_CUBLAS_CALL(lib.set_stream(st->handle, cs));
  KVFLOW_CUBLAS_CALL(lib.set_workspace(st->handle, st->workspace->ptr(), st->workspace->bytes()));
  linear(lib, st->handle, bf(st->xn), bf(st->embedding), bf(st->sets[0].qkv), 1, 8 <= qkv_width ? 8 : 1, m.hidden,
         false);
  KVFLOW_CUDA(cudaStreamSynchronize(cs));
  return std::make_unique<CudaReferenceModel>(device, std::move(st));
}

}  // namespace kvflow::cuda
