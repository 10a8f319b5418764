#include "stream_wrap.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "buffer_wrap.hpp"
#include "common.hpp"
#include "file_wrap.hpp"
#include "kvflow/batch.hpp"
#include "kvflow/call_trace.hpp"
#include "kvflow/checks.hpp"
#include "kvflow/stream_file.hpp"

namespace kvflow::napi {

namespace {
struct StreamInit {
  std::shared_ptr<DeviceHandle> device;
  std::shared_ptr<Stream> stream;
};
struct EventInit {
  const void* owner;
  EventPtr event;
  bool host;
};

ErrorCode parse_code(Napi::Env env, const std::string& name) {
  for (int c = 0; c <= static_cast<int>(ErrorCode::kLoad); ++c) {
    if (name == error_code_name(static_cast<ErrorCode>(c))) return static_cast<ErrorCode>(c);
  }
  throw make_error(env, ErrorCode::kInvalidArg, "unknown error code '" + name + "'");
}
}  // namespace

Napi::Function StreamWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeStream",
                     {
                         InstanceMethod<&StreamWrap::Copy>("copy"),
                         InstanceMethod<&StreamWrap::CopyRecord>("copyRecord"),
                         InstanceMethod<&StreamWrap::CopyBatch>("copyBatch"),
                         InstanceMethod<&StreamWrap::CopyPrepared>("copyPrepared"),
                         InstanceMethod<&StreamWrap::Busy>("busy"),
                         InstanceMethod<&StreamWrap::BusyGemm>("busyGemm"),
                         InstanceMethod<&StreamWrap::ReadFile>("readFile"),
                         InstanceMethod<&StreamWrap::WriteFile>("writeFile"),
                         InstanceMethod<&StreamWrap::Record>("record"),
                         InstanceMethod<&StreamWrap::WaitEvent>("waitEvent"),
                         InstanceMethod<&StreamWrap::Idle>("idle"),
                         InstanceAccessor<&StreamWrap::Handle>("handle"),
                         InstanceMethod<&StreamWrap::Hold>("hold"),
                         InstanceMethod<&StreamWrap::InjectFailure>("injectFailure"),
                         InstanceMethod<&StreamWrap::Close>("close"),
                     });
}

Napi::Object StreamWrap::NewInstance(Napi::Env env, std::shared_ptr<DeviceHandle> device, std::shared_ptr<Stream> stream) {
  StreamInit init{std::move(device), std::move(stream)};
  return addon_data(env).stream_ctor.New({Napi::External<StreamInit>::New(env, &init)});
}

StreamWrap::StreamWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StreamWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg, "streams are made by a Device, not constructed directly");
  }
  tag_wrap<StreamWrap>(info);
  auto* init = info[0].As<Napi::External<StreamInit>>().Data();
  device_ = std::move(init->device);
  stream_ = std::move(init->stream);
}

StreamWrap::~StreamWrap() {
  // Collected without dispose(): queued work finishes, then the stream is
  // freed. The device adopts it rather than this finalizer waiting, since the
  // work may wait on something that only JS (or teardown) can release.
  if (stream_ && device_) device_->adopt_orphan(std::move(stream_));
}

Stream& StreamWrap::stream(Napi::Env env) {
  if (!stream_ || !device_ || device_->closed) throw make_error(env, ErrorCode::kDisposed, "stream is disposed");
  return *stream_;
}

void StreamWrap::enqueue_copy(const Napi::CallbackInfo& info, Stream& s) {
  Napi::Env env = info.Env();
  trace::Laps laps;
  auto* dst = arg_wrap<BufferWrap>(info, 0, "buffer");
  const std::size_t dst_offset = arg_size(info, 1, "dstOffset");
  auto* src = arg_wrap<BufferWrap>(info, 2, "buffer");
  const std::size_t src_offset = arg_size(info, 3, "srcOffset");
  const std::size_t bytes = arg_size(info, 4, "bytes");
  const BufferPtr& d = dst->buffer(env);
  const BufferPtr& sr = src->buffer(env);
  const void* owner = device_->device.get();
  check_range(d.get(), owner, dst_offset, bytes, "destination");
  check_range(sr.get(), owner, src_offset, bytes, "source");
  if (bytes == 0) return;
  laps.lap(trace::kCopyArgs);
  s.copy(d, dst_offset, sr, src_offset, bytes);
}

