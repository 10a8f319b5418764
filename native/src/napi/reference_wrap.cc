#include "reference_wrap.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "buffer_wrap.hpp"
#include "common.hpp"
#include "device_wrap.hpp"
#include "kvflow/checks.hpp"
#include "stream_wrap.hpp"

namespace kvflow::napi {

namespace {

constexpr std::uint32_t kMaxDim = 1u << 20;  // any one dimension of a model

Napi::Error invalid(Napi::Env env, const std::string& message) { return make_error(env, ErrorCode::kInvalidArg, message); }
Napi::Error out_of_range(Napi::Env env, const std::string& message) { return make_error(env, ErrorCode::kOutOfRange, message); }

double field_number(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw invalid(o.Env(), std::string("expected a number for ") + key + ", got " + (v.IsUndefined() ? "undefined" : "a non-number"));
  return v.As<Napi::Number>().DoubleValue();
}

std::uint32_t field_u32(const Napi::Object& o, const char* key, std::uint32_t min, std::uint32_t max) {
  const double d = field_number(o, key);
  if (!std::isfinite(d) || d != std::floor(d) || d < min || d > max) {
    throw invalid(o.Env(), std::string("expected an integer in [") + std::to_string(min) + ", " + std::to_string(max) +
                               "] for " + key + ", got " + std::to_string(d));
  }
  return static_cast<std::uint32_t>(d);
}

bool field_bool(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) throw invalid(o.Env(), std::string("expected a boolean for ") + key);
  return v.As<Napi::Boolean>().Value();
}

ModelShape parse_shape(Napi::Env env, Napi::Value value) {
  if (!value.IsObject()) throw invalid(env, "expected a model shape object");
  const Napi::Object o = value.As<Napi::Object>();
  ModelShape s;
  s.layers = field_u32(o, "layers", 1, 4096);
  s.weight_layers = field_u32(o, "weightLayers", 1, s.layers);
  s.hidden = field_u32(o, "hidden", 1, kMaxDim);
  s.heads = field_u32(o, "heads", 1, 4096);
  s.kv_heads = field_u32(o, "kvHeads", 1, s.heads);
  s.head_dim = field_u32(o, "headDim", 2, 4096);
  s.intermediate = field_u32(o, "intermediate", 1, kMaxDim);
  s.vocab = field_u32(o, "vocab", 1, 1u << 24);
  s.max_tokens = field_u32(o, "maxTokens", 1, 1u << 24);
  if (s.heads % s.kv_heads != 0) {
    throw invalid(env, "expected kvHeads to divide heads (" + std::to_string(s.heads) + "), got " + std::to_string(s.kv_heads));
  }
  if (s.head_dim % 2 != 0) throw invalid(env, "expected an even headDim for RoPE, got " + std::to_string(s.head_dim));
  const double theta = field_number(o, "ropeTheta");
  const double eps = field_number(o, "normEps");
  if (!std::isfinite(theta) || theta <= 1) throw invalid(env, "expected a finite ropeTheta above 1, got " + std::to_string(theta));
  if (!std::isfinite(eps) || eps <= 0 || eps > 1) throw invalid(env, "expected normEps in (0, 1], got " + std::to_string(eps));
  s.rope_theta = static_cast<float>(theta);
  s.norm_eps = static_cast<float>(eps);
  s.qk_norm = field_bool(o, "qkNorm");
  const double seed = field_number(o, "seed");
  if (!std::isfinite(seed) || seed < 0 || seed != std::floor(seed) || seed > 9007199254740991.0) {
    throw invalid(env, "expected a non-negative safe integer for seed, got " + std::to_string(seed));
  }
  s.seed = static_cast<std::uint64_t>(seed);
  return s;
}

/// a * b * c bytes, or kOutOfRange when it overflows.
std::size_t product(Napi::Env env, std::size_t a, std::size_t b, std::size_t c) {
  std::size_t ab = 0, abc = 0;
  if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, &abc)) throw out_of_range(env, "size overflows");
  return abc;
}

