/**
 * Leases of NVMe slots, shared by the processes of a store directory: a
 * hit's chunks stay loadable for its life, whichever process would evict
 * them. No index write per lookup: each open store keeps a lease file,
 * `leases/<instance>.lease`, a table of fixed 16-byte records (slot, expiry
 * in ms since the epoch, as two f64; a zero expiry is a free record) written
 * in place without fsync. A record never moves while its lease lives, so a
 * reader sees every lease that was written before it read. A lease file
 * counts only while its instance holds its writer lock
 * (`writers/<instance>.lock`, catalog.ts), which the kernel drops when the
 * process dies; a lease past its expiry (`leaseSeconds`) no longer counts.
 *
 * Ordering against an eviction in another process: an evicting writer holds
 * `leases/evict.lock` (an exclusive flock) while it reads the lease files and
 * reserves slots (the index transaction that removes victims); a
 * reservation of free or never-used slots removes no entry and takes no
 * lock (nvme.ts). A lookup
 * writes its leases first, then checks that no eviction holds that lock,
 * then reads the index again: either the eviction read the lease files after
 * the lease was written (and skips the slot), or it finished before the
 * index was read again (and the lookup sees the chunk gone). When an
 * eviction is under way at that moment, the lookup does not count the chunk.
 */
import { closeSync, mkdirSync, openSync, readFileSync, readdirSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';

import { loadBinding } from '../binding/load.js';
import { KvflowError } from '../errors.js';

const RECORD = 16;

interface Held {
  count: number;
  until: number;
  record: number;
}

function writerAlive(dir: string, instance: string): boolean {
  return loadBinding().binding.lockHeld(path.join(dir, 'writers', `${instance}.lock`));
}

export class LeaseTable {
  readonly #dir: string;
  readonly #leases: string;
  readonly #instance: string;
  readonly #leaseMs: number;
  readonly #fd: number;
  readonly #held = new Map<number, Held>();
  readonly #freeRecords: number[] = [];
  readonly #buf = new Float64Array(2);
  #records = 0;
  #closed = false;

  private constructor(dir: string, instance: string, leaseMs: number, fd: number) {
    this.#dir = dir;
    this.#leases = path.join(dir, 'leases');
    this.#instance = instance;
    this.#leaseMs = leaseMs;
    this.#fd = fd;
  }

  /** Opens this instance's lease file in `dir` (whose writer lock the instance holds) and removes dead instances' files. */
  static open(dir: string, instance: string, leaseMs: number): LeaseTable {
    const leases = path.join(dir, 'leases');
    try {
      mkdirSync(leases, { recursive: true, mode: 0o700 });
      for (const name of readdirSync(leases)) {
        if (!name.endsWith('.lease') || writerAlive(dir, name.slice(0, -6))) continue;
        try {
          unlinkSync(path.join(leases, name));
        } catch {
          // Another process removed it first.
        }
      }
      return new LeaseTable(dir, instance, leaseMs, openSync(path.join(leases, `${instance}.lease`), 'w+', 0o600));
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new KvflowError(`cannot open the store's lease table in ${leases}: ${err.message}`, err.code === 'ENOSPC' ? 'ERR_NO_SPACE' : 'ERR_IO');
    }
  }

  #write(record: number, slot: number, until: number): void {
    this.#buf[0] = slot;
    this.#buf[1] = until;
    writeSync(this.#fd, new Uint8Array(this.#buf.buffer), 0, RECORD, record * RECORD);
  }

  /** Leases `slot` for `leaseSeconds` from now (a slot leased already: the lease is renewed). */
  add(slot: number): void {
    const until = Date.now() + this.#leaseMs;
    let h = this.#held.get(slot);
    if (h) {
      h.count++;
    } else {
      h = { count: 1, until, record: this.#freeRecords.pop() ?? this.#records++ };
      this.#held.set(slot, h);
    }
    h.until = until;
    this.#write(h.record, slot, until);
  }

  /** Ends one lease of `slot`; the record is freed with the last one. */
  release(slot: number): void {
    const h = this.#held.get(slot);
    if (!h) return;
    if (--h.count > 0) return;
    this.#held.delete(slot);
    if (!this.#closed) this.#write(h.record, 0, 0);
    this.#freeRecords.push(h.record);
  }

  /** True while a writer of the directory is between reading the leases and reserving slots. */
  evicting(): boolean {
    return loadBinding().binding.lockHeld(path.join(this.#leases, 'evict.lock'));
  }

  /** Slots no writer may evict now: this instance's leases and those of other live instances, unexpired. */
  busy(): Set<number> {
    const now = Date.now();
    const out = new Set<number>();
    for (const [slot, h] of this.#held) if (h.until > now) out.add(slot);
    for (const name of readdirSync(this.#leases)) {
      if (!name.endsWith('.lease')) continue;
      const instance = name.slice(0, -6);
      if (instance === this.#instance || !writerAlive(this.#dir, instance)) continue;
      let bytes: Buffer;
      try {
        bytes = readFileSync(path.join(this.#leases, name));
      } catch {
        continue; // its instance closed meanwhile
      }
      const n = Math.floor(bytes.length / RECORD);
      const records = new Float64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + n * RECORD));
      for (let i = 0; i < n; i++) if (records[2 * i + 1]! > now) out.add(records[2 * i]!);
    }
    return out;
  }

  /** Runs `reserve` while holding the directory's eviction lock (waiting for another writer's turn to end). */
  async exclusive<T>(reserve: () => Promise<T>): Promise<T> {
    const { binding } = loadBinding();
    const file = path.join(this.#leases, 'evict.lock');
    let fd: number | undefined;
    while (fd === undefined) {
      try {
        fd = binding.holdLock(file);
      } catch (e) {
        if ((e as KvflowError).code !== 'ERR_BUSY') throw e;
        await new Promise((r) => setTimeout(r, 1));
      }
    }
    try {
      return await reserve();
    } finally {
      binding.releaseLock(fd);
    }
  }

  /** Test hook: every lease of this instance is past its expiry. */
  expireAll(): void {
    for (const [slot, h] of this.#held) {
      h.until = 1;
      this.#write(h.record, slot, 1);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeSync(this.#fd);
    try {
      unlinkSync(path.join(this.#leases, `${this.#instance}.lease`));
    } catch {
      // Swept already.
    }
  }
}