Napi::Value StreamWrap::Copy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  trace::Span span(trace::kCopyCall);
  guarded(env, [&] { enqueue_copy(info, stream(env)); });
  return env.Undefined();
}

/// copyRecord(dst, dstOffset, src, srcOffset, bytes, timed): copy() then
/// record() in one call (one crossing for a copy that is awaited alone). The
/// arguments are checked before anything is enqueued; a copy that fails to
/// enqueue records nothing.
Napi::Value StreamWrap::CopyRecord(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const bool timed = info.Length() > 5 && info[5].IsBoolean() && info[5].As<Napi::Boolean>().Value();
    Stream& s = stream(env);
    enqueue_copy(info, s);
    return hand_out(env, timed ? s.record_timed() : s.record());
  });
}

// A recorded event joins the device's table and JS gets its id: a number,
// where an object of the addon's own (an ObjectWrap and its finalizer) cost
// about a microsecond per record.
Napi::Value StreamWrap::hand_out(Napi::Env env, EventPtr event) {
  const std::uint64_t id = event->id();
  device_->events.insert_or_assign(id, std::move(event));
  device_->account_events(env);
  return Napi::Number::New(env, static_cast<double>(id));
}

namespace {

// The buffers of a batch: kvflow buffers of this device, device or pinned memory.
std::vector<BufferPtr> batch_buffers(const Napi::CallbackInfo& info, std::size_t index, const void* owner,
                                     const char* name) {
  Napi::Env env = info.Env();
  if (!info[index].IsArray()) throw make_error(env, ErrorCode::kInvalidArg, std::string("expected an array for ") + name);
  Napi::Array array = info[index].As<Napi::Array>();
  std::vector<BufferPtr> out;
  out.reserve(array.Length());
  for (std::uint32_t i = 0; i < array.Length(); ++i) {
    BufferWrap* wrap = wrap_of<BufferWrap>(array.Get(i));
    if (wrap == nullptr) throw make_error(env, ErrorCode::kInvalidArg, std::string("expected kvflow buffers in ") + name);
    const BufferPtr& buffer = wrap->buffer(env);
    check_range(buffer.get(), owner, 0, 0, name);
    if (buffer->kind() == MemoryKind::kHost) {
      throw make_error(env, ErrorCode::kInvalidArg,
                       std::string("expected device or pinned memory in ") + name + ", got pageable host memory");
    }
    out.push_back(buffer);
  }
  return out;
}

std::size_t piece_field(Napi::Env env, double value, const char* what) {
  if (!(value >= 0) || value != static_cast<double>(static_cast<std::uint64_t>(value)) || value > 9007199254740991.0) {
    throw make_error(env, ErrorCode::kInvalidArg, std::string("expected a non-negative integer for a piece's ") + what);
  }
  return static_cast<std::size_t>(value);
}


/// The rows of a batch's table of [dst, dstOffset, src, srcOffset, bytes] * n, parsed as the core
/// checks them (kvflow::checked_pieces).
PieceRow table_rows(Napi::Env env, const Napi::Float64Array& table) {
  if (table.ElementLength() % 5 != 0) throw make_error(env, ErrorCode::kInvalidArg, "expected 5 numbers per piece");
  return [env, table](std::size_t row) {
    const std::size_t i = row * 5;
    // Indices past 2^32 stay past any list, so the core refuses them.
    const auto index = [](std::size_t v) { return static_cast<std::uint32_t>(std::min<std::size_t>(v, UINT32_MAX)); };
    CopyPiece p;
    p.dst = index(piece_field(env, table[i], "destination"));
    p.src = index(piece_field(env, table[i + 2], "source"));
    p.dst_offset = piece_field(env, table[i + 1], "destination offset");
    p.src_offset = piece_field(env, table[i + 3], "source offset");
    p.bytes = piece_field(env, table[i + 4], "size");
    return p;
  };
}

std::size_t engine_arg(const Napi::CallbackInfo& info, std::size_t index) {
  const std::size_t engine = arg_size(info, index, "engine");
  if (engine > 1) throw make_error(info.Env(), ErrorCode::kInvalidArg, "expected engine 0 (dma) or 1 (kernel)");
  return engine;
}

Napi::Float64Array table_arg(const Napi::CallbackInfo& info, std::size_t index) {
  if (!info[index].IsTypedArray() || info[index].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg, "expected a Float64Array of pieces");
  }
  return info[index].As<Napi::Float64Array>();
}

}  // namespace