std::vector<std::int32_t> int32_array(const Napi::CallbackInfo& info, std::size_t index, const char* name) {
  if (!info[index].IsTypedArray() || info[index].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw invalid(info.Env(), std::string("expected an Int32Array for ") + name);
  }
  const Napi::Int32Array a = info[index].As<Napi::Int32Array>();
  return std::vector<std::int32_t>(a.Data(), a.Data() + a.ElementLength());
}

}  // namespace

Napi::Function ReferenceModelWrap::Init(Napi::Env env) {
  return DefineClass(env, "NativeReferenceModel",
                     {
                         InstanceAccessor<&ReferenceModelWrap::HiddenElementBytes>("hiddenElementBytes"),
                         InstanceAccessor<&ReferenceModelWrap::WeightBytes>("weightBytes"),
                         InstanceMethod<&ReferenceModelWrap::Embed>("embed"),
                         InstanceMethod<&ReferenceModelWrap::Layer>("layer"),
                         InstanceMethod<&ReferenceModelWrap::FinalNorm>("finalNorm"),
                         InstanceMethod<&ReferenceModelWrap::Close>("close"),
                     });
}

ReferenceModelWrap::ReferenceModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ReferenceModelWrap>(info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    auto* owner = arg_wrap<DeviceWrap>(info, 0, "device");
    const std::shared_ptr<DeviceHandle>& device = owner->handle();
    if (!device || device->closed) throw make_error(env, ErrorCode::kDisposed, "device is disposed");
    const ModelShape shape = parse_shape(env, info[1]);
    std::shared_ptr<ReferenceModel> model(device->device->create_reference(shape));
    device->add_model(model);
    device_ = device;
    model_ = std::move(model);
    reported_bytes_ = static_cast<std::int64_t>(model_->weight_bytes());
    Napi::MemoryManagement::AdjustExternalMemory(env, reported_bytes_);
  });
}

ReferenceModelWrap::~ReferenceModelWrap() {
  // Collected without dispose(): work already enqueued keeps what it uses.
  if (model_) model_->close();
}

ReferenceModel& ReferenceModelWrap::model(Napi::Env env) {
  if (!model_ || !device_ || device_->closed) throw make_error(env, ErrorCode::kDisposed, "reference model is disposed");
  return *model_;
}

Stream& ReferenceModelWrap::stream_arg(const Napi::CallbackInfo& info, std::size_t index) {
  Napi::Env env = info.Env();
  auto* s = arg_wrap<StreamWrap>(info, index, "stream");
  if (s->device().get() != device_.get()) {
    throw invalid(env, "expected a stream of the model's device, got a stream of another device");
  }
  return s->stream(env);
}

BufferPtr ReferenceModelWrap::buffer_arg(const Napi::CallbackInfo& info, std::size_t index, std::size_t bytes,
                                         const char* name) {
  Napi::Env env = info.Env();
  auto* wrap = arg_wrap<BufferWrap>(info, index, "buffer");
  const BufferPtr& buffer = wrap->buffer(env);
  if (buffer->kind() != MemoryKind::kDevice) {
    throw invalid(env, std::string("expected device memory for ") + name + ", got " + memory_kind_name(buffer->kind()) + " memory");
  }
  check_range(buffer.get(), device_->device.get(), 0, bytes, name);
  return buffer;
}

std::uint32_t ReferenceModelWrap::count_arg(Napi::Env env, std::size_t count, const char* what) {
  const std::uint32_t max = model_->shape().max_tokens;
  if (count == 0) throw invalid(env, std::string("expected at least one token for ") + what + ", got 0");
  if (count > max) {
    throw out_of_range(env, std::string("expected at most maxTokens (") + std::to_string(max) + ") tokens for " + what +
                                ", got " + std::to_string(count));
  }
  return static_cast<std::uint32_t>(count);
}

