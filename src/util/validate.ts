/**
 * The one vocabulary of argument checks: every check throws a KvflowError
 * whose message reads "expected X for Y, got Z", so a user reads the same
 * sentence whether an option, an environment variable or a piece of a table
 * was wrong.
 */
import { KvflowError, describe, type KvflowErrorCode } from '../errors.js';

/** The error of a bad parameter: "expected `expected` for `name`, got `actual`" (ERR_INVALID_ARG unless `code` says otherwise). */
export function invalidParameterError(
  name: string,
  expected: string,
  actual: unknown,
  code: KvflowErrorCode = 'ERR_INVALID_ARG',
): KvflowError {
  return new KvflowError(`expected ${expected} for ${name}, got ${describe(actual)}`, code);
}

/** Quoted choices joined as "'a', 'b' or 'c'". */
export function choiceList(choices: readonly string[]): string {
  const quoted = choices.map((c) => `'${c}'`);
  return quoted.length < 2 ? quoted.join('') : `${quoted.slice(0, -1).join(', ')} or ${quoted[quoted.length - 1]}`;
}

/** Type guards, in the manner of sharp's `is`. */
export const is = {
  /** A non-negative safe integer. */
  size: (value: unknown): value is number => typeof value === 'number' && Number.isSafeInteger(value) && value >= 0,
  /** A safe integer from `min` to `max`. */
  inRange: (value: unknown, min: number, max: number): value is number =>
    typeof value === 'number' && Number.isSafeInteger(value) && value >= min && value <= max,
  /** One of `choices`. */
  oneOf: <T extends string>(value: unknown, choices: readonly T[]): value is T =>
    typeof value === 'string' && (choices as readonly string[]).includes(value),
  /** A plain object (not null, not an array). */
  object: (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value),
  /** A string of at least one character. */
  nonEmptyString: (value: unknown): value is string => typeof value === 'string' && value.length > 0,
} as const;

/** An instance of one of `classes` (described as `expected`, e.g. "a KvFile"). */
export function checkInstance<T>(value: unknown, name: string, expected: string, ...classes: Array<abstract new (...args: never[]) => T>): T {
  if (!classes.some((c) => value instanceof c)) throw invalidParameterError(name, expected, value);
  return value as T;
}

/** A positive safe integer up to `max`. */
export function checkPositiveInteger(value: unknown, name: string, max = Number.MAX_SAFE_INTEGER): number {
  if (!is.inRange(value, 1, max)) throw invalidParameterError(name, 'a positive integer', value);
  return value;
}

/** One of `choices`, or ERR_INVALID_ARG naming them. */
export function checkChoice<T extends string>(value: unknown, name: string, choices: readonly T[]): T {
  if (!is.oneOf(value, choices)) throw invalidParameterError(name, choiceList(choices), value);
  return value;
}

/** An integer from `min` to `max`. */
export function checkInteger(value: unknown, name: string, min: number, max: number): number {
  if (!is.inRange(value, min, max)) throw invalidParameterError(name, `an integer from ${min} to ${max}`, value);
  return value;
}

/** A boolean. */
export function checkBoolean(value: unknown, name: string): boolean {
  if (typeof value !== 'boolean') throw invalidParameterError(name, 'a boolean', value);
  return value;
}

/**
 * Options of a call that takes only `known` keys: undefined or null mean
 * defaults ({}); another value, or an unknown key (a typo that would be
 * silently ignored), is ERR_INVALID_ARG.
 */
export function checkKnownOptions(value: unknown, name: string, known: readonly string[]): Record<string, unknown> {
  if (value === undefined || value === null) return {};
  const o = checkOptions(value, name);
  for (const key of Object.keys(o)) {
    if (!known.includes(key)) throw new KvflowError(`expected an option name of ${choiceList(known)} in ${name}, got ${JSON.stringify(key)}`, 'ERR_INVALID_ARG');
  }
  return o;
}

/** An options object. */
export function checkOptions(value: unknown, name = 'options'): Record<string, unknown> {
  if (typeof value !== 'object' || value === null) throw invalidParameterError(name, 'an options object', value);
  return value as Record<string, unknown>;
}

/** A byte count or offset: a non-negative safe integer. */
export function checkSize(value: unknown, name: string): number {
  if (!is.size(value)) throw invalidParameterError(name, 'a non-negative integer', value);
  return value;
}

/** A positive byte count. */
export function checkPositiveSize(value: unknown, name: string): number {
  if (checkSize(value, name) === 0) throw invalidParameterError(name, 'a positive integer', 0);
  return value as number;
}

/** A positive multiple of 4096 up to `max` (IO task sizes and bounce chunks). */
export function checkBlockMultiple(value: unknown, name: string, max: number): number {
  if (!is.inRange(value, 4096, max) || value % 4096 !== 0) {
    throw invalidParameterError(name, `a multiple of 4096 from 4096 to ${max}`, value);
  }
  return value;
}

/** A pointer or handle from another addon: a non-negative 64-bit bigint. */
export function checkAddress(value: unknown, name: string): bigint {
  if (typeof value !== 'bigint' || value < 0n || value >= 1n << 64n) {
    throw invalidParameterError(name, 'a 64-bit unsigned bigint', value);
  }
  return value;
}

/** An unsigned 32-bit integer. */
export function checkU32(value: unknown, name: string): number {
  if (!is.inRange(value, 0, 0xffffffff)) throw invalidParameterError(name, 'an unsigned 32-bit integer', value);
  return value;
}

/** `offset + bytes` within `size` (ERR_OUT_OF_RANGE). */
export function checkRange(offset: number, bytes: number, size: number, name: string): void {
  if (offset > size || bytes > size - offset) {
    throw new KvflowError(
      `expected ${name} range within the buffer's ${size} bytes, got offset ${offset} + ${bytes} bytes`,
      'ERR_OUT_OF_RANGE',
    );
  }
}