/// copyBatch(dsts, srcs, pieces: Float64Array of [dst, dstOffset, src, srcOffset, bytes] * n, engine)
Napi::Value StreamWrap::CopyBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    Stream& s = stream(env);
    const void* owner = device_->device.get();
    std::vector<BufferPtr> dsts = batch_buffers(info, 0, owner, "destination");
    std::vector<BufferPtr> srcs = batch_buffers(info, 1, owner, "source");
    const Napi::Float64Array table = table_arg(info, 2);
    const std::size_t engine = engine_arg(info, 3);
    std::vector<CopyPiece> pieces = checked_pieces(table.ElementLength() / 5, table_rows(env, table), dsts, srcs, owner, nullptr);
    if (pieces.empty()) return;
    s.copy_batch(dsts, srcs, std::move(pieces), static_cast<BatchEngine>(engine));
  });
  return env.Undefined();
}

/// copyPrepared(batch, firstGroup, groupCount, engine): the pieces of those groups of a prepared batch.
Napi::Value StreamWrap::CopyPrepared(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    Stream& s = stream(env);
    BatchWrap* batch = wrap_of<BatchWrap>(info[0]);
    if (batch == nullptr) throw make_error(env, ErrorCode::kInvalidArg, "expected a prepared batch");
    const auto& b = batch->batch(env);
    const std::size_t first = arg_size(info, 1, "firstGroup");
    const std::size_t count = arg_size(info, 2, "groupCount");
    const std::size_t engine = engine_arg(info, 3);
    b->enqueue(s, device_->device.get(), first, count, static_cast<BatchEngine>(engine));
  });
  return env.Undefined();
}

Napi::Function BatchWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeBatch", {InstanceMethod<&BatchWrap::Release>("release")});
}

BatchWrap::BatchWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BatchWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg, "prepared batches are made by prepareBatch()");
  }
  tag_wrap<BatchWrap>(info);
  batch_ = *info[0].As<Napi::External<std::shared_ptr<const PreparedBatch>>>().Data();
}

const std::shared_ptr<const PreparedBatch>& BatchWrap::batch(Napi::Env env) const {
  if (!batch_) throw make_error(env, ErrorCode::kDisposed, "prepared transfer is disposed");
  return batch_;
}

Napi::Value BatchWrap::Release(const Napi::CallbackInfo& info) {
  batch_.reset();
  return info.Env().Undefined();
}

/// prepareBatch(dsts, srcs, pieces: Float64Array as copyBatch takes, groups: Uint32Array of row
/// indices, ascending, first 0 and last the row count[, steps: Float64Array, repeat]): the checked
/// pieces, and weak references to their buffers, for copyPrepared. Every buffer must be of one
/// device. With `steps` (one step per number of `pieces`) the rows are `repeat` copies of
/// `pieces`, copy k each number plus k times its step: a transfer's later layers from its first,
/// expanded here rather than in JS (a table of every layer costs JS milliseconds per prefill).
Napi::Value PrepareBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (!info[0].IsArray() || info[0].As<Napi::Array>().Length() == 0) {
      throw make_error(env, ErrorCode::kInvalidArg, "expected a non-empty array of destination buffers");
    }
    BufferWrap* first = wrap_of<BufferWrap>(info[0].As<Napi::Array>().Get(0u));
    if (first == nullptr) throw make_error(env, ErrorCode::kInvalidArg, "expected kvflow buffers in destination");
    const void* owner = first->buffer(env)->owner();
    const std::vector<BufferPtr> dsts = batch_buffers(info, 0, owner, "destination");
    const std::vector<BufferPtr> srcs = batch_buffers(info, 1, owner, "source");
    const Napi::Float64Array table = table_arg(info, 2);
    if (!info[3].IsTypedArray() || info[3].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
      throw make_error(env, ErrorCode::kInvalidArg, "expected a Uint32Array of groups");
    }
    const Napi::Uint32Array groups = info[3].As<Napi::Uint32Array>();
    std::vector<std::size_t> cuts(groups.ElementLength());
    for (std::size_t g = 0; g < cuts.size(); ++g) cuts[g] = groups[g];
    PieceRow rows = table_rows(env, table);
    std::size_t count = table.ElementLength() / 5;
    if (info.Length() > 4 && !info[4].IsUndefined()) {
      const Napi::Float64Array steps = table_arg(info, 4);
      const std::size_t repeat = arg_size(info, 5, "repeat");
      KVFLOW_CHECK(steps.ElementLength() == table.ElementLength(), kInvalidArg,
                   "expected one step per number of the pieces");
      KVFLOW_CHECK(repeat >= 1 && count <= SIZE_MAX / repeat, kInvalidArg, "expected a repeat of at least 1");
      const std::size_t per = count;
      rows = [env, table, steps, per](std::size_t row) {
        const std::size_t k = row / per;
        const std::size_t i = (row % per) * 5;
        const auto at = [&](std::size_t f) { return table[i + f] + static_cast<double>(k) * steps[i + f]; };
        const auto index = [](std::size_t v) { return static_cast<std::uint32_t>(std::min<std::size_t>(v, UINT32_MAX)); };
        CopyPiece p;
        p.dst = index(piece_field(env, at(0), "destination"));
        p.src = index(piece_field(env, at(2), "source"));
        p.dst_offset = piece_field(env, at(1), "destination offset");
        p.src_offset = piece_field(env, at(3), "source offset");
        p.bytes = piece_field(env, at(4), "size");
        return p;
      };
      count = per * repeat;
    }
    std::shared_ptr<const PreparedBatch> done = PreparedBatch::make(owner, dsts, srcs, count, rows, std::move(cuts));
    return addon_data(env).batch_ctor.New({Napi::External<std::shared_ptr<const PreparedBatch>>::New(env, &done)});
  });
}