Napi::Value ReferenceModelWrap::HiddenElementBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value { return Napi::Number::New(env, static_cast<double>(model(env).hidden_element_bytes())); });
}

Napi::Value ReferenceModelWrap::WeightBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value { return Napi::Number::New(env, static_cast<double>(model(env).weight_bytes())); });
}

/// embed(stream, hidden, tokens: Int32Array)
Napi::Value ReferenceModelWrap::Embed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    ReferenceModel& m = model(env);
    Stream& s = stream_arg(info, 0);
    std::vector<std::int32_t> tokens = int32_array(info, 2, "tokens");
    const std::uint32_t count = count_arg(env, tokens.size(), "embed");
    const ModelShape& shape = m.shape();
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] < 0 || static_cast<std::uint32_t>(tokens[i]) >= shape.vocab) {
        throw out_of_range(env, "expected token ids in [0, " + std::to_string(shape.vocab) + ") for tokens[" +
                                    std::to_string(i) + "], got " + std::to_string(tokens[i]));
      }
    }
    const BufferPtr hidden = buffer_arg(info, 1, product(env, count, shape.hidden, m.hidden_element_bytes()), "hidden");
    m.embed(s, hidden, tokens);
  });
  return env.Undefined();
}

/// layer(stream, layer, hidden, cache: { buffers, blockMajor, layers, kvHeads, headDim, blockTokens,
/// numBlocks, elementBytes }, blocks: Int32Array, start, count)
Napi::Value ReferenceModelWrap::Layer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    ReferenceModel& m = model(env);
    const ModelShape& shape = m.shape();
    Stream& s = stream_arg(info, 0);
    const std::size_t layer = arg_size(info, 1, "layer");
    if (layer >= shape.layers) {
      throw out_of_range(env, "expected layer in [0, " + std::to_string(shape.layers) + "), got " + std::to_string(layer));
    }
    const std::size_t start = arg_size(info, 5, "start");
    const std::uint32_t count = count_arg(env, arg_size(info, 6, "count"), "layer");
    if (start > (1u << 30)) throw out_of_range(env, "expected start at most 2^30, got " + std::to_string(start));
    const BufferPtr hidden = buffer_arg(info, 2, product(env, count, shape.hidden, m.hidden_element_bytes()), "hidden");

    if (!info[3].IsObject()) throw invalid(env, "expected a KV cache description");
    const Napi::Object c = info[3].As<Napi::Object>();
    PagedKv kv;
    kv.block_major = field_bool(c, "blockMajor");
    kv.layers = field_u32(c, "layers", 1, 4096);
    kv.kv_heads = field_u32(c, "kvHeads", 1, 4096);
    kv.head_dim = field_u32(c, "headDim", 1, 65536);
    kv.block_tokens = field_u32(c, "blockTokens", 1, 65536);
    kv.num_blocks = field_u32(c, "numBlocks", 1, 0x7fffffffu);
    const std::uint32_t element_bytes = field_u32(c, "elementBytes", 1, 8);
    if (kv.layers != shape.layers || kv.kv_heads != shape.kv_heads || kv.head_dim != shape.head_dim) {
      throw invalid(env, "expected a KV cache of " + std::to_string(shape.layers) + " layers x " + std::to_string(shape.kv_heads) +
                             " kv heads x " + std::to_string(shape.head_dim) + " head dim for this model, got " +
                             std::to_string(kv.layers) + " x " + std::to_string(kv.kv_heads) + " x " + std::to_string(kv.head_dim));
    }
    if (element_bytes != m.hidden_element_bytes()) {
      throw invalid(env, "expected a KV cache of " + std::to_string(m.hidden_element_bytes()) +
                             "-byte elements (this backend's dtype), got " + std::to_string(element_bytes) + "-byte elements");
    }
    const std::size_t piece = product(env, kv.block_tokens, kv.kv_heads, std::size_t{kv.head_dim} * element_bytes);
    const std::size_t per_layer = product(env, piece, kv.num_blocks, 2);
    const std::size_t buffer_bytes = kv.block_major ? product(env, per_layer, kv.layers, 1) : per_layer;
    const std::size_t buffer_count = kv.block_major ? 1 : kv.layers;
    const Napi::Value list = c.Get("buffers");
    if (!list.IsArray() || list.As<Napi::Array>().Length() != buffer_count) {
      throw invalid(env, "expected " + std::to_string(buffer_count) + " cache buffers");
    }
    const Napi::Array array = list.As<Napi::Array>();
    for (std::uint32_t i = 0; i < buffer_count; ++i) {
      BufferWrap* wrap = wrap_of<BufferWrap>(array.Get(i));
      if (wrap == nullptr) throw invalid(env, "expected kvflow buffers in the cache");
      const BufferPtr& b = wrap->buffer(env);
      if (b->kind() != MemoryKind::kDevice) throw invalid(env, "expected device memory for the KV cache");
      check_range(b.get(), device_->device.get(), 0, buffer_bytes, "cache");
      kv.buffers.push_back(b);
    }

    const std::vector<std::int32_t> table = int32_array(info, 4, "blocks");
    const std::size_t tokens = start + count;
    const std::size_t used = (tokens + kv.block_tokens - 1) / kv.block_tokens;
    if (table.size() < used) {
      throw out_of_range(env, "expected blocks covering " + std::to_string(tokens) + " tokens (" + std::to_string(used) +
                                  " blocks of " + std::to_string(kv.block_tokens) + "), got " + std::to_string(table.size()));
    }
    for (std::size_t i = 0; i < table.size(); ++i) {
      if (table[i] < 0 || static_cast<std::uint32_t>(table[i]) >= kv.num_blocks) {
        throw out_of_range(env, "expected block ids in [0, " + std::to_string(kv.num_blocks) + ") for blocks[" +
                                    std::to_string(i) + "], got " + std::to_string(table[i]));
      }
    }
    LayerCall call;
    call.layer = static_cast<std::uint32_t>(layer);
    call.hidden = hidden;
    call.start = static_cast<std::uint32_t>(start);
    call.count = count;
    call.blocks.assign(table.begin(), table.begin() + static_cast<std::ptrdiff_t>(used));
    std::vector<std::int32_t> sorted = call.blocks;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
      throw invalid(env, "expected distinct block ids for the blocks the tokens use, got a repeated id");
    }
    m.layer(s, kv, call);
  });
  return env.Undefined();
}

