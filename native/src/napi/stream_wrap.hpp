#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
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
  // A recorded event into the device's table; its id for JS.
  Napi::Value hand_out(Napi::Env env, EventPtr event);

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

// What JS may ask of an event, an IO request's (EventWrap) or a recorded one
// (by id: the device's methods in device_wrap.cc).
/// watch(spinUs?) with spinUs at info[index]: the status, the event now watched.
Napi::Value event_watch(const Napi::CallbackInfo& info, std::size_t index, EventState& event);
/// Its completion time in ms; undefined while pending, untimed, or unknown.
Napi::Value event_time_ms(Napi::Env env, const EventState& event);
/// Its error as a KvflowError; undefined when it has none.
Napi::Value event_error(Napi::Env env, const EventState& event);
/// A recorded event's id as JS passes it: a positive safe integer, else nullopt.
std::optional<std::uint64_t> event_id(const Napi::Value& id);
/// The recorded event of `device` with the id `id`, or ERR_INVALID_ARG.
const EventPtr& recorded_event(Napi::Env env, const DeviceHandle& device, const Napi::Value& id);

/// prepareBatch(dsts, srcs, pieces, groups) -> NativeBatch
Napi::Value PrepareBatch(const Napi::CallbackInfo& info);

}  // namespace kvflow::napi
