// Probe for prepared paged transfers (NOTES.md, "Open"): what one layer of
// a Llama-3-8B-shaped cache (440 pieces of 32 KiB, 220 random 16-token
// blocks of 4096, K and V) costs the host to enqueue, and how fast it moves,
// when the pieces go
//   batch      one cudaMemcpyBatchAsync per layer (kvflow's `dma` engine)
//   graph_cap  a CUDA graph captured once from that batch call, launched per layer
//   graph_flat a CUDA graph of 440 independent memcpy nodes, launched per layer
//   contiguous one cudaMemcpyAsync of the same bytes (the ceiling)
//   batch_Nthreads the layer's batch cut into N sub-batches, each enqueued by
//              its own thread on its own stream (does the driver's per-copy
//              enqueue cost parallelise?)
//   batch_noflags / batch_any the batch without PreferOverlapWithCompute, or
//              with SrcAccessOrderAny (does either make a copy cheaper to enqueue?)
//   batch3d_kv one cudaMemcpy3DBatchAsync of 220 two-row copies: K and V of a
//              block as one copy (the rows are the K-to-V distance apart on
//              both sides), half as many copies
//   memcpy2d_kv the same 220 two-row copies as cudaMemcpy2DAsync calls
// in each direction. Host time: steady clock around the enqueue call(s) of
// `reps` layers issued back to back; GB/s: CUDA events around those layers.
// Prints one JSON object on stdout.
//
//   graph_probe [--reps N] [--seed N]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

#define CK(call)                                                                                 \
  do {                                                                                           \
    const cudaError_t e_ = (call);                                                               \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

constexpr std::size_t kPiece = 32 * 1024;
constexpr int kBlocks = 4096;
constexpr int kUsed = 220;

struct Pieces {
  std::vector<void*> dst;
  std::vector<const void*> src;
  std::vector<std::size_t> size;
};

struct Figure {
  double host_us_per_layer;
  double gbps;
};

// Times `reps` layers enqueued by `enqueue` on `s`.
template <class Fn>
Figure timed(cudaStream_t s, int reps, std::size_t bytes, Fn&& enqueue) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) enqueue();  // warm-up
  CK(cudaStreamSynchronize(s));
  CK(cudaEventRecord(a, s));
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) enqueue();
  const auto t1 = std::chrono::steady_clock::now();
  CK(cudaEventRecord(b, s));
  CK(cudaEventSynchronize(b));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, a, b));
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  const double host_us = std::chrono::duration<double, std::micro>(t1 - t0).count() / reps;
  return {host_us, static_cast<double>(bytes) * reps / (ms / 1e3) / 1e9};
}

