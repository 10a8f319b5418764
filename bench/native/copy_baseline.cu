// Same-run baseline for bench/copy.ts: bare cudaMemcpyAsync between pinned
// host memory (cudaHostAlloc) and device memory, no kvflow involved. kvflow's
// copy figures are reported as ratios to these, measured on the same box in
// the same call (DESIGN.md section 5), because boxes differ from one another.
//
// Mirrors copy.ts on purpose: same sizes, same directions, same rotation of
// offsets through 1 GiB buffers, same calibration (warm-up, reps for >= 200
// ms, median of 5). Prints one JSON object on stdout; everything else goes to
// stderr so that `copy_baseline > out.json` stays parseable.
//
//   copy_baseline [--quick]   (--quick: sizes up to 16 MiB, 20 ms x 3 samples)
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace {

void check(cudaError_t e, const char* what, int line) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "copy_baseline.cu:%d: %s failed: %s (%s)\n", line, what, cudaGetErrorString(e),
                 cudaGetErrorName(e));
    std::exit(1);
  }
}
#define CK(call) check((call), #call, __LINE__)

constexpr size_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

// Buffers: H2D reads hA into dA; D2H reads dB into hB. Separate pairs so the
// bidirectional run never has both directions touch the same memory.
struct Ctx {
  uint8_t* hA = nullptr;
  uint8_t* hB = nullptr;
  uint8_t* dA = nullptr;
  uint8_t* dB = nullptr;
  size_t cap = 0;
  cudaStream_t s1{}, s2{};
  cudaEvent_t start{}, join{}, stop{};
};

enum class Dir { H2D, D2H, Bidir };

// Copy i of a run starts at a different offset, walking through the whole
// buffer, so that small copies do not keep hitting one cache-resident spot.
size_t offsetOf(long i, size_t bytes, size_t cap) { return (static_cast<size_t>(i) % (cap / bytes)) * bytes; }

// splitmix64: fast enough to fill 2 GiB in about a second; never zeros.
void fillRandom(uint8_t* p, size_t n, uint64_t seed) {
  uint64_t x = seed;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    std::memcpy(p + i, &z, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<uint8_t>(i * 131 + 7);
}

// Enqueues `reps` copies and returns GPU seconds between events. For Bidir,
// s2 waits on the start event and s1 on s2's end, so the interval spans both.
double runEvents(const Ctx& c, Dir dir, size_t bytes, long reps) {
  CK(cudaEventRecord(c.start, c.s1));
  if (dir == Dir::Bidir) CK(cudaStreamWaitEvent(c.s2, c.start, 0));
  cudaStream_t d2hStream = dir == Dir::Bidir ? c.s2 : c.s1;
  for (long i = 0; i < reps; ++i) {
    size_t off = offsetOf(i, bytes, c.cap);
    // Interleaved enqueues, as copy.ts does, so both engines get work early.
    if (dir != Dir::D2H) CK(cudaMemcpyAsync(c.dA + off, c.hA + off, bytes, cudaMemcpyHostToDevice, c.s1));
    if (dir != Dir::H2D) CK(cudaMemcpyAsync(c.hB + off, c.dB + off, bytes, cudaMemcpyDeviceToHost, d2hStream));
  }
  if (dir == Dir::Bidir) {
    CK(cudaEventRecord(c.join, c.s2));
    CK(cudaStreamWaitEvent(c.s1, c.join, 0));
  }
  CK(cudaEventRecord(c.stop, c.s1));
  CK(cudaEventSynchronize(c.stop));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, c.start, c.stop));
  return ms / 1e3;
}

