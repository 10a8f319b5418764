// Probe: what it costs the JS thread to hand a new native-backed object to JS
// (kvflow's record() returns one per event: an ObjectWrap built through its
// constructor). Ways compared by napi_objects.mjs: an ObjectWrap made with
// Constructor.New() (kvflow's way), a plain object given a napi_wrap, a
// napi_create_external, an object made in JS and wrapped, a bare number (a
// crossing, no object), each state freed by a finalizer where there is one.
//
//   mkdir -p build-bench && g++ -std=c++17 -O2 -shared -fPIC -I/usr/include/node -Inode_modules/node-addon-api
//     -DNAPI_VERSION=8 -DNAPI_DISABLE_CPP_EXCEPTIONS -o build-bench/napi_objects.node bench/native/napi_objects.cc
//   node bench/native/napi_objects.mjs
#include <napi.h>

namespace {

struct State {
  int v = 1;
};

void free_state(napi_env /*env*/, void* data, void* /*hint*/) { delete static_cast<State*>(data); }

class Wrapped : public Napi::ObjectWrap<Wrapped> {
 public:
  static Napi::FunctionReference ctor;
  static Napi::Function Init(Napi::Env env) { return DefineClass(env, "Wrapped", {InstanceMethod<&Wrapped::Status>("status")}); }
  explicit Wrapped(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Wrapped>(info) {}
  Napi::Value Status(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), state_.v); }

 private:
  State state_;
};
Napi::FunctionReference Wrapped::ctor;

Napi::Value ObjectWrapNew(const Napi::CallbackInfo& /*info*/) { return Wrapped::ctor.New({}); }

Napi::Value ObjectAndWrap(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  napi_value o = nullptr;
  napi_create_object(env, &o);
  napi_wrap(env, o, new State, free_state, nullptr, nullptr);
  return {env, o};
}

Napi::Value External(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  napi_value o = nullptr;
  napi_create_external(env, new State, free_state, nullptr, &o);
  return {env, o};
}

Napi::Value WrapGiven(const Napi::CallbackInfo& info) {
  napi_wrap(info.Env(), info[0], new State, free_state, nullptr, nullptr);
  return info.Env().Undefined();
}

Napi::Value Number(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), 1); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Wrapped::ctor = Napi::Persistent(Wrapped::Init(env));
  exports.Set("objectWrapNew", Napi::Function::New<ObjectWrapNew>(env));
  exports.Set("objectAndWrap", Napi::Function::New<ObjectAndWrap>(env));
  exports.Set("external", Napi::Function::New<External>(env));
  exports.Set("wrapGiven", Napi::Function::New<WrapGiven>(env));
  exports.Set("number", Napi::Function::New<Number>(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(napi_objects, Init)
