/**
 * Loads: layer `layer` of a batch of hit chunks into a KV cache's blocks,
 * enqueued on a stream. Chunks in DRAM are scattered from their slots
 * (through the plan cache when every chunk is); the others are read from the
 * first lower tier that holds them into a DRAM promotion (or a temporary
 * pinned buffer when DRAM is full), one batch per tier, and the whole layer
 * is then one batched scatter after the reads' events.
 *
 * A chunk of a hit that cannot be loaded any more (gone from every tier
 * since lookup, or failed in an earlier load of the same hit) is never a
 * thrown error: its blocks receive zeros, its hit lists it in `failed` with
 * a code, and the call's event rejects with that code on the host (there is
 * no device-side failure of that kind: streams waiting on the event are not
 * failed by it; the put check in put.ts covers work computed over it).
 */
import type { PinnedBuffer } from '../device/buffer.js';
import type { Event } from '../device/event.js';
import { Stream } from '../device/stream.js';
import { KvflowError, describe, fail, type KvflowErrorCode } from '../errors.js';
import { channels } from '../util/diagnostics.js';
import type { KvCache, StagingRecord } from '../layout/kvcache.js';
import type { DramChunk } from './arena.js';
import { engineOf, type LayerMoveOptions } from './config.js';
import { settle, type StoreCore } from './core.js';
import { checkRefs, failureOf, finishLoad, hitState, markFailed, type CallFailures, type ChunkRef, type RefState } from './hit.js';
import { dramLoad, type PlanCache } from './plan-cache.js';
import type { ReadOutcome, Staging, Tier, TierRead } from './tier.js';

/** A chunk a read fills, and the refs of the call that share it. */
interface ReadOwner {
  ref: RefState;
  /** The tier's handle of the chunk, as the load found it. */
  entry: unknown;
  /** The promotion it lands in (undefined: a temporary buffer). */
  chunk: DramChunk | undefined;
  also: RefState[];
}

/** The reads of one call from one tier. */
interface TierReads {
  reads: TierRead<unknown>[];
  owners: ReadOwner[];
}

