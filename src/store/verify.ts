/**
 * Scrub: reads every chunk's every layer extent and checks it against its
 * CRC32C (seeded by key and layer, as loads check), so that corruption is
 * found before a load meets it, and drops the bad chunks.
 *
 * NVMe: the index's entries, read a page at a time (yielding between
 * pages), then each chunk's record read with one checked read at low IO
 * priority (loads' reads start first), a few in flight, into pageable
 * buffers. The slot is leased meanwhile (no process evicts it), and a
 * mismatch counts only when the index still maps the key to the same slot,
 * entered at the same time, after the read: a slot rewritten under the
 * read (another process evicted the chunk) is skipped, never reported.
 * Drops are conditional on that mapping, as a load's are.
 *
 * DRAM: ready chunks whose checksums are known (a promotion keeps those its
 * reads were checked against; a chunk this process wrote to NVMe, those of
 * the write), checked on this thread one layer at a time, yielding between
 * layers. A DRAM chunk with no known checksums is counted as unchecked. A
 * bad DRAM copy leaves the tier (its slot is reused once loads in flight
 * from it completed); one being written to NVMe is reported, not dropped.
 *
 * A scrub is not work `flush()` or `close()` wait for: closing the store
 * makes it stop at its next step (reads in flight keep their files open
 * until they settle) and reject with ERR_DISPOSED.
 */
import { loadBinding } from '../binding/load.js';
import type { HostBuffer } from '../device/buffer.js';
import { KvflowError, describe, fail } from '../errors.js';
import { checkBoolean, checkKnownOptions } from '../util/validate.js';
import type { DramChunk } from './arena.js';
import type { CatalogEntry } from './catalog.js';
import type { StoreCore } from './core.js';
import { extentSeed } from './keys.js';

/** Options of `store.verify`. */
export interface VerifyOptions {
  /** Aborting it stops the scrub: reads in flight settle, then verify rejects with ERR_ABORTED (drops done so far stay done). */
  signal?: AbortSignal;
  /** Called after each chunk checked or skipped, with counts that only grow and end at the totals. */
  onProgress?: (progress: VerifyProgress) => void;
  /** Drop bad chunks from their tier (default true); false only reports them. */
  drop?: boolean;
}

export interface VerifyProgress {
  /** Chunks checked or skipped so far, of `totalChunks`. */
  chunks: number;
  totalChunks: number;
  /** Bytes of those chunks' records, of `totalBytes`. */
  bytes: number;
  totalBytes: number;
}

/** A layer extent that failed its check. */
export interface VerifyProblem {
  key: string;
  /** The model layer. */
  layer: number;
  tier: 'dram' | 'nvme';
  /** ERR_CHECKSUM: its bytes differ from their checksum; ERR_IO: the read failed (the chunk is not dropped). */
  code: 'ERR_CHECKSUM' | 'ERR_IO';
}

export interface VerifyReport {
  /** Chunks checked (both tiers: a chunk in DRAM and on NVMe counts twice). */
  chunks: number;
  /** Layer extents checked. */
  layers: number;
  /** Bytes checked. */
  bytes: number;
  /** Every extent that failed, in the order found. */
  bad: VerifyProblem[];
  /** Chunks dropped from a tier because an extent failed. */
  dropped: number;
  /** Chunks that left their tier (evicted, rewritten) before they could be checked. */
  skipped: number;
  /** DRAM chunks with no known checksum (never written to NVMe by this process, nor read from it). */
  unchecked: number;
}

/** NVMe records read at once. */
const DEPTH = 2;
/** Index entries read per turn of the event loop. */
const PAGE = 1024;
/** Bytes of DRAM checked between yields to the event loop. */
const DRAM_SLICE = 4 << 20;

function yieldTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function checkVerifyOptions(options: unknown): { signal: AbortSignal | undefined; onProgress: VerifyOptions['onProgress']; drop: boolean } {
  const o = checkKnownOptions(options, 'options', ['signal', 'onProgress', 'drop']);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) fail('ERR_INVALID_ARG', `expected an AbortSignal for signal, got ${describe(o.signal)}`);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') fail('ERR_INVALID_ARG', `expected a function for onProgress, got ${describe(o.onProgress)}`);
  return {
    signal: o.signal as AbortSignal | undefined,
    onProgress: o.onProgress as VerifyOptions['onProgress'],
    drop: o.drop === undefined ? true : checkBoolean(o.drop, 'drop'),
  };
}