double hostSeconds(const std::function<void()>& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Measured {
  long reps;
  double median, min, max;  // seconds per sample of `reps` operations
};

// Same algorithm as measure() in copy.ts: two warm-up runs, double reps until
// a run takes a tenth of the target, scale to the target (+10%), then take
// `samples` timed runs and keep the median.
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

std::string label(size_t bytes) {
  if (bytes >= GiB) return std::to_string(bytes / GiB) + "GiB";
  if (bytes >= MiB) return std::to_string(bytes / MiB) + "MiB";
  return std::to_string(bytes / KiB) + "KiB";
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const double minSeconds = quick ? 0.02 : 0.2;
  const int samples = quick ? 3 : 5;
  std::vector<size_t> sizes = {4 * KiB, 64 * KiB, MiB, 16 * MiB, 256 * MiB, GiB};
  if (quick) sizes.resize(4);
  const size_t opsBytes = 64 * KiB;

  Ctx c;
  c.cap = sizes.back();
  CK(cudaSetDevice(0));
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  int runtime = 0, driver = 0;
  CK(cudaRuntimeGetVersion(&runtime));
  CK(cudaDriverGetVersion(&driver));
  CK(cudaHostAlloc(reinterpret_cast<void**>(&c.hA), c.cap, cudaHostAllocPortable));
  CK(cudaHostAlloc(reinterpret_cast<void**>(&c.hB), c.cap, cudaHostAllocPortable));
  CK(cudaMalloc(reinterpret_cast<void**>(&c.dA), c.cap));
  CK(cudaMalloc(reinterpret_cast<void**>(&c.dB), c.cap));
  // Non-blocking streams of default priority, like kvflow's normal streams.
  CK(cudaStreamCreateWithFlags(&c.s1, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&c.s2, cudaStreamNonBlocking));
  CK(cudaEventCreate(&c.start));
  CK(cudaEventCreate(&c.join));
  CK(cudaEventCreate(&c.stop));

  // Random data everywhere, and one round trip checked byte for byte, so a
  // copy that silently does nothing cannot pass for a fast one.
  fillRandom(c.hA, c.cap, 0x6b76666c6f77ull);
  fillRandom(c.hB, c.cap, 0x5eed);
  CK(cudaMemcpyAsync(c.dA, c.hA, c.cap, cudaMemcpyHostToDevice, c.s1));
  CK(cudaMemcpyAsync(c.hB, c.dA, c.cap, cudaMemcpyDeviceToHost, c.s1));
  CK(cudaStreamSynchronize(c.s1));
  if (std::memcmp(c.hA, c.hB, c.cap) != 0) {
    std::fprintf(stderr, "copy_baseline: round trip of %zu bytes came back different\n", c.cap);
    return 1;
  }
  fillRandom(c.hB, c.cap, 0xd2b);
  CK(cudaMemcpyAsync(c.dB, c.hB, c.cap, cudaMemcpyHostToDevice, c.s1));
  CK(cudaStreamSynchronize(c.s1));

  std::string out;
  char line[2048];
  auto emit = [&](const char* text) { out += out.empty() ? "\n    " : ",\n    "; out += text; };
  const char* names[] = {"h2d", "d2h", "bidir"};
  for (size_t bytes : sizes) {
    for (int d = 0; d < 3; ++d) {
      Dir dir = static_cast<Dir>(d);
      Measured m = measure([&](long reps) { return runEvents(c, dir, bytes, reps); }, minSeconds, samples);
      // Bidir counts the bytes of both directions: aggregate link traffic.
      double moved = static_cast<double>(bytes) * m.reps * (dir == Dir::Bidir ? 2 : 1);
      std::snprintf(line, sizeof line,
                    "{\"metric\":\"%s\",\"bytes\":%zu,\"gbps\":%.4f,\"reps\":%ld,\"spread_pct\":%.2f}", names[d],
                    bytes, moved / m.median / 1e9, m.reps, 100 * (m.max - m.min) / m.median);
      emit(line);
      std::fprintf(stderr, "%-6s %8s %9.3f GB/s  (%ld reps)\n", names[d], label(bytes).c_str(), moved / m.median / 1e9,
                   m.reps);
    }
  }

  // ops: many 64 KiB H2D copies enqueued back to back, one synchronize at the
  // end, timed on the host clock: the counterpart of copy.ts's ops_64KiB.
  Measured ops = measure(
      [&](long reps) {
        return hostSeconds([&] {
          for (long i = 0; i < reps; ++i) {
            size_t off = offsetOf(i, opsBytes, c.cap);
            CK(cudaMemcpyAsync(c.dA + off, c.hA + off, opsBytes, cudaMemcpyHostToDevice, c.s1));
          }
          CK(cudaStreamSynchronize(c.s1));
        });
      },
      minSeconds, samples);
  std::snprintf(line, sizeof line, "{\"metric\":\"ops\",\"bytes\":%zu,\"ops_per_s\":%.1f,\"reps\":%ld}", opsBytes,
                ops.reps / ops.median, ops.reps);
  emit(line);

  // latency: each copy followed by cudaStreamSynchronize, one at a time: the
  // floor under kvflow's copy + record + await done from JS.
  Measured lat = measure(
      [&](long reps) {
        return hostSeconds([&] {
          for (long i = 0; i < reps; ++i) {
            size_t off = offsetOf(i, opsBytes, c.cap);
            CK(cudaMemcpyAsync(c.dA + off, c.hA + off, opsBytes, cudaMemcpyHostToDevice, c.s1));
            CK(cudaStreamSynchronize(c.s1));
          }
        });
      },
      minSeconds, samples);
  // Where one op's time goes (medians over 20,000 ops): the enqueue call and
  // the synchronize, to set beside bench/copy's copy / record / wait parts.
  std::vector<double> enq, syn;
  for (long i = 0; i < 20000; ++i) {
    size_t off = offsetOf(i, opsBytes, c.cap);
    auto a = std::chrono::steady_clock::now();
    CK(cudaMemcpyAsync(c.dA + off, c.hA + off, opsBytes, cudaMemcpyHostToDevice, c.s1));
    auto b = std::chrono::steady_clock::now();
    CK(cudaStreamSynchronize(c.s1));
    auto d = std::chrono::steady_clock::now();
    enq.push_back(std::chrono::duration<double, std::micro>(b - a).count());
    syn.push_back(std::chrono::duration<double, std::micro>(d - b).count());
  }
  auto median = [](std::vector<double>& v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  // The same round trip as kvflow takes it: the copy, an event recorded
  // behind it, then cudaEventQuery until it completed (kvflow's poller
  // thread queries its events so). Medians of the record call and the query
  // loop, and the mean per op over a timed loop; cudaSetDevice's cost too,
  // which kvflow pays once per call.
  cudaEvent_t ev;
  CK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  std::vector<double> rec, qry;
  for (long i = 0; i < 20000; ++i) {
    size_t off = offsetOf(i, opsBytes, c.cap);
    CK(cudaMemcpyAsync(c.dA + off, c.hA + off, opsBytes, cudaMemcpyHostToDevice, c.s1));
    auto a = std::chrono::steady_clock::now();
    CK(cudaEventRecord(ev, c.s1));
    auto b = std::chrono::steady_clock::now();
    cudaError_t q;
    while ((q = cudaEventQuery(ev)) == cudaErrorNotReady) {
    }
    CK(q);
    auto d = std::chrono::steady_clock::now();
    rec.push_back(std::chrono::duration<double, std::micro>(b - a).count());
    qry.push_back(std::chrono::duration<double, std::micro>(d - b).count());
  }
  auto t0 = std::chrono::steady_clock::now();
  const long evReps = 20000;
  for (long i = 0; i < evReps; ++i) {
    size_t off = offsetOf(i, opsBytes, c.cap);
    CK(cudaMemcpyAsync(c.dA + off, c.hA + off, opsBytes, cudaMemcpyHostToDevice, c.s1));
    CK(cudaEventRecord(ev, c.s1));
    cudaError_t q;
    while ((q = cudaEventQuery(ev)) == cudaErrorNotReady) {
    }
    CK(q);
  }
  const double evUs = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / evReps;
  int dev = 0;
  CK(cudaGetDevice(&dev));
  auto s0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 100000; ++i) CK(cudaSetDevice(dev));
  const double setUs = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - s0).count() / 100000;
  auto q0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 100000; ++i) (void)cudaEventQuery(ev);
  const double queryUs = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - q0).count() / 100000;
  CK(cudaEventDestroy(ev));
  // The round trip as kvflow's threads share it: the main thread enqueues the
  // copy and records an event, a second thread (kvflow's poller) queries that
  // event until it completed and then raises a flag the main thread spins on.
  // The poller queries with `pause_us` of spinning (no driver call) between
  // queries (0: back to back, with a yield). Whether a thread querying events
  // slows the other thread's enqueue and record, and whether pacing the
  // queries gives that back, is what kvflow's poller design rests on; an
  // extra variant runs a thread that only spins (no driver calls) beside the
  // single-threaded loop, to tell the CPU's share from the driver's.
  std::string polled;
  for (const double pause_us : {-1.0, 0.0, 1.0, 3.0}) {
    cudaEvent_t pev;
    CK(cudaEventCreateWithFlags(&pev, cudaEventDisableTiming));
    std::atomic<long> posted{0}, seen{0};
    std::atomic<bool> stop{false};
    std::thread poller([&] {
      CK(cudaSetDevice(dev));
      long done = 0;
      while (!stop.load(std::memory_order_acquire)) {
        const long want = posted.load(std::memory_order_acquire);
        if (pause_us >= 0 && want > done) {
          const cudaError_t q = cudaEventQuery(pev);
          if (q == cudaSuccess) {
            done = want;
            seen.store(done, std::memory_order_release);
            continue;
          }
          if (q != cudaErrorNotReady) CK(q);
        }
        if (pause_us <= 0) {
          std::this_thread::yield();
        } else {
          const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double, std::micro>(pause_us);
          while (std::chrono::steady_clock::now() < until) {
          }
        }
      }
    });
    std::vector<double> penq, prec, pwait;
    const long n = 20000;
    auto p0 = std::chrono::steady_clock::now();
    for (long i = 1; i <= n; ++i) {
      size_t off = offsetOf(i, opsBytes, c.cap);
      auto a = std::chrono::steady_clock::now();
      CK(cudaMemcpyAsync(c.dA + off, c.hA + off, opsBytes, cudaMemcpyHostToDevice, c.s1));
      auto b = std::chrono::steady_clock::now();
      CK(cudaEventRecord(pev, c.s1));
      auto d = std::chrono::steady_clock::now();
      if (pause_us >= 0) {
        posted.store(i, std::memory_order_release);
        while (seen.load(std::memory_order_acquire) < i) {
        }
      } else {
        cudaError_t q;
        while ((q = cudaEventQuery(pev)) == cudaErrorNotReady) {
        }
        CK(q);
      }
      auto e = std::chrono::steady_clock::now();
      penq.push_back(std::chrono::duration<double, std::micro>(b - a).count());
      prec.push_back(std::chrono::duration<double, std::micro>(d - b).count());
      pwait.push_back(std::chrono::duration<double, std::micro>(e - d).count());
    }
    const double perOp = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - p0).count() / n;
    stop.store(true, std::memory_order_release);
    poller.join();
    CK(cudaEventDestroy(pev));
    char item[256];
    std::snprintf(item, sizeof item,
                  "%s{\"poll_pause_us\":%.1f,\"round_trip_us\":%.3f,\"enqueue_p50_us\":%.3f,\"record_p50_us\":%.3f,"
                  "\"wait_p50_us\":%.3f}",
                  polled.empty() ? "" : ",", pause_us, perOp, median(penq), median(prec), median(pwait));
    polled += item;
  }
  std::snprintf(line, sizeof line,
                "{\"metric\":\"latency\",\"bytes\":%zu,\"us\":%.3f,\"ops_per_s\":%.1f,\"reps\":%ld,"
                "\"enqueue_p50_us\":%.3f,\"sync_p50_us\":%.3f,\"event_loop_us\":%.3f,\"event_record_p50_us\":%.3f,"
                "\"event_query_loop_p50_us\":%.3f,\"event_query_call_us\":%.3f,\"set_device_call_us\":%.3f,"
                "\"polled\":[%s]}",
                opsBytes, 1e6 * lat.median / lat.reps, lat.reps / lat.median, lat.reps, median(enq), median(syn), evUs,
                median(rec), median(qry), queryUs, setUs, polled.c_str());
  emit(line);
  std::fprintf(stderr, "ops %.0f/s, sync latency %.2f us\n", ops.reps / ops.median, 1e6 * lat.median / lat.reps);

  CK(cudaGetLastError());
  CK(cudaEventDestroy(c.start));
  CK(cudaEventDestroy(c.join));
  CK(cudaEventDestroy(c.stop));
  CK(cudaStreamDestroy(c.s1));
  CK(cudaStreamDestroy(c.s2));
  CK(cudaFree(c.dA));
  CK(cudaFree(c.dB));
  CK(cudaFreeHost(c.hA));
  CK(cudaFreeHost(c.hB));

  // Device name as the box reports it, for the result file's "device" field.
  std::printf(
      "{\n  \"bench\": \"copy_baseline\",\n  \"device\": \"%s\",\n  \"pciBusId\": \"%04x:%02x:%02x.0\",\n"
      "  \"runtimeVersion\": %d,\n  \"driverVersion\": %d,\n"
      "  \"config\": {\"min_seconds\": %.3f, \"samples\": %d, \"quick\": %s},\n  \"results\": [%s\n  ]\n}\n",
      prop.name, prop.pciDomainID, prop.pciBusID, prop.pciDeviceID, runtime, driver, minSeconds, samples,
      quick ? "true" : "false", out.c_str());
  return 0;
}
