// Same-run baseline for bench/paged.ts: what bare CUDA does with one layer of
// a Llama-3-8B-shaped paged KV cache (8 KV heads x 128 x bf16, 16-token
// blocks: K and V of one block are two 32 KiB pieces), no kvflow involved.
// kvflow's paged figures are reported as ratios to the contiguous copy of the
// same bytes measured here, on the same box in the same call (DESIGN.md
// section 5), because boxes differ from one another.
//
// What it measures (bandwidth: CUDA events, warm-up, reps for >= 100 ms, median
// of 5, the calibration of copy_baseline.cu):
//   contig_d2h / contig_h2d  one cudaMemcpyAsync of a layer's payload (the
//                            reference every kvflow figure is divided by), for
//                            each payload size of the block-size sweep;
//   batch_d2h / batch_h2d    cudaMemcpyBatchAsync of the unmerged pieces (for
//                            context), same attributes as kvflow's 'dma' engine;
//   bidir_contig / _batch    both directions at once on two streams (sum);
//   compute_alone            the busy kernel kvflow's tests use (identical code),
//                            one launch of ~80 ms ("one") or 25 launches of
//                            ~3 ms ("split");
//   contention               the same load while contiguous copies of the
//                            payload loop on another stream: compute slowdown
//                            and the copies' GB/s inside the compute window.
//
// Block tables: for each block size, kTables random tables of distinct blocks
// drawn with splitmix64 from --seed (partial Fisher-Yates over the cache's
// blocks); paged.ts draws the same ones and checks the FNV-1a hash printed here.
// Op i of a timed loop uses table i % kTables and staging region i % kTables,
// so the loop does not re-read one spot of L2.
//
// Prints one JSON object on stdout; progress goes to stderr.
//
//   paged_baseline [--quick] [--seed N]   (--quick: 1/8 of the sizes, 20 ms x 3, no contention)
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

namespace {

void check(cudaError_t e, const char* what, int line) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "paged_baseline.cu:%d: %s failed: %s (%s)\n", line, what, cudaGetErrorString(e),
                 cudaGetErrorName(e));
    std::exit(1);
  }
}
#define CK(call) check((call), #call, __LINE__)

[[noreturn]] void die(const char* msg) {
  std::fprintf(stderr, "paged_baseline: %s\n", msg);
  std::exit(1);
}

constexpr size_t MiB = 1024 * 1024;
// K (or V) of one token in one layer: 8 KV heads x 128 dims x 2 bytes (bf16).
constexpr int kKvHeads = 8, kHeadDim = 128, kElementBytes = 2;
constexpr size_t kTokenBytes = size_t{kKvHeads} * kHeadDim * kElementBytes;
constexpr int kBlockTokens[] = {16, 32, 64, 128, 256};
constexpr int kTables = 4;
constexpr int kSplitLaunches = 25;
constexpr double kComputeTargetMs = 80;
constexpr int kContentionSamples = 7;
constexpr int kEventPool = 4096;
constexpr uint64_t kDefaultSeed = 0x6b76666c6f77ull;  // "kvflow"

// ---------------------------------------------------------------- randomness

