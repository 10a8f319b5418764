/**
 * The prefill model (DESIGN.md sections 1 and 5): calibrated compute per
 * layer, measured tier bandwidth, and the load-or-recompute plan built on them.
 */
export { ComputeModel, attentionPairs, type ComputeSample, type ComputeTerms } from './compute.js';
export { BandwidthMeter, PRIOR_BYTES_PER_MS, type TierBandwidth } from './bandwidth.js';
export { HostModel, type HostSample, type HostTerms } from './host.js';
export {
  layerModelMs,
  planPrefill,
  type HitSpan,
  type PlanRequest,
  type PrefillPlan,
  type PrefillPolicy,
  type SplitPrediction,
} from './plan.js';
