// The reference transformer on the CPU backend: f32 storage, f64 sums, run on
// the stream's worker thread in stream order. Written for correctness at tiny
// sizes (CI, and the yardstick the CUDA backend is compared with); every
// per-token result is computed in one fixed order whatever the call's split,
// so a prefix computed in another call, or loaded from the store, gives the
// same bits.
#include "reference_cpu.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "kvflow/error.hpp"

namespace kvflow::cpu {

namespace {

namespace rt = reference_tensor;

struct LayerWeights {
  std::vector<float> attn_norm, wq, wk, wv, wo, q_norm, k_norm, mlp_norm, gate, up, down;
};

// Read-only once built; shared by the model and the work it enqueued, so
// close() never frees what a queued layer still reads.
struct Weights {
  ModelShape shape;
  std::vector<float> embed;
  std::vector<float> final_norm;
  std::vector<LayerWeights> sets;
  std::size_t bytes = 0;
};

std::vector<float> matrix(const ModelShape& s, std::uint32_t tensor, std::size_t out, std::size_t in) {
  std::vector<float> w(out * in);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = reference_matrix_weight(s.seed, tensor, i, static_cast<std::uint32_t>(in));
  return w;
}

std::vector<float> norm(const ModelShape& s, std::uint32_t tensor, std::size_t n) {
  std::vector<float> w(n);
  for (std::size_t i = 0; i < n; ++i) w[i] = reference_norm_weight(s.seed, tensor, i);
  return w;
}

std::shared_ptr<const Weights> build_weights(const ModelShape& s) {
  auto w = std::make_shared<Weights>();
  w->shape = s;
  const std::size_t h = s.hidden, q = std::size_t{s.heads} * s.head_dim, kv = std::size_t{s.kv_heads} * s.head_dim;
  const std::size_t m = s.intermediate;
  w->embed.resize(std::size_t{s.vocab} * h);
  for (std::size_t i = 0; i < w->embed.size(); ++i) w->embed[i] = reference_weight(s.seed, rt::kEmbed, i);
  w->final_norm = norm(s, rt::kFinalNorm, h);
  w->sets.resize(s.weight_layers);
  for (std::uint32_t set = 0; set < s.weight_layers; ++set) {
    LayerWeights& l = w->sets[set];
    const auto id = [set](std::uint32_t offset) { return rt::layer_tensor(set, offset); };
    l.attn_norm = norm(s, id(rt::kAttnNorm), h);
    l.wq = matrix(s, id(rt::kWq), q, h);
    l.wk = matrix(s, id(rt::kWk), kv, h);
    l.wv = matrix(s, id(rt::kWv), kv, h);
    l.wo = matrix(s, id(rt::kWo), h, q);
    if (s.qk_norm) {
      l.q_norm = norm(s, id(rt::kQNorm), s.head_dim);
      l.k_norm = norm(s, id(rt::kKNorm), s.head_dim);
    }
    l.mlp_norm = norm(s, id(rt::kMlpNorm), h);
    l.gate = matrix(s, id(rt::kGate), m, h);
    l.up = matrix(s, id(rt::kUp), m, h);
    l.down = matrix(s, id(rt::kDown), h, m);
  }
  std::size_t floats = w->embed.size() + w->final_norm.size();
  for (const LayerWeights& l : w->sets) {
    for (const auto* v : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.q_norm, &l.k_norm, &l.mlp_norm, &l.gate, &l.up, &l.down}) {
      floats += v->size();
    }
  }
  w->bytes = floats * sizeof(float);
  return w;
}

// y[t][o] = sum_i W[o][i] x[t][i] for `rows` rows; tokens are taken in tiles
// so a weight row is reused from cache across the tile.
void linear(const float* x, std::size_t rows, std::size_t in, const std::vector<float>& w, std::size_t out, float* y) {
  constexpr std::size_t kTile = 16;
  for (std::size_t t0 = 0; t0 < rows; t0 += kTile) {
    const std::size_t t1 = std::min(rows, t0 + kTile);
    for (std::size_t o = 0; o < out; ++o) {
      const float* wr = w.data() + o * in;
      for (std::size_t t = t0; t < t1; ++t) {
        const float* xr = x + t * in;
        double acc = 0;
        for (std::size_t i = 0; i < in; ++i) acc += static_cast<double>(wr[i]) * xr[i];
        y[t * out + o] = static_cast<float>(acc);
      }
    }
  }
}

// RMSNorm of `n` values with weight `w`, into `y` (may alias `x`).
void rms_norm(const float* x, std::size_t n, const float* w, float eps, float* y) {
  double ss = 0;
  for (std::size_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const double r = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
  for (std::size_t i = 0; i < n; ++i) y[i] = static_cast<float>(x[i] * r * w[i]);
}

// Llama's rotate-half RoPE of one head at absolute position `pos`.
void rope(float* x, std::size_t dim, double pos, double theta) {
  const std::size_t half = dim / 2;
  for (std::size_t i = 0; i < half; ++i) {
    const double inv_freq = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(dim));
    const double a = pos * inv_freq;
    const double c = std::cos(a), s = std::sin(a);
    const double x1 = x[i], x2 = x[i + half];
    x[i] = static_cast<float>(x1 * c - x2 * s);
    x[i + half] = static_cast<float>(x2 * c + x1 * s);
  }
}

// Where K (kv 0) or V (kv 1) of `token` lives in the paged cache, in elements.
struct PagedView {
  const PagedKv* kv;
  std::uint32_t layer;
  const std::vector<std::int32_t>* blocks;