struct SplitMix64 {
  uint64_t x;
  uint64_t next() {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// Random bytes (splitmix64): never time on zeros.
void fillRandom(uint8_t* p, size_t n, uint64_t seed) {
  SplitMix64 r{seed};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t z = r.next();
    std::memcpy(p + i, &z, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<uint8_t>(i * 131 + 7);
}

// `count` tables of `n` distinct block ids out of `numBlocks`: one splitmix64
// stream from `seed`; each table a partial Fisher-Yates shuffle of 0..numBlocks-1
// (j = i + next() % (numBlocks - i)). paged.ts implements exactly this.
std::vector<std::vector<int>> blockTables(uint64_t seed, long numBlocks, long n, int count) {
  SplitMix64 r{seed};
  std::vector<std::vector<int>> out;
  std::vector<int> perm(static_cast<size_t>(numBlocks));
  for (int t = 0; t < count; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    for (long i = 0; i < n; ++i) {
      long j = i + static_cast<long>(r.next() % static_cast<uint64_t>(numBlocks - i));
      std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
    }
    out.emplace_back(perm.begin(), perm.begin() + n);
  }
  return out;
}

// FNV-1a over the ids (h ^= id; h *= 16777619), so paged.ts can prove it drew the same tables.
uint32_t tableHash(const std::vector<std::vector<int>>& tables) {
  uint32_t h = 2166136261u;
  for (const auto& t : tables)
    for (int id : t) {
      h ^= static_cast<uint32_t>(id);
      h *= 16777619u;
    }
  return h;
}

// ---------------------------------------------------------------- shapes

// One point of the block-size sweep. The cache always holds cacheTokens tokens
// per layer (numBlocks = cacheTokens / blockTokens); a transfer moves
// n = round(tokens / blockTokens) blocks, K and V: about the same bytes at every size.
struct Shape {
  int blockTokens;
  long numBlocks, n;
  size_t pieceBytes, bytes;
  std::vector<std::vector<int>> tables;
  uint32_t hash;
};

Shape makeShape(int bt, long cacheTokens, long tokens, uint64_t seed) {
  Shape s;
  s.blockTokens = bt;
  s.numBlocks = cacheTokens / bt;
  s.n = std::max(1L, std::lround(static_cast<double>(tokens) / bt));
  s.pieceBytes = kTokenBytes * bt;
  s.bytes = 2 * s.pieceBytes * static_cast<size_t>(s.n);
  s.tables = blockTables(seed, s.numBlocks, s.n, kTables);
  s.hash = tableHash(s.tables);
  return s;
}

// The unmerged pieces of one layer's transfer, laid out as kvflow's staging
// record: K of every block of the table in order, then V of every block. The
// cache is layer-major: [K|V][block][token][head][dim].
struct Batch {
  std::vector<void*> dst;
  std::vector<const void*> src;
  std::vector<size_t> size;
};

Batch makeBatch(const Shape& s, const std::vector<int>& table, uint8_t* cache, uint8_t* staging, bool d2h) {
  Batch b;
  for (int kv = 0; kv < 2; ++kv) {
    for (long i = 0; i < s.n; ++i) {
      uint8_t* c = cache + (static_cast<size_t>(kv) * s.numBlocks + table[static_cast<size_t>(i)]) * s.pieceBytes;
      uint8_t* h = staging + (static_cast<size_t>(kv) * s.n + i) * s.pieceBytes;
      b.dst.push_back(d2h ? h : c);
      b.src.push_back(d2h ? c : h);
      b.size.push_back(s.pieceBytes);
    }
  }
  return b;
}

// As kvflow's 'dma' engine: one cudaMemcpyBatchAsync, stream-ordered source
// access, preferring copy engines that overlap with compute.
void enqueueBatch(Batch& b, cudaStream_t s) {
  cudaMemcpyAttributes attr{};
  attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
  size_t attrIndex = 0;
  CK(cudaMemcpyBatchAsync(b.dst.data(), b.src.data(), b.size.data(), b.size.size(), &attr, &attrIndex, 1, s));
}

// ---------------------------------------------------------------- compute load

// Identical to kvflow's busy_kernel (native/src/cuda/kernels.cu), launched the
// same way (SMs x 8 blocks of 256 threads), so both programs load the GPU alike.
__global__ void busy_kernel(uint64_t iterations, float* sink) {
  float a = threadIdx.x * 1e-3f;
  float b = 1.0001f;
  for (uint64_t i = 0; i < iterations; ++i) {
    a = fmaf(a, b, 1e-7f);
    b = fmaf(b, 0.99999f, 1e-6f);
  }
  if (a == -1.0f) *sink = b;  // never true; keeps the loop from being optimized away
}

struct Load {
  const char* name;
  uint64_t iterations;  // per launch
  int launches;
};

// ---------------------------------------------------------------- context and timing

struct Ctx {
  uint8_t* image = nullptr;   // pinned: the random contents of a cache layer
  uint8_t* cache = nullptr;   // device: the layer gathered from (holds image)
  uint8_t* cache2 = nullptr;  // device: the layer scattered into
  uint8_t* hA = nullptr;      // pinned: H2D sources (kTables regions of `stride`)
  uint8_t* hB = nullptr;      // pinned: D2H destinations
  uint8_t* dA = nullptr;      // device: contiguous H2D destinations
  uint8_t* dB = nullptr;      // device: contiguous D2H sources
  size_t layerBytes = 0, stride = 0;
  int sms = 0;
  cudaStream_t s1{}, s2{}, sc{};
  cudaEvent_t start{}, join{}, stop{}, ref{}, cs{}, ce{};
  std::vector<cudaEvent_t> pool;
};

void launchBusy(const Ctx& c, const Load& l, cudaStream_t s) {
  for (int k = 0; k < l.launches; ++k) {
    busy_kernel<<<c.sms * 8, 256, 0, s>>>(l.iterations, nullptr);
    CK(cudaGetLastError());
  }
}

float elapsedMs(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, a, b));
  return ms;
}

// GPU seconds of whatever `enqueue` puts on s1 (and, with `two`, on s2, which
// starts with s1 and is joined back before the stop event).
double timeEvents(const Ctx& c, bool two, const std::function<void()>& enqueue) {
  CK(cudaEventRecord(c.start, c.s1));
  if (two) CK(cudaStreamWaitEvent(c.s2, c.start, 0));
  enqueue();
  if (two) {
    CK(cudaEventRecord(c.join, c.s2));
    CK(cudaStreamWaitEvent(c.s1, c.join, 0));
  }
  CK(cudaEventRecord(c.stop, c.s1));
  CK(cudaEventSynchronize(c.stop));
  return elapsedMs(c.start, c.stop) / 1e3;
}

struct Measured {
  long reps;
  double median, min, max;  // seconds per sample of `reps` operations
};

// Same algorithm as measure() in copy_baseline.cu and paged.ts: two warm-up
// runs, double reps until a run takes a tenth of the target, scale to the
// target (+10%), then `samples` timed runs; the median is kept.
Measured measure(const std::function<double(long)>& run, double minSeconds, int samples) {
  run(1);
  run(1);
  long reps = 1;
  double t = run(reps);
  while (t < minSeconds / 10) {
    reps *= 2;
    t = run(reps);
  }
  reps = std::max(1L, static_cast<long>(reps * minSeconds * 1.1 / t + 0.5));
  std::vector<double> s;
  for (int i = 0; i < samples; ++i) s.push_back(run(reps));
  std::sort(s.begin(), s.end());
  return {reps, s[s.size() / 2], s.front(), s.back()};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One contiguous copy of `bytes` in direction d2h/h2d through staging region r.
void enqueueContig(const Ctx& c, bool d2h, size_t bytes, long i, cudaStream_t s) {
  const size_t off = static_cast<size_t>(i % kTables) * c.stride;
  if (d2h) {
    CK(cudaMemcpyAsync(c.hB + off, c.dB + off, bytes, cudaMemcpyDeviceToHost, s));
  } else {
    CK(cudaMemcpyAsync(c.dA + off, c.hA + off, bytes, cudaMemcpyHostToDevice, s));
  }
}

double computeAloneMs(const Ctx& c, const Load& l) {
  CK(cudaEventRecord(c.cs, c.sc));
  launchBusy(c, l, c.sc);
  CK(cudaEventRecord(c.ce, c.sc));
  CK(cudaEventSynchronize(c.ce));
  return elapsedMs(c.cs, c.ce);
}

struct WithCopies {
  double computeMs, gbps;
  int inWindow;
  bool covered;
};

// The load on sc while `nCopies` contiguous copies run on s2. The load waits
// for the first copy to complete, so copies are flowing when it starts; an
// event after every copy dates its completion. Copy GB/s is taken between the
// first and the last completion inside the compute window [cs, ce].
WithCopies computeWithCopies(const Ctx& c, const Load& l, bool d2h, size_t bytes, long nCopies) {
  cudaStream_t sx = c.s2;
  CK(cudaEventRecord(c.ref, sx));
  enqueueContig(c, d2h, bytes, 0, sx);
  CK(cudaEventRecord(c.pool[0], sx));
  CK(cudaStreamWaitEvent(c.sc, c.pool[0], 0));
  CK(cudaEventRecord(c.cs, c.sc));
  launchBusy(c, l, c.sc);
  CK(cudaEventRecord(c.ce, c.sc));
  for (long i = 1; i < nCopies; ++i) {
    enqueueContig(c, d2h, bytes, i, sx);
    CK(cudaEventRecord(c.pool[static_cast<size_t>(i)], sx));
  }
  CK(cudaStreamSynchronize(sx));
  CK(cudaStreamSynchronize(c.sc));
  const double t0 = elapsedMs(c.ref, c.cs), t1 = elapsedMs(c.ref, c.ce);
  std::vector<double> in;
  double last = 0;
  for (long i = 0; i < nCopies; ++i) {
    const double t = elapsedMs(c.ref, c.pool[static_cast<size_t>(i)]);
    last = std::max(last, t);
    if (t > t0 && t <= t1) in.push_back(t);
  }
  WithCopies w{t1 - t0, 0, static_cast<int>(in.size()), last >= t1};
  if (in.size() >= 3) {
    w.gbps = static_cast<double>(in.size() - 1) * bytes / ((in.back() - in.front()) / 1e3) / 1e9;
  } else {
    w.gbps = static_cast<double>(in.size()) * bytes / ((t1 - t0) / 1e3) / 1e9;
  }
  return w;
}

std::string jsonIds(const std::vector<int>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s + "]";
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  uint64_t seed = kDefaultSeed;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      char* end = nullptr;
      seed = std::strtoull(argv[++i], &end, 0);
      // Printed as a JSON number, which paged.ts reads as a double.
      if (*end != '\0' || seed > (1ull << 53)) die("--seed: expected an integer below 2^53");
    } else {
      std::fprintf(stderr, "usage: paged_baseline [--quick] [--seed N]\n");
      return 2;
    }
  }
  const double minSeconds = quick ? 0.02 : 0.1;
  const int samples = quick ? 3 : 5;
  const long cacheTokens = quick ? 8192 : 65536;  // per layer: 4096 16-token blocks, 256 MiB
  const long tokens = quick ? 880 : 3520;         // per transfer: 220 16-token blocks, 14.4 MB

