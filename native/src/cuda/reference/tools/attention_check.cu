// Checks the paged attention kernel against a plain f64 reference on random
// inputs (block tables in random order, prompts and cached prefixes that are
// not block multiples, layer- and block-major strides), then times it on the
// benchmark's shapes, for each shape of the tensor-core kernel (variant). Not part of the addon: built by build.sh beside it and
// run on a GPU host. Prints one JSON line per case; exits 1 on a failed check.
// ATTN_CASE=name runs one case, ATTN_VARIANT=n one variant (-1: attention()'s
// own choice), ATTN_REPS=n times n launches (default 20): a profiler's run.
// A case run alone draws other random inputs than in the full run (one
// generator for all cases). Exits 2 when the filters leave nothing to run.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "../kernels.hpp"

using kvflow::cuda::ref::bf16_t;

#define CHECK(x)                                                                        \
  do {                                                                                  \
    cudaError_t e_ = (x);                                                               \
    if (e_ != cudaSuccess) {                                                            \
      std::fprintf(stderr, "%s failed: %s (%s:%d)\n", #x, cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(2);                                                                     \
    }                                                                                   \
  } while (0)

namespace {

float bf2f(bf16_t v) {
  unsigned u = static_cast<unsigned>(v) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
bf16_t f2bf(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<bf16_t>(u >> 16);
}

struct Case {
  const char* name;
  int heads, kv_heads, hd, bt, start, count;
  bool block_major;
  bool check;
  int layers = 3;  // block-major: the cache's layers (layer 1 is used)
  int every = 1;   // checked query rows: every `every`-th (the f64 reference of a 16k context is slow)
};

struct Buffers {
  std::vector<bf16_t> q, cache;
  std::vector<int> table;
  kvflow::cuda::ref::PagedView view;  // offsets into cache, as element indices
  std::int64_t k_off = 0, v_off = 0;
};

// Variants run so far, over all cases (0 after a filter that matched nothing).
int g_runs = 0;

// ATTN_VARIANT as a variant number, or kAll when unset; exits on a value that
// is not one (a typo must not run nothing and pass).
constexpr int kAll = -2;
int variant_filter() {
  const char* v = std::getenv("ATTN_VARIANT");
  if (v == nullptr) return kAll;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || n < -1 || n >= kvflow::cuda::ref::attention_variants()) {
    std::fprintf(stderr, "attention_check: ATTN_VARIANT=%s is not -1 or a variant below %d\n", v,
                 kvflow::cuda::ref::attention_variants());
    std::exit(2);
  }
  return static_cast<int>(n);
}

bool run_case(const Case& c, std::mt19937& rng) {
  const int total = c.start + c.count;
  const int nblocks_used = (total + c.bt - 1) / c.bt;
  const int num_blocks = nblocks_used + 5;
  const std::int64_t slab = std::int64_t{c.bt} * c.kv_heads * c.hd;
  std::int64_t cache_elems, block_stride, k_off, v_off;
  if (c.block_major) {
    block_stride = std::int64_t{c.layers} * 2 * slab;
    cache_elems = num_blocks * block_stride;
    k_off = 1 * 2 * slab;
    v_off = k_off + slab;
  } else {
    block_stride = slab;
    cache_elems = 2 * num_blocks * slab;
    k_off = 0;
    v_off = num_blocks * slab;
  }
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<bf16_t> q(std::size_t(c.count) * c.heads * c.hd), cache(cache_elems);
  for (auto& x : q) x = f2bf(u(rng) * 2.0f);
  for (auto& x : cache) x = f2bf(u(rng) * 2.0f);
  std::vector<int> perm(num_blocks);
  for (int i = 0; i < num_blocks; ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int> table(perm.begin(), perm.begin() + nblocks_used);

  bf16_t *dq, *dout, *dcache;
  int* dtable;
  const std::size_t out_elems = q.size();
  CHECK(cudaMalloc(&dq, q.size() * 2));
  CHECK(cudaMalloc(&dout, out_elems * 2));
  CHECK(cudaMalloc(&dcache, cache.size() * 2));
  CHECK(cudaMalloc(&dtable, table.size() * 4));
  CHECK(cudaMemcpy(dq, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dcache, cache.data(), cache.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dtable, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
  kvflow::cuda::ref::PagedView view;
  view.k = dcache + k_off;
  view.v = dcache + v_off;
  view.block_stride = block_stride;
  view.table = dtable;
  view.block_tokens = c.bt;
  const kvflow::cuda::ref::HeadShape shape{static_cast<std::uint32_t>(c.heads),
                                           static_cast<std::uint32_t>(c.kv_heads), static_cast<std::uint32_t>(c.hd)};
  cudaStream_t s;
  CHECK(cudaStreamCreate(&s));
  // The f64 reference, once per case.
  std::vector<double> ref;
  if (c.check) {
    auto kv_at = [&](std::int64_t base, int t, int h, int d) {
      return bf2f(cache[base + table[t / c.bt] * block_stride + std::int64_t(t % c.bt) * c.kv_heads * c.hd +
                        std::int64_t(h) * c.hd + d]);
    };
    ref.assign(out_elems, 0.0);
    std::vector<double> sc(total), acc(c.hd);
    const int group = c.heads / c.kv_heads;
    for (int i = 0; i < c.count; i += c.every) {
      for (int h = 0; h < c.heads; ++h) {
        const int kvh = h / group;
        const int last = c.start + i;
        double mx = -1e300;
        for (int t = 0; t <= last; ++t) {
          double dot = 0.0;
          for (int d = 0; d < c.hd; ++d)
            dot += double(bf2f(q[(std::size_t(i) * c.heads + h) * c.hd + d])) * kv_at(k_off, t, kvh, d);
          sc[t] = dot / std::sqrt(double(c.hd));
          mx = std::max(mx, sc[t]);
        }
        double l = 0.0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int t = 0; t <= last; ++t) {
          const double p = std::exp(sc[t] - mx);
          l += p;
          for (int d = 0; d < c.hd; ++d) acc[d] += p * kv_at(v_off, t, kvh, d);
        }
        for (int d = 0; d < c.hd; ++d) ref[(std::size_t(i) * c.heads + h) * c.hd + d] = acc[d] / l;
      }
    }
  }
  double pairs = 0.0;
  for (int i = 0; i < c.count; ++i) pairs += c.start + i + 1;
  bool ok = true;
  // -1: attention() itself, with its choice of shape.
  int sm_count = 0;
  CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, 0));
  kvflow::cuda::ref::Scratch scratch;
  scratch.bytes = kvflow::cuda::ref::attention_scratch_bytes(c.hd, sm_count);
  if (scratch.bytes > 0) CHECK(cudaMalloc(&scratch.ptr, scratch.bytes));
  auto launch = [&](int variant) {
    if (variant < 0) {
      kvflow::cuda::ref::attention(s, dout, dq, view, shape, c.start, c.count, sm_count, scratch);
    } else {
      kvflow::cuda::ref::attention_variant(s, dout, dq, view, shape, c.start, c.count, variant, sm_count, scratch);
    }
  };
  const int only_variant = variant_filter();  // one variant (-1: attention()'s own choice), or all
  const char* reps_env = std::getenv("ATTN_REPS");           // timed launches (default 20)
  const int reps = reps_env != nullptr ? std::max(1, std::atoi(reps_env)) : 20;
  for (int variant = -1; variant < kvflow::cuda::ref::attention_variants(); ++variant) {
    if (only_variant != kAll && only_variant != variant) continue;
    ++g_runs;
    CHECK(cudaMemset(dout, 0xff, out_elems * 2));  // poison: NaN in bf16
    launch(variant);
    CHECK(cudaStreamSynchronize(s));
    bool vok = true;
    double rel = 0.0, maxerr = 0.0;
    if (c.check) {
      std::vector<bf16_t> out(out_elems);
      CHECK(cudaMemcpy(out.data(), dout, out_elems * 2, cudaMemcpyDeviceToHost));
      double num = 0.0, den = 0.0;
      const std::size_t row_elems = std::size_t(c.heads) * c.hd;
      for (std::size_t e = 0; e < out_elems; ++e) {
        if ((e / row_elems) % c.every != 0) continue;
        const double got = bf2f(out[e]);
        if (!std::isfinite(got)) vok = false;
        num += (got - ref[e]) * (got - ref[e]);
        den += ref[e] * ref[e];
        maxerr = std::max(maxerr, std::fabs(got - ref[e]));
      }
      rel = std::sqrt(num / den);
      if (!(rel < 1e-2)) vok = false;
      // Every element too: one wrongly merged row barely moves the relative
      // L2 of a large output. Outputs are averages of values in [-2, 2]; bf16
      // rounding of them stays near 1e-2.
      if (!(maxerr < 5e-2)) vok = false;
    }
    // Timing: median of `reps` (ATTN_REPS, 20 by default) after 5 warm-ups.
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    std::vector<float> times;
    for (int r = 0; r < reps + 5; ++r) {
      CHECK(cudaEventRecord(a, s));
      launch(variant);
      CHECK(cudaEventRecord(b, s));
      CHECK(cudaEventSynchronize(b));
      float ms;
      CHECK(cudaEventElapsedTime(&ms, a, b));
      if (r >= 5) times.push_back(ms);
    }
    std::sort(times.begin(), times.end());
    const float median_ms = times[times.size() / 2];
    CHECK(cudaEventDestroy(a));
    CHECK(cudaEventDestroy(b));
    // Causal FLOPs: 4 * hd * heads * (pairs of query and visible key).
    const double tflops = 4.0 * c.hd * c.heads * pairs / (median_ms * 1e-3) / 1e12;
    std::printf(
        "{\"case\":\"%s\",\"variant\":%d,\"heads\":%d,\"kv_heads\":%d,\"head_dim\":%d,\"block_tokens\":%d,"
        "\"start\":%d,\"count\":%d,\"block_major\":%s,\"checked\":%s,\"rel_l2\":%.3e,\"max_abs\":%.3e,"
        "\"ok\":%s,\"ms\":%.4f,\"tflops\":%.1f}\n",
        c.name, variant, c.heads, c.kv_heads, c.hd, c.bt, c.start, c.count, c.block_major ? "true" : "false",
        c.check ? "true" : "false", rel, maxerr, vok ? "true" : "false", median_ms, tflops);
    std::fflush(stdout);
    ok = ok && vok;
  }
  CHECK(cudaFree(dq));
  CHECK(cudaFree(dout));
  CHECK(cudaFree(dcache));
  CHECK(cudaFree(dtable));
  if (scratch.ptr != nullptr) CHECK(cudaFree(scratch.ptr));
  CHECK(cudaStreamDestroy(s));
  return ok;
}

}  // namespace

int main() {
  kvflow::cuda::ref::attention_prepare();
  std::mt19937 rng(20261206);
  const Case cases[] = {
      {"whole_100", 8, 2, 128, 16, 0, 100, false, true},
      {"whole_333_bt7", 4, 4, 64, 7, 0, 333, false, true},
      {"suffix_77_over_1001", 8, 2, 128, 16, 1001, 77, false, true},
      {"suffix_300_over_517_blockmajor", 6, 2, 128, 16, 517, 300, true, true},
      {"suffix_1_over_250", 4, 1, 32, 5, 250, 1, false, true},
      {"whole_200_hd32_bt1", 2, 2, 32, 1, 0, 200, true, true},
      {"gqa8_suffix_129_over_64", 16, 2, 64, 16, 64, 129, false, true},
      {"tiny_hd8_bt4", 4, 2, 8, 4, 7, 10, false, true},
      {"hd16_bt3", 4, 2, 16, 3, 45, 150, true, true},
      {"hd96_generic", 4, 2, 96, 16, 20, 70, false, true},
      {"llama8b_1k", 32, 8, 128, 16, 0, 1024, false, true},
      {"suffix_600_over_5000_bt16", 4, 1, 128, 16, 5000, 600, false, true},
      {"suffix_130_over_9000_hd64", 4, 1, 64, 16, 9000, 130, true, true},
      // The 16k suffix whose auto launch is the balanced one on an H100 or
      // H200 (448 blocks of 128 queries for 264 slots), every 29th query row
      // checked: each query tile has four or five rows in the check.
      {"llama8b_1792_over_14592_checked", 32, 8, 128, 16, 14592, 1792, false, true, 3, 29},
      {"llama8b_4k", 32, 8, 128, 16, 0, 4096, false, false},
      {"llama8b_8k", 32, 8, 128, 16, 0, 8192, false, false},
      {"llama8b_16k", 32, 8, 128, 16, 0, 16384, false, false},
      {"llama8b_512_over_3584", 32, 8, 128, 16, 3584, 512, false, false},
      {"llama8b_1024_over_15360", 32, 8, 128, 16, 15360, 1024, false, false},
      {"llama8b_1792_over_14592", 32, 8, 128, 16, 14592, 1792, false, false},
      {"llama8b_256_over_3840", 32, 8, 128, 16, 3840, 256, false, false},
      {"qwen14b_1792_over_14592", 40, 8, 128, 16, 14592, 1792, false, false},
      {"qwen14b_1024_over_15360", 40, 8, 128, 16, 15360, 1024, false, false},
      {"qwen14b_4k", 40, 8, 128, 16, 0, 4096, false, false},
      {"llama70b_4k", 64, 8, 128, 16, 0, 4096, false, false},
  };
  bool ok = true;
  const char* only_case = std::getenv("ATTN_CASE");  // one case, by its exact name (for a profiler)
  for (const Case& c : cases) {
    if (only_case != nullptr && std::strcmp(only_case, c.name) != 0) continue;
    ok = run_case(c, rng) && ok;
  }
  if (g_runs == 0) {
    std::printf("attention_check: nothing ran (ATTN_CASE matched no case)\n");
    return 2;
  }
  std::printf("attention_check: %s (%d case-variant runs)\n", ok ? "all passed" : "FAILED", g_runs);
  return ok ? 0 : 1;
}
