// How IO failures are worded and classified: ENOSPC (and EDQUOT) are
// ERR_NO_SPACE, every other errno ERR_IO; each message names the operation,
// path, offset and errno, and Error::sys_errno carries the errno.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kvflow/error.hpp"

namespace kvflow::io {

/// "EINVAL", or "errno 1234" for one this table does not know.
[[nodiscard]] std::string errno_name(int err);
/// "Invalid argument (EINVAL, errno 22)".
[[nodiscard]] std::string errno_text(int err);

/// A failed system call on a file: kNoSpace for ENOSPC/EDQUOT, else kIo.
/// `what` says what was attempted, e.g. "fsync of /data/kv.slab".
[[nodiscard]] ErrorPtr sys_failure(const std::string& what, int err, const char* file, int line);

/// A failed read or write of `bytes` bytes at `offset` of `path`.
[[nodiscard]] ErrorPtr transfer_failure(bool is_read, const std::string& path, std::uint64_t offset, std::size_t bytes,
                                        bool direct, int err, const char* file, int line);

}  // namespace kvflow::io

#define KVFLOW_SYS_FAILURE(what, err) ::kvflow::io::sys_failure((what), (err), __FILE__, __LINE__)
