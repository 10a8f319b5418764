/**
 * kvflow/reference: a reference Llama-architecture decoder whose compute runs
 * on kvflow streams over the paged KV cache, the yardstick kvflow's
 * load-instead-of-recompute results are measured against.
 */
export { presets, resolveConfig, type ModelConfig, type PresetName } from './config.js';
export { ReferenceModel, type LayerCall, type PrefillCall, type ReferenceModelOptions } from './model.js';
