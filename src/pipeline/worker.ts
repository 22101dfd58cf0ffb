/**
 * A decoding worker: owns the perf rings of some CPUs. When its native
 * thread says records are waiting, it copies them (native drain) into its
 * staging area of the shared memory and lets the Wasm decoder fold them into
 * the shared histograms and tables. One JavaScript call per batch, none per event.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { attachState } from '../wasm.js';
import { addon } from '../native.js';
import type { WorkerInit, WorkerReply } from './messages.js';

const init = workerData as WorkerInit;
if (!parentPort) throw new Error('pipeline/worker.js runs as a worker thread (new Worker), not on its own');
const port = parentPort;

function reply(m: WorkerReply): void {
  port.postMessage(m);
}

try {
  const state = attachState(init.memory);
  const ptr = state.stagingPtr(init.index);
  const dest = new Uint8Array(init.memory.buffer, ptr, state.stagingSize());
  const reader = new (addon().PerfReader)(init.mapFd, init.cpus, init.pagesPerCpu, init.wakeupBytes);
  let batches = 0;
  let bytes = 0;

  const drainAll = (): void => {
    for (;;) {
      const n = reader.drain(dest);
      if (n === 0) return;
      const used = state.decode(ptr, n);
      if (used !== n) throw new Error(`decoder consumed ${used} of ${n} bytes`);
      batches++;
      bytes += n;
    }
  };

  reader.start(() => {
    try {
      drainAll();
    } catch (e) {
      reply({ type: 'error', code: 'MP_DECODE', message: (e as Error).message });
    }
  });

  port.on('message', (m: { type: string }) => {
    if (m.type === 'stop') {
      try {
        drainAll(); // whatever is left in the rings after the programs were detached
      } catch (e) {
        reply({ type: 'error', code: 'MP_DECODE', message: (e as Error).message });
      } finally {
        reader.close();
        reply({ type: 'stopped', batches, bytes });
        port.close();
      }
    } else if (m.type === 'stats') {
      reply({ type: 'stats', batches, bytes, backlog: reader.backlog() });
    }
  });
  reply({ type: 'ready' });
} catch (e) {
  const err = e as Error & { code?: string };
  reply({ type: 'error', code: err.code ?? 'MP_WORKER', message: err.message });
}
