/** The pieces of checksummed file IO (`file.readChecked`, `file.writeSummed`) and their checks. */
import { fail } from '../errors.js';
import type { Event } from '../device/event.js';
import { checkRange, checkSize, checkU32, invalidParameterError, is } from '../util/validate.js';

/** The most pieces one checked read or summed write may have. */
export const MAX_CHECKED_PIECES = 65536;

/** One extent of a checked read. */
export interface CheckedPiece {
  /** Where the piece lands in the destination buffer. */
  dstOffset: number;
  /** Where it is in the file (any offset; unaligned ones go through the page cache). */
  fileOffset: number;
  bytes: number;
  /** CRC32C seed (0, or the checksum of what precedes the piece in a chain). */
  seed: number;
  /** The expected CRC32C(seed, the piece's bytes), an unsigned 32-bit integer. */
  crc: number;
}

/** One extent of a summed write. */
export interface SummedPiece {
  /** Where the piece is in the source buffer. */
  srcOffset: number;
  /** Where it goes in the file. */
  fileOffset: number;
  bytes: number;
  /** CRC32C seed of the piece's checksum. */
  seed: number;
}

/** A checked read in flight (see `file.readChecked`). */
export interface CheckedRead {
  /**
   * Completes when every piece has been read and checked. Fails with
   * ERR_CHECKSUM when any piece failed its check, with the IO error when a
   * read failed. A stream can wait on it: `stream.waitEvent(read.event)`.
   */
  readonly event: Event;
  /**
   * Resolves, once complete, with the indices of the pieces whose
   * CRC32C(seed, bytes) != crc (their destination bytes were zeroed before
   * completion), ascending; [] when all verified. Rejects with the
   * KvflowError of an IO failure (ERR_IO, ERR_NO_SPACE...).
   */
  readonly verified: Promise<number[]>;
}

function pieceList(pieces: unknown): readonly unknown[] {
  if (!Array.isArray(pieces)) throw invalidParameterError('pieces', 'an array of pieces', pieces);
  if (pieces.length === 0 || pieces.length > MAX_CHECKED_PIECES) {
    fail('ERR_INVALID_ARG', `expected 1 to ${MAX_CHECKED_PIECES} pieces for pieces, got ${pieces.length}`);
  }
  return pieces;
}

function pieceObject(piece: unknown, name: string): Record<string, unknown> {
  if (!is.object(piece)) throw invalidParameterError(name, 'an object', piece);
  return piece;
}

/**
 * ERR_INVALID_ARG when two non-empty ranges of a packed piece table overlap:
 * each row has `stride` numbers, the range's start at `at` and its length at 2.
 */
function checkDisjoint(table: Float64Array, stride: number, at: number, what: string): void {
  const n = table.length / stride;
  const order: number[] = [];
  for (let i = 0; i < n; i++) if (table[i * stride + 2]! > 0) order.push(i);
  order.sort((a, b) => table[a * stride + at]! - table[b * stride + at]!);
  for (let k = 1; k < order.length; k++) {
    const prev = order[k - 1]!;
    const next = order[k]!;
    if (table[prev * stride + at]! + table[prev * stride + 2]! > table[next * stride + at]!) {
      fail('ERR_INVALID_ARG', `expected pieces whose ${what} ranges do not overlap, got pieces ${prev} and ${next}`);
    }
  }
}

/**
 * Checks the pieces of a checked read against a destination of `size` bytes
 * and packs them as [dstOffset, fileOffset, bytes, seed, crc] per piece.
 * Destination ranges must not overlap (one piece would overwrite another
 * after its check).
 */
export function checkedReadTable(pieces: readonly CheckedPiece[], size: number): Float64Array {
  const list = pieceList(pieces);
  const table = new Float64Array(list.length * 5);
  list.forEach((value, i) => {
    const name = `pieces[${i}]`;
    const p = pieceObject(value, name);
    const dstOffset = checkSize(p.dstOffset, `${name}.dstOffset`);
    const fileOffset = checkSize(p.fileOffset, `${name}.fileOffset`);
    const bytes = checkSize(p.bytes, `${name}.bytes`);
    const seed = checkU32(p.seed, `${name}.seed`);
    const crc = checkU32(p.crc, `${name}.crc`);
    checkRange(dstOffset, bytes, size, 'destination');
    table.set([dstOffset, fileOffset, bytes, seed, crc], i * 5);
  });
  checkDisjoint(table, 5, 0, 'destination');
  return table;
}

/**
 * Checks the pieces of a summed write against a source of `size` bytes and
 * packs them as [srcOffset, fileOffset, bytes, seed] per piece. File ranges
 * must not overlap: the IO threads write pieces in any order, so overlapping
 * ones would leave either piece's bytes, and a checksum of bytes that were
 * then overwritten.
 */
export function summedWriteTable(pieces: readonly SummedPiece[], size: number): Float64Array {
  const list = pieceList(pieces);
  const table = new Float64Array(list.length * 4);
  list.forEach((value, i) => {
    const name = `pieces[${i}]`;
    const p = pieceObject(value, name);
    const srcOffset = checkSize(p.srcOffset, `${name}.srcOffset`);
    const fileOffset = checkSize(p.fileOffset, `${name}.fileOffset`);
    const bytes = checkSize(p.bytes, `${name}.bytes`);
    const seed = checkU32(p.seed, `${name}.seed`);
    checkRange(srcOffset, bytes, size, 'source');
    table.set([srcOffset, fileOffset, bytes, seed], i * 4);
  });
  checkDisjoint(table, 4, 1, 'file');
  return table;
}
