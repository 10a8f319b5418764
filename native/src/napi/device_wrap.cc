#include <climits>
#include "device_wrap.hpp"

#include <cstdint>
#include <string>

#include "buffer_wrap.hpp"
#include "common.hpp"
#include "io_engine_wrap.hpp"
#include "stream_wrap.hpp"

namespace kvflow::napi {

Napi::Function DeviceWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeDevice",
                     {
                         InstanceMethod<&DeviceWrap::Info>("info"),
                         InstanceMethod<&DeviceWrap::Alloc>("alloc"),
                         InstanceMethod<&DeviceWrap::Wrap>("wrap"),
                         InstanceMethod<&DeviceWrap::CreateStream>("createStream"),
                         InstanceMethod<&DeviceWrap::WrapStream>("wrapStream"),
                         InstanceMethod<&DeviceWrap::CreateIoEngine>("createIoEngine"),
                         InstanceMethod<&DeviceWrap::PoolStats>("poolStats"),
                         InstanceMethod<&DeviceWrap::TrimPool>("trimPool"),
                         InstanceMethod<&DeviceWrap::HoldCompletions>("holdCompletions"),
                         InstanceMethod<&DeviceWrap::Ref>("ref"),
                         InstanceMethod<&DeviceWrap::Unref>("unref"),
                         InstanceMethod<&DeviceWrap::NextId>("nextId"),
                         InstanceMethod<&DeviceWrap::RecordedWatch>("eventWatch"),
                         InstanceMethod<&DeviceWrap::RecordedStatus>("eventStatus"),
                         InstanceMethod<&DeviceWrap::RecordedError>("eventError"),
                         InstanceMethod<&DeviceWrap::RecordedTimeMs>("eventTimeMs"),
                         InstanceMethod<&DeviceWrap::ReleaseRecorded>("releaseEvents"),
                         InstanceMethod<&DeviceWrap::Close>("close"),
                     });
}

DeviceWrap::DeviceWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceWrap>(info) {
  Napi::Env env = info.Env();
  tag_wrap<DeviceWrap>(info);
  guarded(env, [&] {
    const std::string backend = arg_string(info, 0, "backend");
    DeviceOptions options;
    const std::size_t ordinal = arg_size(info, 1, "ordinal");
    if (ordinal > static_cast<std::size_t>(INT_MAX)) {
      throw make_error(env, ErrorCode::kOutOfRange, "expected a device ordinal below 2^31, got " + std::to_string(ordinal));
    }
    options.ordinal = static_cast<int>(ordinal);
    options.max_pinned_bytes = arg_size(info, 2, "maxPinnedBytes");
    if (!info[3].IsFunction()) throw make_error(env, ErrorCode::kInvalidArg, "expected a completion callback");
    const std::size_t gate = arg_size(info, 4, "cudaGate");
    if (gate > 2) throw make_error(env, ErrorCode::kInvalidArg, "expected a CUDA gate mode 0, 1 or 2");
    options.cuda_gate = static_cast<CudaGate>(gate);  // the CPU backend ignores it
    if (info.Length() > 5 && !info[5].IsUndefined()) {
      const std::size_t spin = arg_size(info, 5, "completionSpinUs");
      if (spin > 10000) throw make_error(env, ErrorCode::kOutOfRange, "expected completionSpinUs from 0 to 10000, got " + std::to_string(spin));
      options.completion_spin_us = static_cast<std::uint32_t>(spin);
    }
    std::unique_ptr<Device> device;
    if (backend == "cpu") {
      device = open_cpu_device(options);
    } else if (backend == "cuda") {
      device = open_cuda_device(options);
    } else {
      throw make_error(env, ErrorCode::kInvalidArg, "expected backend 'cpu' or 'cuda', got '" + backend + "'");
    }
    handle_ = std::make_shared<DeviceHandle>();
    handle_->device = std::move(device);
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[3].As<Napi::Function>(), "kvflow-completions", 0, 1);
    tsfn_.Unref(env);  // ref'd only while JS waits on a completion (see Ref/Unref)
    std::weak_ptr<DeviceHandle> weak = handle_;
    Napi::ThreadSafeFunction tsfn = tsfn_;
    handle_->device->completer().set_notify([weak, tsfn]() mutable {
      tsfn.NonBlockingCall([weak](Napi::Env env, Napi::Function callback) {
        auto handle = weak.lock();
        if (!handle || env == nullptr) return;
        // Nothing may escape this callback: no JS frame is below it to take an
        // exception, so one would end the process (std::terminate). A call
        // fails when JS can no longer run (a notice still queued while the
        // process exits, e.g. after process.exit()): the notice is dropped.
        // The JS side never throws from its callback, so no live waiter is
        // lost that way; an allocation failure here drops this batch's ids.
        try {
          const std::vector<std::uint64_t> ids = handle->device->completer().drain();
          if (ids.empty()) return;
          Napi::Array array = Napi::Array::New(env, ids.size());
          for (std::size_t i = 0; i < ids.size(); ++i) array.Set(static_cast<std::uint32_t>(i), static_cast<double>(ids[i]));
          callback.Call({array});
        } catch (...) {
        }
      });
    });
    napi_add_env_cleanup_hook(env, &DeviceWrap::on_env_cleanup, this);
    hooked_ = true;
  });
}