void print(const char* name, const Figure& f, bool& first) {
  std::printf("%s\n    \"%s\": {\"host_us_per_layer\": %.2f, \"gbps\": %.2f}", first ? "" : ",", name,
              f.host_us_per_layer, f.gbps);
  first = false;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 200;
  unsigned seed = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
    else if (std::strcmp(argv[i], "--seed") == 0) seed = static_cast<unsigned>(std::atoi(argv[i + 1]));
  }
  CK(cudaSetDevice(0));
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  char* cache = nullptr;
  char* pinned = nullptr;
  CK(cudaMalloc(&cache, 2 * kBlocks * kPiece));
  const std::size_t bytes = 2 * kUsed * kPiece;
  CK(cudaHostAlloc(reinterpret_cast<void**>(&pinned), bytes, cudaHostAllocDefault));
  char* contiguous = nullptr;
  CK(cudaMalloc(&contiguous, bytes));
  std::memset(pinned, 0x5a, bytes);
  std::vector<int> order(kBlocks);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  Pieces h2d, d2h;
  for (int kv = 0; kv < 2; ++kv) {
    for (int i = 0; i < kUsed; ++i) {
      char* c = cache + (static_cast<std::size_t>(kv) * kBlocks + order[i]) * kPiece;
      char* p = pinned + (static_cast<std::size_t>(kv) * kUsed + i) * kPiece;
      h2d.dst.push_back(c);
      h2d.src.push_back(p);
      h2d.size.push_back(kPiece);
      d2h.dst.push_back(p);
      d2h.src.push_back(c);
      d2h.size.push_back(kPiece);
    }
  }
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaMemcpyAttributes attr{};
  attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
  std::size_t attr_index = 0;
  const auto batch = [&](Pieces& p) {
    CK(cudaMemcpyBatchAsync(p.dst.data(), p.src.data(), p.size.data(), p.size.size(), &attr, &attr_index, 1, s));
  };
  // A graph captured from the batch call; empty when capture is refused.
  const auto captured = [&](Pieces& p, std::string& why) -> cudaGraphExec_t {
    cudaGraph_t g = nullptr;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    const cudaError_t e = cudaMemcpyBatchAsync(p.dst.data(), p.src.data(), p.size.data(), p.size.size(), &attr,
                                               &attr_index, 1, s);
    const cudaError_t end = cudaStreamEndCapture(s, &g);
    if (e != cudaSuccess || end != cudaSuccess) {
      why = std::string(cudaGetErrorString(e != cudaSuccess ? e : end));
      (void)cudaGetLastError();
      if (g != nullptr) (void)cudaGraphDestroy(g);
      return nullptr;
    }
    cudaGraphExec_t x = nullptr;
    CK(cudaGraphInstantiate(&x, g, 0));
    CK(cudaGraphDestroy(g));
    return x;
  };
  const auto flat = [&](Pieces& p, cudaMemcpyKind kind, double& build_ms) -> cudaGraphExec_t {
    const auto t0 = std::chrono::steady_clock::now();
    cudaGraph_t g = nullptr;
    CK(cudaGraphCreate(&g, 0));
    for (std::size_t i = 0; i < p.size.size(); ++i) {
      cudaGraphNode_t n;
      CK(cudaGraphAddMemcpyNode1D(&n, g, nullptr, 0, p.dst[i], p.src[i], p.size[i], kind));
    }
    cudaGraphExec_t x = nullptr;
    CK(cudaGraphInstantiate(&x, g, 0));
    CK(cudaGraphDestroy(g));
    build_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return x;
  };
  std::printf("{\n  \"bench\": \"graph_probe\",\n  \"device\": \"%s\",\n  \"reps\": %d,\n  \"pieces\": %zu,\n  \"bytes\": %zu,\n  \"results\": {",
              prop.name, reps, h2d.size.size(), bytes);
  bool first = true;
  print("contiguous_h2d", timed(s, reps, bytes, [&] { CK(cudaMemcpyAsync(contiguous, pinned, bytes, cudaMemcpyHostToDevice, s)); }), first);
  print("contiguous_d2h", timed(s, reps, bytes, [&] { CK(cudaMemcpyAsync(pinned, contiguous, bytes, cudaMemcpyDeviceToHost, s)); }), first);
  print("batch_h2d", timed(s, reps, bytes, [&] { batch(h2d); }), first);
  print("batch_d2h", timed(s, reps, bytes, [&] { batch(d2h); }), first);
  // N threads, each enqueuing its share of every layer on its own stream.
  const auto threaded = [&](Pieces& p, int n) -> Figure {
    std::vector<cudaStream_t> streams(n);
    for (auto& x : streams) CK(cudaStreamCreateWithFlags(&x, cudaStreamNonBlocking));
    std::vector<Pieces> parts(n);
    for (std::size_t i = 0; i < p.size.size(); ++i) {
      Pieces& q = parts[i * n / p.size.size()];
      q.dst.push_back(p.dst[i]);
      q.src.push_back(p.src[i]);
      q.size.push_back(p.size[i]);
    }
    const auto run = [&](int k, int count) {
      CK(cudaSetDevice(0));
      std::size_t ai = 0;
      for (int r = 0; r < count; ++r) {
        Pieces& q = parts[k];
        CK(cudaMemcpyBatchAsync(q.dst.data(), q.src.data(), q.size.data(), q.size.size(), &attr, &ai, 1, streams[k]));
      }
    };
    const auto all = [&](int count) {
      std::vector<std::thread> ts;
      for (int k = 0; k < n; ++k) ts.emplace_back(run, k, count);
      for (auto& t : ts) t.join();
    };
    all(3);
    CK(cudaDeviceSynchronize());
    const auto t0 = std::chrono::steady_clock::now();
    all(reps);
    const auto t1 = std::chrono::steady_clock::now();
    CK(cudaDeviceSynchronize());
    const auto t2 = std::chrono::steady_clock::now();
    for (auto& x : streams) CK(cudaStreamDestroy(x));
    return {std::chrono::duration<double, std::micro>(t1 - t0).count() / reps,
            static_cast<double>(bytes) * reps / std::chrono::duration<double>(t2 - t0).count() / 1e9};
  };
  print("batch_2threads_h2d", threaded(h2d, 2), first);
  print("batch_4threads_h2d", threaded(h2d, 4), first);
  print("batch_2threads_d2h", threaded(d2h, 2), first);
  print("batch_4threads_d2h", threaded(d2h, 4), first);
  {
    cudaMemcpyAttributes plain{};
    plain.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
    cudaMemcpyAttributes any{};
    any.srcAccessOrder = cudaMemcpySrcAccessOrderAny;
    const auto with = [&](Pieces& p, cudaMemcpyAttributes& a) {
      std::size_t ai = 0;
      CK(cudaMemcpyBatchAsync(p.dst.data(), p.src.data(), p.size.data(), p.size.size(), &a, &ai, 1, s));
    };
    print("batch_noflags_h2d", timed(s, reps, bytes, [&] { with(h2d, plain); }), first);
    print("batch_any_h2d", timed(s, reps, bytes, [&] { with(h2d, any); }), first);
    // K and V of block i: rows kBlocks * kPiece apart in the cache, kUsed * kPiece apart in the staging.
    const auto ops_of = [&](bool to_device) {
      std::vector<cudaMemcpy3DBatchOp> ops(kUsed);
      for (int i = 0; i < kUsed; ++i) {
        cudaMemcpy3DBatchOp& o = ops[i];
        o = cudaMemcpy3DBatchOp{};
        cudaMemcpy3DOperand c{}, h{};
        c.type = h.type = cudaMemcpyOperandTypePointer;
        c.op.ptr.ptr = cache + static_cast<std::size_t>(order[i]) * kPiece;
        c.op.ptr.rowLength = static_cast<std::size_t>(kBlocks) * kPiece;
        h.op.ptr.ptr = pinned + static_cast<std::size_t>(i) * kPiece;
        h.op.ptr.rowLength = static_cast<std::size_t>(kUsed) * kPiece;
        o.src = to_device ? h : c;
        o.dst = to_device ? c : h;
        o.extent = make_cudaExtent(kPiece, 2, 1);
        o.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
        o.flags = cudaMemcpyFlagPreferOverlapWithCompute;
      }
      return ops;
    };
    std::vector<cudaMemcpy3DBatchOp> ops_h2d = ops_of(true), ops_d2h = ops_of(false);
    print("batch3d_kv_h2d", timed(s, reps, bytes, [&] { CK(cudaMemcpy3DBatchAsync(ops_h2d.size(), ops_h2d.data(), 0, s)); }), first);
    print("batch3d_kv_d2h", timed(s, reps, bytes, [&] { CK(cudaMemcpy3DBatchAsync(ops_d2h.size(), ops_d2h.data(), 0, s)); }), first);
    print("memcpy2d_kv_h2d", timed(s, reps, bytes, [&] {
      for (int i = 0; i < kUsed; ++i) {
        CK(cudaMemcpy2DAsync(cache + static_cast<std::size_t>(order[i]) * kPiece, static_cast<std::size_t>(kBlocks) * kPiece,
                             pinned + static_cast<std::size_t>(i) * kPiece, static_cast<std::size_t>(kUsed) * kPiece, kPiece, 2,
                             cudaMemcpyHostToDevice, s));
      }
    }), first);
  }
  std::string why_h2d, why_d2h;
  cudaGraphExec_t cap_h2d = captured(h2d, why_h2d);
  cudaGraphExec_t cap_d2h = captured(d2h, why_d2h);
  if (cap_h2d != nullptr) print("graph_cap_h2d", timed(s, reps, bytes, [&] { CK(cudaGraphLaunch(cap_h2d, s)); }), first);
  if (cap_d2h != nullptr) print("graph_cap_d2h", timed(s, reps, bytes, [&] { CK(cudaGraphLaunch(cap_d2h, s)); }), first);
  double build_h2d = 0, build_d2h = 0;
  cudaGraphExec_t flat_h2d = flat(h2d, cudaMemcpyHostToDevice, build_h2d);
  cudaGraphExec_t flat_d2h = flat(d2h, cudaMemcpyDeviceToHost, build_d2h);
  print("graph_flat_h2d", timed(s, reps, bytes, [&] { CK(cudaGraphLaunch(flat_h2d, s)); }), first);
  print("graph_flat_d2h", timed(s, reps, bytes, [&] { CK(cudaGraphLaunch(flat_d2h, s)); }), first);
  std::printf("\n  },\n  \"graph_flat_build_ms\": [%.2f, %.2f],\n  \"capture_refused\": [\"%s\", \"%s\"]\n}\n", build_h2d,
              build_d2h, why_h2d.c_str(), why_d2h.c_str());
  return 0;
}
