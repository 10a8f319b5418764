// CRC-32C three ways: the SSE4.2 crc32 instruction over three interleaved
// streams (x86-64 CPUs that have it, found at run time), the ARMv8 CRC
// instructions (aarch64 builds that target them), and slicing-by-8 tables
// everywhere else. All tables are computed at compile time.
#include "kvflow/crc32c.hpp"

#include <array>
#include <bit>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <nmmintrin.h>
#define KVFLOW_CRC32C_SSE42 1
#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>
#define KVFLOW_CRC32C_ARMV8 1
#endif

namespace kvflow {

namespace {

constexpr std::uint32_t kPoly = 0x82F63B78u;  // 0x1EDC6F41, bit-reversed

using Slices = std::array<std::array<std::uint32_t, 256>, 8>;

constexpr Slices make_slices() {
  Slices t{};
  for (std::uint32_t b = 0; b < 256; ++b) {
    std::uint32_t c = b;
    for (int k = 0; k < 8; ++k) c = (c & 1u) != 0 ? (c >> 1) ^ kPoly : c >> 1;
    t[0][b] = c;
  }
  for (std::size_t s = 1; s < 8; ++s) {
    for (std::uint32_t b = 0; b < 256; ++b) t[s][b] = (t[s - 1][b] >> 8) ^ t[0][t[s - 1][b] & 0xffu];
  }
  return t;
}

constexpr Slices kSlices = make_slices();

inline std::uint64_t load_le64(const unsigned char* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}

std::uint32_t crc32c_table(std::uint32_t seed, const unsigned char* p, std::size_t n) noexcept {
  std::uint32_t crc = ~seed;
  while (n > 0 && (reinterpret_cast<std::uintptr_t>(p) & 7u) != 0) {
    crc = (crc >> 8) ^ kSlices[0][(crc ^ *p++) & 0xffu];
    --n;
  }
  const auto& t = kSlices;
  while (n >= 8) {
    const std::uint64_t w = load_le64(p) ^ crc;
    crc = t[7][w & 0xffu] ^ t[6][(w >> 8) & 0xffu] ^ t[5][(w >> 16) & 0xffu] ^ t[4][(w >> 24) & 0xffu] ^
          t[3][(w >> 32) & 0xffu] ^ t[2][(w >> 40) & 0xffu] ^ t[1][(w >> 48) & 0xffu] ^ t[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    crc = (crc >> 8) ^ kSlices[0][(crc ^ *p++) & 0xffu];
    --n;
  }
  return ~crc;
}

#if defined(KVFLOW_CRC32C_SSE42)

// Three streams hide the crc32 instruction's latency (3 cycles, one issued
// per cycle). Their results are joined by "appending zeros" to the earlier
// stream's CRC, a linear map applied with four byte tables per block length.
using Matrix = std::array<std::uint32_t, 32>;  // column n: the image of bit n
using Shift = std::array<std::array<std::uint32_t, 256>, 4>;

constexpr std::uint32_t gf2_times(const Matrix& m, std::uint32_t v) {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; v != 0; ++i, v >>= 1) {
    if ((v & 1u) != 0) sum ^= m[i];
  }
  return sum;
}

constexpr Matrix gf2_square(const Matrix& m) {
  Matrix out{};
  for (std::size_t i = 0; i < 32; ++i) out[i] = gf2_times(m, m[i]);
  return out;
}

/// The operator that appends `bytes` zero bytes (a power of two) to a CRC register.
constexpr Matrix zeros_operator(std::size_t bytes) {
  Matrix odd{};  // one zero bit
  odd[0] = kPoly;
  for (std::size_t i = 1; i < 32; ++i) odd[i] = std::uint32_t{1} << (i - 1);
  Matrix even = gf2_square(odd);  // two bits
  odd = gf2_square(even);         // four bits
  for (;;) {
    even = gf2_square(odd);  // 8, 32, 128... bits
    bytes >>= 1;
    if (bytes == 0) return even;
    odd = gf2_square(even);
    bytes >>= 1;
    if (bytes == 0) return odd;
  }
}

constexpr Shift make_shift(std::size_t bytes) {
  const Matrix op = zeros_operator(bytes);
  Shift s{};
  for (std::uint32_t b = 0; b < 256; ++b) {
    for (std::size_t k = 0; k < 4; ++k) s[k][b] = gf2_times(op, b << (8 * k));
  }
  return s;
}

constexpr std::size_t kLong = 8192;
constexpr std::size_t kShort = 256;
constexpr Shift kLongShift = make_shift(kLong);
constexpr Shift kShortShift = make_shift(kShort);

inline std::uint64_t shift(const Shift& s, std::uint64_t crc) noexcept {
  return s[0][crc & 0xffu] ^ s[1][(crc >> 8) & 0xffu] ^ s[2][(crc >> 16) & 0xffu] ^ s[3][(crc >> 24) & 0xffu];
}

/// Whole runs of three `block`-byte blocks, each block its own stream.
__attribute__((target("sse4.2"))) inline void crc_triples(std::uint64_t& crc0, const unsigned char*& p,
                                                          std::size_t& n, std::size_t block,
                                                          const Shift& join) noexcept {
  while (n >= 3 * block) {
    std::uint64_t crc1 = 0;
    std::uint64_t crc2 = 0;
    const unsigned char* const end = p + block;
    do {
      crc0 = _mm_crc32_u64(crc0, load_le64(p));
      crc1 = _mm_crc32_u64(crc1, load_le64(p + block));
      crc2 = _mm_crc32_u64(crc2, load_le64(p + 2 * block));
      p += 8;
    } while (p < end);
    crc0 = shift(join, crc0) ^ crc1;
    crc0 = shift(join, crc0) ^ crc2;
    p += 2 * block;
    n -= 3 * block;
  }
}

__attribute__((target("sse4.2"))) std::uint32_t crc32c_sse42(std::uint32_t seed, const unsigned char* p,
                                                             std::size_t n) noexcept {
  std::uint64_t crc0 = ~seed;
  while (n > 0 && (reinterpret_cast<std::uintptr_t>(p) & 7u) != 0) {
    crc0 = _mm_crc32_u8(static_cast<std::uint32_t>(crc0), *p++);
    --n;
  }
  crc_triples(crc0, p, n, kLong, kLongShift);
  crc_triples(crc0, p, n, kShort, kShortShift);
  while (n >= 8) {
    crc0 = _mm_crc32_u64(crc0, load_le64(p));
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    crc0 = _mm_crc32_u8(static_cast<std::uint32_t>(crc0), *p++);
    --n;
  }
  return ~static_cast<std::uint32_t>(crc0);
}

bool cpu_has_sse42() noexcept {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0) return false;
  return (c & bit_SSE4_2) != 0;
}

#elif defined(KVFLOW_CRC32C_ARMV8)

std::uint32_t crc32c_armv8(std::uint32_t seed, const unsigned char* p, std::size_t n) noexcept {
  std::uint32_t crc = ~seed;
  while (n > 0 && (reinterpret_cast<std::uintptr_t>(p) & 7u) != 0) {
    crc = __crc32cb(crc, *p++);
    --n;
  }
  while (n >= 8) {
    crc = __crc32cd(crc, load_le64(p));
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    crc = __crc32cb(crc, *p++);
    --n;
  }
  return ~crc;
}

#endif

enum class Impl { kTable, kSse42, kArmv8 };

Impl pick() noexcept {
#if defined(KVFLOW_CRC32C_SSE42)
  return cpu_has_sse42() ? Impl::kSse42 : Impl::kTable;
#elif defined(KVFLOW_CRC32C_ARMV8)
  return Impl::kArmv8;
#else
  return Impl::kTable;
#endif
}

Impl implementation() noexcept {
  static const Impl impl = pick();  // immutable once set: the CPU does not change
  return impl;
}

}  // namespace

std::uint32_t crc32c(std::uint32_t seed, const void* data, std::size_t n) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  switch (implementation()) {
#if defined(KVFLOW_CRC32C_SSE42)
    case Impl::kSse42: return crc32c_sse42(seed, p, n);
#elif defined(KVFLOW_CRC32C_ARMV8)
    case Impl::kArmv8: return crc32c_armv8(seed, p, n);
#endif
    default: return crc32c_table(seed, p, n);
  }
}

const char* crc32c_implementation() noexcept {
  switch (implementation()) {
    case Impl::kSse42: return "sse4.2";
    case Impl::kArmv8: return "armv8-crc";
    case Impl::kTable: return "table";
  }
  return "table";
}

}  // namespace kvflow