namespace {

io::BounceOptions bounce_options(const Napi::CallbackInfo& info, std::size_t index) {
  io::BounceOptions options;
  options.chunk = arg_size(info, index, "bounceChunk");
  options.slots = static_cast<unsigned>(std::min<std::size_t>(arg_size(info, index + 1, "bounceSlots"), 1024));
  return options;
}

FileWrap* file_arg(const Napi::CallbackInfo& info, std::size_t index, const DeviceHandle& device) {
  auto* file = arg_wrap<FileWrap>(info, index, "file");
  if (file->device().get() != &device) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg, "expected a file opened on this device, got one of another device");
  }
  return file;
}

}  // namespace

/// readFile(dst, dstOffset, file, fileOffset, bytes, bounceChunk, bounceSlots)
Napi::Value StreamWrap::ReadFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    Stream& s = stream(env);
    auto* dst = arg_wrap<BufferWrap>(info, 0, "buffer");
    const std::size_t dst_offset = arg_size(info, 1, "dstOffset");
    FileWrap* file = file_arg(info, 2, *device_);
    const std::size_t file_offset = arg_size(info, 3, "fileOffset");
    const std::size_t bytes = arg_size(info, 4, "bytes");
    const BufferPtr& d = dst->buffer(env);
    check_range(d.get(), device_->device.get(), dst_offset, bytes, "destination");
    io::enqueue_read_file(*device_->device, s, file->engine(), file->file(env), d, dst_offset, file_offset, bytes,
                          bounce_options(info, 5));
  });
  return env.Undefined();
}

/// writeFile(file, fileOffset, src, srcOffset, bytes, bounceChunk, bounceSlots)
Napi::Value StreamWrap::WriteFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    Stream& s = stream(env);
    FileWrap* file = file_arg(info, 0, *device_);
    const std::size_t file_offset = arg_size(info, 1, "fileOffset");
    auto* src = arg_wrap<BufferWrap>(info, 2, "buffer");
    const std::size_t src_offset = arg_size(info, 3, "srcOffset");
    const std::size_t bytes = arg_size(info, 4, "bytes");
    const BufferPtr& sr = src->buffer(env);
    check_range(sr.get(), device_->device.get(), src_offset, bytes, "source");
    io::enqueue_write_file(*device_->device, s, file->engine(), file->file(env), file_offset, sr, src_offset, bytes,
                           bounce_options(info, 5));
  });
  return env.Undefined();
}

Napi::Value StreamWrap::Busy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] { stream(env).busy(arg_size(info, 0, "iterations")); });
  return env.Undefined();
}

