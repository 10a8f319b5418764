#pragma once

#include <napi.h>

#include <memory>

#include "device_handle.hpp"
#include "kvflow/buffer.hpp"

namespace kvflow::napi {

class BufferWrap : public Napi::ObjectWrap<BufferWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::Object NewInstance(Napi::Env env, std::shared_ptr<DeviceHandle> device, BufferPtr buffer);
  /// Marks its objects (see wrap_of in common.hpp).
  static constexpr napi_type_tag kTypeTag{0x6b76666c6f770001ULL, 0x9d2c4e7a1b3f5a01ULL};

  explicit BufferWrap(const Napi::CallbackInfo& info);
  ~BufferWrap() override;

  /// The live buffer, or ERR_DISPOSED.
  [[nodiscard]] const BufferPtr& buffer(Napi::Env env) const;
  [[nodiscard]] const std::shared_ptr<DeviceHandle>& device() const { return device_; }

 private:
  /// Keeps the memory alive while a JS view of it exists; reset on release,
  /// after the view is detached.
  struct ViewAnchor {
    BufferPtr buffer;
  };

  Napi::Value Bytes(const Napi::CallbackInfo& info);
  Napi::Value Kind(const Napi::CallbackInfo& info);
  Napi::Value Address(const Napi::CallbackInfo& info);
  Napi::Value View(const Napi::CallbackInfo& info);
  Napi::Value InFlight(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);

  std::shared_ptr<DeviceHandle> device_;
  BufferPtr buffer_;
  std::shared_ptr<ViewAnchor> anchor_;
  Napi::Reference<Napi::ArrayBuffer> view_;  // weak
  std::int64_t reported_bytes_ = 0;          // external memory reported to V8
};

}  // namespace kvflow::napi
