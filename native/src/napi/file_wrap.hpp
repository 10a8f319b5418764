// An open file of the NVMe tier: its reads and writes run on the engine that
// opened it and return events, like StreamWrap::record().
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>

#include "device_handle.hpp"
#include "kvflow/io.hpp"

namespace kvflow::napi {

/// Filled by the open job on the engine's thread; read on the JS thread after its event completed.
struct FileSlot {
  std::mutex mutex;
  io::FilePtr file;
};

class FileWrap : public Napi::ObjectWrap<FileWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::Object NewInstance(Napi::Env env, std::shared_ptr<DeviceHandle> device, io::EnginePtr engine,
                                  std::shared_ptr<FileSlot> slot);
  /// Marks its objects (see wrap_of in common.hpp).
  static constexpr napi_type_tag kTypeTag{0x6b76666c6f770003ULL, 0x9d2c4e7a1b3f5a03ULL};

  explicit FileWrap(const Napi::CallbackInfo& info);

  /// The open file, or ERR_DISPOSED.
  [[nodiscard]] io::FilePtr file(Napi::Env env);
  [[nodiscard]] const io::EnginePtr& engine() const noexcept { return engine_; }
  [[nodiscard]] const std::shared_ptr<DeviceHandle>& device() const noexcept { return device_; }

 private:
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value ReadChecked(const Napi::CallbackInfo& info);
  Napi::Value WriteSummed(const Napi::CallbackInfo& info);
  Napi::Value Preallocate(const Napi::CallbackInfo& info);
  Napi::Value Sync(const Napi::CallbackInfo& info);
  Napi::Value Size(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  [[nodiscard]] Napi::Value event(Napi::Env env, EventPtr event);

  std::shared_ptr<DeviceHandle> device_;
  io::EnginePtr engine_;
  std::shared_ptr<FileSlot> slot_;
};

}  // namespace kvflow::napi
