// What the wraps of one device share: the core device, the streams and IO
// engines made on it (so closing the device closes them), and the completion
// channel's JS end.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <node_api.h>

#include "kvflow/device.hpp"
#include "kvflow/event.hpp"
#include "kvflow/io.hpp"
#include "kvflow/reference.hpp"

namespace kvflow::napi {

struct DeviceHandle {
  std::shared_ptr<Device> device;
  std::mutex mutex;
  std::vector<std::weak_ptr<Stream>> streams;
  std::vector<std::weak_ptr<io::Engine>> engines;
  std::vector<std::weak_ptr<ReferenceModel>> models;
  // Streams whose JS object was collected with work still queued: they drain
  // on their own and are closed here (or at shutdown), never by blocking the
  // JS thread in a finalizer (a held stream would block it forever).
  std::vector<std::shared_ptr<Stream>> orphans;
  bool closed = false;
  // The events recorded on its streams, by id, while JS may still ask about
  // them: record() hands JS the id (a number, where an object of the addon's
  // own per record cost more than the record), and releaseEvents() lets go
  // once JS collected its end (src/device/recorded.ts). The JS thread's
  // alone: no lock. Kept after shutdown (a closed device's events still tell
  // their outcome).
  std::unordered_map<std::uint64_t, EventPtr> events;
  /// Entries of `events` counted to V8 as external memory (see account_events).
  std::int64_t events_accounted = 0;
  /// Counts the table to V8 as external memory, in steps of 256 entries: its
  /// JS ends are collected only by full GCs, which the count brings sooner.
  void account_events(napi_env env);
  /// Empties the table and takes its count back from V8 (the device's JS object is gone).
  void drop_events(napi_env env);

  void add_stream(const std::shared_ptr<Stream>& stream);
  void add_engine(const std::shared_ptr<io::Engine>& engine);
  void add_model(const std::shared_ptr<ReferenceModel>& model);
  /// Takes over a stream whose JS object was collected: it is closed once idle
  /// (checked on each adoption) or at shutdown, without blocking the caller on
  /// work still queued.
  void adopt_orphan(std::shared_ptr<Stream> stream);
  /// Closes every IO engine and stream still open, then every reference model
  /// (its work has drained with the streams), then the device. Idempotent.
  void shutdown(bool abandon);
};

}  // namespace kvflow::napi
