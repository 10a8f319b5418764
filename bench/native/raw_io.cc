// Same-run baseline for bench/nvme.ts: plain O_DIRECT pread/pwrite of one
// file, no kvflow and no GPU involved. kvflow's file <-> HBM figures are
// reported as ratios to the best of these, measured on the same disk in the
// same call (DESIGN.md section 5), because boxes differ from one another
// (0.9-2.1 GB/s on the GPU box's virtio volume).
//
// Mirrors nvme.ts on purpose: the same file size, the same 1 GiB sweep points
// rotating over the file's regions, the same work queue (T threads each
// taking the next S-byte piece, as kvflow's posix engine takes tasks), a cold
// page cache before every read sample, writes timed up to an fsync, and the
// best sweep point measured again over the whole file for the headline
// figures (raw_read_best, raw_write_best). Prints one JSON object in the shape
// of DESIGN.md section 5 on stdout; progress goes to stderr so that
// `raw_io > out.json` stays parseable.
//
//   raw_io [--dir DIR] [--gib N] [--sweep-gib N] [--samples N] [--keep] [--quick]
//
//   --dir        folder of the test file (default bench-out/nvme-data), created
//   --gib        file size, 1-8 (default 4); the headline figures move all of it
//   --sweep-gib  bytes per sweep point (default 1)
//   --samples    timed samples of each headline figure (default 3; sweep: 1)
//   --keep       leave the file behind (default: deleted)
//   --quick      64 MiB file, 16 MiB sweep points, 2 samples
//
// Single pass, for bench/nvme.ts's paired samples (raw IO and kvflow taken in
// turns on the same file, because the disk's throughput drifts over minutes):
//
//   raw_io --pass read|write --file PATH --threads T --io-bytes S [--bytes N]
//
//   --pass       one timed read or write of bytes [0, N) of PATH, with the
//                work queue, O_DIRECT fallback and page cache handling below
//                (reads: the file must hold N bytes; writes: N bytes of the
//                position-stamped, never-zero buffers, PATH created if missing,
//                not truncated, timed up to the fsync)
//   --file       the file
//   --threads    T threads; --io-bytes: S bytes per piece (a multiple of 4096)
//   --bytes      N, a multiple of 4096 (default: the file's size; a write to a
//                missing or empty file needs it)
//
// It prints one JSON line on stdout: {"pass", "gbps", "seconds",
// "cpu_s_per_gb", "direct", "bytes", "threads", "io_bytes", "cache_dropped"
// (null for writes)}. The options of the full run above do not go with --pass.
//
// Page cache: before each read sample it runs sync() and writes 3 to
// /proc/sys/vm/drop_caches (root only); the JSON says whether that worked.
// O_DIRECT bypasses the page cache anyway; where the filesystem refuses
// O_DIRECT the program falls back to buffered IO and says so (direct: false).
//
// CPU time: getrusage(RUSAGE_SELF) user + system seconds of the whole process
// over the timed region, per GB moved.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <climits>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;
constexpr size_t kAlign = 4096;
const int kThreads[] = {1, 4, 8, 16};
const size_t kIoSizes[] = {1 * MiB, 4 * MiB, 16 * MiB};
constexpr uint64_t kSeed = 0x6b76666c6f77ull;  // "kvflow"

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "raw_io: %s\n", what.c_str());
  std::exit(1);
}

std::string errnoText(int e) { return std::string(std::strerror(e)) + " (errno " + std::to_string(e) + ")"; }

std::string label(size_t bytes) {
  if (bytes >= GiB && bytes % GiB == 0) return std::to_string(bytes / GiB) + "GiB";
  if (bytes >= MiB && bytes % MiB == 0) return std::to_string(bytes / MiB) + "MiB";
  return std::to_string(bytes / KiB) + "KiB";
}

