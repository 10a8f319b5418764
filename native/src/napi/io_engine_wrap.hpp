// An IO engine of one device (posix or io_uring): opens files on its own
// thread and runs their IO. Also the probes doctor and tests read.
#pragma once

#include <napi.h>

#include <memory>

#include "device_handle.hpp"
#include "kvflow/io.hpp"

namespace kvflow::napi {

class IoEngineWrap : public Napi::ObjectWrap<IoEngineWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  /// device.createIoEngine(kind: 'posix' | 'io_uring', threads, taskSize, queueDepth)
  static Napi::Value Create(const Napi::CallbackInfo& info, const std::shared_ptr<DeviceHandle>& device);
  explicit IoEngineWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Kind(const Napi::CallbackInfo& info);
  Napi::Value TaskSize(const Napi::CallbackInfo& info);
  Napi::Value Open(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Hold(const Napi::CallbackInfo& info);
  Napi::Value InjectFault(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  [[nodiscard]] io::Engine& engine(Napi::Env env);

  std::shared_ptr<DeviceHandle> device_;
  io::EnginePtr engine_;
};

/// probeIoUring(): { available, reason }
Napi::Value ProbeIoUring(const Napi::CallbackInfo& info);
/// probeDirect(dir): { supported, reason, alignment }. Blocking: a few disk IOs.
Napi::Value ProbeDirect(const Napi::CallbackInfo& info);
Napi::Value ProbeGds(const Napi::CallbackInfo& info);

}  // namespace kvflow::napi
