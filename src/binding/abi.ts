/**
 * The addon interface version this TypeScript build expects. It must equal
 * `kAbiVersion` in native/include/kvflow/abi.hpp (test/native/abi.test.ts
 * checks it); the loader refuses an addon that reports another one.
 */
export const ABI_VERSION = 7;
