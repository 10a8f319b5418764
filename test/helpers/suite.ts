/**
 * The setup the store and pipeline suites share. Called inside a describe,
 * storeSuite()/pipelineSuite() register the beforeAll/afterAll that open a
 * device on the backend, allocate caches, make a temp root directory and,
 * afterwards, dispose the device and remove the root. They return an object
 * whose fields are filled in by beforeAll: read them inside tests and hooks,
 * never at describe time.
 */
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll } from 'vitest';

import { KvLayout, KvStore, type Backend, type Device, type KvCache, type KvLayoutSpec, type KvStoreOptions, type Stream } from '../../src/index.js';
import { open, randomBytes } from './backends.js';
import { fillCache } from './cache.js';
import { CHUNK, FP, SPEC } from './store.js';

/** Store options a suite's test may override. */
export type StoreExtra = Partial<KvStoreOptions>;

interface Suite {
  readonly layout: KvLayout;
  dev: Device;
  /** The suite's temp directory, removed after the suite. */
  root: string;
  /** A fresh store directory below root (s0, s1, ...). */
  storeDir(): string;
  /** Options of a store in a fresh directory (or `extra.dir`), with the suite's chunk size and tier budgets. */
  options(extra?: StoreExtra): KvStoreOptions & { dir: string };
}

export interface StoreSuite extends Suite {
  stream: Stream;
  /** A cache holding `srcData`, random bytes. */
  src: KvCache;
  srcData: Uint8Array[];
  /** A second cache to load into. */
  dst: KvCache;
  /** Opens a store in `dir` (a fresh one by default). */
  openStore(dir?: string, extra?: StoreExtra): Promise<KvStore>;
  /** A runtime's "compute" of `layer` on `on`: src's blocks `from` written into dst's blocks `to`. */
  compute(on: Stream, layer: number, from: readonly number[], to: readonly number[]): void;
}

export interface PipelineSuite extends Suite {
  cache: KvCache;
  /** A stream of the suite's own, beside the pipeline's. */
  stream: Stream;
  /** Opens a store in a fresh directory (or `extra.dir`). */
  openStore(extra?: StoreExtra): Promise<KvStore>;
}

interface SuiteSetup {
  /** What the temp root's name starts with. */
  prefix: string;
  spec: KvLayoutSpec;
  chunk: number;
  nvmeBytes: number;
  dramBytes: number;
}

/** The device, root and store options; `setup` allocates the rest once the device is open. */
function suite<T extends Suite>(backend: Backend, skip: boolean, s: SuiteSetup, fields: object, setup: (fx: T) => Promise<void> | void): T {
  let n = 0;
  const fx = {
    ...fields,
    layout: new KvLayout(s.spec),
    storeDir: () => path.join(fx.root, `s${n++}`),
    options: (extra: StoreExtra = {}): KvStoreOptions & { dir: string } => ({
      device: fx.dev,
      layout: fx.layout,
      fingerprint: FP,
      dir: extra.dir ?? fx.storeDir(),
      chunkTokens: s.chunk,
      nvmeBytes: s.nvmeBytes,
      dramBytes: s.dramBytes,
      ...extra,
    }),
  } as unknown as T;
  beforeAll(async () => {
    if (skip) return;
    fx.dev = open(backend);
    await setup(fx);
    fx.root = mkdtempSync(path.join(os.tmpdir(), s.prefix));
  });
  afterAll(async () => {
    await fx.dev?.dispose();
    if (fx.root) rmSync(fx.root, { recursive: true, force: true });
  });
  return fx;
}

/**
 * The store suites' setup: the SPEC layout, a stream, `src` filled with
 * random bytes and `dst`, stores of CHUNK-token chunks with 64 records of
 * NVMe and 16 of DRAM.
 */
export function storeSuite(backend: Backend, skip: boolean, prefix: string): StoreSuite {
  const fx: StoreSuite = suite<StoreSuite>(
    backend,
    skip,
    { prefix, spec: SPEC, chunk: CHUNK, nvmeBytes: 64 * 12288, dramBytes: 16 * 12288 },
    {
      openStore: (dir?: string, extra: StoreExtra = {}) => KvStore.open(fx.options({ ...extra, ...(dir === undefined ? {} : { dir }) })),
      compute: (on: Stream, layer: number, from: readonly number[], to: readonly number[]) => {
        for (let i = 0; i < from.length; i++) {
          for (const kv of [0, 1] as const) {
            const a = fx.src.layout.piece(layer, kv, from[i]!);
            const b = fx.dst.layout.piece(layer, kv, to[i]!);
            on.copy(fx.dst.buffers[b.buffer]!, b.offset, fx.src.buffers[a.buffer]!, a.offset, fx.src.layout.pieceBytes);
          }
        }
      },
    },
    async (f) => {
      f.stream = f.dev.createStream();
      f.src = f.dev.allocKvCache(f.layout);
      f.dst = f.dev.allocKvCache(f.layout);
      f.srcData = f.src.buffers.map((b) => randomBytes(b.byteLength));
      await fillCache(f.dev, f.stream, f.src, f.srcData);
    },
  );
  return fx;
}

/** The pipeline suites' setup: one cache of `spec`, a stream, stores of `chunk`-token chunks with the given tier budgets. */
export function pipelineSuite(backend: Backend, skip: boolean, setup: SuiteSetup): PipelineSuite {
  const fx: PipelineSuite = suite<PipelineSuite>(
    backend,
    skip,
    setup,
    { openStore: (extra: StoreExtra = {}) => KvStore.open(fx.options(extra)) },
    (f) => {
      f.cache = f.dev.allocKvCache(f.layout);
      f.stream = f.dev.createStream();
    },
  );
  return fx;
}

/** XORs `n` bytes of `file` at `at` with `mask` (damage on disk that a checksum must catch). */
export function flipBytes(file: string, at: number, n: number, mask = 0x5a): void {
  const fd = openSync(file, 'r+');
  const buf = Buffer.alloc(n);
  readSync(fd, buf, 0, n, at);
  for (let i = 0; i < n; i++) buf[i] = buf[i]! ^ mask;
  writeSync(fd, buf, 0, n, at);
  closeSync(fd);
}

/** Flips 16 bytes inside layer `layer`'s extent of the NVMe slot at `loc` (the store must be closed). */
export function corruptExtent(loc: { file: { path: string }; offset: number }, extentBytes: number, layer: number): void {
  flipBytes(loc.file.path, loc.offset + layer * extentBytes + 64, 16);
}
