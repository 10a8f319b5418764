// See kvflow/dl.hpp.
#include "kvflow/dl.hpp"

#include <dlfcn.h>

#include <cstdlib>

namespace kvflow::dl {

std::string Library::tried() const {
  std::string out;
  for (const Attempt& a : failed) out += (out.empty() ? "" : "; ") + a.name + ": " + a.why;
  return out;
}

Library open(std::initializer_list<const char*> names, const char* env) {
  Library lib;
  const char* chosen = env != nullptr ? std::getenv(env) : nullptr;
  std::vector<const char*> order;
  order.push_back(chosen);
  order.insert(order.end(), names.begin(), names.end());
  for (const char* name : order) {
    if (name == nullptr || *name == '\0') continue;
    void* handle = ::dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (handle != nullptr) {
      lib.handle = handle;
      lib.name = name;
      return lib;
    }
    const char* why = ::dlerror();
    lib.failed.push_back({name, why != nullptr ? why : "not found"});
  }
  return lib;
}

void close(Library& library) noexcept {
  if (library.handle != nullptr) ::dlclose(library.handle);
  library.handle = nullptr;
}

std::string resolve(const Library& library, std::initializer_list<Symbol> table) {
  std::string missing;
  for (const Symbol& s : table) {
    void* address = library.handle != nullptr ? ::dlsym(library.handle, s.name) : nullptr;
    if (address == nullptr) {
      missing += (missing.empty() ? "" : ", ") + std::string(s.name);
      continue;
    }
    s.assign(s.target, address);
  }
  return missing;
}

}  // namespace kvflow::dl
