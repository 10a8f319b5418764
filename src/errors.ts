/**
 * Stable error codes. Every error kvflow raises, from TypeScript or from the
 * native core, is a {@link KvflowError} with one of these codes.
 */
export type KvflowErrorCode =
  | 'ERR_INVALID_ARG'
  | 'ERR_OUT_OF_RANGE'
  | 'ERR_DISPOSED'
  | 'ERR_BUSY'
  | 'ERR_OUT_OF_MEMORY'
  | 'ERR_CUDA'
  | 'ERR_IO'
  | 'ERR_NO_SPACE'
  | 'ERR_CHECKSUM'
  | 'ERR_TIMEOUT'
  | 'ERR_UNSUPPORTED'
  | 'ERR_ABORTED'
  | 'ERR_EVICTED'
  | 'ERR_LOAD';

/** An error with a stable {@link KvflowErrorCode}; native errors add `errno`, `cudaError` and `nativeWhere`. */
export class KvflowError extends Error {
  /** The stable code to branch on. */
  readonly code: KvflowErrorCode;
  /** The OS errno of a failed system call, when there was one. */
  declare errno?: number;
  /** The cudaError_t of a failed CUDA call, when there was one. */
  declare cudaError?: number;
  /** Native source location of the failure, for bug reports. */
  declare nativeWhere?: string;

  /** `options.cause`: what led to it (an aborted call's `signal.reason`). */
  constructor(message: string, code: KvflowErrorCode, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KvflowError';
    this.code = code;
  }
}

/** Throws a KvflowError; `never` so that callers narrow. */
export function fail(code: KvflowErrorCode, message: string): never {
  throw new KvflowError(message, code);
}

/** Short description of a value for messages of the form "expected X for Y, got Z". */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (typeof value === 'object') return `a ${value.constructor?.name ?? 'object'}`;
  return `a ${typeof value}`;
}
