#if __has_include(<linux/io_uring.h>)
#include "io/uring_ring.hpp"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include "io/io_error.hpp"
#include "kvflow/error.hpp"

// The io_uring system call numbers are the same on every architecture but alpha.
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

namespace kvflow::io {

namespace {

int sys_setup(unsigned entries, io_uring_params* params) {
  return static_cast<int>(::syscall(__NR_io_uring_setup, entries, params));
}

int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags) {
  return static_cast<int>(::syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, nullptr, 0));
}

int sys_register(int fd, unsigned opcode, void* arg, unsigned nr) {
  return static_cast<int>(::syscall(__NR_io_uring_register, fd, opcode, arg, nr));
}

std::string read_sysctl(const char* path) {
  std::ifstream in(path);
  std::string value;
  if (!(in >> value)) return {};
  return value;
}

/// Why io_uring_setup failed, with what to change.
std::string setup_reason(int err) {
  const std::string call = "io_uring_setup failed with " + errno_name(err);
  if (err == ENOSYS) {
    return "io_uring is unavailable: " + call +
           " (a kernel older than 5.1 or built without CONFIG_IO_URING, or a seccomp filter that hides it)";
  }
  if (err == EPERM) {
    const std::string disabled = read_sysctl("/proc/sys/kernel/io_uring_disabled");
    if (disabled == "2") return "io_uring is forbidden: " + call + " (kernel.io_uring_disabled=2)";
    if (disabled == "1") {
      return "io_uring is forbidden: " + call +
             " (kernel.io_uring_disabled=1 and this process is not in kernel.io_uring_group)";
    }
    return "io_uring is forbidden: " + call + " (a seccomp filter, e.g. a container runtime's default profile)";
  }
  if (err == ENOMEM) {
    return "io_uring is unavailable: " + call + " (before kernel 5.12 rings count against RLIMIT_MEMLOCK: raise it)";
  }
  return "io_uring is unavailable: " + call + ": " + errno_text(err);
}

struct FreeDeleter {
  void operator()(void* p) const noexcept { std::free(p); }
};

/// The operations the engine submits, checked through IORING_REGISTER_PROBE (kernel 5.6).
void check_ops(int fd) {
  constexpr unsigned kOps = 256;
  const std::size_t bytes = sizeof(io_uring_probe) + kOps * sizeof(io_uring_probe_op);
  std::unique_ptr<void, FreeDeleter> mem(std::calloc(1, bytes));
  KVFLOW_CHECK(mem != nullptr, kOutOfMemory, "out of host memory probing io_uring");
  auto* probe = static_cast<io_uring_probe*>(mem.get());
  if (sys_register(fd, IORING_REGISTER_PROBE, probe, kOps) < 0) {
    KVFLOW_FAIL(kUnsupported, "io_uring is too old here: IORING_REGISTER_PROBE failed with " + errno_name(errno) +
                                  " (kvflow needs kernel 5.6 or newer for IORING_OP_READ and IORING_OP_WRITE)");
  }
  const struct {
    unsigned op;
    const char* name;
  } needed[] = {
      {IORING_OP_READ, "IORING_OP_READ"},
      {IORING_OP_WRITE, "IORING_OP_WRITE"},
      {IORING_OP_POLL_ADD, "IORING_OP_POLL_ADD"},
  };
  for (const auto& n : needed) {
    const bool ok = n.op <= probe->last_op && (probe->ops[n.op].flags & IO_URING_OP_SUPPORTED) != 0;
    KVFLOW_CHECK(ok, kUnsupported, std::string("io_uring is too old here: the kernel lacks ") + n.name);
  }
}

template <class T>
T* at(void* base, unsigned offset) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}

}  // namespace

