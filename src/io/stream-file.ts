/**
 * `stream.readFile` and `stream.writeFile`: file IO in stream order through
 * pinned bounce buffers (or cuFile). The io layer adds them to Stream, so
 * the device layer never imports io. Loaded by the package entry point.
 */
import { Stream, bufferArg } from '../device/stream.js';
import { checkInstance, checkRange, checkSize } from '../util/validate.js';
import { KvFile } from './file.js';
import type { KvBuffer } from '../device/buffer.js';

declare module '../device/stream.js' {
  interface Stream {
    /**
     * Enqueues a read of `bytes` bytes of `file` at `fileOffset` into `dst` at
     * `dstOffset` (device, pinned or host memory), in stream order: work
     * enqueued after this runs once the data is in place. Disk reads run
     * through a ring of pinned bounce buffers (the device config's
     * `ioBounceChunk` x `ioBounceSlots`) overlapped with the copies into
     * `dst`; no host thread waits on the GPU. A failed read (or reading past
     * the end of the file) fails the stream's next event; the stream never
     * waits forever.
     */
    readFile(dst: KvBuffer, dstOffset: number, file: KvFile, fileOffset: number, bytes: number): void;
    /**
     * Enqueues a write of `bytes` bytes of `src` at `srcOffset` to `file` at
     * `fileOffset`, after the work enqueued before it; an event recorded after
     * this completes once the bytes are written (not yet fsync'ed: see
     * `file.sync()`). A failed write fails the stream's next event.
     */
    writeFile(file: KvFile, fileOffset: number, src: KvBuffer, srcOffset: number, bytes: number): void;
  }
}

function fileArg(value: unknown) {
  return checkInstance(value, 'file', 'a KvFile', KvFile).native;
}

Stream.prototype.readFile = function readFile(
  this: Stream,
  dst: KvBuffer,
  dstOffset: number,
  file: KvFile,
  fileOffset: number,
  bytes: number,
): void {
  const native = this.native;
  const d = bufferArg(dst, 'dst');
  const f = fileArg(file);
  checkSize(dstOffset, 'dstOffset');
  checkSize(fileOffset, 'fileOffset');
  checkSize(bytes, 'bytes');
  checkRange(dstOffset, bytes, dst.byteLength, 'destination');
  const { ioBounceChunk, ioBounceSlots } = this.config;
  native.readFile(d, dstOffset, f, fileOffset, bytes, ioBounceChunk, ioBounceSlots);
};

Stream.prototype.writeFile = function writeFile(
  this: Stream,
  file: KvFile,
  fileOffset: number,
  src: KvBuffer,
  srcOffset: number,
  bytes: number,
): void {
  const native = this.native;
  const f = fileArg(file);
  const s = bufferArg(src, 'src');
  checkSize(fileOffset, 'fileOffset');
  checkSize(srcOffset, 'srcOffset');
  checkSize(bytes, 'bytes');
  checkRange(srcOffset, bytes, src.byteLength, 'source');
  const { ioBounceChunk, ioBounceSlots } = this.config;
  native.writeFile(f, fileOffset, s, srcOffset, bytes, ioBounceChunk, ioBounceSlots);
};
