/**
 * The backends every device suite runs on: always the CPU backend, and CUDA
 * where a device can be opened (the GPU box); skipped with the reason elsewhere.
 */
import { randomFillSync } from 'node:crypto';

import { afterAll, beforeAll, expect } from 'vitest';

import { KvflowError, openDevice, selectBackend, type Backend, type Device, type KvBuffer } from '../../src/index.js';

function cudaUnavailable(): string | undefined {
  try {
    selectBackend('cuda');
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Why CUDA suites are skipped here, or undefined when they run. */
export const cudaSkipReason = cudaUnavailable();

/** [backend, skip] pairs for describe.each. */
export const backends: Array<{ backend: Backend; skip: boolean }> = [
  { backend: 'cpu', skip: false },
  { backend: 'cuda', skip: cudaSkipReason !== undefined },
];

export function open(backend: Backend, options: { maxPinnedBytes?: number } = {}): Device {
  return openDevice({ backend, ...options });
}

/** Random bytes (never zeros: a test on zeros hides unwritten memory). */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) randomFillSync(out, off, Math.min(65536, n - off));
  return out;
}

/** Fills a host-visible buffer with a poison pattern. */
export function poison(array: Uint8Array): void {
  array.fill(0xa5);
}

/** Lets the event loop turn `n` times. */
export async function ticks(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
}

/** Byte-exact equality with a short diagnosis. */
export function sameBytes(a: Uint8Array, b: Uint8Array): string {
  if (a.byteLength !== b.byteLength) return `length ${a.byteLength} != ${b.byteLength}`;
  if (Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0) {
    return 'equal';
  }
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return `first difference at byte ${i}: ${a[i]} != ${b[i]}`;
  return 'equal';
}

export type AnyBuffer = KvBuffer;

/** The KvflowError code `fn` throws (failing the test if it throws anything else), or 'no error'. */
export function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(KvflowError);
    return (e as KvflowError).code;
  }
  return 'no error';
}

/**
 * Called inside a describe: opens a device on `backend` before the suite
 * (unless skipped) and disposes it after. Read `dev` inside tests only.
 */
export function deviceSuite(backend: Backend, skip: boolean): { dev: Device } {
  const fx = {} as { dev: Device };
  beforeAll(() => {
    if (!skip) fx.dev = open(backend);
  });
  afterAll(async () => {
    await fx.dev?.dispose();
  });
  return fx;
}

type Pinned = ReturnType<Device['allocPinned']>;

/**
 * Buffers for a copy host -> device -> host of `bytes`: a pinned `src`
 * holding `data` (random), a device `mid`, and a pinned `out` poisoned.
 */
export function throughDevice(dev: Device, bytes: number): { src: Pinned; mid: ReturnType<Device['allocDevice']>; out: Pinned; data: Uint8Array } {
  const src = dev.allocPinned(bytes);
  const mid = dev.allocDevice(bytes);
  const out = dev.allocPinned(bytes);
  const data = randomBytes(bytes);
  src.array.set(data);
  poison(out.array);
  return { src, mid, out, data };
}