Ring::Ring(unsigned entries) {
  io_uring_params params{};
  fd_ = sys_setup(entries, &params);
  if (fd_ < 0) KVFLOW_FAIL(kUnsupported, setup_reason(errno));
  try {
    check_ops(fd_);
    sq_map_len_ = params.sq_off.array + params.sq_entries * sizeof(unsigned);
    cq_map_len_ = params.cq_off.cqes + params.cq_entries * sizeof(io_uring_cqe);
    const bool single = (params.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single) sq_map_len_ = cq_map_len_ = std::max(sq_map_len_, cq_map_len_);
    sq_map_ = ::mmap(nullptr, sq_map_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQ_RING);
    if (sq_map_ == MAP_FAILED) {
      sq_map_ = nullptr;
      KVFLOW_FAIL(kUnsupported, "io_uring is unavailable: mapping the submission ring failed: " + errno_text(errno));
    }
    if (single) {
      cq_map_ = sq_map_;
    } else {
      cq_map_ = ::mmap(nullptr, cq_map_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_CQ_RING);
      if (cq_map_ == MAP_FAILED) {
        cq_map_ = nullptr;
        KVFLOW_FAIL(kUnsupported, "io_uring is unavailable: mapping the completion ring failed: " + errno_text(errno));
      }
    }
    sqes_len_ = params.sq_entries * sizeof(io_uring_sqe);
    void* sqes = ::mmap(nullptr, sqes_len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, IORING_OFF_SQES);
    if (sqes == MAP_FAILED) {
      KVFLOW_FAIL(kUnsupported, "io_uring is unavailable: mapping the submission entries failed: " + errno_text(errno));
    }
    sqes_ = static_cast<io_uring_sqe*>(sqes);
  } catch (...) {
    unmap();
    ::close(fd_);
    throw;
  }
  sq_head_ = at<unsigned>(sq_map_, params.sq_off.head);
  sq_tail_ = at<unsigned>(sq_map_, params.sq_off.tail);
  sq_mask_ = at<unsigned>(sq_map_, params.sq_off.ring_mask);
  sq_array_ = at<unsigned>(sq_map_, params.sq_off.array);
  sq_entries_ = params.sq_entries;
  local_tail_ = *sq_tail_;
  cq_head_ = at<unsigned>(cq_map_, params.cq_off.head);
  cq_tail_ = at<unsigned>(cq_map_, params.cq_off.tail);
  cq_mask_ = at<unsigned>(cq_map_, params.cq_off.ring_mask);
  cqes_ = at<io_uring_cqe>(cq_map_, params.cq_off.cqes);
}

Ring::~Ring() {
  // Closing the ring makes the kernel cancel or finish what is still in it.
  unmap();
  if (fd_ >= 0) ::close(fd_);
}

void Ring::unmap() noexcept {
  if (sqes_ != nullptr) ::munmap(sqes_, sqes_len_);
  if (cq_map_ != nullptr && cq_map_ != sq_map_) ::munmap(cq_map_, cq_map_len_);
  if (sq_map_ != nullptr) ::munmap(sq_map_, sq_map_len_);
  sqes_ = nullptr;
  cq_map_ = sq_map_ = nullptr;
}

io_uring_sqe* Ring::next_sqe() noexcept {
  const unsigned head = __atomic_load_n(sq_head_, __ATOMIC_ACQUIRE);
  if (local_tail_ - head >= sq_entries_) return nullptr;
  const unsigned index = local_tail_ & *sq_mask_;
  sq_array_[index] = index;
  ++local_tail_;
  io_uring_sqe* sqe = &sqes_[index];
  std::memset(sqe, 0, sizeof *sqe);
  return sqe;
}

int Ring::submit_and_wait(unsigned min_complete) noexcept {
  __atomic_store_n(sq_tail_, local_tail_, __ATOMIC_RELEASE);
  const unsigned to_submit = local_tail_ - __atomic_load_n(sq_head_, __ATOMIC_ACQUIRE);
  const int r = sys_enter(fd_, to_submit, min_complete, min_complete > 0 ? IORING_ENTER_GETEVENTS : 0);
  return r < 0 ? -errno : 0;
}

}  // namespace kvflow::io
#endif  // __has_include(<linux/io_uring.h>)
