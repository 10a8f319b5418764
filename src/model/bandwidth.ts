/**
 * The IO side of the prefill model: each tier's read bandwidth into HBM,
 * measured from the store's own loads (an exponentially weighted mean, so a
 * disk that slows under writes or other readers is seen within a few loads)
 * and shared fairly among the prefills loading at once.
 */
import { describe, fail } from '../errors.js';

/** What a meter knows of one tier. */
export interface TierBandwidth {
  /** Bytes per millisecond (1 GB/s = 1e6). */
  bytesPerMs: number;
  /** `measured` after a load was observed; `prior` while the starting guess stands. */
  basis: 'prior' | 'measured';
  samples: number;
}

/**
 * Starting guesses, deliberately low so that an unmeasured tier is loaded
 * from sparingly (recompute is never the slower mistake): pinned DRAM 10
 * GB/s (a PCIe Gen4/5 link moves 25-55), NVMe 0.5 GB/s (one drive reads 1-7).
 */
export const PRIOR_BYTES_PER_MS: Readonly<Record<string, number>> = Object.freeze({ dram: 10e6, nvme: 0.5e6 });

/** Weight of a new sample in the mean. */
const ALPHA = 0.3;
/** Loads shorter than this say more about launch latency than bandwidth. */
const MIN_SAMPLE_BYTES = 1 << 20;

/** Per-tier read bandwidth, measured. */
export class BandwidthMeter {
  readonly #tiers = new Map<string, TierBandwidth>();
  readonly #priors: Record<string, number>;

  /** `priors` override {@link PRIOR_BYTES_PER_MS} per tier name. */
  constructor(priors: Record<string, number> = {}) {
    for (const [k, v] of Object.entries(priors)) {
      if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) fail('ERR_INVALID_ARG', `expected a positive number for priors.${k}, got ${describe(v)}`);
    }
    this.#priors = { ...PRIOR_BYTES_PER_MS, ...priors };
  }

  /** Records a load of `bytes` from `tier` that took `ms` (while `concurrent` loads shared the tier, itself included). */
  observe(tier: string, bytes: number, ms: number, concurrent = 1): void {
    if (typeof tier !== 'string' || tier === '') fail('ERR_INVALID_ARG', `expected a tier name, got ${describe(tier)}`);
    if (!(bytes >= 0) || !(ms > 0) || !Number.isFinite(bytes) || !Number.isFinite(ms)) {
      fail('ERR_INVALID_ARG', `expected bytes >= 0 and ms > 0, got ${describe(bytes)} and ${describe(ms)}`);
    }
    if (bytes < MIN_SAMPLE_BYTES) return;
    const rate = (bytes * Math.max(1, concurrent)) / ms;
    const prev = this.#tiers.get(tier);
    if (prev === undefined || prev.basis === 'prior') {
      this.#tiers.set(tier, { bytesPerMs: rate, basis: 'measured', samples: 1 });
    } else {
      this.#tiers.set(tier, { bytesPerMs: prev.bytesPerMs + ALPHA * (rate - prev.bytesPerMs), basis: 'measured', samples: prev.samples + 1 });
    }
  }

  /** What is known of `tier`; the prior (or 1 MB/s for a tier without one) before any load. */
  get(tier: string): TierBandwidth {
    return this.#tiers.get(tier) ?? { bytesPerMs: this.#priors[tier] ?? 1e3, basis: 'prior', samples: 0 };
  }

  /** The bandwidth one of `sharing` concurrent prefills can count on. */
  share(tier: string, sharing = 1): number {
    return this.get(tier).bytesPerMs / Math.max(1, sharing);
  }
}