/// finalNorm(stream, out, hidden, count)
Napi::Value ReferenceModelWrap::FinalNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  guarded(env, [&] {
    ReferenceModel& m = model(env);
    Stream& s = stream_arg(info, 0);
    const std::uint32_t count = count_arg(env, arg_size(info, 3, "count"), "finalNorm");
    const std::size_t h = m.shape().hidden;
    const BufferPtr out = buffer_arg(info, 1, product(env, count, h, sizeof(float)), "out");
    const BufferPtr hidden = buffer_arg(info, 2, product(env, count, h, m.hidden_element_bytes()), "hidden");
    if (out == hidden) throw invalid(env, "expected different buffers for out and hidden, got the same buffer");
    m.final_norm(s, out, hidden, count);
  });
  return env.Undefined();
}

void ReferenceModelWrap::release(Napi::Env env) {
  if (model_) {
    model_->close();
    model_.reset();
  }
  if (reported_bytes_ != 0) {
    Napi::MemoryManagement::AdjustExternalMemory(env, -reported_bytes_);
    reported_bytes_ = 0;
  }
}

Napi::Value ReferenceModelWrap::Close(const Napi::CallbackInfo& info) {
  guarded(info.Env(), [&] { release(info.Env()); });
  return info.Env().Undefined();
}

}  // namespace kvflow::napi
