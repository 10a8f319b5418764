#include "buffer_wrap.hpp"

#include "common.hpp"

namespace kvflow::napi {

namespace {
struct BufferInit {
  std::shared_ptr<DeviceHandle> device;
  BufferPtr buffer;
};
}  // namespace

Napi::Function BufferWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeBuffer",
                     {
                         InstanceAccessor<&BufferWrap::Bytes>("bytes"),
                         InstanceAccessor<&BufferWrap::Kind>("kind"),
                         InstanceAccessor<&BufferWrap::Address>("address"),
                         InstanceMethod<&BufferWrap::View>("view"),
                         InstanceMethod<&BufferWrap::InFlight>("inFlight"),
                         InstanceMethod<&BufferWrap::Release>("release"),
                     });
}

Napi::Object BufferWrap::NewInstance(Napi::Env env, std::shared_ptr<DeviceHandle> device, BufferPtr buffer) {
  BufferInit init{std::move(device), std::move(buffer)};
  return addon_data(env).buffer_ctor.New({Napi::External<BufferInit>::New(env, &init)});
}

BufferWrap::BufferWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BufferWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg, "buffers are made by a Device, not constructed directly");
  }
  tag_wrap<BufferWrap>(info);
  auto* init = info[0].As<Napi::External<BufferInit>>().Data();
  device_ = std::move(init->device);
  buffer_ = std::move(init->buffer);
  if (buffer_->owned()) {
    reported_bytes_ = static_cast<std::int64_t>(buffer_->bytes());
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), reported_bytes_);
  }
}

BufferWrap::~BufferWrap() {
  // The safety net when a buffer is collected without dispose(): the memory
  // is released once operations in flight and JS views let go of it.
  if (anchor_) anchor_->buffer.reset();
  if (buffer_) buffer_->retire();
}

const BufferPtr& BufferWrap::buffer(Napi::Env env) const {
  if (!buffer_) throw make_error(env, ErrorCode::kDisposed, "buffer is disposed");
  return buffer_;
}

Napi::Value BufferWrap::Bytes(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), static_cast<double>(buffer(info.Env())->bytes()));
  });
}

Napi::Value BufferWrap::Kind(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), static_cast<int>(buffer(info.Env())->kind()));
  });
}

Napi::Value BufferWrap::Address(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return Napi::BigInt::New(info.Env(), static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(buffer(info.Env())->ptr())));
  });
}

Napi::Value BufferWrap::View(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const BufferPtr& buf = buffer(env);
    if (buf->kind() == MemoryKind::kDevice) {
      throw make_error(env, ErrorCode::kUnsupported, "device memory has no host view; copy it to a pinned buffer");
    }
    if (!view_.IsEmpty()) {
      Napi::ArrayBuffer existing = view_.Value();
      if (!existing.IsEmpty()) return existing;
    }
    if (!anchor_) anchor_ = std::make_shared<ViewAnchor>(ViewAnchor{buf});
    auto* hint = new std::shared_ptr<ViewAnchor>(anchor_);
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
        env, buf->ptr(), buf->bytes(), [](Napi::Env, void*, std::shared_ptr<ViewAnchor>* h) { delete h; }, hint);
    view_ = Napi::Weak(ab);
    return ab;
  });
}

Napi::Value BufferWrap::InFlight(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const BufferPtr& buf = buffer(env);
    const long holders = buf.use_count() - 1 - (anchor_ && anchor_->buffer ? 1 : 0);
    return Napi::Boolean::New(env, holders > 0);
  });
}

/// Retires the buffer and detaches its views. Returns 0 when the memory was
/// released at once, else a ticket id posted to the completion channel when
/// the last operation using it completes.
Napi::Value BufferWrap::Release(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (!buffer_) return Napi::Number::New(env, 0);
    buffer_->retire();
    if (!view_.IsEmpty()) {
      Napi::ArrayBuffer ab = view_.Value();
      if (!ab.IsEmpty() && !ab.IsDetached()) ab.Detach();
      view_.Reset();
    }
    if (anchor_) anchor_->buffer.reset();
    anchor_.reset();
    if (reported_bytes_ != 0) {
      Napi::MemoryManagement::AdjustExternalMemory(env, -reported_bytes_);
      reported_bytes_ = 0;
    }
    double ticket = 0;
    if (buffer_.use_count() > 1 && device_) {
      const std::uint64_t id = device_->device->next_id();
      std::weak_ptr<DeviceHandle> weak = device_;
      buffer_->set_on_released([weak, id] {
        if (auto handle = weak.lock()) handle->device->completer().post(id);
      });
      ticket = static_cast<double>(id);
    }
    buffer_.reset();
    return Napi::Number::New(env, ticket);
  });
}

}  // namespace kvflow::napi
