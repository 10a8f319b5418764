#include "kvflow/device.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "kvflow/error.hpp"

namespace kvflow {

namespace {
constexpr std::size_t kHostAlign = 4096;
}

Device::Device(std::uint64_t max_pinned_bytes, PinnedPool::RawAlloc alloc, PinnedPool::RawFree free)
    : pinned_(std::move(alloc), std::move(free), max_pinned_bytes, this) {}

BufferPtr Device::alloc_host(std::size_t bytes) {
  KVFLOW_CHECK(bytes > 0, kInvalidArg, "expected a positive size for a host buffer, got 0");
  KVFLOW_CHECK(bytes <= (std::size_t{1} << 52), kOutOfMemory,
               "host allocation of " + std::to_string(bytes) + " bytes is larger than any host");
  void* ptr = host_pages_alloc(bytes);
  KVFLOW_CHECK(ptr != nullptr, kOutOfMemory, "host allocation of " + std::to_string(bytes) + " bytes failed");
  return std::make_shared<Buffer>(MemoryKind::kHost, this, ptr, bytes, [](void* p, std::size_t n) { host_pages_free(p, n); });
}

namespace {
constexpr std::size_t kMapAtLeast = std::size_t{256} << 10;

std::size_t page_rounded(std::size_t bytes) noexcept {
  return (bytes + kHostAlign - 1) / kHostAlign * kHostAlign;
}
}  // namespace

void* host_pages_alloc(std::size_t bytes) noexcept {
  const std::size_t rounded = page_rounded(bytes);
  if (rounded < kMapAtLeast) return std::aligned_alloc(kHostAlign, rounded);
  void* p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

void host_pages_free(void* ptr, std::size_t bytes) noexcept {
  if (ptr == nullptr) return;
  const std::size_t rounded = page_rounded(bytes);
  if (rounded < kMapAtLeast) std::free(ptr);
  else (void)munmap(ptr, rounded);
}

int host_cores() noexcept {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

std::uint64_t host_memory_bytes() noexcept {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return 0;
  return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
}

}  // namespace kvflow
