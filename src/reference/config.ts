/** Model shapes of the reference transformer: the config object, its defaults and presets. */
import { describe, fail } from '../errors.js';

/**
 * A Llama-architecture decoder's shapes. Optional fields default to Llama's:
 * `weightLayers` = `layers`, `ropeTheta` 500000, `normEps` 1e-5, `qkNorm` false.
 */
export interface ModelConfig {
  /** Decoder layers. */
  layers: number;
  /**
   * Distinct weight sets (layer `l` uses set `l % weightLayers`): fewer sets
   * than layers keep the compute per layer of a model whose weights would not
   * fit (Llama-3-70B on one GPU).
   */
  weightLayers?: number;
  /** Model width. */
  hidden: number;
  /** Query heads. */
  heads: number;
  /** Key/value heads (grouped-query attention); divides `heads`. */
  kvHeads: number;
  /** Width of one head; even (RoPE rotates halves). */
  headDim: number;
  /** SwiGLU MLP width. */
  intermediate: number;
  /** Embedding table rows. */
  vocab: number;
  /** RoPE base. */
  ropeTheta?: number;
  /** RMSNorm epsilon. */
  normEps?: number;
  /** RMSNorm of each query and key head before RoPE (Qwen3). */
  qkNorm?: boolean;
}

/** Every field of a ModelConfig. */
export const MODEL_CONFIG_KEYS = [
  'layers', 'weightLayers', 'hidden', 'heads', 'kvHeads', 'headDim', 'intermediate', 'vocab', 'ropeTheta', 'normEps', 'qkNorm',
] as const;

/** The presets' names. */
export type PresetName = 'llama-3-8b' | 'qwen3-14b' | 'llama-3-70b' | 'tiny';

const freeze = (c: ModelConfig): Readonly<ModelConfig> => Object.freeze(c);

/**
 * Shapes of well-known models (random weights), and `tiny` for CPU tests: a
 * CPU prefill of a few hundred tokens takes well under a second.
 * `llama-3-70b` reuses one layer's weights for all 80 layers so it fits one GPU.
 */
export const presets: Readonly<Record<PresetName, Readonly<ModelConfig>>> = Object.freeze({
  'llama-3-8b': freeze({
    layers: 32, hidden: 4096, heads: 32, kvHeads: 8, headDim: 128, intermediate: 14336, vocab: 128256, ropeTheta: 500000,
  }),
  'qwen3-14b': freeze({
    layers: 40, hidden: 5120, heads: 40, kvHeads: 8, headDim: 128, intermediate: 17408, vocab: 151936, ropeTheta: 1e6,
    normEps: 1e-6, qkNorm: true,
  }),
  'llama-3-70b': freeze({
    layers: 80, weightLayers: 1, hidden: 8192, heads: 64, kvHeads: 8, headDim: 128, intermediate: 28672, vocab: 128256,
    ropeTheta: 500000,
  }),
  tiny: freeze({ layers: 4, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, intermediate: 128, vocab: 512 }),
});

function intIn(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    fail('ERR_INVALID_ARG', `expected an integer in [${min}, ${max}] for ${name}, got ${describe(value)}`);
  }
  return value;
}

/** Validates a config and fills its defaults. */
export function resolveConfig(config: ModelConfig): Readonly<Required<ModelConfig>> {
  if (typeof config !== 'object' || config === null) fail('ERR_INVALID_ARG', `expected a model config, got ${describe(config)}`);
  const layers = intIn(config.layers, 'layers', 1, 4096);
  const weightLayers = intIn(config.weightLayers ?? layers, 'weightLayers', 1, layers);
  const hidden = intIn(config.hidden, 'hidden', 1, 2 ** 20);
  const heads = intIn(config.heads, 'heads', 1, 4096);
  const kvHeads = intIn(config.kvHeads, 'kvHeads', 1, heads);
  if (heads % kvHeads !== 0) fail('ERR_INVALID_ARG', `expected kvHeads to divide heads (${heads}), got ${kvHeads}`);
  const headDim = intIn(config.headDim, 'headDim', 2, 4096);
  if (headDim % 2 !== 0) fail('ERR_INVALID_ARG', `expected an even headDim for RoPE, got ${headDim}`);
  const intermediate = intIn(config.intermediate, 'intermediate', 1, 2 ** 20);
  const vocab = intIn(config.vocab, 'vocab', 1, 2 ** 24);
  const ropeTheta = config.ropeTheta ?? 500000;
  if (typeof ropeTheta !== 'number' || !Number.isFinite(ropeTheta) || ropeTheta <= 1) {
    fail('ERR_INVALID_ARG', `expected a finite number above 1 for ropeTheta, got ${describe(ropeTheta)}`);
  }
  const normEps = config.normEps ?? 1e-5;
  if (typeof normEps !== 'number' || !(normEps > 0 && normEps <= 1)) {
    fail('ERR_INVALID_ARG', `expected a number in (0, 1] for normEps, got ${describe(normEps)}`);
  }
  const qkNorm = config.qkNorm ?? false;
  if (typeof qkNorm !== 'boolean') fail('ERR_INVALID_ARG', `expected a boolean for qkNorm, got ${describe(qkNorm)}`);
  return Object.freeze({ layers, weightLayers, hidden, heads, kvHeads, headDim, intermediate, vocab, ropeTheta, normEps, qkNorm });
}
