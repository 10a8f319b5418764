// GPUDirect Storage through cuFile, loaded at run time (libcufile.so.0 is
// never needed to build or to load kvflow). Used for a file only after its
// real fd registered: anything else is a reason, reported, and the bounce
// path does the job.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace kvflow::io {

class CuFileLib;

/// A file registered with cuFile.
class CuFileHandle {
 public:
  /// Registers an O_DIRECT fd; nullptr with `reason` set when cuFile is
  /// missing or refuses (no nvidia-fs, unsupported filesystem, VM...).
  [[nodiscard]] static std::shared_ptr<CuFileHandle> register_fd(int fd, const std::string& path, std::string& reason);
  ~CuFileHandle();
  CuFileHandle(const CuFileHandle&) = delete;
  CuFileHandle& operator=(const CuFileHandle&) = delete;

  /// Reads `bytes` bytes at `file_offset` into device memory `dev_base` at
  /// `dev_offset`, looping over short transfers. Throws kIo / kNoSpace / kCuda.
  void read(void* dev_base, std::size_t dev_offset, std::uint64_t file_offset, std::size_t bytes) const;
  void write(const void* dev_base, std::size_t dev_offset, std::uint64_t file_offset, std::size_t bytes) const;

 private:
  CuFileHandle() = default;
  std::shared_ptr<CuFileLib> lib_;
  void* handle_ = nullptr;
  std::string path_;
};

/// Whether cuFile can be loaded and its driver opened here, and why not.
struct GdsProbe {
  bool available = false;
  std::string reason;
};
[[nodiscard]] GdsProbe probe_gds();

}  // namespace kvflow::io
