#include "kvflow/checks.hpp"

#include <string>

#include "kvflow/error.hpp"

namespace kvflow {

void check_range(const Buffer* buffer, const void* device, std::size_t offset, std::size_t bytes,
                 const char* what) {
  const std::string name(what);
  KVFLOW_CHECK(buffer != nullptr, kInvalidArg, "expected a buffer for " + name + ", got none");
  KVFLOW_CHECK(buffer->owner() == device, kInvalidArg,
               "expected a buffer of this device for " + name + ", got a buffer of another device");
  KVFLOW_CHECK(!buffer->retired(), kDisposed, name + " buffer is disposed");
  const std::size_t size = buffer->bytes();
  KVFLOW_CHECK(offset <= size && bytes <= size - offset, kOutOfRange,
               "expected " + name + " range within the buffer's " + std::to_string(size) + " bytes, got offset " +
                   std::to_string(offset) + " + " + std::to_string(bytes) + " bytes");
}

}  // namespace kvflow