DeviceWrap::~DeviceWrap() {
  if (hooked_) napi_remove_env_cleanup_hook(Env(), &DeviceWrap::on_env_cleanup, this);
  hooked_ = false;
  if (handle_) {
    // Every recorded event's JS end holds this device's object: none is left
    // to ask about an id, and the registry that would release the rest went
    // with the device's JS object.
    handle_->drop_events(Env());
    handle_->shutdown(true);
  }
}

void DeviceWrap::on_env_cleanup(void* self) {
  auto* wrap = static_cast<DeviceWrap*>(self);
  wrap->hooked_ = false;
  if (wrap->handle_) wrap->handle_->shutdown(true);
  if (wrap->tsfn_) {
    wrap->tsfn_.Abort();
    wrap->tsfn_ = Napi::ThreadSafeFunction();
  }
}

DeviceHandle& DeviceWrap::open_handle(Napi::Env env) {
  if (!handle_ || handle_->closed) throw make_error(env, ErrorCode::kDisposed, "device is disposed");
  return *handle_;
}

Napi::Value DeviceWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const DeviceInfo d = open_handle(env).device->info();
    Napi::Object o = Napi::Object::New(env);
    o.Set("backend", d.backend);
    o.Set("name", d.name);
    o.Set("ordinal", d.ordinal);
    o.Set("totalMemory", static_cast<double>(d.total_memory));
    o.Set("freeMemory", static_cast<double>(d.free_memory));
    o.Set("computeCapability", d.cc_major == 0 ? std::string() : std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor));
    o.Set("multiprocessors", d.multiprocessors);
    o.Set("asyncEngines", d.async_engines);
    o.Set("pciBusId", d.pci_bus_id);
    o.Set("pcieGen", d.pcie_gen);
    o.Set("pcieWidth", d.pcie_width);
    o.Set("pcieMaxGen", d.pcie_max_gen);
    o.Set("pcieMaxWidth", d.pcie_max_width);
    o.Set("pcieNote", d.pcie_note);
    o.Set("driverVersion", d.driver_version);
    o.Set("runtimeVersion", d.runtime_version);
    o.Set("cores", d.cores);
    o.Set("hostMemory", static_cast<double>(d.host_memory));
    o.Set("cudaGate", d.cuda_gate);
    o.Set("cudaGateReason", d.cuda_gate_reason);
    return o;
  });
}

Napi::Value DeviceWrap::Alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Device& device = *open_handle(env).device;
    const std::size_t kind = arg_size(info, 0, "kind");
    const std::size_t bytes = arg_size(info, 1, "bytes");
    BufferPtr buffer;
    switch (kind) {
      case 0: buffer = device.alloc_device(bytes); break;
      case 1: buffer = device.alloc_pinned(bytes); break;
      case 2: buffer = device.alloc_host(bytes); break;
      default: throw make_error(env, ErrorCode::kInvalidArg, "expected a memory kind 0, 1 or 2");
    }
    return BufferWrap::NewInstance(env, handle_, std::move(buffer));
  });
}

Napi::Value DeviceWrap::Wrap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Device& device = *open_handle(env).device;
    const std::uintptr_t address = arg_address(info, 0, "address");
    const std::size_t bytes = arg_size(info, 1, "bytes");
    return BufferWrap::NewInstance(env, handle_, device.wrap_device(address, bytes));
  });
}

