#include "file_wrap.hpp"

#include "buffer_wrap.hpp"
#include "common.hpp"
#include "kvflow/checked_io.hpp"
#include "kvflow/checks.hpp"
#include "stream_wrap.hpp"

namespace kvflow::napi {

namespace {
struct FileInit {
  std::shared_ptr<DeviceHandle> device;
  io::EnginePtr engine;
  std::shared_ptr<FileSlot> slot;
};

/// 'high' or 'low'; `fallback` (the request's default) when absent.
io::Priority arg_priority(const Napi::CallbackInfo& info, std::size_t index, io::Priority fallback) {
  const Napi::Value v = info[index];
  if (v.IsUndefined()) return fallback;
  std::string got = "something else";
  if (v.IsString()) {
    const std::string s = v.As<Napi::String>().Utf8Value();
    if (s == "high") return io::Priority::kHigh;
    if (s == "low") return io::Priority::kLow;
    got = "'" + s.substr(0, 40) + "'";
  }
  throw make_error(info.Env(), ErrorCode::kInvalidArg, "expected 'high' or 'low' for priority, got " + got);
}
}  // namespace

Napi::Function FileWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeFile",
                     {
                         InstanceMethod<&FileWrap::Read>("read"),
                         InstanceMethod<&FileWrap::Write>("write"),
                         InstanceMethod<&FileWrap::ReadChecked>("readChecked"),
                         InstanceMethod<&FileWrap::WriteSummed>("writeSummed"),
                         InstanceMethod<&FileWrap::Preallocate>("preallocate"),
                         InstanceMethod<&FileWrap::Sync>("sync"),
                         InstanceMethod<&FileWrap::Size>("size"),
                         InstanceMethod<&FileWrap::Info>("info"),
                         InstanceMethod<&FileWrap::Close>("close"),
                     });
}

Napi::Object FileWrap::NewInstance(Napi::Env env, std::shared_ptr<DeviceHandle> device, io::EnginePtr engine,
                                   std::shared_ptr<FileSlot> slot) {
  FileInit init{std::move(device), std::move(engine), std::move(slot)};
  return addon_data(env).file_ctor.New({Napi::External<FileInit>::New(env, &init)});
}

FileWrap::FileWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FileWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg, "files are opened by a Device, not constructed directly");
  }
  tag_wrap<FileWrap>(info);
  auto* init = info[0].As<Napi::External<FileInit>>().Data();
  device_ = std::move(init->device);
  engine_ = std::move(init->engine);
  slot_ = std::move(init->slot);
}

io::FilePtr FileWrap::file(Napi::Env env) {
  io::FilePtr file;
  if (slot_ && device_ && !device_->closed) {
    std::lock_guard<std::mutex> lock(slot_->mutex);
    file = slot_->file;
  }
  if (!file) throw make_error(env, ErrorCode::kDisposed, "file is disposed");
  return file;
}

Napi::Value FileWrap::event(Napi::Env env, EventPtr event) {
  // IO events complete on host threads: a stream waits on them through a gate.
  return EventWrap::NewInstance(env, device_->device.get(), std::move(event), true);
}

Napi::Value FileWrap::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    io::FilePtr f = file(env);
    auto* dst = arg_wrap<BufferWrap>(info, 0, "buffer");
    const std::size_t dst_offset = arg_size(info, 1, "dstOffset");
    const std::size_t file_offset = arg_size(info, 2, "fileOffset");
    const std::size_t bytes = arg_size(info, 3, "bytes");
    const io::Priority priority = arg_priority(info, 4, io::Priority::kHigh);
    const BufferPtr& d = dst->buffer(env);
    check_range(d.get(), device_->device.get(), dst_offset, bytes, "destination");
    return event(env, engine_->read(f, d, dst_offset, file_offset, bytes, {}, priority));
  });
}

Napi::Value FileWrap::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    io::FilePtr f = file(env);
    const std::size_t file_offset = arg_size(info, 0, "fileOffset");
    auto* src = arg_wrap<BufferWrap>(info, 1, "buffer");
    const std::size_t src_offset = arg_size(info, 2, "srcOffset");
    const std::size_t bytes = arg_size(info, 3, "bytes");
    const io::Priority priority = arg_priority(info, 4, io::Priority::kLow);
    const BufferPtr& s = src->buffer(env);
    check_range(s.get(), device_->device.get(), src_offset, bytes, "source");
    return event(env, engine_->write(f, file_offset, s, src_offset, bytes, {}, priority));
  });
}

