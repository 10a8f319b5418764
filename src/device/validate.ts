/** Argument checks shared by the device classes: "expected X for Y, got Z". */
import { describe, fail } from '../errors.js';

/** A byte count or offset: a non-negative safe integer. */
export function checkSize(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    fail('ERR_INVALID_ARG', `expected a non-negative integer for ${name}, got ${describe(value)}`);
  }
  return value;
}

/** A positive byte count. */
export function checkPositiveSize(value: unknown, name: string): number {
  if (checkSize(value, name) === 0) fail('ERR_INVALID_ARG', `expected a positive integer for ${name}, got 0`);
  return value as number;
}

/** A pointer or handle from another addon: a non-negative 64-bit bigint. */
export function checkAddress(value: unknown, name: string): bigint {
  if (typeof value !== 'bigint' || value < 0n || value >= 1n << 64n) {
    fail('ERR_INVALID_ARG', `expected a 64-bit unsigned bigint for ${name}, got ${describe(value)}`);
  }
  return value;
}

/** `offset + bytes` within `size`. */
export function checkRange(offset: number, bytes: number, size: number, name: string): void {
  if (offset > size || bytes > size - offset) {
    fail('ERR_OUT_OF_RANGE', `expected ${name} range within the buffer's ${size} bytes, got offset ${offset} + ${bytes} bytes`);
  }
}
