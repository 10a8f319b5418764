#include "cpu_stream.hpp"

#include <chrono>
#include <cstring>
#include <utility>

namespace kvflow::cpu {

CpuStream::CpuStream(Completer& completer, IdSource next_id)
    : completer_(completer), next_id_(std::move(next_id)), worker_([this] { run(); }) {}

CpuStream::~CpuStream() { close(true); }

void CpuStream::push(Op op, bool user) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    KVFLOW_CHECK(!stopping_, kDisposed, "stream is disposed");
    if (user && next_failure_) op.injected = std::exchange(next_failure_, nullptr);
    queue_.push_back(std::move(op));
    ++pending_;
  }
  cv_.notify_one();
}

void CpuStream::copy(const BufferPtr& dst, std::size_t dst_offset, const BufferPtr& src, std::size_t src_offset,
                     std::size_t bytes) {
  push(Op{CopyOp{dst, dst_offset, src, src_offset, bytes}, nullptr});
}

void CpuStream::copy_batch(const std::vector<BufferPtr>& dsts, const std::vector<BufferPtr>& srcs,
                           std::vector<CopyPiece> pieces, BatchEngine) {
  push(Op{BatchOp{dsts, srcs, std::move(pieces)}, nullptr});
}

void CpuStream::busy(std::uint64_t iterations) { push(Op{BusyOp{iterations}, nullptr}); }

void CpuStream::launch(std::function<void(std::uintptr_t)> fn, std::vector<std::shared_ptr<const void>> hold) {
  KVFLOW_CHECK(static_cast<bool>(fn), kInvalidArg, "expected work to launch, got none");
  push(Op{LaunchOp{std::move(fn), std::move(hold)}, nullptr});
}

EventPtr CpuStream::record() {
  auto event = std::make_shared<EventState>(next_id_());
  push(Op{MarkOp{event}, nullptr});
  return event;
}

EventPtr CpuStream::record_timed() {
  auto event = std::make_shared<EventState>(next_id_());
  event->mark_timed();
  push(Op{MarkOp{event}, nullptr});
  return event;
}

void CpuStream::wait(const EventPtr& event) { push(Op{WaitOp{event}, nullptr}); }

void CpuStream::wait_gate(const GatePtr& gate, HostCall before) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Only gates still closed matter to close(abandon): a long-lived stream
    // waiting on many IO events must not keep every gate it ever had.
    std::erase_if(gates_, [](const GatePtr& g) { return g->is_open(); });
    gates_.push_back(gate);
  }
  push(Op{GateOp{gate, std::move(before)}, nullptr});
}

void CpuStream::host_call(HostCall fn) { push(Op{CallOp{std::move(fn)}, nullptr}, false); }

void CpuStream::inject_failure(ErrorPtr error) {
  std::lock_guard<std::mutex> lock(mutex_);
  next_failure_ = std::move(error);
}

bool CpuStream::idle() {
  std::lock_guard<std::mutex> lock(mutex_);
  return pending_ == 0;
}

std::uintptr_t CpuStream::handle() const noexcept { return reinterpret_cast<std::uintptr_t>(this); }

void CpuStream::run() {
  for (;;) {
    Op op;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      op = std::move(queue_.front());
      queue_.pop_front();
    }
    // A marker always completes, so a failure never leaves a waiter hanging.
    // It completes after the stream counted it done: whoever sees the event
    // complete also sees the stream idle when nothing else is queued.
    EventPtr mark;
    ErrorPtr mark_error;
    if (auto* m = std::get_if<MarkOp>(&op.body)) {
      if (op.injected && !span_error_) span_error_ = op.injected;
      if (m->event->timed() && !span_error_) {  // a failed event has no time, as on CUDA
        const auto now = std::chrono::steady_clock::now().time_since_epoch();
        m->event->set_time_ms(std::chrono::duration<double, std::milli>(now).count());
      }
      mark = m->event;
      mark_error = std::exchange(span_error_, nullptr);
    } else {
      execute(op);
    }
    op = Op{};  // what the op held is let go before the stream reads idle
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --pending_;
    }
    if (mark && mark->complete(std::move(mark_error))) completer_.post(mark->id());
  }
}

void CpuStream::execute(Op& op) {
  if (auto* call = std::get_if<CallOp>(&op.body)) {
    try {
      call->fn(span_error_);
    } catch (...) {
    }
    return;
  }
  if (auto* g = std::get_if<GateOp>(&op.body)) {
    // A failed wait still waits: what follows it (a bounce slot's reuse, say)
    // must never run before the gate opens.
    if (op.injected && !span_error_) span_error_ = op.injected;
    if (g->before) {
      try {
        g->before(span_error_);
      } catch (...) {
      }
    }
    try {
      g->gate->wait();
    } catch (...) {
      if (!span_error_) span_error_ = capture_current_exception();
    }
    if (ErrorPtr error = g->gate->event()->error(); error && !span_error_) span_error_ = error;
    return;
  }
  if (op.injected) {
    if (!span_error_) span_error_ = op.injected;
    return;
  }
  try {
    if (auto* c = std::get_if<CopyOp>(&op.body)) {
      // memmove: a copy inside one buffer may overlap, and must not corrupt it.
      std::memmove(static_cast<char*>(c->dst->ptr()) + c->dst_offset,
                   static_cast<const char*>(c->src->ptr()) + c->src_offset, c->bytes);
    } else if (auto* b = std::get_if<BatchOp>(&op.body)) {
      for (const CopyPiece& p : b->pieces) {
        std::memmove(static_cast<char*>(b->dsts[p.dst]->ptr()) + p.dst_offset,
                     static_cast<const char*>(b->srcs[p.src]->ptr()) + p.src_offset, p.bytes);
      }
    } else if (auto* l = std::get_if<LaunchOp>(&op.body)) {
      l->fn(0);
    } else if (auto* busy = std::get_if<BusyOp>(&op.body)) {
      volatile double x = 1.0;
      for (std::uint64_t i = 0; i < busy->iterations; ++i) x = x * 1.0000001 + 1e-9;
    } else if (auto* w = std::get_if<WaitOp>(&op.body)) {
      while (!w->event->wait_for(std::chrono::milliseconds(20))) {
        if (abandon_.load(std::memory_order_acquire)) return;
      }
      if (w->event->status() == EventStatus::kFailed && !span_error_) span_error_ = w->event->error();
    }
  } catch (...) {
    if (!span_error_) span_error_ = capture_current_exception();
  }
}

void CpuStream::close(bool abandon) {
  std::vector<GatePtr> gates;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    closed_ = true;
    stopping_ = true;
    if (abandon) gates.swap(gates_);
  }
  if (abandon) {
    abandon_.store(true, std::memory_order_release);
    // The work behind an abandoned wait runs, but its events say the wait never ended.
    const auto aborted = std::make_shared<const Error>(ErrorCode::kAborted, "the stream was closed while it waited");
    for (auto& gate : gates) gate->open(aborted);
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

}  // namespace kvflow::cpu
