#include "file_wrap.hpp"

#include "buffer_wrap.hpp"
#include "common.hpp"
#include "kvflow/checks.hpp"
#include "stream_wrap.hpp"

namespace kvflow::napi {

namespace {
struct FileInit {
  std::shared_ptr<DeviceHandle> device;
  io::EnginePtr engine;
  std::shared_ptr<FileSlot> slot;
};
}  // namespace

Napi::Function FileWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeFile",
                     {
                         InstanceMethod<&FileWrap::Read>("read"),
                         InstanceMethod<&FileWrap::Write>("write"),
                         InstanceMethod<&FileWrap::Preallocate>("preallocate"),
                         InstanceMethod<&FileWrap::Sync>("sync"),
                         InstanceMethod<&FileWrap::Size>("size"),
                         InstanceMethod<&FileWrap::Info>("info"),
                         InstanceMethod<&FileWrap::Close>("close"),
                     });
}

Napi::Object FileWrap::NewInstance(Napi::Env env, std::shared_ptr<DeviceHandle> device, io::EnginePtr engine,
                                   std::shared_ptr<FileSlot> slot) {
  FileInit init{std::move(device), std::move(engine), std::move(slot)};
  return addon_data(env).file_ctor.New({Napi::External<FileInit>::New(env, &init)});
}

FileWrap::FileWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FileWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg, "files are opened by a Device, not constructed directly");
  }
  auto* init = info[0].As<Napi::External<FileInit>>().Data();
  device_ = std::move(init->device);
  engine_ = std::move(init->engine);
  slot_ = std::move(init->slot);
}

io::FilePtr FileWrap::file(Napi::Env env) {
  io::FilePtr file;
  if (slot_ && device_ && !device_->closed) {
    std::lock_guard<std::mutex> lock(slot_->mutex);
    file = slot_->file;
  }
  if (!file) throw make_error(env, ErrorCode::kDisposed, "file is disposed");
  return file;
}

Napi::Value FileWrap::event(Napi::Env env, EventPtr event) {
  // IO events complete on host threads: a stream waits on them through a gate.
  return EventWrap::NewInstance(env, device_->device.get(), std::move(event), true);
}

Napi::Value FileWrap::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    io::FilePtr f = file(env);
    auto* dst = arg_wrap<BufferWrap>(info, 0, addon_data(env).buffer_ctor, "buffer");
    const std::size_t dst_offset = arg_size(info, 1, "dstOffset");
    const std::size_t file_offset = arg_size(info, 2, "fileOffset");
    const std::size_t bytes = arg_size(info, 3, "bytes");
    const BufferPtr& d = dst->buffer(env);
    check_range(d.get(), device_->device.get(), dst_offset, bytes, "destination");
    return event(env, engine_->read(f, d, dst_offset, file_offset, bytes));
  });
}

Napi::Value FileWrap::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    io::FilePtr f = file(env);
    const std::size_t file_offset = arg_size(info, 0, "fileOffset");
    auto* src = arg_wrap<BufferWrap>(info, 1, addon_data(env).buffer_ctor, "buffer");
    const std::size_t src_offset = arg_size(info, 2, "srcOffset");
    const std::size_t bytes = arg_size(info, 3, "bytes");
    const BufferPtr& s = src->buffer(env);
    check_range(s.get(), device_->device.get(), src_offset, bytes, "source");
    return event(env, engine_->write(f, file_offset, s, src_offset, bytes));
  });
}

Napi::Value FileWrap::Preallocate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    io::FilePtr f = file(env);
    const std::size_t bytes = arg_size(info, 0, "bytes");
    return event(env, engine_->run([f, bytes] { f->preallocate(bytes); }));
  });
}

Napi::Value FileWrap::Sync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    io::FilePtr f = file(env);
    return event(env, engine_->run([f] { f->sync(); }));
  });
}

Napi::Value FileWrap::Size(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value { return Napi::Number::New(env, static_cast<double>(file(env)->size())); });
}

Napi::Value FileWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    io::FilePtr f = file(env);
    Napi::Object o = Napi::Object::New(env);
    o.Set("path", f->path());
    o.Set("direct", f->direct());
    o.Set("directReason", f->direct_reason());
    o.Set("gds", f->gds() != nullptr);
    o.Set("gdsReason", f->gds_reason());
    return o;
  });
}

/// Lets go of the file: its descriptors close once no request in flight holds it.
Napi::Value FileWrap::Close(const Napi::CallbackInfo& info) {
  slot_.reset();
  engine_.reset();
  return info.Env().Undefined();
}

}  // namespace kvflow::napi
