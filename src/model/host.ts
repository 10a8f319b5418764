/**
 * The host side of the prefill model: the time the JS thread spends per
 * layer of a prefill (the runtime's `compute` callback enqueuing its
 * kernels, the store's calls, the pipeline's own scheduling). A layer is not
 * done before the host has issued it, so `layers x host` is a floor under a
 * prefill's time whatever the GPU does: a prefill whose GPU work per layer is
 * shorter than its host work per layer is host-bound, and the per-layer model
 * of the GPU alone would promise it too much.
 *
 * The store's calls cost with the chunks they load (pieces to plan and hand
 * to the copy engines); the rest is about the same for every layer. The
 * curve is `host(chunks) = baseMs + perChunkMs x chunks`, fitted by
 * non-negative least squares over the latest prefills; until loads of two
 * sizes were measured it is flat (`perChunkMs` 0) and says so.
 */
import { describe, fail } from '../errors.js';
import { checkInteger } from '../util/validate.js';

/** One measured prefill: `ms` of host time per layer while loading `chunks` chunks per layer. */
export interface HostSample {
  chunks: number;
  ms: number;
}

/** The fitted curve (milliseconds per layer). */
export interface HostTerms {
  baseMs: number;
  perChunkMs: number;
  /** `measured` once two chunk counts were seen, `flat` with one, `none` before any. */
  basis: 'none' | 'flat' | 'measured';
  samples: number;
}

const MAX_SAMPLES = 64;

/** Host time per layer, calibrated from the pipeline's own prefills (`PrefillResult.host`). */
export class HostModel {
  readonly #samples: HostSample[] = [];
  #terms: HostTerms = { baseMs: 0, perChunkMs: 0, basis: 'none', samples: 0 };

  /** Records one prefill's host time per layer and refits. */
  observe(sample: HostSample): void {
    checkInteger(sample?.chunks, 'chunks', 0, Number.MAX_SAFE_INTEGER);
    if (typeof sample.ms !== 'number' || !(sample.ms >= 0) || !Number.isFinite(sample.ms)) {
      fail('ERR_INVALID_ARG', `expected a finite number >= 0 for ms, got ${describe(sample.ms)}`);
    }
    this.#samples.push({ chunks: sample.chunks, ms: sample.ms });
    if (this.#samples.length > MAX_SAMPLES) this.#samples.shift();
    this.#fit();
  }

  get terms(): Readonly<HostTerms> {
    return this.#terms;
  }

  /** Predicted host milliseconds per layer of a prefill loading `chunks` chunks (0 before any sample). */
  predict(chunks: number): number {
    return this.#terms.baseMs + this.#terms.perChunkMs * Math.max(0, chunks);
  }

  #fit(): void {
    const s = this.#samples;
    const n = s.length;
    const mean = (f: (x: HostSample) => number): number => s.reduce((a, x) => a + f(x), 0) / n;
    const my = mean((x) => x.ms);
    if (new Set(s.map((x) => x.chunks)).size < 2) {
      this.#terms = { baseMs: my, perChunkMs: 0, basis: 'flat', samples: n };
      return;
    }
    const mx = mean((x) => x.chunks);
    const sxx = s.reduce((a, x) => a + (x.chunks - mx) ** 2, 0);
    const sxy = s.reduce((a, x) => a + (x.chunks - mx) * (x.ms - my), 0);
    let slope = sxy / sxx;
    let base = my - slope * mx;
    if (slope < 0) {
      // More chunks never cost less host time: a flat line is the better non-negative fit.
      slope = 0;
      base = my;
    } else if (base < 0) {
      // Through the origin.
      slope = s.reduce((a, x) => a + x.chunks * x.ms, 0) / s.reduce((a, x) => a + x.chunks * x.chunks, 0);
      base = 0;
    }
    this.#terms = { baseMs: base, perChunkMs: slope, basis: 'measured', samples: n };
  }
}
