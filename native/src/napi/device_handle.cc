#include "device_handle.hpp"

namespace kvflow::napi {

void DeviceHandle::add_stream(const std::shared_ptr<Stream>& stream) {
  std::lock_guard<std::mutex> lock(mutex);
  std::erase_if(streams, [](const std::weak_ptr<Stream>& s) { return s.expired(); });
  streams.push_back(stream);
}

void DeviceHandle::shutdown(bool abandon) {
  std::vector<std::weak_ptr<Stream>> to_close;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (closed) return;
    closed = true;
    to_close.swap(streams);
  }
  for (auto& weak : to_close) {
    if (auto stream = weak.lock()) stream->close(abandon);
  }
  device->completer().close();
  device->close();
}

}  // namespace kvflow::napi
