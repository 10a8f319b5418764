#pragma once

#include <napi.h>

#include <cstdint>
#include <memory>

#include "device_handle.hpp"
#include "kvflow/reference.hpp"

namespace kvflow::napi {

/// The reference transformer of one device (kvflow/reference). Every call's
/// arguments are checked here, before any pointer arithmetic, whatever the
/// TS layer checked: a rejected call enqueues nothing.
class ReferenceModelWrap : public Napi::ObjectWrap<ReferenceModelWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  /// new ReferenceModel(anchor: NativeBuffer, shape): the model lives on the anchor's device.
  explicit ReferenceModelWrap(const Napi::CallbackInfo& info);
  ~ReferenceModelWrap() override;

 private:
  Napi::Value HiddenElementBytes(const Napi::CallbackInfo& info);
  Napi::Value WeightBytes(const Napi::CallbackInfo& info);
  Napi::Value Embed(const Napi::CallbackInfo& info);
  Napi::Value Layer(const Napi::CallbackInfo& info);
  Napi::Value FinalNorm(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  [[nodiscard]] ReferenceModel& model(Napi::Env env);
  [[nodiscard]] Stream& stream_arg(const Napi::CallbackInfo& info, std::size_t index);
  /// A device buffer of this model's device holding at least `bytes` bytes.
  [[nodiscard]] BufferPtr buffer_arg(const Napi::CallbackInfo& info, std::size_t index, std::size_t bytes, const char* name);
  /// A token count in [1, max_tokens].
  [[nodiscard]] std::uint32_t count_arg(Napi::Env env, std::size_t count, const char* what);
  void release(Napi::Env env);

  std::shared_ptr<DeviceHandle> device_;
  std::shared_ptr<ReferenceModel> model_;
  std::int64_t reported_bytes_ = 0;  // external memory reported to V8
};

}  // namespace kvflow::napi
