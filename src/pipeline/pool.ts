/**
 * The worker pool: one worker_thread per share of the CPUs' perf rings, all
 * decoding into one shared WebAssembly.Memory. A worker that fails or dies is
 * recorded (error()), never waited for: what the others and the shared
 * memory hold is still reported.
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

export interface PoolTotals {
  workers: number;
  batches: number;
  bytes: number;
}

interface Member {
  index: number;
  worker: Worker;
  alive: boolean;
  /** resolves with the worker's totals on 'stopped', or undefined when it exits without them */
  stopped: Promise<{ batches: number; bytes: number } | undefined>;
}

export class WorkerPool {
  private failure: MeshprobeError | undefined;
  private stopping = false;
  private readonly members: Member[] = [];

  private constructor() {}

  static async start(opts: PoolOptions): Promise<WorkerPool> {
    const pool = new WorkerPool();
    const url = new URL('./worker.js', import.meta.url);
    const ready = assignCpus(opts.cpus, opts.workers).map((cpus, index) => {
      const init: WorkerInit = {
        memory: opts.memory,
        mapFd: opts.mapFd,
        cpus,
        index,
        pagesPerCpu: opts.pagesPerCpu,
        wakeupBytes: opts.wakeupBytes,
      };
      const worker = new Worker(url, { workerData: init });
      let onReady!: () => void;
      let onFail!: (e: MeshprobeError) => void;
      const readyP = new Promise<void>((res, rej) => {
        onReady = res;
        onFail = rej;
      });
      let onStopped!: (t: { batches: number; bytes: number } | undefined) => void;
      const member: Member = {
        index,
        worker,
        alive: true,
        stopped: new Promise((r) => {
          onStopped = r;
        }),
      };
      pool.members.push(member);
      worker.on('message', (m: WorkerReply) => {
        if (m.type === 'ready') {
          log.debug(`worker ${index} reads CPUs ${cpus.join(',')}`);
          onReady();
        } else if (m.type === 'stopped') {
          onStopped({ batches: m.batches, bytes: m.bytes });
        } else if (m.type === 'error') {
          const err = new MeshprobeError(m.code, `decoding worker ${index}: ${m.message}`);
          pool.fail(err);
          onFail(err);
        }
      });
      worker.on('error', (e) => {
        const err = new MeshprobeError('MP_WORKER', `decoding worker ${index} failed: ${e.message}`);
        pool.fail(err);
        onFail(err);
      });
      worker.on('exit', (code) => {
        member.alive = false;
        onStopped(undefined);
        if (!pool.stopping) {
          const err = new MeshprobeError('MP_WORKER', `decoding worker ${index} exited (code ${code})`);
          pool.fail(err);
          onFail(err);
        }
      });
      return readyP;
    });
    try {
      await Promise.all(ready);
    } catch (e) {
      pool.stopping = true;
      await Promise.all(pool.members.map((m) => m.worker.terminate()));
      throw e;
    }
    return pool;
  }

  private fail(err: MeshprobeError): void {
    if (this.failure) return;
    this.failure = err;
    log.error(err.message);
  }

  /** A worker error after start (a decoder fault, a worker that died), if any. */
  get error(): MeshprobeError | undefined {
    return this.failure;
  }

  /** Final drain of every ring, then the workers end. Call after the programs are detached. */
  async stop(): Promise<PoolTotals> {
    this.stopping = true;
    for (const m of this.members) if (m.alive) m.worker.postMessage({ type: 'stop' });
    const results = await Promise.all(this.members.map((m) => m.stopped));
    await Promise.all(this.members.map((m) => m.worker.terminate()));
    const done = results.filter((r): r is { batches: number; bytes: number } => r !== undefined);
    return {
      workers: this.members.length,
      batches: done.reduce((a, r) => a + r.batches, 0),
      bytes: done.reduce((a, r) => a + r.bytes, 0),
    };
  }
}
