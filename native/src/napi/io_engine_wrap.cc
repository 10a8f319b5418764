#include "io_engine_wrap.hpp"

#include "io/cufile.hpp"

#include <string>

#include "common.hpp"
#include "file_wrap.hpp"
#include "stream_wrap.hpp"

namespace kvflow::napi {

namespace {
struct EngineInit {
  std::shared_ptr<DeviceHandle> device;
  io::EnginePtr engine;
};

unsigned arg_count(const Napi::CallbackInfo& info, std::size_t index, const char* name) {
  const std::size_t value = arg_size(info, index, name);
  if (value > 0xffffffffu) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg,
                     std::string("expected a 32-bit count for ") + name + ", got " + std::to_string(value));
  }
  return static_cast<unsigned>(value);
}
}  // namespace

Napi::Function IoEngineWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeIoEngine",
                     {
                         InstanceAccessor<&IoEngineWrap::Kind>("kind"),
                         InstanceAccessor<&IoEngineWrap::TaskSize>("taskSize"),
                         InstanceMethod<&IoEngineWrap::Open>("open"),
                         InstanceMethod<&IoEngineWrap::Stats>("stats"),
                         InstanceMethod<&IoEngineWrap::Hold>("hold"),
                         InstanceMethod<&IoEngineWrap::InjectFault>("injectFault"),
                         InstanceMethod<&IoEngineWrap::Close>("close"),
                     });
}

Napi::Value IoEngineWrap::Create(const Napi::CallbackInfo& info, const std::shared_ptr<DeviceHandle>& device) {
  Napi::Env env = info.Env();
  const std::string kind = arg_string(info, 0, "kind");
  io::EngineOptions options;
  if (kind == "posix") {
    options.kind = io::EngineKind::kPosix;
  } else if (kind == "io_uring") {
    options.kind = io::EngineKind::kIoUring;
  } else {
    throw make_error(env, ErrorCode::kInvalidArg, "expected 'posix' or 'io_uring' for kind, got '" + kind + "'");
  }
  options.threads = arg_count(info, 1, "threads");
  options.task_size = arg_size(info, 2, "taskSize");
  options.queue_depth = arg_count(info, 3, "queueDepth");
  Device* dev = device->device.get();
  io::EnginePtr engine = io::create_engine(options, dev->completer(), [dev] { return dev->next_id(); });
  device->add_engine(engine);
  EngineInit init{device, std::move(engine)};
  return addon_data(env).io_engine_ctor.New({Napi::External<EngineInit>::New(env, &init)});
}

IoEngineWrap::IoEngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<IoEngineWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg, "IO engines are made by a Device, not constructed directly");
  }
  auto* init = info[0].As<Napi::External<EngineInit>>().Data();
  device_ = std::move(init->device);
  engine_ = std::move(init->engine);
}

io::Engine& IoEngineWrap::engine(Napi::Env env) {
  if (!engine_ || !device_ || device_->closed) throw make_error(env, ErrorCode::kDisposed, "IO engine is closed");
  return *engine_;
}

Napi::Value IoEngineWrap::Kind(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return Napi::String::New(info.Env(), io::engine_kind_name(engine(info.Env()).options().kind));
  });
}

Napi::Value IoEngineWrap::TaskSize(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), static_cast<double>(engine(info.Env()).options().task_size));
  });
}

/// open(path, create, direct: 0 auto | 1 on | 2 off, size) -> [NativeFile, NativeEvent]: the
/// file is usable once the event completed without error.
Napi::Value IoEngineWrap::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    io::Engine& e = engine(env);
    const std::string path = arg_string(info, 0, "path");
    io::FileOptions options;
    options.create = info[1].ToBoolean();
    const std::size_t direct = arg_size(info, 2, "direct");
    if (direct > 2) throw make_error(env, ErrorCode::kInvalidArg, "expected a direct mode 0, 1 or 2");
    options.direct = static_cast<io::DirectMode>(direct);
    options.size = arg_size(info, 3, "size");
    const std::size_t gds = arg_size(info, 4, "gds");
    if (gds > 2) throw make_error(env, ErrorCode::kInvalidArg, "expected a gds mode 0, 1 or 2");
    options.gds = static_cast<io::GdsMode>(gds);
    auto slot = std::make_shared<FileSlot>();
    EventPtr opened = e.run([slot, path, options] {
      io::FilePtr file = io::File::open(path, options);
      std::lock_guard<std::mutex> lock(slot->mutex);
      slot->file = std::move(file);
    });
    Napi::Array out = Napi::Array::New(env, 2);
    out.Set(0u, FileWrap::NewInstance(env, device_, engine_, std::move(slot)));
    out.Set(1u, EventWrap::NewInstance(env, device_->device.get(), std::move(opened)));
    return out;
  });
}

Napi::Value IoEngineWrap::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const io::EngineStats s = engine(env).stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("directBytes", static_cast<double>(s.direct_bytes));
    o.Set("bufferedBytes", static_cast<double>(s.buffered_bytes));
    o.Set("failedTasks", static_cast<double>(s.failed_tasks));
    o.Set("highTasks", static_cast<double>(s.high_tasks));
    o.Set("lowTasks", static_cast<double>(s.low_tasks));
    return o;
  });
}

/// Test hook: no task starts until the returned function is called.
Napi::Value IoEngineWrap::Hold(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    std::function<void()> release = engine(env).hold();
    return Napi::Function::New(env, [release](const Napi::CallbackInfo& i) {
      release();
      return i.Env().Undefined();
    });
  });
}

/// Test hook: the nth task started from now fails with the given errno.
Napi::Value IoEngineWrap::InjectFault(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    const std::size_t nth = arg_size(info, 0, "nth");
    const std::size_t err = arg_size(info, 1, "errno");
    if (err > 4095) throw make_error(env, ErrorCode::kInvalidArg, "expected an errno below 4096, got " + std::to_string(err));
    engine(env).inject_fault(nth, static_cast<int>(err));
  });
  return env.Undefined();
}

Napi::Value IoEngineWrap::Close(const Napi::CallbackInfo& info) {
  if (engine_) engine_->close(info[0].ToBoolean());
  return info.Env().Undefined();
}

Napi::Value ProbeIoUring(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const io::EngineProbe p = io::probe_io_uring();
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", p.available);
  o.Set("reason", p.reason);
  return o;
}

Napi::Value ProbeDirect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const io::DirectProbe p = io::probe_direct(arg_string(info, 0, "dir"));
    Napi::Object o = Napi::Object::New(env);
    o.Set("supported", p.supported);
    o.Set("reason", p.reason);
    o.Set("alignment", static_cast<double>(io::direct_alignment()));
    return o;
  });
}

Napi::Value ProbeGds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const io::GdsProbe p = io::probe_gds();
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", p.available);
  o.Set("reason", p.reason);
  return o;
}

}  // namespace kvflow::napi
