/**
 * A structural check of a store's index file (LMDB) before it is mapped.
 * LMDB trusts the file it maps: a wrong page number in a meta page or a
 * branch node sends it past the end of the mapping (SIGBUS) or through a wild
 * pointer (SIGSEGV), which kills the process instead of failing the open. So
 * the file is read once and walked here first, against LMDB's on-disk format
 * (liblmdb's mdb.c, format version 2, as the `lmdb` package writes it on
 * 64-bit hosts):
 *
 * - page 0 and page 1 are meta pages: a 24-byte page header, then
 *   MDB_meta { magic u32 = 0xBEEFC0DE, version u32 = 2, address u64,
 *   mapsize u64, dbs[2] (free pages, main), last page u64, txnid u64 };
 * - an MDB_db is { pad u32 (in the free DB of a meta page: the page size),
 *   flags u16, depth u16, branch/leaf/overflow pages u64 x3, entries u64,
 *   root u64 (all ones: empty) };
 * - a page header is { pgno u64, txnid u64, pad u16, flags u16,
 *   lower u16, upper u16 } (an overflow page's lower/upper hold its page
 *   count as a u32); node offsets follow it, counted from its end;
 * - a node is { lo u16, hi u16, flags u16, key size u16, key, data }: in a
 *   branch page lo | hi << 16 | flags << 32 is the child's page number; in a
 *   leaf page lo | hi << 16 is the data size, and flags say whether the data
 *   is on overflow pages (1: an 8-byte page number), a named database (2: an
 *   MDB_db) or duplicates (4).
 *
 * The newest meta page's trees, and the named databases in its main tree, are
 * walked: every page number within the file, every page's own number and
 * type as expected, every node within its page, no page reached twice. The
 * free-page lists' contents (pages LMDB writes to next, in the `lmdb`
 * package's own encoding) are not checked. What
 * this cannot see is a page damaged inside its bounds (a wrong key or value
 * of the right shape), or damage done after the check while the file is
 * mapped.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

import { KvflowError } from '../errors.js';

const MAGIC = 0xbeefc0de;
const DATA_VERSION = 2;
const HEADER = 24;
const META = HEADER; // offset of MDB_meta in a meta page
const DB_SIZE = 48;
const P_BRANCH = 0x01;
const P_LEAF = 0x02;
const P_OVERFLOW = 0x04;
const P_META = 0x08;
const P_LEAF2 = 0x20;
const F_BIGDATA = 0x01;
const F_SUBDATA = 0x02;
const F_DUPDATA = 0x04;
const MAX_DEPTH = 64;
const INVALID = 0xffffffffffffffffn;

/** What `checkIndexFile` found: nothing to open, a sound file, or why it is damaged. */
export type IndexCheck = { state: 'absent' | 'empty' | 'sound' } | { state: 'damaged'; reason: string };

class Damaged extends Error {}

function damaged(reason: string): never {
  throw new Damaged(reason);
}

interface Db {
  depth: number;
  root: bigint;
}

function readDb(buf: Buffer, at: number): Db {
  return { depth: buf.readUInt16LE(at + 6), root: buf.readBigUInt64LE(at + 40) };
}

/** Walks one index file's pages (see the module comment). */
class Walker {
  readonly #buf: Buffer;
  readonly #psize: number;
  readonly #pages: number;
  readonly #seen: Uint8Array;

  constructor(buf: Buffer, psize: number) {
    this.#buf = buf;
    this.#psize = psize;
    this.#pages = buf.length / psize;
    this.#seen = new Uint8Array(this.#pages);
  }

