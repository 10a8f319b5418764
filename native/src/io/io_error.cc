#include "io/io_error.hpp"

#include <cerrno>
#include <cstring>
#include <memory>

namespace kvflow::io {

std::string errno_name(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case EXDEV: return "EXDEV";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case ETXTBSY: return "ETXTBSY";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case ESPIPE: return "ESPIPE";
    case EROFS: return "EROFS";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOSYS: return "ENOSYS";
    case ELOOP: return "ELOOP";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EOVERFLOW: return "EOVERFLOW";
    case EDQUOT: return "EDQUOT";
    case ESTALE: return "ESTALE";
    default: return "errno " + std::to_string(err);
  }
}

std::string errno_text(int err) {
  char buf[128];
  // GNU strerror_r: returns a pointer to the text, thread-safe.
  const char* text = strerror_r(err, buf, sizeof buf);
  return std::string(text) + " (" + errno_name(err) + ", errno " + std::to_string(err) + ")";
}

ErrorPtr sys_failure(const std::string& what, int err, const char* file, int line) {
  if (err == ENOSPC || err == EDQUOT) {
    return std::make_shared<const Error>(ErrorCode::kNoSpace, "no space left for " + what + ": " + errno_text(err), file,
                                         line, err);
  }
  return std::make_shared<const Error>(ErrorCode::kIo, what + " failed: " + errno_text(err), file, line, err);
}

ErrorPtr transfer_failure(bool is_read, const std::string& path, std::uint64_t offset, std::size_t bytes, bool direct,
                          int err, const char* file, int line) {
  const std::string what = std::string(is_read ? "read" : "write") + " of " + std::to_string(bytes) + " bytes at offset " +
                           std::to_string(offset) + " of " + path + (direct ? " (O_DIRECT)" : "");
  return sys_failure(what, err, file, line);
}

}  // namespace kvflow::io
