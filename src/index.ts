/**
 * kvflow: move a transformer's per-layer KV cache between GPU memory, pinned
 * host memory and NVMe, asynchronously on streams.
 */
export { KvflowError, type KvflowErrorCode } from './errors.js';
// The io and layout layers add their methods to Device and Stream
// (openFile, readFile/writeFile, allocKvCache/wrapKvCache).
import './io/open-file.js';
import './io/stream-file.js';
import './layout/device-cache.js';
export {
  BUILT_IN_DEFAULTS,
  defaults,
  readConfig,
  type Environment,
  type StoreDefaults,
  type BackendRequest,
  type CudaGateRequest,
  type DirectRequest,
  type IoEngineRequest,
  type KvflowDefaults,
} from './defaults.js';
export {
  Device,
  openDevice,
  selectBackend,
  type Backend,
  type BackendSelection,
  type CudaGateChoice,
  type DeviceInfo,
  type OpenDeviceOptions,
  type PinnedPoolStats,
} from './device/device.js';
export { DeviceBuffer, HostBuffer, KvBuffer, PinnedBuffer, type MemoryKind } from './device/buffer.js';
export { Event as KvEvent, type EventStatus, type WaitOptions } from './device/event.js';
import { Event as KvEventClass } from './device/event.js';
/**
 * @deprecated Use {@link KvEvent}: the same class under a name that does not
 * shadow the global `Event` in files that import it. Kept for compatibility.
 */
export const Event = KvEventClass;
/** @deprecated Use {@link KvEvent}. */
export type Event = KvEventClass;
export { Stream, type RecordOptions, type StreamOptions } from './device/stream.js';
export { elapsedMs, eventTimeMs } from './device/timing.js';
export { Disposable, DisposeOrder, type AsyncDisposableLike, type Child, type Detach, type DisposeOptions } from './util/disposable.js';
export { choice, type Choice } from './util/choice.js';
export { KvLayout, alignExtent, EXTENT_ALIGN, type KvArrangement, type KvDtype, type KvLayoutSpec, type PieceLocation } from './layout/layout.js';
export { KvCache, PreparedTransfer, type PagedEngine, type PagedTransfer, type StagingRecord } from './layout/kvcache.js';
export { planPieces, type LayerRange, type PiecePlan } from './layout/pieces.js';
export { KvFile, type FileInfo, type FileIoBuffer, type IoEngineKind, type OpenFileOptions } from './io/file.js';
export { crc32c } from './io/crc32c.js';
export type { IoPriority, IoRequestOptions } from './io/priority.js';
export { MAX_CHECKED_PIECES, type CheckedPiece, type CheckedRead, type SummedPiece } from './io/checked.js';
export {
  KvStore,
  PendingPut,
  StoreHit,
  type AdmissionInfo,
  type AdmissionPolicy,
  type ChunkRef,
  type KvStoreOptions,
  type KvStoreStats,
  type LayerMoveOptions,
  type PutResult,
  type TenantOptions,
  type VerifyOptions,
  type VerifyProblem,
  type VerifyProgress,
  type VerifyReport,
} from './store/store.js';
export type { KvStoreLocalCounters, KvStoreSharedCounters } from './store/stats.js';
export type { StoreGeometry } from './store/geometry.js';
export type { HitOutcome } from './store/hit.js';
export { chunkKeys, fingerprintOf, STORE_FORMAT_VERSION, type FingerprintSpec } from './store/keys.js';
export { lruRank, type ChunkUse, type EvictionRank } from './store/dram.js';
export {
  BandwidthMeter,
  ComputeModel,
  HostModel,
  PRIOR_BYTES_PER_MS,
  attentionPairs,
  layerModelMs,
  planPrefill,
  type ComputeSample,
  type ComputeTerms,
  type HitSpan,
  type HostSample,
  type HostTerms,
  type PlanRequest,
  type PrefillPlan,
  type PrefillPolicy,
  type SplitPrediction,
  type TierBandwidth,
} from './model/index.js';
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
  ConnectorRequest,
  KvConnector,
  type ConnectorStats,
  type KvConnectorOptions,
  type LoadOutcome,
  type StartLoadOptions,
} from './pipeline/index.js';
export { CHANNEL_NAMES, type ChecksumMessage, type DemoteDroppedMessage, type EvictMessage, type FallbackMessage } from './util/diagnostics.js';
