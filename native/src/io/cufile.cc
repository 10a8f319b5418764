#include "cufile.hpp"

#include <cerrno>
#include <cstring>
#include <string>

#include "kvflow/dl.hpp"
#include "kvflow/error.hpp"

namespace kvflow::io {

namespace {

// The few cuFile prototypes kvflow needs, declared here (cufile.h is not
// needed to build). Layouts follow cufile.h of CUDA 12/13.
struct CUfileError_t {
  int err;     // CUfileOpError, 0 on success
  int cu_err;  // CUresult
};
struct CUfileDescr_t {
  int type;  // CU_FILE_HANDLE_TYPE_OPAQUE_FD = 1
  union {
    int fd;
    void* handle;
  } handle;
  const void* fs_ops;
};
using DriverOpen = CUfileError_t (*)();
using DriverClose = CUfileError_t (*)();
using HandleRegister = CUfileError_t (*)(void** fh, CUfileDescr_t* descr);
using HandleDeregister = void (*)(void* fh);
using FileRead = ssize_t (*)(void* fh, void* dev, std::size_t size, off_t file_offset, off_t dev_offset);
using FileWrite = ssize_t (*)(void* fh, const void* dev, std::size_t size, off_t file_offset, off_t dev_offset);

constexpr int kCuFileBase = 5000;  // cuFile's own error codes start here

std::string status_text(CUfileError_t s) {
  std::string out = "cuFile error " + std::to_string(s.err);
  if (s.err > 0 && s.err < kCuFileBase) out += " (" + std::string(std::strerror(s.err)) + ")";
  if (s.cu_err != 0) out += ", CUresult " + std::to_string(s.cu_err);
  return out;
}

}  // namespace

class CuFileLib {
 public:
  static std::shared_ptr<CuFileLib> load(std::string& reason) {
    const dl::Library so = dl::open({"libcufile.so.0"});
    if (!so) {
      reason = "GPUDirect Storage unavailable: libcufile.so.0 not found (" +
               (so.failed.empty() ? std::string("dlopen failed") : so.failed.front().why) + ")";
      return nullptr;
    }
    std::shared_ptr<CuFileLib> lib(new CuFileLib());
    const std::string missing = dl::resolve(so, {
                                                    dl::symbol("cuFileDriverOpen", lib->open_),
                                                    dl::symbol("cuFileDriverClose", lib->close_),
                                                    dl::symbol("cuFileHandleRegister", lib->reg_),
                                                    dl::symbol("cuFileHandleDeregister", lib->dereg_),
                                                    dl::symbol("cuFileRead", lib->read_),
                                                    dl::symbol("cuFileWrite", lib->write_),
                                                });
    if (!missing.empty()) {
      reason = "GPUDirect Storage unavailable: " + so.name + " lacks the cuFile entry points kvflow uses (" + missing + ")";
      return nullptr;
    }
    const CUfileError_t s = lib->open_();
    if (s.err != 0) {
      reason = "GPUDirect Storage unavailable: cuFileDriverOpen failed: " + status_text(s);
      return nullptr;
    }
    lib->driver_open_ = true;
    return lib;
  }

  ~CuFileLib() {
    if (driver_open_) (void)close_();
    // The library stays loaded: cuFile keeps threads that must not lose their code.
  }

  bool driver_open_ = false;
  DriverOpen open_ = nullptr;
  DriverClose close_ = nullptr;
  HandleRegister reg_ = nullptr;
  HandleDeregister dereg_ = nullptr;
  FileRead read_ = nullptr;
  FileWrite write_ = nullptr;

 private:
  CuFileLib() = default;
};

std::shared_ptr<CuFileHandle> CuFileHandle::register_fd(int fd, const std::string& path, std::string& reason) {
  std::shared_ptr<CuFileLib> lib = CuFileLib::load(reason);
  if (!lib) return nullptr;
  CUfileDescr_t descr{};
  descr.type = 1;
  descr.handle.fd = fd;
  void* handle = nullptr;
  const CUfileError_t s = lib->reg_(&handle, &descr);
  if (s.err != 0) {
    reason = "GPUDirect Storage refused " + path + ": cuFileHandleRegister failed: " + status_text(s);
    return nullptr;
  }
  std::shared_ptr<CuFileHandle> h(new CuFileHandle());
  h->lib_ = std::move(lib);
  h->handle_ = handle;
  h->path_ = path;
  reason = "GPUDirect Storage: " + path + " registered with cuFile";
  return h;
}

CuFileHandle::~CuFileHandle() {
  if (handle_ != nullptr) lib_->dereg_(handle_);
}

namespace {
void fail_transfer(const char* op, const std::string& path, std::uint64_t offset, ssize_t r) {
  const int err = r < 0 ? static_cast<int>(-r) : EIO;
  const std::string what = std::string(op) + " of " + path + " at offset " + std::to_string(offset) + " failed: " +
                           (r == 0 ? std::string("end of file") : (err < kCuFileBase ? std::strerror(err) : "cuFile error " + std::to_string(err)));
  throw Error(err == ENOSPC ? ErrorCode::kNoSpace : ErrorCode::kIo, what, __FILE__, __LINE__, err < kCuFileBase ? err : 0);
}
}  // namespace

void CuFileHandle::read(void* dev_base, std::size_t dev_offset, std::uint64_t file_offset, std::size_t bytes) const {
  for (std::size_t done = 0; done < bytes;) {
    const ssize_t r = lib_->read_(handle_, dev_base, bytes - done, static_cast<off_t>(file_offset + done),
                                  static_cast<off_t>(dev_offset + done));
    if (r <= 0) fail_transfer("cuFileRead", path_, file_offset + done, r);
    done += static_cast<std::size_t>(r);
  }
}

void CuFileHandle::write(const void* dev_base, std::size_t dev_offset, std::uint64_t file_offset, std::size_t bytes) const {
  for (std::size_t done = 0; done < bytes;) {
    const ssize_t r = lib_->write_(handle_, dev_base, bytes - done, static_cast<off_t>(file_offset + done),
                                   static_cast<off_t>(dev_offset + done));
    if (r <= 0) fail_transfer("cuFileWrite", path_, file_offset + done, r);
    done += static_cast<std::size_t>(r);
  }
}

GdsProbe probe_gds() {
  GdsProbe p;
  std::shared_ptr<CuFileLib> lib = CuFileLib::load(p.reason);
  p.available = lib != nullptr;
  if (p.available) p.reason = "cuFile loaded and its driver opened; each file is registered before use";
  return p;
}

}  // namespace kvflow::io
