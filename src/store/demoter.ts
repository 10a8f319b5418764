/**
 * Admission and demotion: which ready DRAM chunks go down to the demotion
 * tier (NVMe), and the background writer that sends them there in batches
 * (one tier write, so one fsync and one index commit, per batch).
 */
import { KvflowError } from '../errors.js';
import { channels } from '../util/diagnostics.js';
import type { DramChunk } from './arena.js';
import type { AdmissionInfo } from './config.js';
import type { Admission, StoreCore } from './core.js';
import { RefCount } from './refcount.js';

/** Keys whose commits are counted for admission (`seen`), oldest forgotten first. */
const SEEN_KEYS = 65536;

interface Demotion {
  chunk: DramChunk;
  /** A durable put waits on it: failing to write it is an error, not a drop. */
  force: boolean;
  waiters: { resolve: () => void; reject: (e: unknown) => void }[];
}

/** Waits for every promise, then rejects with the first failure, if any. */
export async function settleAll(promises: readonly Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

export class Demoter implements Admission {
  readonly #core: StoreCore;
  readonly #queue: Demotion[] = [];
  readonly #seen = new RefCount<string>();
  #writer: Promise<void> | undefined;

  constructor(core: StoreCore) {
    this.#core = core;
  }

  /** Resolves once the queue is empty (or the store closed) and the writer has stopped. */
  async idle(): Promise<void> {
    while (this.#writer) await this.#writer;
  }

  /** This process committed `key` once more. */
  committed(key: string): void {
    this.#seen.add(key);
    if (this.#seen.size > SEEN_KEYS) this.#seen.dropOldest();
  }

  /** Applies the admission policy to a ready DRAM chunk not yet in the demotion tier. */
  consider(c: DramChunk): void {
    if (c.stored || c.demoting || c.state !== 'ready' || this.#core.demoteTo === undefined) return;
    const info: AdmissionInfo = { key: c.key, hits: c.hits, seen: this.#seen.get(c.key) };
    const a = this.#core.config.admit;
    let admitted: boolean;
    try {
      admitted = a === 'always' || (a === 'hit-or-twice' && (info.hits > 0 || info.seen >= 2)) || (typeof a === 'function' && a(info) === true);
    } catch {
      this.#core.local.admitErrors!++;
      admitted = false; // a failing policy admits nothing
    }
    if (admitted) void this.demote(c, false).catch(() => undefined);
  }

  /**
   * Queues a chunk for the demotion tier. Resolves once it is written there;
   * a forced (durable) demotion that could not be written rejects, an
   * admitted one that could not is only counted.
   */
  demote(c: DramChunk, force: boolean): Promise<void> {
    if (c.stored) return Promise.resolve();
    const existing = this.#queue.find((d) => d.chunk === c);
    if (existing) {
      existing.force ||= force;
      return new Promise<void>((resolve, reject) => existing.waiters.push({ resolve, reject }));
    }
    if (this.#queue.length >= this.#core.config.backlog && !force) {
      this.#core.local.demoteDropped!++;
      if (channels.demoteDropped.hasSubscribers) channels.demoteDropped.publish({ key: c.key, reason: 'backlog' });
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      this.#core.dram.pin(c);
      c.demoting = true;
      this.#queue.push({ chunk: c, force, waiters: [{ resolve, reject }] });
      // Started a microtask later, so that the chunks of one commit go in one batch.
      this.#writer ??= Promise.resolve().then(() => this.#drain()).finally(() => {
        this.#writer = undefined;
      });
    });
  }

  async #drain(): Promise<void> {
    const core = this.#core;
    while (this.#queue.length > 0 && !core.closed) {
      // One batch is one fsync and one index commit: up to writeBatchBytes of records,
      // so a large durable put is not cut into batches that leave the disk idle
      // while each one syncs.
      const batch = this.#queue.splice(0, Math.max(1, Math.min(core.config.writeBatchChunks, Math.floor(core.config.writeBatchBytes / core.config.recordBytes))));
      let failures: Map<DramChunk, unknown>;
      try {
        failures = await this.#write(batch.map((d) => d.chunk));
      } catch (e) {
        failures = new Map(batch.map((d) => [d.chunk, e]));
      }
      for (const d of batch) {
        d.chunk.demoting = false;
        core.dram.unpin(d.chunk);
        const failure = failures.get(d.chunk);
        if (failure !== undefined) {
          if (d.force) core.local.writeErrors!++;
          else core.local.demoteDropped!++;
          if (!d.force && channels.demoteDropped.hasSubscribers) channels.demoteDropped.publish({ key: d.chunk.key, reason: 'error', error: failure });
        }
        for (const w of d.waiters) {
          if (failure === undefined || !d.force) w.resolve();
          else w.reject(failure);
        }
      }
    }
    for (const d of this.#queue.splice(0)) {
      d.chunk.demoting = false;
      core.dram.unpin(d.chunk);
      const closed = new KvflowError('the store was closed before the chunk was written', 'ERR_ABORTED');
      for (const w of d.waiters) (d.force ? w.reject(closed) : w.resolve());
    }
  }

  /** Writes chunks to the demotion tier; returns those it does not hold afterwards, with why. */
  async #write(chunks: DramChunk[]): Promise<Map<DramChunk, unknown>> {
    const core = this.#core;
    const failures = new Map<DramChunk, unknown>();
    const todo = chunks.filter((c) => !c.stored);
    if (todo.length === 0) return failures;
    const target = core.demoteTo;
    if (target?.write === undefined) {
      const none = new KvflowError('the store has no tier to write chunks to', 'ERR_UNSUPPORTED');
      for (const c of todo) failures.set(c, none);
      return failures;
    }
    const result = await target.write(todo.map((c) => ({ key: c.key, index: c.index, src: { buffer: c.slot.buffer, offset: c.slot.offset } })));
    for (const key of result.evicted) {
      const d = core.dram.arena.chunks.get(key);
      if (d) d.stored = false;
    }
    todo.forEach((c, i) => {
      const failure = result.failed.get(i);
      if (result.failed.has(i)) failures.set(c, failure ?? new KvflowError('the chunk was not written', 'ERR_IO'));
      else {
        c.stored = true;
        // The checksums of the bytes this DRAM slot held when written (verify.ts checks DRAM by them).
        const sums = result.sums?.get(i);
        if (sums) c.sums = [...sums];
      }
    });
    core.local.demoted! += result.written;
    return failures;
  }
}
