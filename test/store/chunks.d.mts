import type { FingerprintSpec, KvLayoutSpec } from '../../src/index.js';
export declare const SPEC: KvLayoutSpec;
export declare const CHUNK: number;
export declare const BPC: number;
export declare const FINGERPRINT: FingerprintSpec;
export declare const NVME_BYTES: number;
export declare function tokensOf(j: number): number[];
export declare function pieceBytes(j: number, l: number, kv: 0 | 1, b: number, n: number): Uint8Array;
