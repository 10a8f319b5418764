// CudaStream::wait_gate on a flag: the GPU waits with cuStreamWaitValue32
// until opening the gate sets the flag (see wait_value.hpp, flag_pool.hpp).
// Errors travel as with host-function gates: the gate's event is a failure
// source of the stream's next recorded event, and close(abandon) opens the
// gate, which sets the flag so the GPU's wait ends.
#include <algorithm>
#include <utility>

#include "cuda_error.hpp"
#include "cuda_stream.hpp"
#include "flag_pool.hpp"
#include "wait_value.hpp"

namespace kvflow::cuda {

void CudaStream::wait_flag_locked(std::uint64_t seq, const GatePtr& gate, std::shared_ptr<const void> hold) {
  StreamCore& c = *core_;
  FlagPtr flag = c.flags->acquire();
  std::erase_if(c.gates, [](const GatePtr& g) { return g->is_open(); });
  c.gates.push_back(gate);
  // The flag goes back to the pool only once an event recorded after the
  // wait completed (the GPU passed it) and the gate's callback below is gone
  // (ran, or can never run): it is never reused while a wait or a late open
  // can still touch it.
  c.retained.push_back(StreamCore::Retained{seq, {gate, flag}});
  if (hold) c.retained.back().hold.push_back(std::move(hold));
  try {
    c.failures.push_back(FailureSource{nullptr, gate->event()});  // a gate opened with an error fails the next event
    // Whoever opens the gate (an IO thread, a test hook, close(abandon)) sets
    // the flag; at once here if it is open already. Hooked before the wait is
    // enqueued, so no wait is ever left without a setter.
    gate->event()->then([flag](const ErrorPtr&) { flag->set(); });
    KVFLOW_CUDA(cudaSetDevice(c.ordinal));
    enqueue_wait_value(c.stream, flag->device());
  } catch (...) {
    c.arm_sweep_locked();
    throw;
  }
  c.arm_sweep_locked();
}

}  // namespace kvflow::cuda
