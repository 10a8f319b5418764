// File <-> any buffer in stream order, through a ring of pinned bounce
// buffers: disk reads overlap copies into the destination (and copies out of
// the source overlap disk writes). Enqueued at once; no host thread blocks on
// the GPU. Work queued on the stream after a read runs after the data is in
// place; an event recorded after a write completes once the write finished.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvflow/device.hpp"
#include "kvflow/io.hpp"

namespace kvflow::io {

struct BounceOptions {
  std::size_t chunk = std::size_t{8} << 20;  // bytes per bounce buffer (multiple of 4096)
  unsigned slots = 4;                        // bounce buffers in the ring
};

/// Enqueues on `stream`: `bytes` bytes of `file` at `file_offset` into `dst` at
/// `dst_offset`. A failed disk read fails the stream's next event (the stream
/// never waits forever).
void enqueue_read_file(Device& device, Stream& stream, const EnginePtr& engine, const FilePtr& file,
                       const BufferPtr& dst, std::size_t dst_offset, std::uint64_t file_offset, std::size_t bytes,
                       const BounceOptions& options);

/// Enqueues on `stream`: `bytes` bytes of `src` at `src_offset` to `file` at
/// `file_offset`, after the work enqueued before it.
void enqueue_write_file(Device& device, Stream& stream, const EnginePtr& engine, const FilePtr& file,
                        std::uint64_t file_offset, const BufferPtr& src, std::size_t src_offset, std::size_t bytes,
                        const BounceOptions& options);

}  // namespace kvflow::io
