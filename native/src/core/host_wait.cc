// Streams waiting on events completed by host threads (see stream.hpp).
#include <memory>

#include "kvflow/gate.hpp"
#include "kvflow/stream.hpp"

namespace kvflow {

void wait_host_event(Stream& stream, const EventPtr& event) {
  KVFLOW_CHECK(event != nullptr, kInvalidArg, "expected an event to wait on, got none");
  if (event->status() != EventStatus::kPending) {
    // Nothing to wait for: the backend only inherits the failure, if any.
    stream.wait(event);
    return;
  }
  auto gate = std::make_shared<Gate>();
  // Chained before the stream waits: if enqueuing the wait throws, the gate
  // still opens when the event completes, and nothing is left waiting.
  event->then([gate](const ErrorPtr& error) { gate->open(error); });
  stream.wait_gate(gate);
}

}  // namespace kvflow
