/** LayerPipeline: per-layer load / compute / save scheduling with the load-or-recompute policy. */
export {
  LayerPipeline,
  type LayerCompute,
  type LayerPipelineOptions,
  type HostCost,
  type LayerTiming,
  type PrefillRequest,
  type PrefillRestart,
  type PrefillResult,
  type PrefillWork,
} from './pipeline.js';
export {
  ConnectorRequest,
  KvConnector,
  type ConnectorStats,
  type KvConnectorOptions,
  type LoadOutcome,
  type StartLoadOptions,
} from './connector.js';