/** KvStore.loadLayer (see there). */
export function loadLayer(core: StoreCore, plans: PlanCache, requests: readonly ChunkRef[] | readonly (readonly ChunkRef[])[], layer: number,
  kvCache: KvCache, tables: ArrayLike<number> | readonly ArrayLike<number>[], stream: Stream, options: LayerMoveOptions): Event {
  core.live();
  if (!(stream instanceof Stream)) fail('ERR_INVALID_ARG', `expected a Stream for stream, got ${describe(stream)}`);
  const { chunks, blockTable } = core.flatten(requests, tables, kvCache);
  const li = core.extentIndex(layer);
  const engine = engineOf(options, core.config.engine);
  const fromDram = dramLoad(core, plans, chunks, li, layer, kvCache, blockTable, stream, engine);
  if (fromDram) return fromDram;
  core.checkCache(kvCache);
  if (!Array.isArray(chunks)) fail('ERR_INVALID_ARG', `expected an array of chunks (hit.chunks), got ${describe(chunks)}`);
  const bpc = core.blocksOf(blockTable, chunks.length, kvCache, true);
  const refs = checkRefs(core, chunks);
  if (chunks.length === 0) return stream.record();

  const { dram, local } = core;
  const { extentBytes: extent, layers } = core.config;
  const records: StagingRecord[] = [];
  const pins: DramChunk[] = [];
  const waits: Event[] = [];
  const temps: PinnedBuffer[] = [];
  const byTier = new Map<Tier, TierReads>();
  const failures: CallFailures = { attributed: false };
  const lost: { ref: RefState; code: KvflowErrorCode }[] = [];
  let zeros: PinnedBuffer | undefined;
  const zeroStaging = (): Staging => {
    if (!zeros) {
      zeros = core.config.device.allocPinned(extent);
      zeros.array.fill(0);
      temps.push(zeros);
    }
    return { buffer: zeros, offset: 0 };
  };
  // A chunk named twice in one call (prompts sharing a prefix) is staged once.
  const staged = new Map<string, { staging: Staging; owner?: ReadOwner; lost?: KvflowErrorCode; filling?: RefState[] }>();
  const after: Promise<void>[] = [];
  let enqueued = false;
  try {
    for (let i = 0; i < refs.length; i++) {
      const ref = refs[i]!;
      const blocks = Array.prototype.slice.call(blockTable, i * bpc, (i + 1) * bpc) as number[];
      // A chunk that failed in an earlier load of this hit stays failed for it: zeros, the same code.
      const earlier = failureOf(ref.hit, ref.index);
      if (earlier !== undefined) {
        lost.push({ ref, code: earlier });
        const z = zeroStaging();
        records.push({ blocks, staging: z.buffer, stagingOffset: z.offset });
        continue;
      }
      const twice = staged.get(ref.key);
      if (twice) {
        twice.owner?.also.push(ref);
        twice.filling?.push(ref);
        if (twice.lost !== undefined) lost.push({ ref, code: twice.lost });
        records.push({ blocks, staging: twice.staging.buffer, stagingOffset: twice.staging.offset });
        continue;
      }
      const src = dram.source(ref.key, li);
      if (src) {
        if (src.pending) waits.push(src.pending);
        core.dramHit(src.chunk, ref.index, li);
        pins.push(src.chunk);
        records.push({ blocks, staging: src.staging.buffer, stagingOffset: src.staging.offset });
        if (src.landed) {
          // Another call's read is filling it: a failure of that read left zeros there, a failure of this chunk for these hits too.
          const filling = [ref];
          staged.set(ref.key, { staging: src.staging, filling });
          after.push(src.landed.then((result) => {
            if (result === 'ok' || !enqueued) return;
            for (const r of filling) markFailed(r.hit, r.index, result === 'checksum' ? 'ERR_CHECKSUM' : 'ERR_IO');
            failures.attributed = true;
          }));
        } else staged.set(ref.key, { staging: src.staging });
        continue;
      }
      // From the first lower tier that holds the chunk now (another process may have rewritten or evicted it).
      let tier: Tier | undefined;
      let entry: unknown;
      for (const t of core.lower) {
        entry = t.contains(ref.key);
        if (entry !== undefined) {
          tier = t;
          break;
        }
      }
      if (tier === undefined) {
        // Evicted since lookup (its lease expired): a failure of this chunk, not of the call.
        const z = zeroStaging();
        lost.push({ ref, code: 'ERR_EVICTED' });
        staged.set(ref.key, { staging: z, lost: 'ERR_EVICTED' });
        records.push({ blocks, staging: z.buffer, stagingOffset: z.offset });
        continue;
      }
      const promotion = dram.promotion(ref.key, ref.index, layers.count);
      let dst: Staging;
      if (promotion) {
        const c = promotion.chunk;
        if (promotion.fresh) {
          c.stored = tier === core.demoteTo;
          hitState(ref.hit).pinned.push(c); // the promotion's pin, released with the hit
        }
        pins.push(c);
        dst = { buffer: c.slot.buffer, offset: c.slot.offset + li * extent };
      } else {
        const buffer = core.config.device.allocPinned(extent);
        temps.push(buffer);
        dst = { buffer, offset: 0 };
      }
      const owner: ReadOwner = { ref, entry, chunk: promotion?.chunk, also: [] };
      staged.set(ref.key, { staging: dst, owner });
      let group = byTier.get(tier);
      if (!group) byTier.set(tier, (group = { reads: [], owners: [] }));
      group.reads.push({ key: ref.key, chunk: entry, dst });
      group.owners.push(owner);
      records.push({ blocks, staging: dst.buffer, stagingOffset: dst.offset });
      local[`${tier.name}Loads`] = (local[`${tier.name}Loads`] ?? 0) + 1;
    }
    // Everything is checked: from here work is enqueued.
    for (const [tier, group] of byTier) {
      for (const batch of tier.readLayer(group.reads, li)) {
        const owners = batch.reads.map((r) => group.owners[r]!);
        if (batch.event) stream.waitEvent(batch.event);
        const event = batch.event;
        const handled = batch.outcome.then((outcome) => afterRead(core, tier, owners, li, event, outcome, failures));
        core.track(handled);
        after.push(handled);
        // Loads of other calls that scatter from these promotions learn each read's outcome once it was handled.
        const outcomes = Promise.all([batch.outcome, handled]).then(([outcome]) => outcome, () => batch.reads.map((): ReadOutcome => 'error'));
        owners.forEach((o, k) => {
          if (o.chunk) dram.reading(o.chunk, li, batch.event, outcomes.then((outcome) => outcome[k] ?? 'error'));
        });
      }
    }
    for (const w of waits) stream.waitEvent(w);
    kvCache.moveRecords(stream, 'scatter', records, layer, engine);
    enqueued = true;
  } catch (e) {
    for (const c of pins) dram.unpin(c);
    for (const t of temps) void t.dispose();
    throw e;
  }
  for (const { ref, code } of lost) {
    markFailed(ref.hit, ref.index, code);
    failures.attributed = true;
    if (code === 'ERR_EVICTED') local.evictedLoads!++;
  }
  const event = stream.record();
  core.track(settle(event).then(() => {
    for (const c of pins) dram.unpin(c);
    for (const t of temps) void t.dispose();
  }));
  finishLoad(event, refs, after, failures);
  if (lost.length > 0) {
    const { ref, code } = lost[0]!;
    const what = code === 'ERR_EVICTED' ? 'was evicted since lookup' : 'failed in an earlier load of its hit';
    failOnHost(event, new KvflowError(`chunk ${ref.index} (${ref.key.slice(0, 12)}...) ${what}; its blocks hold zeros (see hit.failed)`, code));
  }
  return event;
}

