// Registers the wrapped classes (and the opt-in terminate trace).
#if __has_include(<execinfo.h>)
#include <execinfo.h>
#endif
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <napi.h>

#include "buffer_wrap.hpp"
#include "checksum.hpp"
#include "common.hpp"
#include "device_wrap.hpp"
#include "file_wrap.hpp"
#include "io_engine_wrap.hpp"
#include "kvflow/abi.hpp"
#include "kvflow/crc32c.hpp"
#include "kvflow/device.hpp"
#include "reference_wrap.hpp"
#include "stream_wrap.hpp"
#include "writer_lock.hpp"

namespace kvflow::napi {

// KVFLOW_TRACE_TERMINATE=1: a C++ exception that escapes to std::terminate
// writes its message and the native stack to stderr before the handler that
// was in place runs, so a crash report says where it came from (symbolise
// kvflow.node offsets with addr2line). Off by default: the process's
// terminate handler is the user's.
namespace {

std::terminate_handler previous_terminate = nullptr;

void write_text(const char* text) noexcept { (void)!write(2, text, std::strlen(text)); }

[[noreturn]] void trace_terminate() noexcept {
  write_text("kvflow: std::terminate");
  if (std::exception_ptr e = std::current_exception()) {
    try {
      std::rethrow_exception(e);
    } catch (const Napi::Error&) {
      // Its message is read through Node-API, which may be what failed.
      write_text(": a Napi::Error (a Node-API call failed)");
    } catch (const std::exception& x) {
      write_text(": ");
      write_text(x.what());
    } catch (...) {
      write_text(": an exception of unknown type");
    }
  }
  write_text("\n");
#if __has_include(<execinfo.h>)
  void* frames[64];
  backtrace_symbols_fd(frames, backtrace(frames, 64), 2);
#endif
  if (previous_terminate != nullptr) previous_terminate();
  std::abort();
}

void install_terminate_trace() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* flag = std::getenv("KVFLOW_TRACE_TERMINATE");
    if (flag == nullptr || std::strcmp(flag, "1") != 0) return;
#if __has_include(<execinfo.h>)
    void* warm[1];
    (void)backtrace(warm, 1);  // loads what backtrace needs now, not inside terminate
#endif
    previous_terminate = std::set_terminate(trace_terminate);
  });
}

}  // namespace

static Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "expected the KvflowError class");
  addon_data(info.Env()).error_class = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

static Napi::Value ProbeCuda(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CudaProbe p = probe_cuda();
  Napi::Object o = Napi::Object::New(env);
  o.Set("compiled", p.compiled);
  o.Set("available", p.available);
  o.Set("reason", p.reason);
  o.Set("deviceCount", p.device_count);
  o.Set("driverVersion", p.driver_version);
  o.Set("runtimeVersion", p.runtime_version);
  return o;
}

static Napi::Value ProbeCudaGate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const std::size_t ordinal = arg_size(info, 0, "ordinal");
    if (ordinal > static_cast<std::size_t>(INT_MAX)) {
      throw make_error(env, ErrorCode::kOutOfRange, "expected a device ordinal below 2^31, got " + std::to_string(ordinal));
    }
    const CudaGateProbe p = probe_cuda_gate(static_cast<int>(ordinal));
    Napi::Object o = Napi::Object::New(env);
    o.Set("available", p.available);
    o.Set("reason", p.reason);
    return o;
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  install_terminate_trace();
  auto* data = new AddonData();
  env.SetInstanceData(data);
  Napi::Function buffer = BufferWrap::Init(env);
  Napi::Function stream = StreamWrap::Init(env);
  Napi::Function event = EventWrap::Init(env);
  data->buffer_ctor = Napi::Persistent(buffer);
  data->stream_ctor = Napi::Persistent(stream);
  data->event_ctor = Napi::Persistent(event);
  data->io_engine_ctor = Napi::Persistent(IoEngineWrap::Init(env));
  data->file_ctor = Napi::Persistent(FileWrap::Init(env));
  data->batch_ctor = Napi::Persistent(BatchWrap::Init(env));
  Napi::Function device = DeviceWrap::Init(env);
  data->device_ctor = Napi::Persistent(device);
  exports.Set("Device", device);
  exports.Set("Buffer", buffer);
  exports.Set("Stream", stream);
  exports.Set("Event", event);
  exports.Set("ReferenceModel", ReferenceModelWrap::Init(env));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass));
  exports.Set("probeCuda", Napi::Function::New(env, ProbeCuda));
  exports.Set("probeCudaGate", Napi::Function::New(env, ProbeCudaGate));
  exports.Set("probeIoUring", Napi::Function::New(env, ProbeIoUring));
  exports.Set("probeDirect", Napi::Function::New(env, ProbeDirect));
  exports.Set("probeGds", Napi::Function::New(env, ProbeGds));
  exports.Set("crc32c", Napi::Function::New(env, Crc32c));
  exports.Set("prepareBatch", Napi::Function::New(env, PrepareBatch));
  exports.Set("holdLock", Napi::Function::New(env, HoldLock));
  exports.Set("releaseLock", Napi::Function::New(env, ReleaseLock));
  exports.Set("lockHeld", Napi::Function::New(env, LockHeld));
  exports.Set("crc32cImplementation", Napi::String::New(env, crc32c_implementation()));
  exports.Set("abiVersion", Napi::Number::New(env, kAbiVersion));
#ifdef KVFLOW_WITH_CUDA
  exports.Set("cudaCompiled", Napi::Boolean::New(env, true));
#else
  exports.Set("cudaCompiled", Napi::Boolean::New(env, false));
#endif
  return exports;
}

}  // namespace kvflow::napi

static Napi::Object InitKvflow(Napi::Env env, Napi::Object exports) { return kvflow::napi::Init(env, exports); }

NODE_API_MODULE(kvflow, InitKvflow)