std::string jsonString(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::string num(double v, const char* fmt = "%.6g") {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

// splitmix64 of the word's position in the file: every 8 bytes differ, never
// zeros, and any range can be regenerated to check what a read returned.
uint64_t mix(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void fillPattern(uint8_t* p, size_t n, uint64_t fileOffset) {
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t z = mix(kSeed ^ ((fileOffset + i) / 8));
    std::memcpy(p + i, &z, 8);
  }
}

double cpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// ---------------------------------------------------------------- page cache

struct CacheDrop {
  int attempts = 0;
  int failures = 0;
  std::string error;  // the first failure
} g_drop;

// sync(), then `echo 3 > /proc/sys/vm/drop_caches`, as nvme.ts does through sh.
void dropCaches() {
  ::sync();
  ++g_drop.attempts;
  int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY);
  bool ok = fd >= 0 && ::write(fd, "3\n", 2) == 2;
  int e = errno;
  if (fd >= 0) ::close(fd);
  if (!ok) {
    ++g_drop.failures;
    if (g_drop.error.empty()) g_drop.error = "/proc/sys/vm/drop_caches: " + errnoText(e);
  }
}

// ---------------------------------------------------------------- the disk

struct Mount {
  std::string source, point, type;
};

// The /proc/mounts entry whose mount point is the longest prefix of `path`.
Mount mountOf(const std::string& path) {
  Mount best;
  std::ifstream in("/proc/mounts");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    Mount m;
    if (!(ls >> m.source >> m.point >> m.type)) continue;
    const bool below = path.compare(0, m.point.size(), m.point) == 0 && path.size() > m.point.size() &&
                       path[m.point.size()] == '/';
    const bool under = path == m.point || m.point == "/" || below;
    if (under && m.point.size() >= best.point.size()) best = m;
  }
  return best;
}

// ---------------------------------------------------------------- transfers

struct Sample {
  double seconds;
  double cpu;
};

struct File {
  int fd = -1;
  bool direct = false;
  std::string directReason;
};

File openFile(const std::string& path) {
  File f;
  f.fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_DIRECT, 0600);
  if (f.fd >= 0) {
    f.direct = true;
    f.directReason = "O_DIRECT accepted";
    return f;
  }
  int e = errno;
  if (e != EINVAL) die("open " + path + ": " + errnoText(e));
  f.fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0600);
  if (f.fd < 0) die("open " + path + ": " + errnoText(errno));
  f.directReason = "buffered IO: O_DIRECT refused: " + errnoText(e);
  std::fprintf(stderr, "raw_io: warning: %s\n", f.directReason.c_str());
  return f;
}

// Per-thread buffers of the largest IO size, 4 KiB aligned, random.
struct Buffers {
  std::vector<uint8_t*> p;
  explicit Buffers(int threads, size_t bytes) {
    for (int t = 0; t < threads; ++t) {
      void* q = nullptr;
      if (posix_memalign(&q, kAlign, bytes) != 0) die("posix_memalign of " + std::to_string(bytes) + " bytes failed");
      fillPattern(static_cast<uint8_t*>(q), bytes, (static_cast<uint64_t>(t) + 1) << 40);
      p.push_back(static_cast<uint8_t*>(q));
    }
  }
  ~Buffers() {
    for (auto* q : p) std::free(q);
  }
  Buffers(const Buffers&) = delete;
  Buffers& operator=(const Buffers&) = delete;
};

