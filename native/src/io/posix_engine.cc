// The posix engine: a pool of threads, each taking the next task and moving
// it with pread/pwrite. Works on every kernel; large tasks keep the syscall
// count low, several threads keep several IOs in flight.
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "io/engine_state.hpp"

namespace kvflow::io {

namespace {

class PosixEngine final : public Engine {
 public:
  PosixEngine(const EngineOptions& options, Completer& completer, IdSource next_id)
      : Engine(options, completer, std::move(next_id)) {
    start();
  }
  ~PosixEngine() override { close(false); }

 protected:
  void start() override {
    try {
      workers_.reserve(options_.threads);
      for (unsigned i = 0; i < options_.threads; ++i) workers_.emplace_back([this] { loop(); });
    } catch (const std::system_error& e) {
      close(true);
      KVFLOW_FAIL(kOutOfMemory, std::string("cannot start the posix IO engine's threads: ") + e.what());
    }
  }

  void wake() override { state_->cv.notify_all(); }

  void join() override {
    for (std::thread& t : workers_) join_thread(t);
  }

 private:
  void loop() noexcept {
    Task task;
    while (state_->take(task, true)) {
      run_task(task, state_->counters);
      task = Task{};  // drop the request before waiting for the next one
    }
  }

  std::vector<std::thread> workers_;
};

}  // namespace

EnginePtr make_posix_engine(const EngineOptions& options, Completer& completer, Engine::IdSource next_id) {
  return std::make_shared<PosixEngine>(options, completer, std::move(next_id));
}

}  // namespace kvflow::io