  Ctx c;
  CK(cudaSetDevice(0));
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  CK(cudaDeviceGetAttribute(&c.sms, cudaDevAttrMultiProcessorCount, 0));
  int runtime = 0, driver = 0;
  CK(cudaRuntimeGetVersion(&runtime));
  CK(cudaDriverGetVersion(&driver));

  std::vector<Shape> shapes;
  for (int bt : kBlockTokens) shapes.push_back(makeShape(bt, cacheTokens, tokens, seed));
  size_t maxBytes = 0;
  for (const Shape& s : shapes) maxBytes = std::max(maxBytes, s.bytes);
  c.stride = (maxBytes + MiB - 1) / MiB * MiB;
  c.layerBytes = 2 * kTokenBytes * static_cast<size_t>(cacheTokens);
  const size_t regions = c.stride * kTables;

  CK(cudaHostAlloc(reinterpret_cast<void**>(&c.image), c.layerBytes, cudaHostAllocPortable));
  CK(cudaHostAlloc(reinterpret_cast<void**>(&c.hA), regions, cudaHostAllocPortable));
  CK(cudaHostAlloc(reinterpret_cast<void**>(&c.hB), regions, cudaHostAllocPortable));
  CK(cudaMalloc(reinterpret_cast<void**>(&c.cache), c.layerBytes));
  CK(cudaMalloc(reinterpret_cast<void**>(&c.cache2), c.layerBytes));
  CK(cudaMalloc(reinterpret_cast<void**>(&c.dA), regions));
  CK(cudaMalloc(reinterpret_cast<void**>(&c.dB), regions));
  // Non-blocking streams of default priority; compute on its own stream.
  CK(cudaStreamCreateWithFlags(&c.s1, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&c.s2, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&c.sc, cudaStreamNonBlocking));
  for (cudaEvent_t* e : {&c.start, &c.join, &c.stop, &c.ref, &c.cs, &c.ce}) CK(cudaEventCreate(e));
  c.pool.resize(kEventPool);
  for (auto& e : c.pool) CK(cudaEventCreate(&e));

