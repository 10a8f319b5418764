// Liveness of a store's writers across processes and PID namespaces: each
// open store holds an exclusive flock on a lock file of its own; the kernel
// drops it when the process dies, however it dies.
#pragma once

#include <string>

namespace kvflow::io {

/// Creates `path` (0600) when missing, takes an exclusive flock on it and
/// returns the fd that holds it. kBusy when another open file description
/// holds it; kIo (kNoSpace) naming the path when the file cannot be opened.
[[nodiscard]] int hold_lock(const std::string& path);

/// Unlocks and closes an fd from hold_lock().
void release_lock(int fd) noexcept;

/// Whether some open file description holds the exclusive flock on `path`;
/// false when `path` does not exist.
[[nodiscard]] bool lock_held(const std::string& path);

}  // namespace kvflow::io
