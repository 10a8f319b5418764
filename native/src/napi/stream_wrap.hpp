#pragma once

#include <napi.h>

#include <memory>
#include <vector>

#include "device_handle.hpp"
#include "kvflow/batch.hpp"
#include "kvflow/stream.hpp"

namespace kvflow::napi {

class StreamWrap : public Napi::ObjectWrap<StreamWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::Object NewInstance(Napi::Env env, std::shared_ptr<DeviceHandle> device, std::shared_ptr<Stream> stream);
  /// Marks its objects (see wrap_of in common.hpp).
  static constexpr napi_type_tag kTypeTag{0x6b76666c6f770004ULL, 0x9d2c4e7a1b3f5a04ULL};

  explicit StreamWrap(const Napi::CallbackInfo& info);
  ~StreamWrap() override;

  /// The live stream, or ERR_DISPOSED (for wraps that enqueue their own work).
  [[nodiscard]] Stream& stream(Napi::Env env);
  [[nodiscard]] const std::shared_ptr<DeviceHandle>& device() const { return device_; }

 private:
  Napi::Value Copy(const Napi::CallbackInfo& info);
  Napi::Value CopyRecord(const Napi::CallbackInfo& info);
  Napi::Value CopyBatch(const Napi::CallbackInfo& info);
  Napi::Value CopyPrepared(const Napi::CallbackInfo& info);
  Napi::Value Busy(const Napi::CallbackInfo& info);
  Napi::Value BusyGemm(const Napi::CallbackInfo& info);
  Napi::Value ReadFile(const Napi::CallbackInfo& info);
  Napi::Value WriteFile(const Napi::CallbackInfo& info);
  Napi::Value Record(const Napi::CallbackInfo& info);
  Napi::Value WaitEvent(const Napi::CallbackInfo& info);
  Napi::Value Idle(const Napi::CallbackInfo& info);
  Napi::Value Handle(const Napi::CallbackInfo& info);
  Napi::Value Hold(const Napi::CallbackInfo& info);
  Napi::Value InjectFailure(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  // copy()'s arguments (0-4), checked, then the copy enqueued on `s`.
  void enqueue_copy(const Napi::CallbackInfo& info, Stream& s);

  std::shared_ptr<DeviceHandle> device_;
  std::shared_ptr<Stream> stream_;
};

class EventWrap : public Napi::ObjectWrap<EventWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  /// `host`: completed by a host thread (an IO request), not recorded on a stream.
  static Napi::Object NewInstance(Napi::Env env, const void* owner, EventPtr event, bool host = false);
  explicit EventWrap(const Napi::CallbackInfo& info);

  [[nodiscard]] const EventPtr& event() const { return event_; }
  [[nodiscard]] const void* owner() const { return owner_; }
  [[nodiscard]] bool host() const { return host_; }

 private:
  Napi::Value Id(const Napi::CallbackInfo& info);
  Napi::Value Watch(const Napi::CallbackInfo& info);
  Napi::Value Status(const Napi::CallbackInfo& info);
  Napi::Value Error(const Napi::CallbackInfo& info);
  Napi::Value Timed(const Napi::CallbackInfo& info);
  Napi::Value TimeMs(const Napi::CallbackInfo& info);

  const void* owner_ = nullptr;
  EventPtr event_;
  bool host_ = false;
};

/// A PreparedBatch (kvflow/batch.hpp) as a JS object; release() lets go of it.
class BatchWrap : public Napi::ObjectWrap<BatchWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  /// Marks its objects (see wrap_of in common.hpp).
  static constexpr napi_type_tag kTypeTag{0x6b76666c6f770006ULL, 0x9d2c4e7a1b3f5a06ULL};

  explicit BatchWrap(const Napi::CallbackInfo& info);
  /// The batch, or ERR_DISPOSED once released.
  [[nodiscard]] const std::shared_ptr<const PreparedBatch>& batch(Napi::Env env) const;

 private:
  Napi::Value Release(const Napi::CallbackInfo& info);

  std::shared_ptr<const PreparedBatch> batch_;
};

/// prepareBatch(dsts, srcs, pieces, groups) -> NativeBatch
Napi::Value PrepareBatch(const Napi::CallbackInfo& info);

}  // namespace kvflow::napi
