// Why the CUDA backend can or cannot open a device on this host, asked before
// any device is touched, so `auto` and `kvflow doctor` can say why, with the fix.
#pragma once

#include "kvflow/device.hpp"

namespace kvflow::cuda {

/// Checks the probe and the ordinal for open_cuda_device: throws kUnsupported
/// with the probe's reason, or kInvalidArg for an ordinal out of range.
void require_device(int ordinal);

}  // namespace kvflow::cuda