  [[nodiscard]] float* row(std::uint32_t kv_index, std::size_t token) const {
    const std::size_t bt = kv->block_tokens;
    const std::size_t block = static_cast<std::size_t>((*blocks)[token / bt]);
    const std::size_t slot = token % bt;
    const std::size_t token_elems = std::size_t{kv->kv_heads} * kv->head_dim;
    const std::size_t piece = bt * token_elems;
    std::size_t offset;
    float* base;
    if (kv->block_major) {
      base = static_cast<float*>(kv->buffers[0]->ptr());
      offset = ((block * kv->layers + layer) * 2 + kv_index) * piece;
    } else {
      base = static_cast<float*>(kv->buffers[layer]->ptr());
      offset = (std::size_t{kv_index} * kv->num_blocks + block) * piece;
    }
    return base + offset + slot * token_elems;
  }
};

void run_layer(const Weights& w, const PagedKv& kv, const LayerCall& call) {
  const ModelShape& s = w.shape;
  const LayerWeights& l = w.sets[call.layer % s.weight_layers];
  const std::size_t n = call.count, h = s.hidden, d = s.head_dim, heads = s.heads, kvh = s.kv_heads;
  const std::size_t qw = heads * d, kvw = kvh * d, m = s.intermediate;
  float* x = static_cast<float*>(call.hidden->ptr());
  std::vector<float> xn(n * h), q(n * qw), k(n * kvw), v(n * kvw);
  for (std::size_t t = 0; t < n; ++t) rms_norm(x + t * h, h, l.attn_norm.data(), s.norm_eps, xn.data() + t * h);
  linear(xn.data(), n, h, l.wq, qw, q.data());
  linear(xn.data(), n, h, l.wk, kvw, k.data());
  linear(xn.data(), n, h, l.wv, kvw, v.data());

  // QK-norm, RoPE, then K and V go to the cache: what is stored is what attention reads.
  const PagedView view{&kv, call.layer, &call.blocks};
  for (std::size_t t = 0; t < n; ++t) {
    const std::size_t pos = call.start + t;
    for (std::size_t hd = 0; hd < heads; ++hd) {
      float* qh = q.data() + t * qw + hd * d;
      if (s.qk_norm) rms_norm(qh, d, l.q_norm.data(), s.norm_eps, qh);
      rope(qh, d, static_cast<double>(pos), s.rope_theta);
    }
    for (std::size_t g = 0; g < kvh; ++g) {
      float* kh = k.data() + t * kvw + g * d;
      if (s.qk_norm) rms_norm(kh, d, l.k_norm.data(), s.norm_eps, kh);
      rope(kh, d, static_cast<double>(pos), s.rope_theta);
    }
    std::memcpy(view.row(0, pos), k.data() + t * kvw, kvw * sizeof(float));
    std::memcpy(view.row(1, pos), v.data() + t * kvw, kvw * sizeof(float));
  }

  // Causal GQA attention over positions [0, pos] read from the cache in place.
  const std::size_t group = heads / kvh;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<float> attn(n * qw);
  std::vector<double> scores(call.start + n), acc(d);
  for (std::size_t t = 0; t < n; ++t) {
    const std::size_t ctx = call.start + t + 1;
    for (std::size_t hd = 0; hd < heads; ++hd) {
      const std::size_t g = hd / group;
      const float* qh = q.data() + t * qw + hd * d;
      double top = -INFINITY;
      for (std::size_t j = 0; j < ctx; ++j) {
        const float* kj = view.row(0, j) + g * d;
        double dot = 0;
        for (std::size_t i = 0; i < d; ++i) dot += static_cast<double>(qh[i]) * kj[i];
        scores[j] = dot * scale;
        top = std::max(top, scores[j]);
      }
      double sum = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (std::size_t j = 0; j < ctx; ++j) {
        const double p = std::exp(scores[j] - top);
        sum += p;
        const float* vj = view.row(1, j) + g * d;
        for (std::size_t i = 0; i < d; ++i) acc[i] += p * vj[i];
      }
      float* out = attn.data() + t * qw + hd * d;
      for (std::size_t i = 0; i < d; ++i) out[i] = static_cast<float>(acc[i] / sum);
    }
  }

  std::vector<float> o(n * h);
  linear(attn.data(), n, qw, l.wo, h, o.data());
  for (std::size_t i = 0; i < n * h; ++i) x[i] += o[i];

  // SwiGLU MLP: down(silu(gate(x)) * up(x)).
  for (std::size_t t = 0; t < n; ++t) rms_norm(x + t * h, h, l.mlp_norm.data(), s.norm_eps, xn.data() + t * h);
  std::vector<float> gate(n * m), up(n * m);
  linear(xn.data(), n, h, l.gate, m, gate.data());
  linear(xn.data(), n, h, l.up, m, up.data());
  for (std::size_t i = 0; i < n * m; ++i) {
    const double g = gate[i];
    gate[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * up[i]);
  }
  linear(gate.data(), n, m, l.down, h, o.data());
  for (std::size_t i = 0; i < n * h; ++i) x[i] += o[i];
}

class CpuReferenceModel final : public ReferenceModel {
 public:
  explicit CpuReferenceModel(std::shared_ptr<const Weights> weights)
      : shape_(weights->shape), bytes_(weights->bytes), weights_(std::move(weights)) {}

