/**
 * The worker pool: one worker_thread per share of the CPUs' perf rings, all
 * decoding into one shared WebAssembly.Memory.
 */
import { Worker } from 'node:worker_threads';
import { MeshprobeError } from '../errors.js';
import { log } from '../log.js';
import { assignCpus } from './cpus.js';
import type { WorkerInit, WorkerReply } from './messages.js';

export interface PoolOptions {
  memory: WebAssembly.Memory;
  mapFd: number;
  cpus: number[];
  workers: number;
  pagesPerCpu: number;
  wakeupBytes: number;
}

export interface PoolTotals { workers: number; batches: number; bytes: number }

export class WorkerPool {
  private constructor(private readonly workers: Worker[], private failure: MeshprobeError | undefined) {}

  static async start(opts: PoolOptions): Promise<WorkerPool> {
    const shares = assignCpus(opts.cpus, opts.workers);
    const url = new URL('./worker.js', import.meta.url);
    const workers: Worker[] = [];
    const pool = new WorkerPool(workers, undefined);
    const ready = shares.map((cpus, index) => {
      const init: WorkerInit = { memory: opts.memory, mapFd: opts.mapFd, cpus, index, pagesPerCpu: opts.pagesPerCpu, wakeupBytes: opts.wakeupBytes };
      const w = new Worker(url, { workerData: init });
      workers.push(w);
      return new Promise<void>((resolve, reject) => {
        const onMsg = (m: WorkerReply) => {
          if (m.type === 'ready') {
            log.debug(`worker ${index} reads CPUs ${cpus.join(',')}`);
            resolve();
          } else if (m.type === 'error') {
            const err = new MeshprobeError(m.code, `decoding worker ${index}: ${m.message}`);
            pool.failure ??= err;
            log.error(err.message);
            reject(err);
          }
        };
        w.on('message', onMsg);
        w.once('error', (e) => reject(new MeshprobeError('MP_WORKER', `decoding worker ${index} failed: ${e.message}`)));
      });
    });
    try {
      await Promise.all(ready);
    } catch (e) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw e;
    }
    return pool;
  }

  /** A worker error after start (for instance a decoder fault), if any. */
  get error(): MeshprobeError | undefined {
    return this.failure;
  }

  /** Final drain of every ring, then the workers end. Call after the programs are detached. */
  async stop(): Promise<PoolTotals> {
    const results = await Promise.all(this.workers.map((w) => new Promise<{ batches: number; bytes: number }>((resolve, reject) => {
      const onMsg = (m: WorkerReply) => {
        if (m.type === 'stopped') resolve(m);
        else if (m.type === 'error') reject(new MeshprobeError(m.code, m.message));
      };
      w.on('message', onMsg);
      w.once('error', reject);
      w.postMessage({ type: 'stop' });
    })));
    await Promise.all(this.workers.map((w) => w.terminate()));
    return {
      workers: this.workers.length,
      batches: results.reduce((a, r) => a + r.batches, 0),
      bytes: results.reduce((a, r) => a + r.bytes, 0),
    };
  }
}
