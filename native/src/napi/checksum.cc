#include "checksum.hpp"

#include <cmath>
#include <string>

#include "common.hpp"
#include "kvflow/crc32c.hpp"

namespace kvflow::napi {

Napi::Value Crc32c(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw make_error(env, ErrorCode::kInvalidArg, "expected a Uint8Array for data");
  }
  if (!info[1].IsNumber()) throw make_error(env, ErrorCode::kInvalidArg, "expected an unsigned 32-bit integer for seed");
  const double seed = info[1].As<Napi::Number>().DoubleValue();
  if (!(seed >= 0) || seed > 4294967295.0 || seed != std::floor(seed)) {
    throw make_error(env, ErrorCode::kInvalidArg,
                     "expected an unsigned 32-bit integer for seed, got " + std::to_string(seed));
  }
  Napi::Uint8Array data = info[0].As<Napi::Uint8Array>();
  const std::uint32_t crc = crc32c(static_cast<std::uint32_t>(seed), data.Data(), data.ByteLength());
  return Napi::Number::New(env, static_cast<double>(crc));
}

}  // namespace kvflow::napi
