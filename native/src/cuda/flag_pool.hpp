// The flags of wait-value gates: 32-bit words of pinned, device-mapped host
// memory. A stream waits until its flag is at least 1 (cuStreamWaitValue32
// GEQ); opening the gate stores 1. A flag goes back to its pool, reset to 0,
// only when its last reference is gone: the stream's retained list lets go
// once an event recorded after the wait completed (the GPU passed it), and the
// gate's callback once it ran. So a flag is never reused while the GPU may
// still read it or a late open could still set it.
#pragma once

#include <cuda.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace kvflow::cuda {

class FlagPool;

class Flag {
 public:
  Flag(std::shared_ptr<FlagPool> pool, std::uint32_t* host, CUdeviceptr device) noexcept;
  ~Flag();
  Flag(const Flag&) = delete;
  Flag& operator=(const Flag&) = delete;

  /// Any thread: stores 1 with release order, so what the opener wrote
  /// before (a bounce buffer a read filled) is visible before the GPU moves on.
  void set() noexcept;
  /// The address a stream waits on.
  [[nodiscard]] CUdeviceptr device() const noexcept { return device_; }

 private:
  std::shared_ptr<FlagPool> pool_;
  std::uint32_t* host_;
  CUdeviceptr device_;
};

using FlagPtr = std::shared_ptr<Flag>;

/// Flags of one device, in pages of pinned mapped memory that live as long
/// as the pool (every Flag holds it).
class FlagPool : public std::enable_shared_from_this<FlagPool> {
 public:
  explicit FlagPool(int ordinal) : ordinal_(ordinal) {}
  ~FlagPool();
  FlagPool(const FlagPool&) = delete;
  FlagPool& operator=(const FlagPool&) = delete;

  /// A flag reading 0. Throws ERR_CUDA or ERR_OUT_OF_MEMORY when a page
  /// cannot be pinned and mapped.
  [[nodiscard]] FlagPtr acquire();

 private:
  friend class Flag;
  struct Slot {
    std::uint32_t* host;
    CUdeviceptr device;
  };
  // Caller holds the mutex: pins and maps one more page.
  void grow_locked();
  void release(Slot slot) noexcept;

  const int ordinal_;
  std::mutex mutex_;
  std::vector<void*> pages_;
  std::vector<Slot> free_;  // capacity for every slot, so release() never allocates
};

}  // namespace kvflow::cuda
