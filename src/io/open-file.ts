/**
 * `device.openFile`: the io layer adds it to Device, so the device layer
 * never imports io. Loaded by the package entry point.
 */
import { Device } from '../device/device.js';
import { deviceIo } from './engine.js';
import type { KvFile, OpenFileOptions } from './file.js';

declare module '../device/device.js' {
  interface Device {
    /**
     * Opens (or, with `create`, creates with mode 0600) a file for the NVMe
     * tier, once its engine is running and O_DIRECT was probed in its
     * directory; `file.info` says what was chosen and why. Options default
     * to the device's config (`ioEngine`, `ioDirect`, `gds`).
     */
    openFile(path: string, options?: OpenFileOptions): Promise<KvFile>;
  }
}

Device.prototype.openFile = async function openFile(this: Device, path: string, options: OpenFileOptions = {}): Promise<KvFile> {
  return deviceIo(this).open(path, options);
};