  // Random data everywhere; the cache layers hold `image`.
  fillRandom(c.image, c.layerBytes, seed ^ 0xca5eull);
  fillRandom(c.hA, regions, seed ^ 0xa11ull);
  fillRandom(c.hB, regions, seed ^ 0xb22ull);
  CK(cudaMemcpy(c.cache, c.image, c.layerBytes, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(c.cache2, c.image, c.layerBytes, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(c.dB, c.hB, regions, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(c.dA, c.hB, regions, cudaMemcpyHostToDevice));

  // Checks, so that a copy doing nothing cannot pass for a fast one: the
  // contiguous round trip; for every shape, a gather batch against the image
  // (staging poisoned first), and a scatter batch read back by a gather batch.
  {
    const size_t bytes = shapes.front().bytes;
    CK(cudaMemcpy(c.dA, c.hA, bytes, cudaMemcpyHostToDevice));
    std::memset(c.hB, 0xa5, bytes);
    CK(cudaMemcpy(c.hB, c.dA, bytes, cudaMemcpyDeviceToHost));
    if (std::memcmp(c.hA, c.hB, bytes) != 0) die("contiguous round trip came back different");
  }
  for (const Shape& s : shapes) {
    const auto& t = s.tables[1];
    uint8_t* st = c.hB + c.stride;
    std::memset(st, 0xa5, s.bytes);
    Batch g = makeBatch(s, t, c.cache, st, true);
    enqueueBatch(g, c.s1);
    CK(cudaStreamSynchronize(c.s1));
    for (int kv = 0; kv < 2; ++kv)
      for (long i = 0; i < s.n; ++i) {
        const uint8_t* want = c.image + (static_cast<size_t>(kv) * s.numBlocks + t[static_cast<size_t>(i)]) * s.pieceBytes;
        if (std::memcmp(st + (static_cast<size_t>(kv) * s.n + i) * s.pieceBytes, want, s.pieceBytes) != 0) {
          die("gather batch: staging differs from the cache's pieces");
        }
      }
    Batch sc = makeBatch(s, t, c.cache2, c.hA + c.stride, false);
    enqueueBatch(sc, c.s1);
    std::memset(st, 0x5a, s.bytes);
    Batch back = makeBatch(s, t, c.cache2, st, true);
    enqueueBatch(back, c.s1);
    CK(cudaStreamSynchronize(c.s1));
    if (std::memcmp(st, c.hA + c.stride, s.bytes) != 0) die("scatter batch: pieces read back differ from staging");
  }
  std::fprintf(stderr, "checks passed (contiguous round trip, gather and scatter batches of %zu shapes)\n",
               shapes.size());

  std::string out;
  char line[1024];
  auto emit = [&](const std::string& text) {
    out += out.empty() ? "\n    " : ",\n    ";
    out += text;
  };
  auto spread = [](const Measured& m) { return 100 * (m.max - m.min) / m.median; };

  // Contiguous copies of every distinct payload size of the sweep.
  std::vector<size_t> sizes;
  for (const Shape& s : shapes)
    if (std::find(sizes.begin(), sizes.end(), s.bytes) == sizes.end()) sizes.push_back(s.bytes);
  double contigD2h16 = 0;
  for (size_t bytes : sizes) {
    for (int d = 0; d < 2; ++d) {
      const bool d2h = d == 0;
      Measured m = measure(
          [&](long reps) {
            return timeEvents(c, false, [&] {
              for (long i = 0; i < reps; ++i) enqueueContig(c, d2h, bytes, i, c.s1);
            });
          },
          minSeconds, samples);
      const double gbps = static_cast<double>(bytes) * m.reps / m.median / 1e9;
      if (d2h && bytes == shapes.front().bytes) contigD2h16 = gbps;
      std::snprintf(line, sizeof line,
                    "{\"metric\":\"contig_%s\",\"bytes\":%zu,\"gbps\":%.4f,\"reps\":%ld,\"spread_pct\":%.2f}",
                    d2h ? "d2h" : "h2d", bytes, gbps, m.reps, spread(m));
      emit(line);
      std::fprintf(stderr, "contig %s %zu B: %.3f GB/s\n", d2h ? "d2h" : "h2d", bytes, gbps);
    }
  }

  // Batched pieces at every block size.
  for (const Shape& s : shapes) {
    std::vector<Batch> gathers, scatters;
    for (int r = 0; r < kTables; ++r) {
      gathers.push_back(makeBatch(s, s.tables[static_cast<size_t>(r)], c.cache, c.hB + r * c.stride, true));
      scatters.push_back(makeBatch(s, s.tables[static_cast<size_t>(r)], c.cache2, c.hA + r * c.stride, false));
    }
    for (int d = 0; d < 2; ++d) {
      auto& batches = d == 0 ? gathers : scatters;
      Measured m = measure(
          [&](long reps) {
            return timeEvents(c, false, [&] {
              for (long i = 0; i < reps; ++i) enqueueBatch(batches[static_cast<size_t>(i % kTables)], c.s1);
            });
          },
          minSeconds, samples);
      const double gbps = static_cast<double>(s.bytes) * m.reps / m.median / 1e9;
      std::snprintf(line, sizeof line,
                    "{\"metric\":\"batch_%s\",\"block_tokens\":%d,\"pieces\":%zu,\"bytes\":%zu,\"gbps\":%.4f,"
                    "\"reps\":%ld,\"spread_pct\":%.2f}",
                    d == 0 ? "d2h" : "h2d", s.blockTokens, batches[0].size.size(), s.bytes, gbps, m.reps, spread(m));
      emit(line);
      std::fprintf(stderr, "batch %s %d tok (%zu pieces): %.3f GB/s\n", d == 0 ? "d2h" : "h2d", s.blockTokens,
                   batches[0].size.size(), gbps);
    }
    if (s.blockTokens != 16) continue;
    // Both directions at once at 16 tokens: contiguous, then two batches (H2D on s1, D2H on s2).
    for (int kind = 0; kind < 2; ++kind) {
      Measured m = measure(
          [&](long reps) {
            return timeEvents(c, true, [&] {
              for (long i = 0; i < reps; ++i) {
                if (kind == 0) {
                  enqueueContig(c, false, s.bytes, i, c.s1);
                  enqueueContig(c, true, s.bytes, i, c.s2);
                } else {
                  enqueueBatch(scatters[static_cast<size_t>(i % kTables)], c.s1);
                  enqueueBatch(gathers[static_cast<size_t>(i % kTables)], c.s2);
                }
              }
            });
          },
          minSeconds, samples);
      const double gbps = 2.0 * s.bytes * m.reps / m.median / 1e9;
      std::snprintf(line, sizeof line,
                    "{\"metric\":\"bidir_%s\",\"block_tokens\":16,\"bytes\":%zu,\"gbps\":%.4f,\"reps\":%ld,"
                    "\"spread_pct\":%.2f}",
                    kind == 0 ? "contig" : "batch", s.bytes, gbps, m.reps, spread(m));
      emit(line);
      std::fprintf(stderr, "bidir %s: %.3f GB/s (sum)\n", kind == 0 ? "contig" : "batch", gbps);
    }
  }

  // Compute load and contention (not with --quick).
  uint64_t iterations = 0;
  if (!quick) {
    // Calibrate one launch to ~80 ms; the split load is 25 launches of 1/25 of it.
    Load probe{"probe", 1u << 16, 1};
    computeAloneMs(c, probe);
    double ms = computeAloneMs(c, probe);
    while (ms < 10) {
      if (probe.iterations >= (1ull << 40)) die("the busy kernel takes no time: is it running?");
      probe.iterations *= 2;
      ms = computeAloneMs(c, probe);
    }
    iterations = static_cast<uint64_t>(probe.iterations * kComputeTargetMs / ms);
    iterations = std::max<uint64_t>(kSplitLaunches, iterations / kSplitLaunches * kSplitLaunches);
    const Load loads[] = {{"one", iterations, 1}, {"split", iterations / kSplitLaunches, kSplitLaunches}};
    const size_t bytes = shapes.front().bytes;
    for (const Load& l : loads) {
      computeAloneMs(c, l);
      std::vector<double> alone;
      for (int i = 0; i < kContentionSamples; ++i) alone.push_back(computeAloneMs(c, l));
      std::snprintf(line, sizeof line,
                    "{\"metric\":\"compute_alone\",\"load\":\"%s\",\"iterations\":%llu,\"launches\":%d,\"ms\":%.4f,"
                    "\"min_ms\":%.4f,\"max_ms\":%.4f}",
                    l.name, static_cast<unsigned long long>(l.iterations), l.launches, median(alone),
                    *std::min_element(alone.begin(), alone.end()), *std::max_element(alone.begin(), alone.end()));
      emit(line);
      std::fprintf(stderr, "compute alone (%s): %.3f ms\n", l.name, median(alone));
      for (int d = 0; d < 2; ++d) {
        const bool d2h = d == 0;
        // Enough copies for twice the load's time alone, so they outlast it.
        const double copyMs = bytes / (contigD2h16 * 1e9) * 1e3;
        const long nCopies = std::min<long>(kEventPool, static_cast<long>(2 * median(alone) / copyMs) + 8);
        computeWithCopies(c, l, d2h, bytes, nCopies);  // warm-up
        std::vector<double> al, wc, gb;
        int minIn = 1 << 30;
        bool covered = true;
        // Alone and with copies interleaved, so drifting clocks hit both alike.
        for (int i = 0; i < kContentionSamples; ++i) {
          al.push_back(computeAloneMs(c, l));
          WithCopies w = computeWithCopies(c, l, d2h, bytes, nCopies);
          wc.push_back(w.computeMs);
          gb.push_back(w.gbps);
          minIn = std::min(minIn, w.inWindow);
          covered = covered && w.covered;
        }
        if (!covered) std::fprintf(stderr, "warning: copies ended before the compute load in some sample\n");
        const double slowdown = 100 * (median(wc) / median(al) - 1);
        std::snprintf(line, sizeof line,
                      "{\"metric\":\"contention\",\"load\":\"%s\",\"direction\":\"%s\",\"bytes\":%zu,"
                      "\"compute_alone_ms\":%.4f,\"compute_ms\":%.4f,\"slowdown_pct\":%.3f,\"gbps\":%.4f,"
                      "\"copies\":%ld,\"min_copies_in_window\":%d,\"covered\":%s}",
                      l.name, d2h ? "d2h" : "h2d", bytes, median(al), median(wc), slowdown, median(gb), nCopies,
                      minIn, covered ? "true" : "false");
        emit(line);
        std::fprintf(stderr, "contention (%s) %s: compute %+.2f%%, copies %.3f GB/s\n", l.name, d2h ? "d2h" : "h2d",
                     slowdown, median(gb));
      }
    }
  }

  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());

  std::string shapeJson;
  for (const Shape& s : shapes) {
    std::snprintf(line, sizeof line,
                  "%s\n    {\"block_tokens\":%d,\"num_blocks\":%ld,\"blocks\":%ld,\"piece_bytes\":%zu,\"bytes\":%zu,"
                  "\"table_hash\":%u",
                  shapeJson.empty() ? "" : ",", s.blockTokens, s.numBlocks, s.n, s.pieceBytes, s.bytes, s.hash);
    shapeJson += line;
    if (s.blockTokens == 16) shapeJson += ",\"table0\":" + jsonIds(s.tables[0]);
    shapeJson += "}";
  }

  for (auto& e : c.pool) CK(cudaEventDestroy(e));
  for (cudaEvent_t e : {c.start, c.join, c.stop, c.ref, c.cs, c.ce}) CK(cudaEventDestroy(e));
  for (cudaStream_t s : {c.s1, c.s2, c.sc}) CK(cudaStreamDestroy(s));
  for (uint8_t* p : {c.cache, c.cache2, c.dA, c.dB}) CK(cudaFree(p));
  for (uint8_t* p : {c.image, c.hA, c.hB}) CK(cudaFreeHost(p));

  std::printf(
      "{\n  \"bench\": \"paged_baseline\",\n  \"device\": \"%s\",\n  \"pciBusId\": \"%04x:%02x:%02x.0\",\n"
      "  \"runtimeVersion\": %d,\n  \"driverVersion\": %d,\n"
      "  \"config\": {\"seed\": %llu, \"quick\": %s, \"min_seconds\": %.3f, \"samples\": %d, "
      "\"kv_heads\": %d, \"head_dim\": %d, \"element_bytes\": %d, \"token_bytes\": %zu, "
      "\"cache_tokens\": %ld, \"tokens\": %ld, \"tables\": %d, \"sm_count\": %d, "
      "\"busy_iterations\": %llu, \"split_launches\": %d, \"contention_samples\": %d, "
      "\"timing\": \"CUDA events; bandwidth: median of samples; contention: compute between events around the "
      "load, copy GB/s between the first and last copy-completion events inside that window\"},\n"
      "  \"shapes\": [%s\n  ],\n  \"results\": [%s\n  ]\n}\n",
      prop.name, prop.pciDomainID, prop.pciBusID, prop.pciDeviceID, runtime, driver,
      static_cast<unsigned long long>(seed), quick ? "true" : "false", minSeconds, samples, kKvHeads, kHeadDim,
      kElementBytes, kTokenBytes, cacheTokens, tokens, kTables, c.sms, static_cast<unsigned long long>(iterations),
      kSplitLaunches, kContentionSamples, shapeJson.c_str(), out.c_str());
  return 0;
}
