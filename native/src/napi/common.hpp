// Shared pieces of the Node-API glue: per-environment addon data, argument
// parsing with the core's error codes, and the mapping of core errors to
// KvflowError.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "kvflow/error.hpp"

namespace kvflow::napi {

/// Per-environment state (no mutable statics: worker threads get their own).
struct AddonData {
  Napi::FunctionReference error_class;  // KvflowError, set by the TS loader
  Napi::FunctionReference device_ctor;
  Napi::FunctionReference buffer_ctor;
  Napi::FunctionReference stream_ctor;
  Napi::FunctionReference event_ctor;
  Napi::FunctionReference io_engine_ctor;
  Napi::FunctionReference file_ctor;
  Napi::FunctionReference batch_ctor;
  /// The state of the event EventWrap::NewInstance is constructing (an EventInit), only during that call.
  void* pending_event = nullptr;
};

[[nodiscard]] AddonData& addon_data(Napi::Env env);

/// A KvflowError (or an Error with `code` before the class is registered).
[[nodiscard]] Napi::Error make_error(Napi::Env env, ErrorCode code, const std::string& message);
[[nodiscard]] Napi::Value error_value(Napi::Env env, const Error& error);

/// Runs `fn`, turning core exceptions into JS exceptions carrying their code.
template <class Fn>
auto guarded(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const Error& e) {
    throw make_error(env, e.code(), e.what());
  } catch (const std::bad_alloc&) {
    throw make_error(env, ErrorCode::kOutOfMemory, "out of host memory");
  } catch (const std::exception& e) {
    throw make_error(env, ErrorCode::kIo, e.what());
  }
}

/// A non-negative integer count of bytes or an offset (checked again here,
/// whatever TS checked, before it can reach pointer arithmetic).
[[nodiscard]] std::size_t arg_size(const Napi::CallbackInfo& info, std::size_t index, const char* name);
[[nodiscard]] std::uintptr_t arg_address(const Napi::CallbackInfo& info, std::size_t index, const char* name);
[[nodiscard]] std::string arg_string(const Napi::CallbackInfo& info, std::size_t index, const char* name);

// Wrap classes whose objects JS hands back as arguments mark them in their
// constructor (tag_wrap) with a type tag of their own (`Wrap::kTypeTag`), and
// arguments are recognised by that tag: a private-property lookup, where
// InstanceOf looked up Symbol.hasInstance, called it and walked the prototype
// chain, the costliest step of checking a copy's arguments. An object that
// merely inherits a wrap's prototype carries no tag and is refused. The tag
// is made unique to this loaded copy of the addon (copy_tag): an object of
// another kvflow copy in the same process, whose classes may be laid out
// otherwise, is refused too.

/// A value unique to this loaded copy of the addon (the address of a static of its own).
/// Hidden in every build (not only where -fvisibility=hidden is on): an
/// exported one could be bound to another copy's under RTLD_GLOBAL.
[[nodiscard]] __attribute__((visibility("hidden"))) std::uint64_t copy_salt() noexcept;

/// `Wrap::kTypeTag` as this copy of the addon marks and checks it.
template <class Wrap>
[[nodiscard]] napi_type_tag copy_tag() noexcept {
  napi_type_tag tag = Wrap::kTypeTag;
  tag.upper ^= copy_salt();
  return tag;
}

/// Marks the object under construction as a `Wrap`.
template <class Wrap>
void tag_wrap(const Napi::CallbackInfo& info) {
  const napi_type_tag tag = copy_tag<Wrap>();
  info.This().As<Napi::Object>().TypeTag(&tag);
}

/// The `Wrap` behind `v`, or nullptr when `v` is not an object made by `Wrap`'s class.
template <class Wrap>
[[nodiscard]] Wrap* wrap_of(const Napi::Value& v) {
  if (!v.IsObject()) return nullptr;
  const Napi::Object object = v.As<Napi::Object>();
  const napi_type_tag tag = copy_tag<Wrap>();
  if (!object.CheckTypeTag(&tag)) return nullptr;
  return Wrap::Unwrap(object);
}

template <class Wrap>
[[nodiscard]] Wrap* arg_wrap(const Napi::CallbackInfo& info, std::size_t index, const char* name) {
  Wrap* wrap = wrap_of<Wrap>(info[index]);
  if (wrap == nullptr) {
    throw make_error(info.Env(), ErrorCode::kInvalidArg, std::string("expected a kvflow ") + name + " for argument " +
                                                             std::to_string(index) + ", got something else");
  }
  return wrap;
}

}  // namespace kvflow::napi
