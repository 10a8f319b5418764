/**
 * Test-only hooks of the IO engines (not exported from the package entry
 * point): hold an engine deterministically and inject task failures, so busy,
 * dispose and error paths are tested without clocks and without a broken disk.
 */
import type { KvFile } from './file.js';

/** No task of `file`'s engine (shared by the device's files of that engine) starts until the returned function is called. */
export function holdIo(file: KvFile): () => void {
  return file.engine.hold();
}

/** The `nth` task started from now on `file`'s engine (1: the next) fails with `errno` instead of moving bytes. */
export function injectIoFault(file: KvFile, nth: number, errno: number): void {
  file.engine.injectFault(nth, errno);
}

/**
 * Bytes `file`'s engine moved through O_DIRECT and through the page cache,
 * tasks that failed, and tasks of each priority started, since it was made.
 */
export function ioStats(file: KvFile): { directBytes: number; bufferedBytes: number; failedTasks: number; highTasks: number; lowTasks: number } {
  return file.engine.stats();
}
