/**
 * The geometry a store directory is created with. A module of its own, free of
 * the index's imports, so that the public types (KvStore.geometry) do not
 * reach the LMDB binding's.
 */

/** The geometry a store directory is created with; fixed for its life. */
export interface StoreGeometry {
  version: number;
  /** Bytes per NVMe slot (one chunk record), a multiple of 4096. */
  slotBytes: number;
  /** Slots in the NVMe tier. */
  slotCount: number;
  /** Slots per slab file. */
  slotsPerFile: number;
  /** Layer extents per record the checksums cover. */
  layers: number;
  /** Bytes of one layer extent (4 KiB aligned). */
  extentBytes: number;
}