// Moves [begin, begin + bytes) of the file with `threads` threads, each taking
// the next `io` bytes until none are left (kvflow's posix engine: a queue of
// tasks, one per thread at a time). Writes stamp each 4 KiB block with its
// file offset first, so no two blocks written are alike, and end with an
// fsync inside the timed region (nvme.ts: stream event + file.sync()). The
// threads are started and parked before the clock starts.
Sample transfer(const File& f, bool write, uint64_t begin, uint64_t bytes, int threads, size_t io, Buffers& bufs) {
  std::atomic<uint64_t> next{0};
  std::atomic<int> error{0};
  std::mutex m;
  std::condition_variable cv;
  bool go = false;
  auto work = [&](int t) {
    {
      std::unique_lock<std::mutex> lock(m);
      cv.wait(lock, [&] { return go; });
    }
    uint8_t* buf = bufs.p[static_cast<size_t>(t)];
    for (;;) {
      const uint64_t at = next.fetch_add(io, std::memory_order_relaxed);
      if (at >= bytes || error.load(std::memory_order_relaxed) != 0) return;
      const size_t n = static_cast<size_t>(std::min<uint64_t>(io, bytes - at));
      const uint64_t off = begin + at;
      if (write) {
        for (size_t b = 0; b < n; b += kAlign) {
          uint64_t stamp = off + b;
          std::memcpy(buf + b, &stamp, 8);
        }
      }
      size_t done = 0;
      while (done < n) {
        ssize_t r = write ? ::pwrite(f.fd, buf + done, n - done, static_cast<off_t>(off + done))
                          : ::pread(f.fd, buf + done, n - done, static_cast<off_t>(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
          error.store(r < 0 ? errno : EIO);
          return;
        }
        done += static_cast<size_t>(r);
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work, t);
  const double c0 = cpuSeconds();
  const auto t0 = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(m);
    go = true;
  }
  cv.notify_all();
  for (auto& th : pool) th.join();
  if (error.load() != 0) {
    die(std::string(write ? "pwrite" : "pread") + " failed: " + errnoText(error.load()) + " (short transfer: EIO)");
  }
  if (write && ::fsync(f.fd) != 0) die("fsync: " + errnoText(errno));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {seconds, cpuSeconds() - c0};
}

// Writes the whole file once with its pattern (8 threads x 4 MiB, fsync) and
// returns the rate, for information.
double createFile(const File& f, uint64_t size) {
  if (::ftruncate(f.fd, 0) != 0) die("ftruncate: " + errnoText(errno));
  std::atomic<uint64_t> next{0};
  std::atomic<int> error{0};
  const size_t io = 4 * MiB;
  const int threads = 8;
  auto work = [&]() {
    void* q = nullptr;
    if (posix_memalign(&q, kAlign, io) != 0) {
      error.store(ENOMEM);
      return;
    }
    auto* buf = static_cast<uint8_t*>(q);
    for (;;) {
      const uint64_t at = next.fetch_add(io);
      if (at >= size || error.load() != 0) break;
      const size_t n = static_cast<size_t>(std::min<uint64_t>(io, size - at));
      fillPattern(buf, n, at);
      size_t done = 0;
      while (done < n) {
        ssize_t r = ::pwrite(f.fd, buf + done, n - done, static_cast<off_t>(at + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
          error.store(r < 0 ? errno : EIO);
          break;
        }
        done += static_cast<size_t>(r);
      }
    }
    std::free(q);
  };
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work);
  for (auto& th : pool) th.join();
  if (error.load() != 0) die("writing the test file failed: " + errnoText(error.load()));
  if (::fsync(f.fd) != 0) die("fsync: " + errnoText(errno));
  return static_cast<double>(size) / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 1e9;
}

// Reads back the first, a middle and the last MiB and compares them with the
// pattern: the file holds what was written, so reads below move real data.
void verifySpots(const File& f, uint64_t size) {
  const size_t n = std::min<uint64_t>(MiB, size);
  void* q = nullptr;
  void* w = nullptr;
  if (posix_memalign(&q, kAlign, n) != 0 || posix_memalign(&w, kAlign, n) != 0) die("posix_memalign failed");
  auto* got = static_cast<uint8_t*>(q);
  auto* want = static_cast<uint8_t*>(w);
  const uint64_t spots[] = {0, (size / 2) / kAlign * kAlign, size - n};
  for (uint64_t at : spots) {
    std::memset(got, 0xa5, n);
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(f.fd, got + done, n - done, static_cast<off_t>(at + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) die("verify read at " + std::to_string(at) + ": " + (r < 0 ? errnoText(errno) : "short read"));
      done += static_cast<size_t>(r);
    }
    fillPattern(want, n, at);
    if (std::memcmp(got, want, n) != 0) {
      die("the file's bytes at " + std::to_string(at) + " differ from what was written");
    }
  }
  std::free(q);
  std::free(w);
}

// ---------------------------------------------------------------- results

struct Point {
  std::string metric;
  bool write;
  int threads;
  size_t io;
  uint64_t bytes;
  std::vector<double> gbps;  // per sample
  double value = 0;          // median
  double spreadPct = 0;
  double cpuPerGb = 0;       // median
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One timed sample as every figure takes it: reads after sync + drop_caches
// (a cold page cache), writes after a sync (earlier dirty pages are not this
// sample's fsync's business).
Sample coldSample(const File& f, bool write, uint64_t begin, uint64_t bytes, int threads, size_t io, Buffers& bufs) {
  if (write) {
    ::sync();
  } else {
    dropCaches();
  }
  return transfer(f, write, begin, bytes, threads, io, bufs);
}

Point measurePoint(const File& f, bool write, uint64_t begin, uint64_t bytes, int threads, size_t io, int samples,
                   Buffers& bufs, const std::string& metric) {
  Point p{metric, write, threads, io, bytes, {}, 0, 0, 0};
  std::vector<double> cpu;
  for (int s = 0; s < samples; ++s) {
    Sample r = coldSample(f, write, begin, bytes, threads, io, bufs);
    p.gbps.push_back(static_cast<double>(bytes) / r.seconds / 1e9);
    cpu.push_back(r.cpu / (static_cast<double>(bytes) / 1e9));
  }
  p.value = median(p.gbps);
  auto [lo, hi] = std::minmax_element(p.gbps.begin(), p.gbps.end());
  p.spreadPct = 100 * (*hi - *lo) / p.value;
  p.cpuPerGb = median(cpu);
  std::fprintf(stderr, "%-22s %8.3f GB/s  cpu %.3f s/GB  (%d x %s)\n", metric.c_str(), p.value, p.cpuPerGb, samples,
               label(bytes).c_str());
  return p;
}

std::string pointJson(const Point& p, int samples, const char* extra = "") {
  std::string g = "[";
  for (size_t i = 0; i < p.gbps.size(); ++i) g += (i ? "," : "") + num(p.gbps[i], "%.4f");
  g += "]";
  return "{\"metric\": " + jsonString(p.metric) + ", \"value\": " + num(p.value, "%.4f") +
         ", \"unit\": \"GB/s\", \"baseline\": null, \"ratio\": null, \"direction\": \"" + (p.write ? "write" : "read") +
         "\", \"threads\": " + std::to_string(p.threads) + ", \"io_bytes\": " + std::to_string(p.io) +
         ", \"bytes\": " + std::to_string(p.bytes) + ", \"samples\": " + std::to_string(samples) +
         ", \"samples_gbps\": " + g + ", \"spread_pct\": " + num(p.spreadPct, "%.2f") +
         ", \"cpu_s_per_gb\": " + num(p.cpuPerGb, "%.5f") + extra + "}";
}

std::string isoNow() {
  char buf[32];
  std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

double argNumber(int& i, int argc, char** argv) {
  if (i + 1 >= argc) die(std::string("expected a value after ") + argv[i]);
  char* end = nullptr;
  double v = std::strtod(argv[++i], &end);
  if (end == argv[i] || *end != '\0') die(std::string("expected a number for ") + argv[i - 1] + ", got " + argv[i]);
  return v;
}

// A whole, non-negative number of bytes (or threads) after an option.
uint64_t argCount(int& i, int argc, char** argv) {
  const double v = argNumber(i, argc, argv);
  if (!(v >= 0 && v <= 9007199254740992.0) || v != static_cast<double>(static_cast<uint64_t>(v))) {
    die(std::string("expected a whole number >= 0 for ") + argv[i - 1] + ", got " + argv[i]);
  }
  return static_cast<uint64_t>(v);
}

// ---------------------------------------------------------------- single pass

// --pass: one timed sample over [0, bytes) of one file with the work queue,
// the O_DIRECT fallback and the cache handling of the figures above
// (coldSample), printed as one JSON line. bench/nvme.ts runs it between its
// own transfers of the same file, so that kvflow and raw IO are measured in
// pairs close in time (the disk's throughput drifts over minutes).
int runPass(const std::string& mode, const std::string& path, int threads, uint64_t io, uint64_t bytes,
            bool bytesGiven) {
  const bool write = mode == "write";
  if (!write && mode != "read") die("--pass: expected read or write, got " + mode);
  if (path.empty()) die("--pass needs --file PATH");
  if (threads < 1 || threads > 1024) die("--threads: expected 1 to 1024, got " + std::to_string(threads));
  if (io == 0 || io % kAlign != 0 || io > GiB) {
    die("--io-bytes: expected a multiple of 4096 up to 1 GiB, got " + std::to_string(io));
  }
  uint64_t size = 0;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) die(path + ": not a regular file");
    size = static_cast<uint64_t>(st.st_size);
  } else if (errno != ENOENT || !write) {
    die("stat " + path + ": " + errnoText(errno));
  }
  if (!bytesGiven) bytes = size;
  if (bytes == 0) die(write ? path + " is empty or missing: give --bytes" : path + " is empty");
  if (bytes % kAlign != 0) die("--bytes: expected a multiple of 4096 (O_DIRECT), got " + std::to_string(bytes));
  if (!write && bytes > size) {
    die("--bytes: " + path + " holds only " + std::to_string(size) + " bytes, " + std::to_string(bytes) + " asked");
  }
  File f = openFile(path);  // creates a missing file (write only: a missing one was refused above for reads)
  if (write && bytes > size) {
    struct statvfs vfs {};
    if (::fstatvfs(f.fd, &vfs) != 0) die("fstatvfs " + path + ": " + errnoText(errno));
    const uint64_t freeBytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    if (freeBytes < bytes - size + GiB / 4) {
      die("not enough space for " + path + ": " + std::to_string(freeBytes) + " bytes free, " +
          std::to_string(bytes - size) + " more needed");
    }
  }
  Buffers bufs(threads, static_cast<size_t>(io));
  const Sample r = coldSample(f, write, 0, bytes, threads, static_cast<size_t>(io), bufs);
  ::close(f.fd);
  const double gb = static_cast<double>(bytes) / 1e9;
  const std::string dropped = write ? "null" : g_drop.failures == 0 ? "true" : "false";
  std::printf(
      "{\"pass\": \"%s\", \"gbps\": %s, \"seconds\": %s, \"cpu_s_per_gb\": %s, \"direct\": %s, \"bytes\": %llu, "
      "\"threads\": %d, \"io_bytes\": %llu, \"cache_dropped\": %s}\n",
      mode.c_str(), num(gb / r.seconds, "%.4f").c_str(), num(r.seconds, "%.6f").c_str(),
      num(r.cpu / gb, "%.5f").c_str(), f.direct ? "true" : "false", static_cast<unsigned long long>(bytes), threads,
      static_cast<unsigned long long>(io), dropped.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, keep = false;
  std::string dir = "bench-out/nvme-data";
  double gib = 4, sweepGib = 1;
  int samples = 0;
  // --pass and its options; the others belong to the full run. Neither takes the other's.
  std::string passMode, passFile, sweepOption, passOption;
  int passThreads = 0;
  uint64_t passIo = 0, passBytes = 0;
  bool passBytesGiven = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--keep") keep = true;
    else if (a == "--dir") {
      if (i + 1 >= argc) die("expected a folder after --dir");
      dir = argv[++i];
    } else if (a == "--gib") gib = argNumber(i, argc, argv);
    else if (a == "--sweep-gib") sweepGib = argNumber(i, argc, argv);
    else if (a == "--samples") samples = static_cast<int>(argNumber(i, argc, argv));
    else if (a == "--pass") {
      if (i + 1 >= argc) die("expected read or write after --pass");
      passMode = argv[++i];
    } else if (a == "--file") {
      if (i + 1 >= argc) die("expected a path after --file");
      passFile = argv[++i];
    } else if (a == "--threads") passThreads = static_cast<int>(std::min<uint64_t>(argCount(i, argc, argv), INT_MAX));
    else if (a == "--io-bytes") passIo = argCount(i, argc, argv);
    else if (a == "--bytes") {
      passBytes = argCount(i, argc, argv);
      passBytesGiven = true;
    } else {
      die("unknown argument " + a + " (--dir, --gib, --sweep-gib, --samples, --keep, --quick;" +
          " or --pass, --file, --threads, --io-bytes, --bytes)");
    }
    if (a == "--pass" || a == "--file" || a == "--threads" || a == "--io-bytes" || a == "--bytes") {
      passOption = a;
    } else {
      sweepOption = a;
    }
  }
  if (!passMode.empty()) {
    if (!sweepOption.empty()) die(sweepOption + " does not go with --pass");
    return runPass(passMode, passFile, passThreads, passIo, passBytes, passBytesGiven);
  }
  if (!passOption.empty()) die(passOption + " needs --pass read|write");
  // Sizes in whole MiB, so every IO stays 4 KiB aligned.
  uint64_t fileBytes = quick ? 64 * MiB : static_cast<uint64_t>(gib * 1024) * MiB;
  uint64_t sweepBytes = quick ? 16 * MiB : static_cast<uint64_t>(sweepGib * 1024) * MiB;
  if (samples <= 0) samples = quick ? 2 : 3;
  if (!quick && (gib < 0.0625 || gib > 64)) {
    die("--gib: expected a size from 1/16 to 64 GiB (1-8 intended), got " + num(gib));
  }
  if (sweepBytes == 0 || sweepBytes > fileBytes) die("--sweep-gib: expected a size up to the file's");
  const uint64_t regions = fileBytes / sweepBytes;

  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    // Parents too (bench-out/ may not exist yet).
    std::string sofar;
    std::stringstream ss(dir);
    std::string part;
    if (!dir.empty() && dir[0] == '/') sofar = "/";
    while (std::getline(ss, part, '/')) {
      if (part.empty()) continue;
      sofar += part + "/";
      if (::mkdir(sofar.c_str(), 0700) != 0 && errno != EEXIST) die("mkdir " + sofar + ": " + errnoText(errno));
    }
  }
  char real[PATH_MAX];
  if (!::realpath(dir.c_str(), real)) die("realpath " + dir + ": " + errnoText(errno));
  const std::string dirReal = real;
  const std::string path = dirReal + "/raw_io.bin";
  struct statvfs vfs {};
  if (::statvfs(dirReal.c_str(), &vfs) != 0) die("statvfs " + dirReal + ": " + errnoText(errno));
  const uint64_t freeBytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  if (freeBytes < fileBytes + GiB / 4) {
    die("not enough space in " + dirReal + ": " + std::to_string(freeBytes) + " bytes free, " +
        std::to_string(fileBytes) + " needed");
  }
  const Mount mnt = mountOf(dirReal);

  File f = openFile(path);
  std::fprintf(stderr, "raw_io: %s, %s, %s on %s (%s)\n", path.c_str(), label(fileBytes).c_str(),
               f.direct ? "O_DIRECT" : "buffered", mnt.source.c_str(), mnt.type.c_str());
  const double createGbps = createFile(f, fileBytes);
  verifySpots(f, fileBytes);
  std::fprintf(stderr, "raw_io: wrote the file at %.3f GB/s (8 x 4 MiB, fsync)\n", createGbps);

  int maxThreads = 0;
  for (int t : kThreads) maxThreads = std::max(maxThreads, t);
  Buffers bufs(maxThreads, kIoSizes[sizeof kIoSizes / sizeof kIoSizes[0] - 1]);

  // Sweep: every point once, sweepBytes each, rotating over the file's
  // regions; all reads first, then all writes (writes change the blocks' stamps only).
  std::vector<Point> sweep;
  int index = 0;
  for (int dirn = 0; dirn < 2; ++dirn) {
    const bool write = dirn == 1;
    for (int t : kThreads) {
      for (size_t io : kIoSizes) {
        const uint64_t begin = (static_cast<uint64_t>(index++) % regions) * sweepBytes;
        std::string metric = std::string(write ? "raw_write_t" : "raw_read_t") + std::to_string(t) + "_" + label(io);
        sweep.push_back(measurePoint(f, write, begin, sweepBytes, t, io, 1, bufs, metric));
      }
    }
  }
  auto bestOf = [&](bool write) {
    const Point* best = nullptr;
    for (const auto& p : sweep) {
      if (p.write == write && (!best || p.value > best->value)) best = &p;
    }
    return *best;
  };
  const Point bestRead = bestOf(false), bestWrite = bestOf(true);
  const Point headRead =
      measurePoint(f, false, 0, fileBytes, bestRead.threads, bestRead.io, samples, bufs, "raw_read_best");
  const Point headWrite =
      measurePoint(f, true, 0, fileBytes, bestWrite.threads, bestWrite.io, samples, bufs, "raw_write_best");

  ::close(f.fd);
  if (!keep) ::unlink(path.c_str());

  std::string results;
  for (const auto& p : sweep) results += (results.empty() ? "\n    " : ",\n    ") + pointJson(p, 1);
  const std::string pick = ", \"picked_from\": \"the fastest sweep point\"";
  results += ",\n    " + pointJson(headRead, samples, pick.c_str());
  results += ",\n    " + pointJson(headWrite, samples, pick.c_str());

  std::string threadsJson = "[", ioJson = "[";
  for (int t : kThreads) threadsJson += (threadsJson.size() > 1 ? "," : "") + std::to_string(t);
  for (size_t io : kIoSizes) ioJson += (ioJson.size() > 1 ? "," : "") + std::to_string(io);
  threadsJson += "]";
  ioJson += "]";
  const char* commit = std::getenv("KVFLOW_COMMIT");
  std::string drop = "{\"attempts\": " + std::to_string(g_drop.attempts) +
                     ", \"failures\": " + std::to_string(g_drop.failures) +
                     ", \"error\": " + (g_drop.error.empty() ? std::string("null") : jsonString(g_drop.error)) + "}";

  std::printf(
      "{\n  \"bench\": \"raw_io\",\n  \"device\": %s,\n  \"date\": \"%s\",\n  \"commit\": %s,\n  \"config\": {\n"
      "    \"dir\": %s,\n    \"file\": %s,\n    \"file_bytes\": %llu,\n    \"sweep_bytes\": %llu,\n"
      "    \"quick\": %s,\n    \"samples\": %d,\n    \"sweep_samples\": 1,\n"
      "    \"direct\": %s,\n    \"direct_reason\": %s,\n"
      "    \"mount\": {\"source\": %s, \"point\": %s, \"type\": %s},\n    \"free_bytes\": %llu,\n"
      "    \"threads\": %s,\n    \"io_sizes\": %s,\n    \"create_gbps\": %.4f,\n"
      "    \"cache_drop\": %s,\n"
      "    \"method\": %s,\n    \"timing\": %s\n  },\n  \"results\": [%s\n  ]\n}\n",
      jsonString(mnt.source + " (" + mnt.type + ")").c_str(), isoNow().c_str(),
      jsonString(commit && *commit ? commit : "unknown").c_str(), jsonString(dir).c_str(), jsonString(path).c_str(),
      static_cast<unsigned long long>(fileBytes), static_cast<unsigned long long>(sweepBytes), quick ? "true" : "false",
      samples, f.direct ? "true" : "false", jsonString(f.directReason).c_str(), jsonString(mnt.source).c_str(),
      jsonString(mnt.point).c_str(), jsonString(mnt.type).c_str(), static_cast<unsigned long long>(freeBytes),
      threadsJson.c_str(), ioJson.c_str(), createGbps, drop.c_str(),
      jsonString("C++ pread/pwrite, T threads each taking the next S bytes of the range from a shared counter; "
                 "4 KiB aligned buffers per thread; the file is written once with a position-keyed splitmix64 "
                 "pattern (3 spots read back and checked), writes overwrite it in place with random blocks "
                 "stamped with their offset; sweep: each T x S once over sweep_bytes, point i at region "
                 "i % (file_bytes / sweep_bytes), all reads then all writes; best: the fastest sweep point "
                 "again over the whole file, median of samples")
          .c_str(),
      jsonString("steady_clock from releasing the parked threads to the last join (writes: + fsync); reads after "
                 "sync + drop_caches, writes after sync; cpu_s_per_gb: getrusage(RUSAGE_SELF) user + system "
                 "over the same region per 1e9 bytes")
          .c_str(),
      results.c_str());
  return 0;
}