Napi::Value DeviceWrap::new_stream(Napi::Env env, std::unique_ptr<Stream> stream) {
  std::shared_ptr<Stream> shared(std::move(stream));
  handle_->add_stream(shared);
  return StreamWrap::NewInstance(env, handle_, std::move(shared));
}

Napi::Value DeviceWrap::CreateStream(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Device& device = *open_handle(env).device;
    const std::size_t priority = arg_size(info, 0, "priority");
    return new_stream(env, device.create_stream(static_cast<int>(priority)));
  });
}

Napi::Value DeviceWrap::WrapStream(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Device& device = *open_handle(env).device;
    return new_stream(env, device.wrap_stream(arg_address(info, 0, "handle")));
  });
}

Napi::Value DeviceWrap::CreateIoEngine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    (void)open_handle(env);  // ERR_DISPOSED once closed
    return IoEngineWrap::Create(info, handle_);
  });
}

Napi::Value DeviceWrap::PoolStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const PinnedPoolStats s = open_handle(env).device->pinned_pool().stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("inUseBytes", static_cast<double>(s.in_use_bytes));
    o.Set("cachedBytes", static_cast<double>(s.cached_bytes));
    o.Set("limitBytes", static_cast<double>(s.limit_bytes));
    o.Set("allocations", static_cast<double>(s.allocations));
    o.Set("reuses", static_cast<double>(s.reuses));
    return o;
  });
}

Napi::Value DeviceWrap::TrimPool(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] { open_handle(env).device->pinned_pool().trim(); });
  return env.Undefined();
}

/// Test hook: completed device work is not noticed until the returned function is called.
Napi::Value DeviceWrap::HoldCompletions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    std::function<void()> release = open_handle(env).device->hold_completions();
    return Napi::Function::New(env, [release](const Napi::CallbackInfo& i) {
      release();
      return i.Env().Undefined();
    });
  });
}

Napi::Value DeviceWrap::Ref(const Napi::CallbackInfo& info) {
  if (tsfn_ && !refed_) {
    tsfn_.Ref(info.Env());
    refed_ = true;
  }
  return info.Env().Undefined();
}

Napi::Value DeviceWrap::Unref(const Napi::CallbackInfo& info) {
  if (tsfn_ && refed_) {
    tsfn_.Unref(info.Env());
    refed_ = false;
  }
  return info.Env().Undefined();
}

Napi::Value DeviceWrap::NextId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    return Napi::Number::New(env, static_cast<double>(open_handle(env).device->next_id()));
  });
}

EventState& DeviceWrap::event_arg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!handle_) throw make_error(env, ErrorCode::kDisposed, "device is disposed");
  return *recorded_event(env, *handle_, info[0]);
}

Napi::Value DeviceWrap::RecordedWatch(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value { return event_watch(info, 1, event_arg(info)); });
}

Napi::Value DeviceWrap::RecordedStatus(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), static_cast<int>(event_arg(info).status()));
  });
}

Napi::Value DeviceWrap::RecordedError(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value { return event_error(info.Env(), event_arg(info)); });
}

Napi::Value DeviceWrap::RecordedTimeMs(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value { return event_time_ms(info.Env(), event_arg(info)); });
}

/// releaseEvents(ids: number[]): JS let go of these recorded events (known
/// to have succeeded, or their objects collected). Ids not in the table, or
/// not ids at all, are ignored: a release never throws (it runs after GC).
Napi::Value DeviceWrap::ReleaseRecorded(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (handle_ && info.Length() > 0 && info[0].IsArray()) {
    Napi::Array ids = info[0].As<Napi::Array>();
    for (std::uint32_t i = 0; i < ids.Length(); ++i) {
      if (const auto id = event_id(ids.Get(i))) handle_->events.erase(*id);
    }
    handle_->account_events(env);
  }
  return env.Undefined();
}

void DeviceWrap::close_now(Napi::Env env, bool abandon) {
  if (hooked_) {
    napi_remove_env_cleanup_hook(env, &DeviceWrap::on_env_cleanup, this);
    hooked_ = false;
  }
  if (handle_) handle_->shutdown(abandon);
  if (tsfn_) {
    tsfn_.Release();
    tsfn_ = Napi::ThreadSafeFunction();
  }
}

Napi::Value DeviceWrap::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] { close_now(env, info[0].ToBoolean()); });
  return env.Undefined();
}

}  // namespace kvflow::napi