interface NvmeItem {
  key: string;
  entry: CatalogEntry;
}

class Scrub {
  readonly core: StoreCore;
  readonly signal: AbortSignal | undefined;
  readonly onProgress: VerifyOptions['onProgress'];
  readonly drop: boolean;
  readonly report: VerifyReport = { chunks: 0, layers: 0, bytes: 0, bad: [], dropped: 0, skipped: 0, unchecked: 0 };
  readonly progress: VerifyProgress = { chunks: 0, totalChunks: 0, bytes: 0, totalBytes: 0 };
  readonly drops: Promise<void>[] = [];

  constructor(core: StoreCore, options: ReturnType<typeof checkVerifyOptions>) {
    this.core = core;
    this.signal = options.signal;
    this.onProgress = options.onProgress;
    this.drop = options.drop;
  }

  /** Throws ERR_ABORTED or ERR_DISPOSED when the scrub must stop. */
  stopIfAsked(): void {
    if (this.signal?.aborted) throw new KvflowError('verify was aborted', 'ERR_ABORTED');
    if (this.core.closed) throw new KvflowError('the store was closed during verify', 'ERR_DISPOSED');
  }

  /** One more chunk done (checked or skipped): progress counts its record's bytes either way, so it ends at the totals. */
  step(): void {
    this.progress.chunks++;
    this.progress.bytes += this.core.config.extentBytes * this.core.config.layers.count;
    this.onProgress?.({ ...this.progress });
  }

  async run(): Promise<VerifyReport> {
    const { core } = this;
    const layers = core.config.layers.count;
    const record = core.config.extentBytes * layers;
    const dram: DramChunk[] = [];
    for (const c of core.dram.arena.chunks.values()) {
      if (c.state !== 'ready' || c.dead) continue;
      if (c.sums?.length === layers && c.sums.every((s) => s !== undefined)) dram.push(c);
      else this.report.unchecked++;
    }
    const nvme = await this.nvmeEntries();
    this.progress.totalChunks = dram.length + nvme.length;
    this.progress.totalBytes = this.progress.totalChunks * record;
    try {
      await this.checkDram(dram);
      await this.checkNvme(nvme);
    } finally {
      await Promise.all(this.drops);
    }
    return this.report;
  }

  /** The index's entries of this store's geometry, a page per turn of the event loop. */
  async nvmeEntries(): Promise<NvmeItem[]> {
    const catalog = this.core.nvme.catalog;
    const layers = this.core.nvme.geometry.layers;
    catalog.root.resetReadTxn(); // what other processes committed until now
    const out: NvmeItem[] = [];
    let after: string | undefined;
    for (;;) {
      this.stopIfAsked();
      const page = catalog.entriesAfter(after, PAGE);
      for (const item of page) if (item.entry.crc.length === layers) out.push(item);
      if (page.length < PAGE) return out;
      after = page[page.length - 1]!.key;
      await yieldTurn();
    }
  }

  async checkDram(chunks: readonly DramChunk[]): Promise<void> {
    const { core } = this;
    const { crc32c } = loadBinding().binding;
    const extent = core.config.extentBytes;
    const first = core.config.layers.first;
    let sinceYield = 0;
    for (const c of chunks) {
      let checked = 0;
      let bad = false;
      for (let li = 0; li < c.sums!.length; li++) {
        this.stopIfAsked();
        if (sinceYield >= DRAM_SLICE) {
          sinceYield = 0;
          await yieldTurn();
          this.stopIfAsked();
        }
        if (c.dead) break; // evicted or dropped meanwhile
        const at = c.slot.offset + li * extent;
        const sum = crc32c(c.slot.buffer.array.subarray(at, at + extent), extentSeed(c.key, li)) as number;
        sinceYield += extent;
        checked++;
        if (sum !== c.sums![li]) {
          bad = true;
          this.report.bad.push({ key: c.key, layer: first + li, tier: 'dram', code: 'ERR_CHECKSUM' });
        }
      }
      if (checked === c.sums!.length || bad) this.count(checked, extent);
      else this.report.skipped++;
      if (bad) {
        core.local.checksumFailures!++;
        core.countShared('checksumFailures');
        if (this.drop && !c.dead && !c.demoting && core.dram.arena.chunks.get(c.key) === c) {
          core.dram.arena.discard(c);
          this.report.dropped++;
        }
      }
      this.step();
    }
  }

