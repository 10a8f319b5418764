#include "kvflow/error.hpp"

#include <cstring>
#include <new>

namespace kvflow {

const char* error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kInvalidArg: return "ERR_INVALID_ARG";
    case ErrorCode::kOutOfRange: return "ERR_OUT_OF_RANGE";
    case ErrorCode::kDisposed: return "ERR_DISPOSED";
    case ErrorCode::kBusy: return "ERR_BUSY";
    case ErrorCode::kOutOfMemory: return "ERR_OUT_OF_MEMORY";
    case ErrorCode::kCuda: return "ERR_CUDA";
    case ErrorCode::kIo: return "ERR_IO";
    case ErrorCode::kNoSpace: return "ERR_NO_SPACE";
    case ErrorCode::kChecksum: return "ERR_CHECKSUM";
    case ErrorCode::kTimeout: return "ERR_TIMEOUT";
    case ErrorCode::kUnsupported: return "ERR_UNSUPPORTED";
    case ErrorCode::kAborted: return "ERR_ABORTED";
    case ErrorCode::kLoad: return "ERR_LOAD";
  }
  return "ERR_UNKNOWN";
}

namespace {
std::string where_of(const char* file, int line) {
  if (file == nullptr) return {};
  const char* base = std::strrchr(file, '/');
  return std::string(base != nullptr ? base + 1 : file) + ":" + std::to_string(line);
}
}  // namespace

Error::Error(ErrorCode code, const std::string& message, const char* file, int line, int sys_errno,
             int cuda_error)
    : std::runtime_error(message),
      code_(code),
      sys_errno_(sys_errno),
      cuda_error_(cuda_error),
      where_(where_of(file, line)) {}

void throw_error(ErrorCode code, const std::string& message, const char* file, int line) {
  throw Error(code, message, file, line);
}

namespace {
// Made at load and never destroyed (threads may outlive static destruction):
// when even an Error cannot be allocated, a failure is still reported as one
// (never as a null error, which reads as success).
const ErrorPtr* const out_of_memory =
    new ErrorPtr(std::make_shared<const Error>(ErrorCode::kOutOfMemory, "out of host memory"));
}  // namespace

ErrorPtr capture_current_exception() noexcept {
  try {
    try {
      throw;
    } catch (const Error& e) {
      return std::make_shared<const Error>(e);
    } catch (const std::bad_alloc&) {
      return std::make_shared<const Error>(ErrorCode::kOutOfMemory, "out of host memory");
    } catch (const std::exception& e) {
      return std::make_shared<const Error>(ErrorCode::kIo, e.what());
    } catch (...) {
      return std::make_shared<const Error>(ErrorCode::kIo, "unknown native exception");
    }
  } catch (...) {
    return *out_of_memory;  // allocation of the error itself failed
  }
}

}  // namespace kvflow
