// How a file transfer is cut into the tasks that threads (or ring entries)
// move: pure arithmetic, no IO.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvflow::io {

/// One task's share of a transfer.
struct TaskSpan {
  std::uint64_t offset = 0;  // in the file
  std::size_t len = 0;
  bool direct = false;  // through the O_DIRECT fd
};

/// Splits `bytes` bytes at file offset `offset`, whose memory starts at
/// address `mem`, into spans of at most `task_size` bytes (a multiple of
/// `align`, as engines round it), in file order.
/// With `direct` (the file has an O_DIRECT fd), the `align`-aligned middle
/// goes direct when its memory is aligned like the file offset; the unaligned
/// head and tail (or all of it) go through the buffered fd, so partial blocks
/// never need a read-modify-write.
[[nodiscard]] std::vector<TaskSpan> split_tasks(std::uint64_t offset, std::size_t bytes, std::uintptr_t mem,
                                                std::size_t task_size, std::size_t align, bool direct);

}  // namespace kvflow::io