  count(layers: number, extent: number): void {
    this.report.chunks++;
    this.report.layers += layers;
    this.report.bytes += layers * extent;
  }

  async checkNvme(items: readonly NvmeItem[]): Promise<void> {
    const device = this.core.config.device;
    const record = this.core.config.extentBytes * this.core.nvme.geometry.layers;
    const buffers: HostBuffer[] = [];
    const inFlight = new Set<Promise<void>>();
    let failure: unknown;
    try {
      for (const item of items) {
        if (failure === undefined) {
          try {
            this.stopIfAsked();
          } catch (e) {
            failure = e;
          }
        }
        if (failure !== undefined) break;
        while (inFlight.size >= DEPTH) await Promise.race(inFlight);
        const buffer = buffers.pop() ?? device.allocHost(record);
        const p: Promise<void> = this.checkRecord(item, buffer).then(
          () => undefined,
          (e: unknown) => void (failure ??= e),
        ).finally(() => {
          buffers.push(buffer);
          inFlight.delete(p);
        });
        inFlight.add(p);
      }
      await Promise.all([...inFlight]);
      if (failure !== undefined) throw failure;
    } finally {
      await Promise.all([...inFlight]);
      await Promise.all(buffers.map((b) => b.dispose()));
    }
  }

  /** Whether the index maps `key` as it did when the scrub read it (slot and entry time). */
  unchanged(item: NvmeItem): boolean {
    const now = this.core.nvme.catalog.get(item.key);
    return now !== undefined && now.slot === item.entry.slot && now.at === item.entry.at;
  }

  async checkRecord(item: NvmeItem, buffer: HostBuffer): Promise<void> {
    const { core } = this;
    const nvme = core.nvme;
    const extent = core.config.extentBytes;
    const layers = nvme.geometry.layers;
    const first = core.config.layers.first;
    const { key, entry } = item;
    // Nothing of a closing store is touched (its lease file may be closed already).
    this.stopIfAsked();
    if (!this.unchanged(item)) {
      this.report.skipped++;
      this.step();
      return;
    }
    // Kept from eviction by every process while it is read; a rewrite that began anyway is caught below.
    nvme.leases.add(entry.slot);
    let failed: number[] | 'io';
    try {
      const place = nvme.place(entry.slot);
      const pieces = [];
      for (let li = 0; li < layers; li++) {
        pieces.push({ dstOffset: li * extent, fileOffset: place.offset + li * extent, bytes: extent, seed: extentSeed(key, li), crc: entry.crc[li]! });
      }
      failed = await place.file.readChecked(buffer, pieces, { priority: 'low' }).verified.catch(() => 'io' as const);
      if (failed !== 'io' && failed.length === 0) {
        this.count(layers, extent);
        this.step();
        return;
      }
      if (!core.closed) nvme.catalog.root.resetReadTxn();
      if (core.closed || !this.unchanged(item)) {
        // Evicted or rewritten under the read: not this chunk's bytes.
        this.report.skipped++;
        this.step();
        return;
      }
    } finally {
      nvme.leases.release(entry.slot);
    }
    this.count(layers, extent);
    if (failed === 'io') {
      this.report.bad.push({ key, layer: first, tier: 'nvme', code: 'ERR_IO' });
    } else {
      for (const li of failed) this.report.bad.push({ key, layer: first + li, tier: 'nvme', code: 'ERR_CHECKSUM' });
      core.local.checksumFailures!++;
      core.countShared('checksumFailures');
      if (this.drop) {
        this.drops.push(nvme.remove(key, entry).then((dropped) => {
          if (dropped) this.report.dropped++;
        }, () => undefined));
      }
    }
    this.step();
  }
}

/** KvStore.verify (see there). */
export async function verify(core: StoreCore, options: VerifyOptions | undefined): Promise<VerifyReport> {
  core.live();
  const checked = checkVerifyOptions(options);
  if (checked.signal?.aborted) throw new KvflowError('verify was aborted', 'ERR_ABORTED');
  return new Scrub(core, checked).run();
}
