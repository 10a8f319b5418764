/**
 * Test-only hooks (not exported from the package entry point): hold a stream
 * deterministically and inject failures, so ordering, busy and error paths
 * are tested without clocks.
 */
import type { KvflowErrorCode } from '../errors.js';
import type { Device } from './device.js';
import type { Stream } from './stream.js';

/**
 * The thread that notices completed device work (CUDA: the completion
 * poller) stops until the returned function is called: events stay pending,
 * while the device's streams keep running. The CPU backend has no such thread.
 */
export function holdCompletions(device: Device): () => void {
  return device.holdCompletions();
}

/**
 * Work enqueued on `stream` after this waits until the returned function is
 * called; called with a failure, the gate opens with it (the stream's next
 * event fails with it, as when a file read it waited on failed).
 */
export function holdStream(stream: Stream): (failure?: { code: KvflowErrorCode; message: string }) => void {
  const open = stream.native.hold();
  return (failure) => (failure ? open(failure.code, failure.message) : open());
}

/** The next operation enqueued on `stream` fails with `code` and does nothing. */
export function injectFailure(stream: Stream, code: KvflowErrorCode, message: string): void {
  stream.native.injectFailure(code, message);
}

/**
 * Enqueues a compute load that keeps every SM busy for `iterations` rounds of
 * FMAs (the CPU backend: the stream's thread). For contention benchmarks.
 */
export function busyKernel(stream: Stream, iterations: number): void {
  stream.native.busy(iterations);
}

/**
 * Enqueues `count` bf16 GEMMs of n x n x n (default 8192) from cuBLAS, loaded
 * at run time (`KVFLOW_CUBLAS` names the library when it is not on the
 * loader's path): a realistic compute load for contention benchmarks. The
 * matrices' contents are meaningless. CUDA only: ERR_UNSUPPORTED on the CPU
 * backend or without cuBLAS.
 */
export function gemmLoad(stream: Stream, count: number, n = 8192): void {
  stream.native.busyGemm(count, n);
}