  #pageNumber(n: bigint, what: string): number {
    if (n < 2n || n >= BigInt(this.#pages)) damaged(`${what} is page ${n}, outside pages 2..${this.#pages - 1} of the file`);
    return Number(n);
  }

  #claim(pgno: number, count: number, what: string): void {
    if (pgno + count > this.#pages) damaged(`${what} (pages ${pgno}..${pgno + count - 1}) runs past the end of the file`);
    for (let p = pgno; p < pgno + count; p++) {
      if (this.#seen[p]) damaged(`page ${p} is reached twice (${what})`);
      this.#seen[p] = 1;
    }
  }

  /** Walks a tree; the free-page tree's (`free`) values are lists of pages, not nodes to follow. */
  tree(db: Db, what: string, free = false): void {
    if (db.root === INVALID) return;
    if (db.depth < 1 || db.depth > MAX_DEPTH) damaged(`${what} has depth ${db.depth}`);
    this.#page(this.#pageNumber(db.root, `the root of ${what}`), db.depth, what, free);
  }

  #page(pgno: number, depth: number, what: string, free: boolean): void {
    this.#claim(pgno, 1, what);
    const b = this.#buf;
    const at = pgno * this.#psize;
    const own = b.readBigUInt64LE(at);
    if (own !== BigInt(pgno)) damaged(`page ${pgno} of ${what} says it is page ${own}`);
    const flags = b.readUInt16LE(at + 18);
    const type = flags & (P_BRANCH | P_LEAF | P_OVERFLOW | P_META);
    const want = depth > 1 ? P_BRANCH : P_LEAF;
    if (type !== want) damaged(`page ${pgno} of ${what} has flags 0x${flags.toString(16)}, expected a ${want === P_BRANCH ? 'branch' : 'leaf'} page`);
    const lower = b.readUInt16LE(at + 20);
    const upper = b.readUInt16LE(at + 22);
    if (lower > upper || HEADER + upper > this.#psize) damaged(`page ${pgno} of ${what} has free space bounds ${lower}..${upper}`);
    if (flags & P_LEAF2) return; // fixed-size keys packed after the header, no nodes
    const keys = lower >> 1;
    for (let i = 0; i < keys; i++) {
      const off = b.readUInt16LE(at + HEADER + 2 * i);
      const node = at + HEADER + off;
      if (off < upper || HEADER + off + 8 > this.#psize) damaged(`node ${i} of page ${pgno} of ${what} is at ${off}, outside the page's nodes`);
      const lo = b.readUInt16LE(node);
      const hi = b.readUInt16LE(node + 2);
      const nflags = b.readUInt16LE(node + 4);
      const ksize = b.readUInt16LE(node + 6);
      const end = (n: number): void => {
        if (node + 8 + ksize + n > at + this.#psize) damaged(`node ${i} of page ${pgno} of ${what} runs past its page`);
      };
      if (depth > 1) {
        end(0);
        const child = BigInt(lo) | (BigInt(hi) << 16n) | (BigInt(nflags) << 32n);
        this.#page(this.#pageNumber(child, `child ${i} of page ${pgno} of ${what}`), depth - 1, what, free);
        continue;
      }
      const dsize = lo | (hi << 16);
      const data = node + 8 + ksize;
      if (nflags & F_BIGDATA) {
        end(8);
        const first = this.#pageNumber(b.readBigUInt64LE(data), `the overflow data of node ${i} of page ${pgno} of ${what}`);
        const oat = first * this.#psize;
        if (b.readBigUInt64LE(oat) !== BigInt(first) || (b.readUInt16LE(oat + 18) & P_OVERFLOW) === 0) {
          damaged(`overflow page ${first} of ${what} is not an overflow page`);
        }
        const count = b.readUInt32LE(oat + 20);
        if (count < 1 || (count - 1) * this.#psize + this.#psize - HEADER < dsize) damaged(`overflow page ${first} of ${what} holds ${count} pages for ${dsize} bytes`);
        this.#claim(first, count, `overflow data of ${what}`);
        continue;
      }
      end(dsize);
      if (free) continue; // a list of free pages, in lmdb's own encoding: not checked
      if (nflags & F_SUBDATA) {
        if (dsize !== DB_SIZE) damaged(`a database record in ${what} has ${dsize} bytes`);
        const name = b.toString('latin1', node + 8, node + 8 + ksize);
        if (!(nflags & F_DUPDATA)) this.tree(readDb(b, data), `database "${name}"`);
        else this.tree(readDb(b, data), `duplicates in ${what}`);
      }
    }
  }
}

function checkBuffer(buf: Buffer): void {
  if (buf.length < 2 * 4096) damaged(`it has ${buf.length} bytes, fewer than two pages`);
  if (buf.readUInt32LE(META) !== MAGIC) damaged(`page 0 is not an LMDB meta page (magic 0x${buf.readUInt32LE(META).toString(16)})`);
  const psize = buf.readUInt32LE(META + 24);
  if (psize < 4096 || psize > 65536 || (psize & (psize - 1)) !== 0) damaged(`meta page 0 gives a page size of ${psize}`);
  if (buf.length % psize !== 0 || buf.length < 2 * psize) damaged(`its size ${buf.length} is not a multiple of at least two of its ${psize}-byte pages`);
  const metas = [0, 1].map((i) => {
    const at = i * psize;
    const flags = buf.readUInt16LE(at + 18);
    if (buf.readUInt32LE(at + META) !== MAGIC || (flags & P_META) === 0) damaged(`page ${i} is not an LMDB meta page`);
    const version = buf.readUInt32LE(at + META + 4);
    if (version !== DATA_VERSION) damaged(`meta page ${i} has format version ${version}, expected ${DATA_VERSION}`);
    if (buf.readUInt32LE(at + META + 24) !== psize) damaged(`the meta pages disagree on the page size`);
    const dbs = at + META + 24;
    const free = readDb(buf, dbs);
    const main = readDb(buf, dbs + DB_SIZE);
    const pages = BigInt(buf.length / psize);
    for (const [db, name] of [[free, 'free-page'], [main, 'main']] as const) {
      if (db.root !== INVALID && (db.root < 2n || db.root >= pages)) {
        damaged(`meta page ${i} puts the root of the ${name} tree at page ${db.root}, outside pages 2..${pages - 1n}`);
      }
    }
    const txnid = buf.readBigUInt64LE(dbs + 2 * DB_SIZE + 8);
    return { free, main, txnid };
  });
  const newest = metas[0]!.txnid >= metas[1]!.txnid ? metas[0]! : metas[1]!;
  const walker = new Walker(buf, psize);
  walker.tree(newest.free, 'the free-page tree', true);
  walker.tree(newest.main, 'the main tree');
}

/**
 * Checks the LMDB file `file` before it is opened: `absent` or `empty` (a
 * new index), `sound`, or `damaged` with the first problem found. Errors
 * reading the file (other than its absence) are thrown as they are.
 */
export function checkIndexFile(file: string): IndexCheck {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'absent' };
    throw e;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { state: 'damaged', reason: 'it is not a regular file' };
    if (st.size === 0) return { state: 'empty' };
    const buf = Buffer.alloc(st.size);
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, got);
      if (n === 0) break;
      got += n;
    }
    try {
      checkBuffer(buf.subarray(0, got));
    } catch (e) {
      if (e instanceof Damaged) return { state: 'damaged', reason: e.message };
      if (e instanceof RangeError) return { state: 'damaged', reason: `a record points past the end of the file (${e.message})` };
      throw e;
    }
    return { state: 'sound' };
  } finally {
    closeSync(fd);
  }
}

/** Errors that say the index (or the `writers` folder beside it) is damaged: a reset can recover from them. */
const damageErrors = new WeakSet<object>();

/** The error for a damaged `what` (a path in the store directory), naming the way out. */
export function indexDamaged(what: string, reason: string): KvflowError {
  const e = new KvflowError(`the store index ${what} is damaged (${reason}); open the store with onCorruptIndex: 'reset' ` +
    'to set it aside and start with an empty NVMe tier (only cached KV is lost)', 'ERR_IO');
  damageErrors.add(e);
  return e;
}

/** Marks `e` as saying the index is damaged. */
export function markDamage<E extends object>(e: E): E {
  damageErrors.add(e);
  return e;
}

/** Whether `e` says the index is damaged (see indexDamaged). */
export function isIndexDamage(e: unknown): boolean {
  return typeof e === 'object' && e !== null && damageErrors.has(e);
}
