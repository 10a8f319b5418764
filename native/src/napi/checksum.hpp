// CRC32C for JS, over bytes JS already holds (small data, tests): the store
// checksums its extents on IO threads through FileWrap's checked requests.
#pragma once

#include <napi.h>

namespace kvflow::napi {

/// crc32c(view: Uint8Array, seed: number) -> number (unsigned 32-bit). Synchronous.
Napi::Value Crc32c(const Napi::CallbackInfo& info);

}  // namespace kvflow::napi
