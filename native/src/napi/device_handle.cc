#include "device_handle.hpp"

namespace kvflow::napi {

namespace {
// What an entry of the event table is counted as: its native state, its node
// and, on CUDA, the pooled event it holds, rounded up. It only paces V8's
// full GCs (about one per 64k entries outstanding, at V8's 64 MiB step).
constexpr std::int64_t kEventEntryBytes = 1024;
constexpr std::int64_t kAccountStep = 256;
}  // namespace

void DeviceHandle::account_events(napi_env env) {
  const auto size = static_cast<std::int64_t>(events.size());
  const std::int64_t change = size - events_accounted;
  if (change < kAccountStep && change > -kAccountStep) return;
  std::int64_t total = 0;
  if (napi_adjust_external_memory(env, change * kEventEntryBytes, &total) == napi_ok) events_accounted = size;
}

void DeviceHandle::drop_events(napi_env env) {
  events.clear();
  std::int64_t total = 0;
  if (events_accounted != 0) napi_adjust_external_memory(env, -events_accounted * kEventEntryBytes, &total);
  events_accounted = 0;
}

void DeviceHandle::add_stream(const std::shared_ptr<Stream>& stream) {
  std::lock_guard<std::mutex> lock(mutex);
  std::erase_if(streams, [](const std::weak_ptr<Stream>& s) { return s.expired(); });
  streams.push_back(stream);
}

void DeviceHandle::add_engine(const std::shared_ptr<io::Engine>& engine) {
  std::lock_guard<std::mutex> lock(mutex);
  std::erase_if(engines, [](const std::weak_ptr<io::Engine>& e) { return e.expired(); });
  engines.push_back(engine);
}

void DeviceHandle::add_model(const std::shared_ptr<ReferenceModel>& model) {
  std::lock_guard<std::mutex> lock(mutex);
  std::erase_if(models, [](const std::weak_ptr<ReferenceModel>& m) { return m.expired(); });
  models.push_back(model);
}

void DeviceHandle::adopt_orphan(std::shared_ptr<Stream> stream) {
  std::vector<std::shared_ptr<Stream>> idle;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (closed) return;  // shutdown already closed it
    orphans.push_back(std::move(stream));
    // Nothing can be enqueued on an orphan, so an idle one stays idle and
    // closes at once.
    std::erase_if(orphans, [&idle](std::shared_ptr<Stream>& s) {
      if (!s->idle()) return false;
      idle.push_back(std::move(s));
      return true;
    });
  }
  for (auto& s : idle) s->close(false);
}

void DeviceHandle::shutdown(bool abandon) {
  std::vector<std::weak_ptr<Stream>> to_close;
  std::vector<std::weak_ptr<io::Engine>> engines_to_close;
  std::vector<std::weak_ptr<ReferenceModel>> models_to_close;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (closed) return;
    closed = true;
    to_close.swap(streams);
    engines_to_close.swap(engines);
    models_to_close.swap(models);
  }
  for (auto& weak : engines_to_close) {
    if (auto engine = weak.lock()) engine->close(abandon);
  }
  for (auto& weak : to_close) {
    if (auto stream = weak.lock()) stream->close(abandon);
  }
  for (auto& weak : models_to_close) {
    if (auto model = weak.lock()) model->close();
  }
  device->completer().close();
  device->close();
  std::vector<std::shared_ptr<Stream>> released;
  {
    std::lock_guard<std::mutex> lock(mutex);
    released.swap(orphans);
  }
}

}  // namespace kvflow::napi
