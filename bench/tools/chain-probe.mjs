// Replays test/layout/paged's "work enqueued through the stream's handle" case
// outside vitest, printing what happens (for a native build under suspicion).
import { KvLayout, openDevice } from '../../dist/src/index.js';
import { holdStream } from '../../dist/src/device/testing.js';
const dev = openDevice({ backend: 'cuda' });
const layout = new KvLayout({ layers: 4, kvHeads: 8, headDim: 128, dtype: 'bf16', blockTokens: 16, numBlocks: 64 });
const cache = dev.allocKvCache(layout);
const s = dev.createStream({ priority: 'high' });
const w = dev.wrapStreamUnsafe(s.handle);
const a = dev.allocPinned(layout.stagingBytes(8 * 16));
const b = dev.allocPinned(layout.stagingBytes(8 * 16));
const first = [1, 2, 3, 4, 5, 6, 7, 8];
for (let k = 0; k < 2; k++) cache.gather(s, { blocks: first, staging: a, engine: 'kernel' });
await s.synchronize();
console.log('warmed');
const src = dev.allocPinned(layout.pieceBytes);
for (let i = 0; i < src.byteLength; i++) src.array[i] = (i * 31 + 7) & 255;
const at = layout.piece(0, 0, 20);
const release = holdStream(s);
cache.gather(s, { blocks: first, staging: a, engine: 'kernel' });
w.copy(cache.buffers[at.buffer], at.offset, src, 0, src.byteLength);
cache.gather(s, { blocks: [20], staging: b, layers: 0, engine: 'kernel' });
release();
await s.synchronize();
let same = true;
for (let i = 0; i < src.byteLength; i++) if (b.array[i] !== src.array[i]) { same = false; break; }
console.log('second gather saw the copy:', same);
await w.dispose();
await s.dispose();
await dev.dispose();
console.log('done');
