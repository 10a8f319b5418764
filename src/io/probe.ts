/**
 * What this host's IO can do, for `kvflow doctor` and the tests: whether
 * io_uring can be set up, and whether O_DIRECT works in a directory. Not
 * exported from the package: the O_DIRECT probe blocks for a few disk IOs.
 */
import { loadBinding } from '../binding/load.js';

/** A verdict with its reason. */
export interface ProbeResult {
  ok: boolean;
  reason: string;
}

/** O_DIRECT's verdict in a directory, and the alignment direct IO needs (4 KiB, or the page size where larger). */
export interface DirectProbeResult extends ProbeResult {
  alignment: number;
}

/** Sets up a small io_uring ring and checks the operations the engine needs. */
export function probeIoUring(): ProbeResult {
  const p = loadBinding().binding.probeIoUring();
  return { ok: p.available, reason: p.reason };
}

/** Creates a probe file in `dir` with O_DIRECT, writes and reads back one aligned block, removes it. Blocking. */
export function probeDirectIo(dir: string): DirectProbeResult {
  const p = loadBinding().binding.probeDirect(dir);
  return { ok: p.supported, reason: p.reason, alignment: p.alignment };
}
