// See kvflow/writer_lock.hpp.
#include "kvflow/writer_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>

#include "io/io_error.hpp"

namespace kvflow::io {

int hold_lock(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw *KVFLOW_SYS_FAILURE("creating the lock file " + path, errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) KVFLOW_FAIL(kBusy, "the lock file " + path + " is held by a live writer");
    throw *KVFLOW_SYS_FAILURE("locking " + path, err);
  }
  return fd;
}

void release_lock(int fd) noexcept {
  ::flock(fd, LOCK_UN);
  ::close(fd);
}

bool lock_held(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return false;
    throw *KVFLOW_SYS_FAILURE("opening the lock file " + path, errno);
  }
  // A shared lock is refused only while someone holds the exclusive one.
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // drops the shared lock if it was taken
  return held;
}

}  // namespace kvflow::io
