/**
 * Chunk keys (DESIGN.md section 3): a SHA-256 chain over the token ids of each
 * chunk, bound to a fingerprint of everything that shapes the KV bytes, so
 * that keys are identical across processes and restarts and never collide
 * across models, layouts, ranks or tenants.
 */
import { createHash, hash } from 'node:crypto';

import { describe, fail } from '../errors.js';
import { checkInteger, checkKnownOptions } from '../util/validate.js';

/**
 * Version of the key derivation, the record format and the directory's
 * protocol between processes; part of every key. 2: hits lease their NVMe
 * slots in `leases/` (a version-1 writer would evict leased chunks).
 */
export const STORE_FORMAT_VERSION = 2;

/** What makes two caches' KV bytes interchangeable. */
export interface FingerprintSpec {
  /** Model id, e.g. "meta-llama/Meta-Llama-3-8B". Required. */
  model: string;
  /** Model revision (a commit or a version). Default "". */
  revision?: string;
  /** Adapter (LoRA) id, "" for none. */
  adapter?: string;
  /** RoPE scaling, as the runtime describes it (e.g. JSON of the config). Default "". */
  ropeScaling?: string;
  /** Tensor-parallel rank and size. Default 0 of 1. */
  tpRank?: number;
  tpSize?: number;
  /** Secret per tenant: tenants never hit (or time) each other's prefixes. Default "". */
  tenantSalt?: string;
}

/** The shape facts a fingerprint covers besides the spec (from the store's layout). */
export interface FingerprintShape {
  kvHeads: number;
  headDim: number;
  dtype: string;
  chunkTokens: number;
  firstLayer: number;
  layerCount: number;
}

function text(value: unknown, name: string, required: boolean): string {
  if (value === undefined && !required) return '';
  if (typeof value !== 'string' || (required && value.length === 0)) {
    fail('ERR_INVALID_ARG', `expected a ${required ? 'non-empty ' : ''}string for fingerprint.${name}, got ${describe(value)}`);
  }
  return value;
}

/**
 * The fingerprint: SHA-256 (hex) of the canonical JSON of the spec and the
 * shape. The tenant salt goes in hashed, so `kvflow inspect` can show
 * fingerprints without revealing salts.
 */
export function fingerprintOf(spec: FingerprintSpec, shape: FingerprintShape): string {
  if (typeof spec !== 'object' || spec === null) fail('ERR_INVALID_ARG', `expected a fingerprint spec, got ${describe(spec)}`);
  // A misspelt field would be left out of the fingerprint: stores of different models would then share keys.
  checkKnownOptions(spec, 'fingerprint', ['model', 'revision', 'adapter', 'ropeScaling', 'tpRank', 'tpSize', 'tenantSalt']);
  const tpSize = spec.tpSize ?? 1;
  const tpRank = spec.tpRank ?? 0;
  if (!Number.isSafeInteger(tpSize) || tpSize < 1) fail('ERR_INVALID_ARG', `expected a positive integer for fingerprint.tpSize, got ${describe(spec.tpSize)}`);
  if (!Number.isSafeInteger(tpRank) || tpRank < 0 || tpRank >= tpSize) {
    fail('ERR_INVALID_ARG', `expected an integer in [0, ${tpSize}) for fingerprint.tpRank, got ${describe(spec.tpRank)}`);
  }
  const salt = text(spec.tenantSalt, 'tenantSalt', false);
  const canonical = JSON.stringify([
    'kvflow-fingerprint',
    STORE_FORMAT_VERSION,
    text(spec.model, 'model', true),
    text(spec.revision, 'revision', false),
    text(spec.adapter, 'adapter', false),
    text(spec.ropeScaling, 'ropeScaling', false),
    tpRank,
    tpSize,
    salt === '' ? '' : createHash('sha256').update(salt, 'utf8').digest('hex'),
    shape.kvHeads,
    shape.headDim,
    shape.dtype,
    shape.chunkTokens,
    shape.firstLayer,
    shape.layerCount,
  ]);
  return createHash('sha256').update(canonical, 'utf8').digest('hex');
}

/**
 * The fingerprint of a tenant's keys in a store of fingerprint `fingerprint`:
 * SHA-256 (hex) of the store's fingerprint and the tenant's name hashed; the
 * store's own for no tenant (undefined or ""). Tenants of one store share
 * its tiers, never a key.
 */