Napi::Value StreamWrap::BusyGemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    // Clamped into 32 bits: busy_gemm bounds both far lower and says so.
    const auto u32 = [](std::size_t v) { return static_cast<std::uint32_t>(std::min<std::size_t>(v, UINT32_MAX)); };
    stream(env).busy_gemm(u32(arg_size(info, 0, "count")), u32(arg_size(info, 1, "n")));
  });
  return env.Undefined();
}

Napi::Value StreamWrap::Record(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  trace::Span span(trace::kRecordCall);
  return guarded(env, [&]() -> Napi::Value {
    // record(true): a timed event (its completion time from the device's clock).
    const bool timed = info.Length() > 0 && info[0].IsBoolean() && info[0].As<Napi::Boolean>().Value();
    Stream& s = stream(env);
    EventPtr event = timed ? s.record_timed() : s.record();
    trace::Span wrap(trace::kRecordWrap);
    return hand_out(env, std::move(event));
  });
}

Napi::Value StreamWrap::WaitEvent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    Stream& s = stream(env);
    Napi::Value v = info[0];
    if (v.IsNumber()) {
      // A recorded event, by its id in the device's table (see hand_out).
      s.wait(recorded_event(env, *device_, v));
      return;
    }
    // The event of an IO request: an object, not type-tagged (a tag costs
    // each event a property of its own); such a wait is rare, and InstanceOf
    // does here.
    if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(addon_data(env).event_ctor.Value())) {
      throw make_error(env, ErrorCode::kInvalidArg, "expected a kvflow Event for argument 0, got something else");
    }
    // An object that only inherits an event's prototype passes InstanceOf
    // and has no wrap: napi_unwrap says so, where Unwrap would throw an
    // Error with no code.
    void* raw = nullptr;
    if (napi_unwrap(env, v, &raw) != napi_ok || raw == nullptr) {
      throw make_error(env, ErrorCode::kInvalidArg, "expected a kvflow Event for argument 0, got something else");
    }
    auto* ev = static_cast<EventWrap*>(raw);
    if (ev->owner() != device_->device.get()) {
      throw make_error(env, ErrorCode::kInvalidArg, "expected an event of this device, got an event of another device");
    }
    if (ev->host()) {
      wait_host_event(s, ev->event());
    } else {
      s.wait(ev->event());
    }
  });
  return env.Undefined();
}

Napi::Value StreamWrap::Idle(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value { return Napi::Boolean::New(env, stream(env).idle()); });
}

Napi::Value StreamWrap::Handle(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    return Napi::BigInt::New(env, static_cast<std::uint64_t>(stream(env).handle()));
  });
}

/// Test hook: holds the stream until the returned function is called; called
/// with (code, message), it opens the gate with that failure.
Napi::Value StreamWrap::Hold(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto gate = std::make_shared<Gate>();
    stream(env).wait_gate(gate);
    return Napi::Function::New(env, [gate](const Napi::CallbackInfo& i) -> Napi::Value {
      Napi::Env e = i.Env();
      return guarded(e, [&]() -> Napi::Value {
        ErrorPtr failure;
        if (i.Length() >= 2) {
          failure = std::make_shared<const kvflow::Error>(parse_code(e, arg_string(i, 0, "code")),
                                                          arg_string(i, 1, "message"));
        }
        gate->open(std::move(failure));
        return e.Undefined();
      });
    });
  });
}

/// Test hook: the next operation fails with the given code and message.
Napi::Value StreamWrap::InjectFailure(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    const ErrorCode code = parse_code(env, arg_string(info, 0, "code"));
    const std::string message = arg_string(info, 1, "message");
    stream(env).inject_failure(std::make_shared<const kvflow::Error>(code, message));
  });
  return env.Undefined();
}

Napi::Value StreamWrap::Close(const Napi::CallbackInfo& info) {
  if (stream_) {
    stream_->close(info[0].ToBoolean());
    stream_.reset();
  }
  return info.Env().Undefined();
}

Napi::Function EventWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeEvent",
                     {
                         InstanceAccessor<&EventWrap::Id>("id"),
                         InstanceMethod<&EventWrap::Watch>("watch"),
                         InstanceMethod<&EventWrap::Status>("status"),
                         InstanceMethod<&EventWrap::Error>("error"),
                         InstanceAccessor<&EventWrap::Timed>("timed"),
                         InstanceMethod<&EventWrap::TimeMs>("timeMs"),
                     });
}

