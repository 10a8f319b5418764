// Argument checks that run before any pointer arithmetic, whatever the caller
// already checked.
#pragma once

#include <cstddef>

#include "kvflow/buffer.hpp"

namespace kvflow {

/// Throws kInvalidArg (wrong device, null), kDisposed (retired) or
/// kOutOfRange (offset + bytes past the end, overflow included).
void check_range(const Buffer* buffer, const void* device, std::size_t offset, std::size_t bytes,
                 const char* what);

}  // namespace kvflow
