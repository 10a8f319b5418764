// Libraries loaded at run time (cuFile, cuBLAS, the NVIDIA driver): kvflow
// never links them, so it builds and loads on hosts without them and says
// which library or which entry point is missing. A caller opens a library
// from a list of names (an environment variable may name one first), then
// resolves a typed symbol table into function pointers.
#pragma once

#include <initializer_list>
#include <string>
#include <vector>

namespace kvflow::dl {

/// A library opened with dlopen (RTLD_NOW | RTLD_LOCAL), or why none was.
struct Library {
  void* handle = nullptr;
  std::string name;  // the name that loaded
  struct Attempt {
    std::string name;
    std::string why;  // dlerror()'s text
  };
  std::vector<Attempt> failed;  // the names tried before, or instead of, `name`

  [[nodiscard]] explicit operator bool() const noexcept { return handle != nullptr; }
  /// "name: why; name: why" for every failed attempt.
  [[nodiscard]] std::string tried() const;
};

/// Opens the first of `names` that loads. When `env` names a set, non-empty
/// environment variable, its value is tried first. Null or empty names are
/// skipped. Never throws except for allocation.
[[nodiscard]] Library open(std::initializer_list<const char*> names, const char* env = nullptr);

/// Closes a library opened by open() (for probes that only ask a question).
void close(Library& library) noexcept;

/// One entry of a symbol table: a name and the function pointer it sets.
struct Symbol {
  const char* name;
  void* target;
  void (*assign)(void* target, void* address);
};

/// The table entry that sets `out` (any function pointer type) to `name`.
template <class Fn>
[[nodiscard]] Symbol symbol(const char* name, Fn& out) {
  return Symbol{name, &out, [](void* target, void* address) { *static_cast<Fn*>(target) = reinterpret_cast<Fn>(address); }};
}

/// Resolves every symbol of `table` in `library`; returns the names not
/// found, comma-separated (empty when all were). Found ones are set either way.
[[nodiscard]] std::string resolve(const Library& library, std::initializer_list<Symbol> table);

}  // namespace kvflow::dl
