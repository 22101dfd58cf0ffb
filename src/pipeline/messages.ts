/** Messages between the main thread and the decoding workers. */
export interface WorkerInit {
  memory: WebAssembly.Memory;
  mapFd: number;
  cpus: number[];
  index: number;
  pagesPerCpu: number;
  wakeupBytes: number;
}

export type WorkerReply =
  | { type: 'ready' }
  | { type: 'stopped'; batches: number; bytes: number }
  | { type: 'stats'; batches: number; bytes: number; backlog: number }
  | { type: 'error'; code: string; message: string };