export function tenantFingerprint(fingerprint: string, tenant: unknown): string {
  if (tenant === undefined || tenant === '') return fingerprint;
  if (typeof tenant !== 'string') fail('ERR_INVALID_ARG', `expected a string for tenant, got ${describe(tenant)}`);
  const salt = createHash('sha256').update(tenant, 'utf8').digest('hex');
  return createHash('sha256').update(JSON.stringify(['kvflow-tenant', STORE_FORMAT_VERSION, fingerprint, salt]), 'utf8').digest('hex');
}

/** The most token ids one prompt may have (2^27: far beyond any context length, and 512 MiB of ids). */
export const MAX_TOKENS = 2 ** 27;

/** Checks token ids (u32 each) and returns them as a Uint32Array (a copy only where needed). */
export function toTokenIds(tokens: ArrayLike<number>): Uint32Array {
  if (tokens instanceof Uint32Array) return tokens;
  if (tokens === null || typeof tokens !== 'object' || typeof tokens.length !== 'number') {
    fail('ERR_INVALID_ARG', `expected an array of token ids for tokens, got ${describe(tokens)}`);
  }
  // An array-like's length is the caller's word: a negative, fractional or absurd one is refused before allocating.
  checkInteger(tokens.length, 'tokens.length', 0, MAX_TOKENS);
  const out = new Uint32Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t > 0xffffffff) {
      fail('ERR_INVALID_ARG', `expected token ids that are integers in [0, 2^32), got ${describe(t)} at tokens[${i}]`);
    }
    out[i] = t;
  }
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Keys of the full chunks of `tokens`, in order:
 * key_i = SHA-256(version u32 LE, fingerprint, key_{i-1} (zeros for i = 0),
 * token ids of chunk i as u32 LE). A partial last chunk has no key.
 *
 * Each key hashes one buffer laid out as that message, its version and
 * fingerprint written once, the previous key and the chunk's ids copied in
 * per chunk, with the one-shot `crypto.hash` (a Hash object and four
 * updates per chunk cost about 5 us a chunk; the copy of a chunk's ids is
 * next to nothing).
 */
export function chunkKeys(fingerprint: string, tokens: ArrayLike<number>, chunkTokens: number, limit = Infinity): string[] {
  checkInteger(chunkTokens, 'chunkTokens', 1, Number.MAX_SAFE_INTEGER);
  if (typeof fingerprint !== 'string' || !/^(?:[0-9a-f]{2})+$/i.test(fingerprint)) {
    fail('ERR_INVALID_ARG', `expected a fingerprint as hex digits, got ${describe(fingerprint)}`);
  }
  const ids = toTokenIds(tokens);
  const count = Math.min(Math.floor(ids.length / chunkTokens), limit);
  const keys: string[] = [];
  if (count <= 0) return keys;
  const fp = Buffer.from(fingerprint, 'hex');
  const head = 4 + fp.length; // version, fingerprint
  const message = Buffer.alloc(head + 32 + chunkTokens * 4);
  message.writeUInt32LE(STORE_FORMAT_VERSION, 0);
  fp.copy(message, 4);
  // message[head, head + 32) is the previous key: zeros for the first chunk.
  const body = head + 32;
  // The ids' own bytes are u32 LE on a little-endian host: copied as they are.
  const idBytes = LITTLE_ENDIAN ? new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength) : undefined;
  const view = LITTLE_ENDIAN ? undefined : new DataView(message.buffer, message.byteOffset, message.byteLength);
  for (let c = 0; c < count; c++) {
    if (idBytes) {
      message.set(idBytes.subarray(c * chunkTokens * 4, (c + 1) * chunkTokens * 4), body);
    } else {
      for (let t = 0; t < chunkTokens; t++) view!.setUint32(body + t * 4, ids[c * chunkTokens + t]!, true);
    }
    const key = hash('sha256', message, 'buffer');
    key.copy(message, head);
    keys.push(key.toString('hex'));
  }
  return keys;
}

/** The CRC32C seed of layer extent `layer` of the chunk `key`: binds a checksum to its chunk and layer. */
export function extentSeed(key: string, layer: number): number {
  const k = Number.parseInt(key.slice(0, 8), 16);
  return (k ^ Math.imul(layer + 1, 0x9e3779b1)) >>> 0;
}
