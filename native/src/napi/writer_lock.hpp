// The writer lock's exports (the lock itself: kvflow/writer_lock.hpp).
#pragma once

#include <napi.h>

namespace kvflow::napi {

/// holdLock(path) -> fd: creates `path` (0600) and takes an exclusive flock on it. ERR_BUSY when held elsewhere.
Napi::Value HoldLock(const Napi::CallbackInfo& info);
/// releaseLock(fd): unlocks and closes.
Napi::Value ReleaseLock(const Napi::CallbackInfo& info);
/// lockHeld(path) -> boolean: whether some open file description holds a flock on `path` (false when it does not exist).
Napi::Value LockHeld(const Napi::CallbackInfo& info);

}  // namespace kvflow::napi
