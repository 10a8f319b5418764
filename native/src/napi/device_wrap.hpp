#pragma once

#include <napi.h>

#include <memory>

#include "device_handle.hpp"

namespace kvflow::napi {

class DeviceWrap : public Napi::ObjectWrap<DeviceWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  /// new Device(backend: 'cpu' | 'cuda', ordinal, maxPinnedBytes, onCompletions(ids: number[]))
  /// Marks its objects (see wrap_of in common.hpp).
  static constexpr napi_type_tag kTypeTag{0x6b76666c6f770002ULL, 0x9d2c4e7a1b3f5a02ULL};

  explicit DeviceWrap(const Napi::CallbackInfo& info);
  ~DeviceWrap() override;
  /// The device, for wraps made on it by other classes (a reference model).
  [[nodiscard]] const std::shared_ptr<DeviceHandle>& handle() const noexcept { return handle_; }

 private:
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Alloc(const Napi::CallbackInfo& info);
  Napi::Value Wrap(const Napi::CallbackInfo& info);
  Napi::Value CreateStream(const Napi::CallbackInfo& info);
  Napi::Value WrapStream(const Napi::CallbackInfo& info);
  Napi::Value CreateIoEngine(const Napi::CallbackInfo& info);
  Napi::Value PoolStats(const Napi::CallbackInfo& info);
  Napi::Value TrimPool(const Napi::CallbackInfo& info);
  Napi::Value HoldCompletions(const Napi::CallbackInfo& info);
  Napi::Value Ref(const Napi::CallbackInfo& info);
  Napi::Value Unref(const Napi::CallbackInfo& info);
  Napi::Value NextId(const Napi::CallbackInfo& info);
  // A recorded event's queries, by its id (stream_wrap.cc's hand_out).
  Napi::Value RecordedWatch(const Napi::CallbackInfo& info);
  Napi::Value RecordedStatus(const Napi::CallbackInfo& info);
  Napi::Value RecordedError(const Napi::CallbackInfo& info);
  Napi::Value RecordedTimeMs(const Napi::CallbackInfo& info);
  Napi::Value ReleaseRecorded(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  [[nodiscard]] DeviceHandle& open_handle(Napi::Env env);
  /// The recorded event whose id is info[0] (closed device or not), or ERR_INVALID_ARG.
  [[nodiscard]] EventState& event_arg(const Napi::CallbackInfo& info);
  Napi::Value new_stream(Napi::Env env, std::unique_ptr<Stream> stream);
  void close_now(Napi::Env env, bool abandon);

  std::shared_ptr<DeviceHandle> handle_;
  Napi::ThreadSafeFunction tsfn_;
  static void on_env_cleanup(void* self);
  bool hooked_ = false;
  bool refed_ = false;
};

}  // namespace kvflow::napi
