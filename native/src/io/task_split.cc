// See task_split.hpp.
#include "io/task_split.hpp"

#include <algorithm>

namespace kvflow::io {

std::vector<TaskSpan> split_tasks(std::uint64_t offset, std::size_t bytes, std::uintptr_t mem, std::size_t task_size,
                                  std::size_t align, bool direct) {
  const std::uint64_t begin = offset;
  const std::uint64_t end = begin + bytes;
  std::vector<TaskSpan> spans;
  spans.reserve(bytes / task_size + 3);
  auto add = [&](std::uint64_t from, std::uint64_t to, bool through_direct) {
    for (std::uint64_t at = from; at < to; at += task_size) {
      spans.push_back(TaskSpan{at, static_cast<std::size_t>(std::min<std::uint64_t>(task_size, to - at)), through_direct});
    }
  };
  if (direct) {
    const std::uint64_t lo = (begin + align - 1) / align * align;
    const std::uint64_t hi = end / align * align;
    const std::uintptr_t middle = mem + static_cast<std::uintptr_t>(lo - begin);
    if (lo < hi && middle % align == 0) {
      add(begin, lo, false);
      add(lo, hi, true);
      add(hi, end, false);
      return spans;
    }
  }
  add(begin, end, false);
  return spans;
}

}  // namespace kvflow::io
