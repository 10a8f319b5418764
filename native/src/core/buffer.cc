#include "kvflow/buffer.hpp"

#include <utility>

namespace kvflow {

const char* memory_kind_name(MemoryKind kind) noexcept {
  switch (kind) {
    case MemoryKind::kDevice: return "device";
    case MemoryKind::kPinned: return "pinned";
    case MemoryKind::kHost: return "host";
  }
  return "unknown";
}

Buffer::Buffer(MemoryKind kind, const void* owner, void* ptr, std::size_t bytes, Free free)
    : kind_(kind), owner_(owner), ptr_(ptr), bytes_(bytes), free_(std::move(free)) {}

Buffer::~Buffer() {
  // Destructors run on completion threads too: nothing here may throw.
  try {
    if (free_ && ptr_ != nullptr) free_(ptr_, bytes_);
    if (on_released_) on_released_();
  } catch (...) {
  }
}

}  // namespace kvflow
