/**
 * `device.allocKvCache` and `device.wrapKvCache`: the layout layer adds them
 * to Device, so the device layer never imports layout. Loaded by the package
 * entry point.
 */
import { Device } from '../device/device.js';
import type { DeviceBuffer } from '../device/buffer.js';
import { DisposeOrder } from '../util/disposable.js';
import { KvCache, allocKvCache, wrapKvCache } from './kvcache.js';
import { KvLayout, type KvLayoutSpec } from './layout.js';

declare module '../device/device.js' {
  interface Device {
    /**
     * A KV cache in device memory for `layout` (a KvLayout or its spec): one
     * buffer per layer, or one for block-major. Disposed with the device,
     * before its streams and buffers.
     */
    allocKvCache(layout: KvLayout | KvLayoutSpec): KvCache;
    /**
     * A runtime's own KV cache: its buffers (from {@link Device.wrapUnsafe}) plus
     * the layout, so every block access is checked against both.
     */
    wrapKvCache(layout: KvLayout | KvLayoutSpec, buffers: DeviceBuffer[]): KvCache;
  }
}

function adopt(device: Device, cache: KvCache): KvCache {
  device.attach(cache, DisposeOrder.caches);
  return cache;
}

Device.prototype.allocKvCache = function allocCache(this: Device, layout: KvLayout | KvLayoutSpec): KvCache {
  void this.native;
  const l = layout instanceof KvLayout ? layout : new KvLayout(layout);
  return adopt(this, allocKvCache(this, l, this.config.pagedEngine));
};

Device.prototype.wrapKvCache = function wrapCache(this: Device, layout: KvLayout | KvLayoutSpec, buffers: DeviceBuffer[]): KvCache {
  void this.native;
  const l = layout instanceof KvLayout ? layout : new KvLayout(layout);
  return adopt(this, wrapKvCache(l, buffers, this.config.pagedEngine));
};
