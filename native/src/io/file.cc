// Files of the NVMe tier: opened 0600 with O_CLOEXEC, O_DIRECT where a probe in
// the file's directory proves it works, preallocation with fallbacks.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "io/io_error.hpp"
#include "io/cufile.hpp"
#include "kvflow/io.hpp"

namespace kvflow::io {

namespace {

constexpr mode_t kFileMode = 0600;

int open_retry(const char* path, int flags, mode_t mode) {
  int fd;
  do {
    fd = ::open(path, flags, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

void close_quietly(int fd) noexcept {
  if (fd >= 0) ::close(fd);
}

std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string file_type_name(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "something other than a regular file";
}

struct FreeDeleter {
  void operator()(void* p) const noexcept { std::free(p); }
};

/// A probe file name nobody else uses: pid, thread and time, created with O_EXCL.
std::string probe_name(const std::string& dir, int attempt) {
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  const auto tid = std::hash<std::thread::id>{}(std::this_thread::get_id());
  return dir + "/.kvflow-direct-probe-" + std::to_string(::getpid()) + "-" + std::to_string(tid % 1000000) + "-" +
         std::to_string(now) + "-" + std::to_string(attempt);
}

}  // namespace

std::size_t direct_alignment() noexcept {
  const long page = ::sysconf(_SC_PAGESIZE);
  return std::max<std::size_t>(4096, page > 0 ? static_cast<std::size_t>(page) : 4096);
}

DirectProbe probe_direct(const std::string& dir) {
  const std::size_t align = direct_alignment();
  int fd = -1;
  int err = 0;
  std::string name;
  for (int attempt = 0; attempt < 8 && fd < 0; ++attempt) {
    name = probe_name(dir, attempt);
    fd = open_retry(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_DIRECT | O_CLOEXEC, kFileMode);
    err = fd < 0 ? errno : 0;
    if (fd < 0 && err != EEXIST) break;
  }
  if (fd < 0) {
    if (err == EINVAL) return {false, "O_DIRECT refused by the filesystem at " + dir + ": EINVAL"};
    return {false, "O_DIRECT could not be probed at " + dir + ": creating a probe file there failed: " + errno_text(err)};
  }
  // Unlinked at once: a crash between here and the end leaves nothing behind.
  ::unlink(name.c_str());
  std::unique_ptr<void, FreeDeleter> out(std::aligned_alloc(align, align));
  std::unique_ptr<void, FreeDeleter> in(std::aligned_alloc(align, align));
  if (!out || !in) {
    close_quietly(fd);
    return {false, "O_DIRECT could not be probed at " + dir + ": out of memory"};
  }
  auto* o = static_cast<unsigned char*>(out.get());
  for (std::size_t i = 0; i < align; ++i) o[i] = static_cast<unsigned char>(i * 131 + 7);
  std::memset(in.get(), 0, align);
  const ssize_t w = ::pwrite(fd, out.get(), align, 0);
  const int werr = errno;
  if (w != static_cast<ssize_t>(align)) {
    close_quietly(fd);
    const std::string why = w < 0 ? errno_name(werr) : "short write of " + std::to_string(w) + " bytes";
    return {false, "O_DIRECT refused by the filesystem at " + dir + ": an aligned write failed: " + why};
  }
  const ssize_t r = ::pread(fd, in.get(), align, 0);
  const int rerr = errno;
  close_quietly(fd);
  if (r != static_cast<ssize_t>(align)) {
    const std::string why = r < 0 ? errno_name(rerr) : "short read of " + std::to_string(r) + " bytes";
    return {false, "O_DIRECT refused by the filesystem at " + dir + ": an aligned read failed: " + why};
  }
  if (std::memcmp(out.get(), in.get(), align) != 0) {
    return {false, "O_DIRECT is unreliable at " + dir + ": an aligned block read back different bytes"};
  }
  return {true, "O_DIRECT works at " + dir + " (probed: " + std::to_string(align / 1024) +
                    " KiB aligned write and read)"};
}

std::shared_ptr<File> File::open(const std::string& path, const FileOptions& options) {
  KVFLOW_CHECK(!path.empty(), kInvalidArg, "expected a non-empty path for path, got \"\"");
  KVFLOW_CHECK(path.find('\0') == std::string::npos, kInvalidArg, "expected a path without NUL bytes for path");
  std::shared_ptr<File> file(new File());
  file->path_ = path;
  // O_EXCL first, so that a file this call created can be removed again if the open fails later.
  bool created = false;
  int err = EEXIST;
  if (options.create) {
    file->buffered_fd_ = open_retry(path.c_str(), O_RDWR | O_CLOEXEC | O_CREAT | O_EXCL, kFileMode);
    created = file->buffered_fd_ >= 0;
    if (!created) err = errno;
  }
  if (!created && err == EEXIST) {
    file->buffered_fd_ = open_retry(path.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (file->buffered_fd_ < 0) err = errno;
  }
  if (file->buffered_fd_ < 0) throw Error(*KVFLOW_SYS_FAILURE("open of " + path, err));
  try {
    file->finish_open(options);
  } catch (...) {
    if (created) ::unlink(path.c_str());
    throw;
  }
  return file;
}

void File::finish_open(const FileOptions& options) {
  const std::string& path = path_;
  struct stat st {};
  if (::fstat(buffered_fd_, &st) != 0) throw Error(*KVFLOW_SYS_FAILURE("fstat of " + path, errno));
  KVFLOW_CHECK(S_ISREG(st.st_mode), kInvalidArg,
               "expected a regular file for path, got " + file_type_name(st.st_mode) + " at " + path);

  if (options.direct == DirectMode::kOff) {
    direct_reason_ = "buffered IO: direct 'off' was requested";
  } else {
    DirectProbe probe = probe_direct(parent_dir(path));
    if (probe.supported) {
      direct_fd_ = open_retry(path.c_str(), O_RDWR | O_CLOEXEC | O_DIRECT, 0);
      if (direct_fd_ < 0) {
        probe = {false, "O_DIRECT refused by the filesystem at " + path + ": " + errno_name(errno)};
      }
    }
    if (!probe.supported && options.direct == DirectMode::kOn) KVFLOW_FAIL(kUnsupported, probe.reason);
    direct_reason_ = probe.supported ? probe.reason : "buffered IO: " + probe.reason;
  }
  if (options.gds == GdsMode::kOff) {
    gds_reason_ = "GPUDirect Storage off: files move through pinned bounce buffers";
  } else if (direct_fd_ < 0) {
    gds_reason_ = "GPUDirect Storage needs O_DIRECT, which this file does not have (" + direct_reason_ + ")";
  } else {
    gds_ = CuFileHandle::register_fd(direct_fd_, path, gds_reason_);
  }
  if (!gds_ && options.gds == GdsMode::kOn) KVFLOW_FAIL(kUnsupported, gds_reason_);
  if (options.size > 0) preallocate(options.size);
}

File::~File() {
  gds_.reset();  // deregistered before its fd closes
  close_quietly(direct_fd_);
  close_quietly(buffered_fd_);
}

std::uint64_t File::size() const {
  struct stat st {};
  if (::fstat(buffered_fd_, &st) != 0) throw Error(*KVFLOW_SYS_FAILURE("fstat of " + path_, errno));
  return static_cast<std::uint64_t>(st.st_size);
}

void File::preallocate(std::uint64_t bytes) {
  KVFLOW_CHECK(bytes <= static_cast<std::uint64_t>(INT64_MAX), kOutOfRange,
               "expected a preallocation of at most 2^63-1 bytes, got " + std::to_string(bytes));
  if (bytes == 0) return;
  const auto len = static_cast<off_t>(bytes);
  int r;
  do {
    r = ::fallocate(buffered_fd_, 0, 0, len);
  } while (r != 0 && errno == EINTR);
  if (r == 0) return;
  int err = errno;
  const bool unsupported = err == EOPNOTSUPP || err == ENOSYS;
  if (!unsupported) throw Error(*KVFLOW_SYS_FAILURE("fallocate of " + std::to_string(bytes) + " bytes of " + path_, err));
  // posix_fallocate emulates by touching every block where the filesystem has no fallocate.
  err = ::posix_fallocate(buffered_fd_, 0, len);
  if (err == 0) return;
  if (err != EOPNOTSUPP && err != ENOSYS && err != EINVAL) {
    throw Error(*KVFLOW_SYS_FAILURE("posix_fallocate of " + std::to_string(bytes) + " bytes of " + path_, err));
  }
  // Last resort: the size is right but the blocks are not reserved (a sparse file).
  if (size() >= bytes) return;
  if (::ftruncate(buffered_fd_, len) != 0) {
    throw Error(*KVFLOW_SYS_FAILURE("ftruncate to " + std::to_string(bytes) + " bytes of " + path_, errno));
  }
}

void File::sync() {
  int r;
  do {
    r = ::fsync(buffered_fd_);
  } while (r != 0 && errno == EINTR);
  if (r != 0) throw Error(*KVFLOW_SYS_FAILURE("fsync of " + path_, errno));
}

}  // namespace kvflow::io