namespace {

double piece_number(Napi::Env env, const Napi::Float64Array& table, std::size_t at, std::size_t index,
                    const char* what, double max) {
  const double v = table[at];
  if (!(v >= 0) || v > max || v != static_cast<double>(static_cast<std::uint64_t>(v))) {
    throw make_error(env, ErrorCode::kInvalidArg,
                     "expected a non-negative integer up to " + std::to_string(static_cast<std::uint64_t>(max)) +
                         " for piece " + std::to_string(index) + "'s " + what + ", got " + std::to_string(v));
  }
  return v;
}

/// Pieces as a Float64Array of `width` numbers each: bufferOffset, fileOffset, bytes, seed[, crc].
std::vector<io::CheckedPiece> parse_pieces(const Napi::CallbackInfo& info, std::size_t index, std::size_t width) {
  Napi::Env env = info.Env();
  if (!info[index].IsTypedArray() || info[index].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    throw make_error(env, ErrorCode::kInvalidArg, "expected a Float64Array of pieces");
  }
  Napi::Float64Array table = info[index].As<Napi::Float64Array>();
  const std::size_t length = table.ElementLength();
  if (length % width != 0) {
    throw make_error(env, ErrorCode::kInvalidArg, "expected " + std::to_string(width) + " numbers per piece");
  }
  const std::size_t count = length / width;
  if (count == 0 || count > io::kMaxCheckedPieces) {
    throw make_error(env, ErrorCode::kInvalidArg, "expected 1 to " + std::to_string(io::kMaxCheckedPieces) +
                                                      " pieces, got " + std::to_string(count));
  }
  constexpr double kMaxSafe = 9007199254740991.0;
  constexpr double kMaxU32 = 4294967295.0;
  std::vector<io::CheckedPiece> pieces(count);
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t at = i * width;
    io::CheckedPiece& p = pieces[i];
    p.buffer_offset = static_cast<std::size_t>(piece_number(env, table, at, i, "buffer offset", kMaxSafe));
    p.file_offset = static_cast<std::uint64_t>(piece_number(env, table, at + 1, i, "file offset", kMaxSafe));
    p.bytes = static_cast<std::size_t>(piece_number(env, table, at + 2, i, "size", kMaxSafe));
    p.seed = static_cast<std::uint32_t>(piece_number(env, table, at + 3, i, "seed", kMaxU32));
    if (width > 4) p.crc = static_cast<std::uint32_t>(piece_number(env, table, at + 4, i, "crc", kMaxU32));
  }
  return pieces;
}

}  // namespace

/// readChecked(dst, pieces: Float64Array of [dstOffset, fileOffset, bytes, seed, crc] * n, priority?)
/// -> { event, mismatched(): number[] | undefined (until the event completed) }
Napi::Value FileWrap::ReadChecked(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    io::FilePtr f = file(env);
    auto* dst = arg_wrap<BufferWrap>(info, 0, "buffer");
    std::vector<io::CheckedPiece> pieces = parse_pieces(info, 1, 5);
    const io::Priority priority = arg_priority(info, 2, io::Priority::kHigh);
    const BufferPtr& d = dst->buffer(env);
    check_range(d.get(), device_->device.get(), 0, 0, "destination");
    Device& dev = *device_->device;
    io::CheckedRequest request =
        io::read_checked(*engine_, f, d, std::move(pieces), dev.completer(), dev.next_id(), priority);
    Napi::Object out = Napi::Object::New(env);
    out.Set("event", event(env, request.event));
    out.Set("mismatched", Napi::Function::New(env, [request](const Napi::CallbackInfo& i) -> Napi::Value {
              if (request.event->status() == EventStatus::kPending) return i.Env().Undefined();
              const std::vector<std::uint32_t>& m = request.report->mismatched;
              Napi::Array a = Napi::Array::New(i.Env(), m.size());
              for (std::size_t k = 0; k < m.size(); ++k) a.Set(static_cast<std::uint32_t>(k), m[k]);
              return a;
            }));
    return out;
  });
}

/// writeSummed(src, pieces: Float64Array of [srcOffset, fileOffset, bytes, seed] * n, priority?)
/// -> { event, sums(): Uint32Array | undefined (until the event completed) }
Napi::Value FileWrap::WriteSummed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    io::FilePtr f = file(env);
    auto* src = arg_wrap<BufferWrap>(info, 0, "buffer");
    std::vector<io::CheckedPiece> pieces = parse_pieces(info, 1, 4);
    const io::Priority priority = arg_priority(info, 2, io::Priority::kLow);
    const BufferPtr& s = src->buffer(env);
    check_range(s.get(), device_->device.get(), 0, 0, "source");
    Device& dev = *device_->device;
    io::CheckedRequest request =
        io::write_summed(*engine_, f, s, std::move(pieces), dev.completer(), dev.next_id(), priority);
    Napi::Object out = Napi::Object::New(env);
    out.Set("event", event(env, request.event));
    out.Set("sums", Napi::Function::New(env, [request](const Napi::CallbackInfo& i) -> Napi::Value {
              if (request.event->status() == EventStatus::kPending) return i.Env().Undefined();
              const std::vector<std::uint32_t>& sums = request.report->sums;
              Napi::Uint32Array a = Napi::Uint32Array::New(i.Env(), sums.size());
              for (std::size_t k = 0; k < sums.size(); ++k) a[k] = sums[k];
              return a;
            }));
    return out;
  });
}

Napi::Value FileWrap::Preallocate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    io::FilePtr f = file(env);
    const std::size_t bytes = arg_size(info, 0, "bytes");
    return event(env, engine_->run([f, bytes] { f->preallocate(bytes); }));
  });
}

Napi::Value FileWrap::Sync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    io::FilePtr f = file(env);
    return event(env, engine_->run([f] { f->sync(); }));
  });
}

Napi::Value FileWrap::Size(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value { return Napi::Number::New(env, static_cast<double>(file(env)->size())); });
}

Napi::Value FileWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    io::FilePtr f = file(env);
    Napi::Object o = Napi::Object::New(env);
    o.Set("path", f->path());
    o.Set("direct", f->direct());
    o.Set("directReason", f->direct_reason());
    o.Set("gds", f->gds() != nullptr);
    o.Set("gdsReason", f->gds_reason());
    return o;
  });
}

/// Lets go of the file: its descriptors close once no request in flight holds it.
Napi::Value FileWrap::Close(const Napi::CallbackInfo& info) {
  slot_.reset();
  engine_.reset();
  return info.Env().Undefined();
}

}  // namespace kvflow::napi
