#include "common.hpp"

#include <cmath>

namespace kvflow::napi {

namespace {
// Its address differs in every loaded copy of the addon (internal linkage:
// never shared or interposed between copies).
const char copy_anchor = 0;
}  // namespace

std::uint64_t copy_salt() noexcept { return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&copy_anchor)); }

AddonData& addon_data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

Napi::Error make_error(Napi::Env env, ErrorCode code, const std::string& message) {
  AddonData* data = env.GetInstanceData<AddonData>();
  Napi::Object obj;
  if (data != nullptr && !data->error_class.IsEmpty()) {
    obj = data->error_class.New({Napi::String::New(env, message), Napi::String::New(env, error_code_name(code))});
  } else {
    obj = Napi::Error::New(env, message).Value();
    obj.Set("code", Napi::String::New(env, error_code_name(code)));
  }
  return Napi::Error(env, obj);
}

Napi::Value error_value(Napi::Env env, const Error& error) {
  Napi::Error e = make_error(env, error.code(), error.what());
  Napi::Object obj = e.Value();
  if (error.sys_errno() != 0) obj.Set("errno", Napi::Number::New(env, error.sys_errno()));
  if (error.cuda_error() != 0) obj.Set("cudaError", Napi::Number::New(env, error.cuda_error()));
  if (!error.where().empty()) obj.Set("nativeWhere", Napi::String::New(env, error.where()));
  return obj;
}

std::size_t arg_size(const Napi::CallbackInfo& info, std::size_t index, const char* name) {
  const double max_safe = 9007199254740991.0;
  // One call, which also tells a non-number (napi_number_expected), where
  // IsNumber() and DoubleValue() took two: sizes are on every copy's path.
  double d = 0;
  if (napi_get_value_double(info.Env(), info[index], &d) != napi_ok) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg,
                     std::string("expected a non-negative integer for ") + name + ", got a non-number");
  }
  if (!std::isfinite(d) || d < 0 || d != std::floor(d) || d > max_safe) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg,
                     std::string("expected a non-negative integer for ") + name + ", got " + std::to_string(d));
  }
  return static_cast<std::size_t>(d);
}

std::uintptr_t arg_address(const Napi::CallbackInfo& info, std::size_t index, const char* name) {
  Napi::Value v = info[index];
  if (!v.IsBigInt()) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg, std::string("expected a bigint for ") + name);
  }
  bool lossless = false;
  const std::uint64_t value = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg, std::string("expected a 64-bit unsigned bigint for ") + name);
  }
  return static_cast<std::uintptr_t>(value);
}

std::string arg_string(const Napi::CallbackInfo& info, std::size_t index, const char* name) {
  Napi::Value v = info[index];
  if (!v.IsString()) throw make_error(info.Env(), ErrorCode::kInvalidArg, std::string("expected a string for ") + name);
  return v.As<Napi::String>().Utf8Value();
}

}  // namespace kvflow::napi
