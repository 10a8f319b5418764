// Typed errors of the kvflow core. The Node-API glue maps them to KvflowError
// with the stable string code given by error_code_name().
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

namespace kvflow {

enum class ErrorCode : int {
  kInvalidArg,
  kOutOfRange,
  kDisposed,
  kBusy,
  kOutOfMemory,
  kCuda,
  kIo,
  kNoSpace,
  kChecksum,
  kTimeout,
  kUnsupported,
  kAborted,
  kLoad,
};

/// Stable code string, e.g. "ERR_INVALID_ARG".
[[nodiscard]] const char* error_code_name(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message, const char* file = nullptr, int line = 0,
        int sys_errno = 0, int cuda_error = 0);

  [[nodiscard]] ErrorCode code() const noexcept { return code_; }
  [[nodiscard]] int sys_errno() const noexcept { return sys_errno_; }
  [[nodiscard]] int cuda_error() const noexcept { return cuda_error_; }
  /// "file.cc:123" of the throwing site, empty when unknown.
  [[nodiscard]] const std::string& where() const noexcept { return where_; }

 private:
  ErrorCode code_;
  int sys_errno_;
  int cuda_error_;
  std::string where_;
};

/// Errors travel between threads as immutable shared objects.
using ErrorPtr = std::shared_ptr<const Error>;

[[noreturn]] void throw_error(ErrorCode code, const std::string& message, const char* file, int line);

/// Converts whatever is in flight inside a catch block into an ErrorPtr.
[[nodiscard]] ErrorPtr capture_current_exception() noexcept;

}  // namespace kvflow

#define KVFLOW_FAIL(code, msg) ::kvflow::throw_error(::kvflow::ErrorCode::code, (msg), __FILE__, __LINE__)
#define KVFLOW_CHECK(cond, code, msg) \
  do {                                \
    if (!(cond)) KVFLOW_FAIL(code, msg); \
  } while (0)
