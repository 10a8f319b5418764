#include "kvflow/device.hpp"

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
  const std::size_t rounded = (bytes + kHostAlign - 1) / kHostAlign * kHostAlign;
  void* ptr = std::aligned_alloc(kHostAlign, rounded);
  KVFLOW_CHECK(ptr != nullptr, kOutOfMemory, "host allocation of " + std::to_string(bytes) + " bytes failed");
  return std::make_shared<Buffer>(MemoryKind::kHost, this, ptr, bytes, [](void* p, std::size_t) { std::free(p); });
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
