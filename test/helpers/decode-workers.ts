/**
 * Decoding on real worker_threads into one shared memory, as the probe's
 * pool does (src/pipeline/worker.ts): each worker attaches to the memory,
 * waits until all are ready, then decodes its chunks `passes` times through
 * its own staging area. Resolves to the bytes each consumed.
 */
import { Worker } from 'node:worker_threads';
import type { State } from '../../src/wasm.js';

const WORKER_SRC = `
const { workerData, parentPort } = require('node:worker_threads');
import(workerData.wasmUrl).then((W) => {
  const st = W.attachState(workerData.memory);
  const sig = new Int32Array(workerData.signal);
  Atomics.add(sig, 1, 1);
  Atomics.wait(sig, 0, 0);
  let consumed = 0;
  for (let pass = 0; pass < workerData.passes; pass++) {
    for (const chunk of workerData.chunks) consumed += W.decodeBytes(st, workerData.index, chunk);
  }
  parentPort.postMessage(consumed);
}).catch((e) => { throw e; });
`;

/** Starts one worker per entry of `chunks` (worker i decodes chunks[i]); all start decoding together. */
export async function decodeInWorkers(st: State, chunks: Uint8Array[][], passes: number): Promise<number[]> {
  const signal = new SharedArrayBuffer(8);
  const sig = new Int32Array(signal);
  const wasmUrl = new URL('../../src/wasm.js', import.meta.url).href;
  const results = chunks.map((mine, index) => {
    const w = new Worker(WORKER_SRC, {
      eval: true,
      workerData: { wasmUrl, memory: st.memory, index, chunks: mine, passes, signal },
    });
    return new Promise<number>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
  });
  while (Atomics.load(sig, 1) < chunks.length) await new Promise((r) => setTimeout(r, 2));
  Atomics.store(sig, 0, 1);
  Atomics.notify(sig, 0);
  return Promise.all(results);
}
