// What the wraps of one device share: the core device, the streams made on it
// (so closing the device closes them), and the completion channel's JS end.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "kvflow/device.hpp"

namespace kvflow::napi {

struct DeviceHandle {
  std::shared_ptr<Device> device;
  std::mutex mutex;
  std::vector<std::weak_ptr<Stream>> streams;
  bool closed = false;

  void add_stream(const std::shared_ptr<Stream>& stream);
  /// Closes every stream still open, then the device. Idempotent.
  void shutdown(bool abandon);
};

}  // namespace kvflow::napi
