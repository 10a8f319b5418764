// A minimal io_uring ring over the raw system calls (liburing is not on every
// host kvflow runs on): setup, the three mmaps, submission and completion
// queue access. One thread owns a ring; nothing here locks.
#pragma once

#include <linux/io_uring.h>

#include <cstddef>
#include <cstdint>

namespace kvflow::io {

class Ring {
 public:
  /// Sets up a ring of at least `entries` submission entries and checks the
  /// operations the engine needs. Throws kUnsupported with the reason when
  /// the kernel or a seccomp policy refuses.
  explicit Ring(unsigned entries);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  /// A zeroed entry to fill, or nullptr when the submission queue is full.
  [[nodiscard]] io_uring_sqe* next_sqe() noexcept;
  /// Hands the prepared entries to the kernel and waits for at least
  /// `min_complete` completions. Returns 0 or -errno.
  [[nodiscard]] int submit_and_wait(unsigned min_complete) noexcept;
  /// Calls fn(user_data, res) for each completion and frees their slots.
  template <class Fn>
  void reap(Fn&& fn) {
    unsigned head = *cq_head_;
    const unsigned tail = __atomic_load_n(cq_tail_, __ATOMIC_ACQUIRE);
    while (head != tail) {
      const io_uring_cqe& cqe = cqes_[head & *cq_mask_];
      fn(cqe.user_data, cqe.res);
      ++head;
    }
    __atomic_store_n(cq_head_, head, __ATOMIC_RELEASE);
  }

 private:
  int fd_ = -1;
  void* sq_map_ = nullptr;
  std::size_t sq_map_len_ = 0;
  void* cq_map_ = nullptr;  // == sq_map_ with IORING_FEAT_SINGLE_MMAP
  std::size_t cq_map_len_ = 0;
  io_uring_sqe* sqes_ = nullptr;
  std::size_t sqes_len_ = 0;
  unsigned* sq_head_ = nullptr;
  unsigned* sq_tail_ = nullptr;
  unsigned* sq_mask_ = nullptr;
  unsigned* sq_array_ = nullptr;
  unsigned sq_entries_ = 0;
  unsigned local_tail_ = 0;  // entries prepared, published at submit
  unsigned* cq_head_ = nullptr;
  unsigned* cq_tail_ = nullptr;
  unsigned* cq_mask_ = nullptr;
  io_uring_cqe* cqes_ = nullptr;

  void unmap() noexcept;
};

}  // namespace kvflow::io
