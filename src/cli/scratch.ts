/**
 * The demo's store directory and its clean-up: a temporary directory unless
 * the user named one, removed when the run ends however it ends. Ctrl-C
 * (SIGINT) or SIGTERM aborts the run (the signal given to it), says so, and
 * once the run has disposed what it opened the temporary directory is
 * removed and the command exits 130; should the run not stop within a few
 * seconds, the directory is removed and the process exits anyway.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Seconds a run has to stop after a signal before the process exits without it. */
const FORCE_EXIT_MS = 5000;

export interface Scratch {
  readonly dir: string;
  readonly temporary: boolean;
  /** Aborted by SIGINT or SIGTERM. */
  readonly signal: AbortSignal;
  /** Removes the directory when temporary and stops listening for signals. */
  release(): void;
}

/** A store directory for one run: `dir` when given (kept), else a fresh temporary one (removed). */
export function scratchDir(dir: string | undefined): Scratch {
  const temporary = dir === undefined;
  const where = dir ?? mkdtempSync(path.join(os.tmpdir(), 'kvflow-demo-'));
  const controller = new AbortController();
  let force: NodeJS.Timeout | undefined;
  const remove = (): void => {
    if (temporary) rmSync(where, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    if (controller.signal.aborted) return;
    process.stderr.write(`${process.stderr.isTTY ? '\r\x1b[K' : ''}${sig === 'SIGINT' ? 'interrupted' : sig}: stopping${temporary ? ' and removing the temporary store' : ''}\n`);
    controller.abort(new Error(`stopped by ${sig}`));
    force = setTimeout(() => {
      remove();
      process.exit(130);
    }, FORCE_EXIT_MS);
    force.unref();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    dir: where,
    temporary,
    signal: controller.signal,
    release() {
      remove();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      if (force) clearTimeout(force);
    },
  };
}
