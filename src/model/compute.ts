/**
 * The compute side of the prefill model (DESIGN.md section 1): the time one
 * layer takes to compute `n` new tokens after `start` cached ones,
 * `C(n, start)`, calibrated from the runtime's own measured layers.
 *
 * A forward is not `n * T`: every weight is read once whatever `n` is (a
 * floor), the GEMMs grow with `n`, and attention grows with the pairs of new
 * tokens and the keys they see (`n * start + n * (n + 1) / 2`). The curve is
 * `C = floor + perToken * n + perPair * pairs`, fitted by non-negative least
 * squares over the samples seen; while fewer than two prompt shapes were
 * measured, it is proportional to `n` (a per-token time) and says so.
 */
import { describe, fail } from '../errors.js';
import { checkInteger } from '../util/validate.js';

/** One measured layer: `ms` to compute `newTokens` after `start` cached tokens. */
export interface ComputeSample {
  newTokens: number;
  start: number;
  ms: number;
}

/** The fitted curve's terms (milliseconds per layer). */
export interface ComputeTerms {
  floorMs: number;
  perTokenMs: number;
  perPairMs: number;
  /** `measured` once two prompt shapes were seen, `per-token` with one, `none` before any. */
  basis: 'none' | 'per-token' | 'measured';
  samples: number;
}

/** Attention pairs of `n` new tokens after `start` cached ones (causal). */
export function attentionPairs(n: number, start: number): number {
  return n * start + (n * (n + 1)) / 2;
}

const MAX_SAMPLES = 256;


/** The candidate term sets of the non-negative fit, all three first. */
const SUBSETS: readonly (readonly number[])[] = [[0, 1, 2], [1, 2], [0, 1], [0, 2], [1], [2], [0]];

/**
 * Solves the normal equations of the columns in `cols` (<= 3), given the
 * moments of all three terms: `xx[i * 3 + j]` = sum of x_i * x_j over the
 * samples, `xy[i]` = sum of x_i * y. Null when singular.
 */
function leastSquares(xx: Float64Array, xy: Float64Array, cols: readonly number[]): number[] | null {
  const k = cols.length;
  const a: number[][] = [];
  for (let i = 0; i < k; i++) {
    const row = new Array<number>(k + 1);
    for (let j = 0; j < k; j++) row[j] = xx[cols[i]! * 3 + cols[j]!]!;
    row[k] = xy[cols[i]!]!;
    a.push(row);
  }
  for (let c = 0; c < k; c++) {
    let pivot = c;
    for (let r = c + 1; r < k; r++) if (Math.abs(a[r]![c]!) > Math.abs(a[pivot]![c]!)) pivot = r;
    if (Math.abs(a[pivot]![c]!) < 1e-12 * Math.max(1, Math.abs(a[c]![c]!))) return null;
    [a[c], a[pivot]] = [a[pivot]!, a[c]!];
    for (let r = 0; r < k; r++) {
      if (r === c) continue;
      const f = a[r]![c]! / a[c]![c]!;
      for (let j = c; j <= k; j++) a[r]![j]! -= f * a[c]![j]!;
    }
  }
  return a.map((row, i) => row[k]! / row[i]!);
}

/**
 * `C(n, start)` per layer, calibrated from measured layers. Feed it with
 * {@link ComputeModel.observe}; {@link ComputeModel.predict} is what the
 * planner uses.
 */
export class ComputeModel {
  readonly #samples: ComputeSample[] = [];
  /** How many of the samples have each prompt shape (`newTokens:start`). */
  readonly #shapes = new Map<string, number>();
  #terms: ComputeTerms = { floorMs: 0, perTokenMs: 0, perPairMs: 0, basis: 'none', samples: 0 };
  /** Terms given by fromTerms(): kept until two prompt shapes were measured. */
  #prior: Omit<ComputeTerms, 'basis' | 'samples'> | undefined;

