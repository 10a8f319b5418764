import { parentPort, workerData } from 'node:worker_threads';
let root;
if (workerData.lmdb) { const { open } = await import(workerData.lmdbPath); root = open({ path: workerData.file }); }
parentPort.on('message', async (m) => { if (root) { root.putSync('k', 1); await root.close(); } parentPort.postMessage('done'); });
