// A region of memory that streams copy between: device memory, pinned host
// memory or pageable host memory. Operations in flight hold a BufferPtr, so the
// memory outlives every operation that uses it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

namespace kvflow {

enum class MemoryKind : int { kDevice = 0, kPinned = 1, kHost = 2 };

[[nodiscard]] const char* memory_kind_name(MemoryKind kind) noexcept;

class Buffer {
 public:
  /// Frees the memory; empty for wrapped memory that kvflow does not own.
  using Free = std::function<void(void* ptr, std::size_t bytes)>;

  Buffer(MemoryKind kind, const void* owner, void* ptr, std::size_t bytes, Free free);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  [[nodiscard]] MemoryKind kind() const noexcept { return kind_; }
  /// The Device that allocated or wrapped this buffer.
  [[nodiscard]] const void* owner() const noexcept { return owner_; }
  [[nodiscard]] void* ptr() const noexcept { return ptr_; }
  [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }
  [[nodiscard]] bool owned() const noexcept { return static_cast<bool>(free_); }

  /// A retired buffer accepts no new operations; its memory is released when
  /// the last operation holding it completes.
  void retire() noexcept { retired_.store(true, std::memory_order_release); }
  [[nodiscard]] bool retired() const noexcept { return retired_.load(std::memory_order_acquire); }

  /// Called (on whichever thread drops the last reference) after the memory was released.
  void set_on_released(std::function<void()> fn) { on_released_ = std::move(fn); }

 private:
  MemoryKind kind_;
  const void* owner_;
  void* ptr_;
  std::size_t bytes_;
  Free free_;
  std::function<void()> on_released_;
  std::atomic<bool> retired_{false};
};

using BufferPtr = std::shared_ptr<Buffer>;

}  // namespace kvflow