  /** A model that starts from known terms (a prior), refined by later samples. */
  static fromTerms(terms: Omit<ComputeTerms, 'basis' | 'samples'>): ComputeModel {
    const m = new ComputeModel();
    for (const [k, v] of Object.entries(terms)) {
      if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) fail('ERR_INVALID_ARG', `expected a finite number >= 0 for ${k}, got ${describe(v)}`);
    }
    m.#prior = { floorMs: terms.floorMs, perTokenMs: terms.perTokenMs, perPairMs: terms.perPairMs };
    m.#terms = { ...m.#prior, basis: 'measured', samples: 0 };
    return m;
  }

  /** Records one measured layer and refits. */
  observe(sample: ComputeSample): void {
    checkInteger(sample?.newTokens, 'newTokens', 1, Number.MAX_SAFE_INTEGER);
    checkInteger(sample.start, 'start', 0, Number.MAX_SAFE_INTEGER);
    if (typeof sample.ms !== 'number' || !(sample.ms >= 0) || !Number.isFinite(sample.ms)) {
      fail('ERR_INVALID_ARG', `expected a finite number >= 0 for ms, got ${describe(sample.ms)}`);
    }
    const kept = { newTokens: sample.newTokens, start: sample.start, ms: sample.ms };
    this.#samples.push(kept);
    this.#countShape(kept, 1);
    if (this.#samples.length > MAX_SAMPLES) this.#countShape(this.#samples.shift()!, -1);
    this.#fit();
  }

  #countShape(x: ComputeSample, by: 1 | -1): void {
    const key = `${x.newTokens}:${x.start}`;
    const n = (this.#shapes.get(key) ?? 0) + by;
    if (n > 0) this.#shapes.set(key, n);
    else this.#shapes.delete(key);
  }

  /** The fitted terms. */
  get terms(): Readonly<ComputeTerms> {
    return this.#terms;
  }

  /** True once any layer was measured or terms were given. */
  get calibrated(): boolean {
    return this.#terms.basis !== 'none';
  }

  /** Predicted milliseconds of one layer computing `n` new tokens after `start` cached ones (0 for n = 0). */
  predict(n: number, start: number): number {
    if (n <= 0) return 0;
    const t = this.#terms;
    return t.floorMs + t.perTokenMs * n + t.perPairMs * attentionPairs(n, start);
  }

  #fit(): void {
    const s = this.#samples;
    const shapes = this.#shapes.size;
    if (shapes < 2 && this.#prior) {
      // One shape says less than the prior's three terms: keep them.
      this.#terms = { ...this.#prior, basis: 'measured', samples: s.length };
      return;
    }
    if (shapes < 2) {
      // One shape cannot separate the floor from the slopes: the cautious
      // reading is a per-token time (the suffix then looks as cheap as it can,
      // which favours recomputing over loading).
      const tokens = s.reduce((a, x) => a + x.newTokens, 0);
      const ms = s.reduce((a, x) => a + x.ms, 0);
      this.#terms = { floorMs: 0, perTokenMs: ms / tokens, perPairMs: 0, basis: 'per-token', samples: s.length };
      return;
    }
    // The terms of each sample (1, n, pairs) column by column, and their
    // moments in one pass: every subset's normal equations come from them.
    const m = s.length;
    const x = [new Float64Array(m).fill(1), new Float64Array(m), new Float64Array(m)];
    const y = new Float64Array(m);
    const xx = new Float64Array(9);
    const xy = new Float64Array(3);
    for (let r = 0; r < m; r++) {
      const sample = s[r]!;
      x[1]![r] = sample.newTokens;
      x[2]![r] = attentionPairs(sample.newTokens, sample.start);
      y[r] = sample.ms;
      for (let i = 0; i < 3; i++) {
        const xi = x[i]![r]!;
        for (let j = 0; j < 3; j++) xx[i * 3 + j]! += xi * x[j]![r]!;
        xy[i]! += xi * y[r]!;
      }
    }
    // Non-negative least squares over three terms: the best fit among the
    // subsets of terms whose coefficients are all >= 0.
    let best: { coef: number[]; cols: readonly number[]; err: number } | null = null;
    for (const cols of SUBSETS) {
      const coef = leastSquares(xx, xy, cols);
      if (coef === null || coef.some((c) => c < 0)) continue;
      let err = 0;
      for (let r = 0; r < m; r++) {
        let p = 0;
        for (let i = 0; i < cols.length; i++) p += coef[i]! * x[cols[i]!]![r]!;
        err += (p - y[r]!) ** 2;
      }
      if (best === null || err < best.err * (1 - 1e-9)) best = { coef, cols, err };
    }
    const terms = [0, 0, 0];
    best?.cols.forEach((c, i) => (terms[c] = best.coef[i]!));
    this.#terms = { floorMs: terms[0]!, perTokenMs: terms[1]!, perPairMs: terms[2]!, basis: 'measured', samples: s.length };
  }
}
