// The CPU backend's stream: an ordered queue served by one worker thread, so
// the CPU backend keeps the CUDA backend's ordering and error semantics.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <variant>
#include <vector>

#include "kvflow/completer.hpp"
#include "kvflow/stream.hpp"

namespace kvflow::cpu {

class CpuStream final : public Stream {
 public:
  using IdSource = std::function<std::uint64_t()>;
  CpuStream(Completer& completer, IdSource next_id);
  ~CpuStream() override;

  void copy(const BufferPtr& dst, std::size_t dst_offset, const BufferPtr& src, std::size_t src_offset,
            std::size_t bytes) override;
  void copy_batch(const std::vector<BufferPtr>& dsts, const std::vector<BufferPtr>& srcs,
                  std::vector<CopyPiece> pieces, BatchEngine engine) override;
  void busy(std::uint64_t iterations) override;
  void launch(std::function<void(std::uintptr_t stream)> fn, std::vector<std::shared_ptr<const void>> hold) override;
  [[nodiscard]] EventPtr record() override;
  [[nodiscard]] EventPtr record_timed() override;
  void wait(const EventPtr& event) override;
  [[nodiscard]] bool idle() override;
  [[nodiscard]] std::uintptr_t handle() const noexcept override;
  void wait_gate(const GatePtr& gate, HostCall before = nullptr) override;
  void host_call(HostCall fn) override;
  void inject_failure(ErrorPtr error) override;
  void close(bool abandon) override;

 private:
  struct CopyOp {
    BufferPtr dst;
    std::size_t dst_offset;
    BufferPtr src;
    std::size_t src_offset;
    std::size_t bytes;
  };
  struct BatchOp {
    std::vector<BufferPtr> dsts;
    std::vector<BufferPtr> srcs;
    std::vector<CopyPiece> pieces;
  };
  struct BusyOp {
    std::uint64_t iterations;
  };
  struct LaunchOp {
    std::function<void(std::uintptr_t)> fn;
    std::vector<std::shared_ptr<const void>> hold;  // released with the op, before the next marker runs
  };
  struct MarkOp {
    EventPtr event;
  };
  struct WaitOp {
    EventPtr event;
  };
  struct GateOp {
    GatePtr gate;
    HostCall before;  // runs even when the op fails
  };
  struct CallOp {
    HostCall fn;
  };
  struct Op {
    std::variant<CopyOp, BatchOp, BusyOp, LaunchOp, MarkOp, WaitOp, GateOp, CallOp> body;
    ErrorPtr injected;  // set: the op fails with this and does nothing
  };

  void push(Op op, bool user = true);  // user: an injected failure applies to it
  void run();
  void execute(Op& op);

  Completer& completer_;
  IdSource next_id_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Op> queue_;
  std::size_t pending_ = 0;  // queued plus executing
  bool stopping_ = false;
  std::atomic<bool> abandon_{false};
  ErrorPtr next_failure_;
  std::vector<GatePtr> gates_;
  ErrorPtr span_error_;  // worker only: first failure since the last marker
  std::thread worker_;
  bool closed_ = false;
};

}  // namespace kvflow::cpu
