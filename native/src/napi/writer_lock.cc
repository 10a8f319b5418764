#include "writer_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "common.hpp"
#include "io/io_error.hpp"

namespace kvflow::napi {

Napi::Value HoldLock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string path = arg_string(info, 0, "path");
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) throw *KVFLOW_SYS_FAILURE("creating the lock file " + path, errno);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK) throw make_error(env, ErrorCode::kBusy, "the lock file " + path + " is held by a live writer");
      throw *KVFLOW_SYS_FAILURE("locking " + path, err);
    }
    return Napi::Number::New(env, fd);
  });
}

Napi::Value ReleaseLock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::size_t fd = arg_size(info, 0, "fd");
    if (fd > 1u << 30) throw make_error(env, ErrorCode::kOutOfRange, "expected a file descriptor, got " + std::to_string(fd));
    ::flock(static_cast<int>(fd), LOCK_UN);
    ::close(static_cast<int>(fd));
    return env.Undefined();
  });
}

Napi::Value LockHeld(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::string path = arg_string(info, 0, "path");
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return Napi::Boolean::New(env, false);
      throw *KVFLOW_SYS_FAILURE("opening the lock file " + path, errno);
    }
    // A shared lock is refused only while someone holds the exclusive one.
    const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    ::close(fd);  // drops the shared lock if it was taken
    return Napi::Boolean::New(env, held);
  });
}

}  // namespace kvflow::napi