/**
 * Makes `event.done()` reject with `failure` once the event completed (the
 * device-side event cannot carry a failure kvflow's core does not know).
 */
function failOnHost(event: Event, failure: KvflowError): void {
  const done = event.done.bind(event);
  let failed: Promise<void> | undefined;
  event.done = () => (failed ??= done().then(() => {
    throw failure;
  }));
}

/** After a tier's read: promote what verified, drop what did not. */
function afterRead(core: StoreCore, tier: Tier, owners: ReadOwner[], li: number, event: Event | undefined, outcome: ReadOutcome[],
  failures: CallFailures): void {
  owners.forEach((o, i) => {
    const result = outcome[i];
    if (result !== 'ok') {
      for (const r of [o.ref, ...o.also]) markFailed(r.hit, r.index, result === 'checksum' ? 'ERR_CHECKSUM' : 'ERR_IO');
      failures.attributed = true;
    }
    if (result === 'checksum') {
      core.local.checksumFailures!++;
      if (channels.checksum.hasSubscribers) channels.checksum.publish({ tier: tier.name, key: o.ref.key, index: o.ref.index, layer: li });
      core.countShared('checksumFailures');
      if (!core.closed) core.track(tier.remove(o.ref.key, o.entry));
    }
    if (result === 'ok' && li === 0 && !core.closed) tier.touch(o.ref.key, o.ref.index, true, hitState(o.ref.hit).at);
    // NVMe reads were checked against the entry's checksum: the promotion keeps it (verify.ts checks DRAM by it).
    const crc = tier === core.nvme ? (o.entry as { crc?: number[] }).crc?.[li] : undefined;
    if (o.chunk) core.dram.landed(o.chunk, li, event, result === 'ok', crc);
  });
  core.dram.sweep();
}
