// CRC-32C (Castagnoli), the checksum of the KV store's layer extents: computed
// and verified on IO threads, never on the JS thread.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvflow {

/// CRC-32C of `n` bytes at `data`, continuing from `seed` (0 to start):
/// crc32c(0, "123456789", 9) == 0xE3069283, and
/// crc32c(crc32c(0, a), b) == crc32c(0, a followed by b). Zero bytes return `seed`.
/// Uses the CPU's CRC instructions where it has them (SSE4.2 on x86-64, found
/// at run time), else tables. Thread-safe; never throws.
[[nodiscard]] std::uint32_t crc32c(std::uint32_t seed, const void* data, std::size_t n) noexcept;

/// Which implementation crc32c() uses on this CPU: "sse4.2", "armv8-crc" or "table".
[[nodiscard]] const char* crc32c_implementation() noexcept;

}  // namespace kvflow