  [[nodiscard]] const ModelShape& shape() const noexcept override { return shape_; }
  [[nodiscard]] std::size_t hidden_element_bytes() const noexcept override { return sizeof(float); }
  [[nodiscard]] std::size_t weight_bytes() const noexcept override { return bytes_; }

  void embed(Stream& stream, const BufferPtr& hidden, const std::vector<std::int32_t>& tokens) override {
    auto w = live();
    stream.launch(
        [w, hidden, tokens](std::uintptr_t) {
          const std::size_t h = w->shape.hidden;
          float* x = static_cast<float*>(hidden->ptr());
          for (std::size_t t = 0; t < tokens.size(); ++t) {
            std::memcpy(x + t * h, w->embed.data() + static_cast<std::size_t>(tokens[t]) * h, h * sizeof(float));
          }
        },
        {hidden});
  }

  void layer(Stream& stream, const PagedKv& kv, const LayerCall& call) override {
    auto w = live();
    std::vector<std::shared_ptr<const void>> hold(kv.buffers.begin(), kv.buffers.end());
    hold.push_back(call.hidden);
    stream.launch([w, kv, call](std::uintptr_t) { run_layer(*w, kv, call); }, std::move(hold));
  }

  void final_norm(Stream& stream, const BufferPtr& out, const BufferPtr& hidden, std::uint32_t count) override {
    auto w = live();
    stream.launch(
        [w, out, hidden, count](std::uintptr_t) {
          const std::size_t h = w->shape.hidden;
          const float* x = static_cast<const float*>(hidden->ptr());
          float* y = static_cast<float*>(out->ptr());
          for (std::size_t t = 0; t < count; ++t) rms_norm(x + t * h, h, w->final_norm.data(), w->shape.norm_eps, y + t * h);
        },
        {out, hidden});
  }

  void close() override { weights_.reset(); }

 private:
  std::shared_ptr<const Weights> live() const {
    KVFLOW_CHECK(weights_ != nullptr, kDisposed, "reference model is disposed");
    return weights_;
  }

  ModelShape shape_;
  std::size_t bytes_;
  std::shared_ptr<const Weights> weights_;
};

}  // namespace

std::unique_ptr<ReferenceModel> create_cpu_reference(const ModelShape& shape, std::uint64_t host_memory) {
  const double h = shape.hidden, q = double(shape.heads) * shape.head_dim, kv = double(shape.kv_heads) * shape.head_dim;
  const double per_set = 2 * h + 2 * q * h + 2 * kv * h + 3 * h * shape.intermediate + 2.0 * shape.head_dim;
  const double bytes = 4 * (double(shape.vocab) * h + h + per_set * shape.weight_layers);
  if (host_memory > 0 && bytes > static_cast<double>(host_memory) / 2) {
    KVFLOW_FAIL(kOutOfMemory, "the CPU backend keeps the reference model's f32 weights in host memory: " +
                                  std::to_string(static_cast<std::uint64_t>(bytes)) + " bytes needed, more than half of the " +
                                  std::to_string(host_memory) + " bytes here; use the tiny preset or the CUDA backend");
  }
  return std::make_unique<CpuReferenceModel>(build_weights(shape));
}

}  // namespace kvflow::cpu