// One event per record(): its state reaches the constructor through the
// addon data rather than an External argument, which would cost a weak handle
// and a finalizer of its own per event. The constructor runs inside New(), on
// this thread, before any other JS: nothing else can see the pending state.
Napi::Object EventWrap::NewInstance(Napi::Env env, const void* owner, EventPtr event, bool host) {
  EventInit init{owner, std::move(event), host};
  AddonData& data = addon_data(env);
  data.pending_event = &init;
  try {
    Napi::Object object = data.event_ctor.New({});
    data.pending_event = nullptr;
    return object;
  } catch (...) {
    data.pending_event = nullptr;
    throw;
  }
}

EventWrap::EventWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EventWrap>(info) {
  AddonData& data = addon_data(info.Env());
  auto* init = static_cast<EventInit*>(std::exchange(data.pending_event, nullptr));
  if (init == nullptr || info.Length() != 0) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg, "events are made by a Stream, not constructed directly");
  }
  owner_ = init->owner;
  event_ = std::move(init->event);
  host_ = init->host;
}

Napi::Value EventWrap::Id(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(event_->id()));
}

// watch(spinUs?): with a spin (0 to kMaxWatchSpinUs us), looks for the
// completion that long first (EventState::watch_spin). The bound is
// KVFLOW_SHORT_WAIT_US's range in src/defaults.ts.
Napi::Value event_watch(const Napi::CallbackInfo& info, std::size_t index, EventState& event) {
  constexpr int kMaxWatchSpinUs = 1000;
  Napi::Env env = info.Env();
  if (info.Length() <= index || info[index].IsUndefined()) return Napi::Number::New(env, static_cast<int>(event.watch()));
  if (!info[index].IsNumber()) throw make_error(env, ErrorCode::kInvalidArg, "expected a number of microseconds for spinUs");
  const double us = info[index].As<Napi::Number>().DoubleValue();
  if (!(us >= 0 && us <= kMaxWatchSpinUs)) {
    throw make_error(env, ErrorCode::kOutOfRange, "expected spinUs from 0 to " + std::to_string(kMaxWatchSpinUs) + ", got " + std::to_string(us));
  }
  const auto spin = std::chrono::nanoseconds(static_cast<std::int64_t>(us * 1000));
  return Napi::Number::New(env, static_cast<int>(event.watch_spin(spin)));
}

Napi::Value event_time_ms(Napi::Env env, const EventState& event) {
  // Undefined while pending, for an untimed event, or when the device gave no time.
  if (!event.timed() || event.status() == EventStatus::kPending) return env.Undefined();
  const double ms = event.time_ms();
  if (std::isnan(ms)) return env.Undefined();
  return Napi::Number::New(env, ms);
}

Napi::Value event_error(Napi::Env env, const EventState& event) {
  ErrorPtr error = event.error();
  if (!error) return env.Undefined();
  return error_value(env, *error);
}

std::optional<std::uint64_t> event_id(const Napi::Value& id) {
  if (!id.IsNumber()) return std::nullopt;
  const double v = id.As<Napi::Number>().DoubleValue();
  if (!(v >= 1 && v <= 9007199254740991.0 && std::floor(v) == v)) return std::nullopt;
  return static_cast<std::uint64_t>(v);
}

const EventPtr& recorded_event(Napi::Env env, const DeviceHandle& device, const Napi::Value& id) {
  const std::optional<std::uint64_t> key = event_id(id);
  const auto it = key ? device.events.find(*key) : device.events.end();
  if (it == device.events.end()) {
    const std::string got = key ? "id " + std::to_string(*key) + " (unknown or released)"
                                : id.IsNumber() ? "a number that is no event id" : "something else";
    throw make_error(env, ErrorCode::kInvalidArg, "expected a recorded event of this device, got " + got);
  }
  return it->second;
}

Napi::Value EventWrap::Watch(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value { return event_watch(info, 0, *event_); });
}

Napi::Value EventWrap::Status(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<int>(event_->status()));
}

Napi::Value EventWrap::Timed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), event_->timed()); }

Napi::Value EventWrap::TimeMs(const Napi::CallbackInfo& info) { return event_time_ms(info.Env(), *event_); }

Napi::Value EventWrap::Error(const Napi::CallbackInfo& info) { return event_error(info.Env(), *event_); }

}  // namespace kvflow::napi
