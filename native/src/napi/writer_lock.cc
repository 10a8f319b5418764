// Node-API glue of kvflow/writer_lock.hpp: arguments in, results out.
#include "writer_lock.hpp"

#include <string>

#include "common.hpp"
#include "kvflow/writer_lock.hpp"

namespace kvflow::napi {

Napi::Value HoldLock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value { return Napi::Number::New(env, io::hold_lock(arg_string(info, 0, "path"))); });
}

Napi::Value ReleaseLock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::size_t fd = arg_size(info, 0, "fd");
    if (fd > 1u << 30) throw make_error(env, ErrorCode::kOutOfRange, "expected a file descriptor, got " + std::to_string(fd));
    io::release_lock(static_cast<int>(fd));
    return env.Undefined();
  });
}

Napi::Value LockHeld(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value { return Napi::Boolean::New(env, io::lock_held(arg_string(info, 0, "path"))); });
}

}  // namespace kvflow::napi
