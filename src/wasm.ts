/**
 * Loads build/meshprobe.wasm on one shared WebAssembly.Memory (main thread or
 * worker_threads) and reads what the decoder keeps there: counters, global
 * histograms (latency records; measure records per metric and role), measure
 * results, connection and service tables.
 *
 * Main thread: createState(config) → instantiates, grows the memory, init().
 * Workers:     attachState(memory) → instantiates on the same memory (no init);
 *              then copy perf bytes to stagingPtr(i) and call decode(ptr, len)
 *              (or use decodeBytes()).
 */
import { readFileSync } from 'node:fs';
import { merge as mergeHistograms, type HistogramSnapshot } from './histogram.js';

/** Where the module is, from dist/src/wasm.js. */
export const WASM_URL = new URL('../../build/meshprobe.wasm', import.meta.url);
/** Must match "maximumMemory" in asconfig.json (pages of 64 KiB). */
export const MAX_PAGES = 16384;

/**
 * Functions exported by build/meshprobe.wasm (addresses are byte offsets in
 * the memory): plain functions, no `this`, so they may be called detached.
 */
export interface DecoderExports {
  readonly decode: (ptr: number, len: number) => number;
  readonly flushPending: (maxSpins: number) => number;
  readonly init: (connCap: number, svcCap: number, workers: number, stagingBytes: number, zeroed: number) => number;
  readonly layoutBytes: (connCap: number, svcCap: number, workers: number, stagingBytes: number) => number;
  readonly regionBase: () => number;
  readonly isReady: () => number;
  readonly counterAddr: (i: number) => number;
  readonly counterCount: () => number;
  readonly globalHistAddr: (i: number) => number;
  readonly connSlotAddr: (i: number) => number;
  readonly svcSlotAddr: (i: number) => number;
  readonly measureResultsAddr: () => number;
  readonly stagingPtr: (i: number) => number;
  readonly stagingSize: () => number;
  readonly connCapacity: () => number;
  readonly svcCapacity: () => number;
  readonly workerCount: () => number;
  readonly regionEnd: () => number;
  readonly bucketIndex: (v: bigint) => number;
  /** i64 results arrive signed: use BigInt.asUintN(64, x) */
  readonly bucketLower: (idx: number) => bigint;
  readonly bucketUpper: (idx: number) => bigint;
  /** connection rows' compact histogram (ROW_* in assembly/layout.ts) */
  readonly rowBucketIndex: (v: bigint) => number;
  readonly rowBucketLower: (i: number) => bigint;
  readonly rowBucketUpper: (i: number) => bigint;
  readonly connRowsInUse: () => number;
  readonly sweepBegin: () => number;
  readonly releaseRow: (i: number) => number;
  readonly sweepEnd: () => number;
  readonly svcSlotsInUse: () => number;
  readonly connDue: (oldNs: bigint) => number;
  readonly sweepFlush: () => void;
  readonly releaseSvc: (i: number) => number;
}

export interface StateConfig {
  /** connection rows, exactly (1,216 bytes each with its compact histogram; plus a 64-byte share of the index) */
  connCapacity: number;
  /** service table slots; rounded up to a power of two */
  serviceCapacity: number;
  /** number of staging areas (one per decoding worker) */
  workers: number;
  /** bytes per staging area (rounded up to 64) */
  stagingBytes: number;
  /** an existing shared memory (maximum must be <= MAX_PAGES); a new one otherwise */
  memory?: WebAssembly.Memory;
}

export interface Layout {
  base: number;
  connCap: number;
  svcCap: number;
  workers: number;
  stagingBytes: number;
  nb: number;
  histBytes: number;
  connSlotBytes: number;
  svcSlotBytes: number;
  counters: number;
  globalHists: number;
  /** the u64 [MR_METRICS][MR_RESULTS] table of measure records per (metric, result) */
  measureResults: number;
  connTable: number;
  svcTable: number;
  staging: number;
  end: number;
}

/**
 * Connections whose rows were freed (src/pipeline/aging.ts), kept as folded
 * rows: one per pair of processes and service, with the sum and count of
 * their exchanges, for the mesh-overhead analysis and service names.
 */
export interface AgedConnections {
  /** folded rows: slot -1, conn_id 0, ports that no real connection has (>= 65536) where ephemeral ports were */
  rows: ConnSlot[];
  /** connections folded */
  connections: number;
  /** their requests */
  requests: number;
  /** connections folded into rows that were later dropped (more than the fold keeps) */
  dropped: number;
  /** sweeps that freed rows */
  sweeps: number;
  /** client connections aged out (opened and closed in the run), for connection-tracker's pools */
  clientOpen: AgedOpenTimes;
  /** idle services whose slots were freed: key -> their figures (slot -1), added back by readSvcTable */
  services: Map<bigint, ServiceSlot>;
  /** services freed from the table */
  servicesExpired: number;
  /** expired services forgotten (more than the store keeps): their requests stay in the views only */
  servicesDropped: number;
}

/**
 * When the aged client connections were open, per remote endpoint: the last
 * ones as [start_ns, end_ns] pairs, the older ones as sums (with the range
 * they span, to tell whether a span holds them whole).
 */
export interface AgedOpenTimes {
  /** endpoint -> flat [start, end, start, end, ...] of connections closed lately */
  recent: Map<string, number[]>;
  /** endpoint -> sum of end - start of the connections no longer listed in `recent` */
  olderNs: Map<string, number>;
  /** earliest start and latest end of those older ones (Infinity / 0 when none) */
  olderFromNs: number;
  olderToNs: number;
}

export interface State {
  memory: WebAssembly.Memory;
  /** main thread: connections aged out of the table */
  aged: AgedConnections;
  instance: WebAssembly.Instance;
  exports: DecoderExports;
  layout: Layout;
  /** decode whole perf records at [ptr, ptr+len) of the memory; returns bytes consumed */
  decode(ptr: number, len: number): number;
  /** address of staging area i */
  stagingPtr(i: number): number;
  /** bytes per staging area */
  stagingSize(): number;
}

function makeState(memory: WebAssembly.Memory, instance: WebAssembly.Instance): State {
  const ex = instance.exports as unknown as DecoderExports;
  const layout = readLayout(memory, ex);
  const dec = ex.decode;
  return {
    memory,
    aged: {
      rows: [],
      connections: 0,
      requests: 0,
      dropped: 0,
      sweeps: 0,
      clientOpen: { recent: new Map(), olderNs: new Map(), olderFromNs: Infinity, olderToNs: 0 },
      services: new Map(),
      servicesExpired: 0,
      servicesDropped: 0,
    },
    instance,
    exports: ex,
    layout,
    decode: (ptr, len) => dec(ptr, len) >>> 0,
    stagingPtr: (i) => {
      if (!(i >= 0 && i < layout.workers))
        throw new RangeError(`staging area ${i} out of range (workers=${layout.workers})`);
      return layout.staging + i * layout.stagingBytes;
    },
    stagingSize: () => layout.stagingBytes,
  };
}

function pow2(n: number): number {
  if (!(n >= 1)) return 1;
  return 2 ** Math.ceil(Math.log2(Math.floor(n)));
}

let cachedModule: WebAssembly.Module | undefined;

/** The compiled module (synchronous, cached per thread). */
export function wasmModule(): WebAssembly.Module {
  cachedModule ??= new WebAssembly.Module(readFileSync(WASM_URL));
  return cachedModule;
}

/** A shared memory the module accepts. */
export function newSharedMemory(initialPages = 1): WebAssembly.Memory {
  return new WebAssembly.Memory({ initial: initialPages, maximum: MAX_PAGES, shared: true });
}

let anyInstance: WebAssembly.Instance | undefined;

function instantiate(memory: WebAssembly.Memory): WebAssembly.Instance {
  const inst = new WebAssembly.Instance(wasmModule(), {
    env: {
      memory,
      abort(_msg: number, _file: number, line: number, col: number): never {
        throw new Error(`meshprobe.wasm abort at ${line}:${col}`);
      },
    },
  });
  anyInstance ??= inst;
  return inst;
}

/**
 * Exports of some instance in this thread, for the pure functions (bucket
 * math) and the constants: the first one instantiated, else a private one on
 * a 1-page memory.
 */
export function wasmExports(): DecoderExports & Record<string, unknown> {
  anyInstance ??= instantiate(newSharedMemory(1));
  return anyInstance.exports as unknown as DecoderExports & Record<string, unknown>;
}

/** Value of an exported i32 constant of the module (see assembly/layout.ts, assembly/records.ts). */
const constCache = new Map<string, number>();
export function wasmConst(name: string): number {
  const hit = constCache.get(name);
  if (hit !== undefined) return hit;
  const g = (wasmExports() as Record<string, unknown>)[name];
  if (!(g instanceof WebAssembly.Global)) throw new Error(`meshprobe.wasm exports no constant ${name}`);
  const v = Number(g.value);
  constCache.set(name, v);
  return v;
}

function readLayout(memory: WebAssembly.Memory, ex: DecoderExports): Layout {
  const base = ex.regionBase();
  const dv = new DataView(memory.buffer);
  const u32 = (name: string) => dv.getUint32(base + wasmConst(name), true);
  if (u32('H_MAGIC') !== wasmConst('MAGIC')) throw new Error('meshprobe: shared memory is not initialized (no magic)');
  if (u32('H_VERSION') !== wasmConst('LAYOUT_VERSION')) throw new Error('meshprobe: layout version mismatch');
  return {
    base,
    connCap: u32('H_CONN_CAP'),
    svcCap: u32('H_SVC_CAP'),
    workers: u32('H_WORKERS'),
    stagingBytes: u32('H_STAGING_BYTES'),
    nb: u32('H_NB'),
    histBytes: u32('H_HIST_BYTES'),
    connSlotBytes: u32('H_CONN_SLOT_BYTES'),
    svcSlotBytes: u32('H_SVC_SLOT_BYTES'),
    counters: u32('H_COUNTERS'),
    globalHists: u32('H_GLOBAL_HISTS'),
    measureResults: u32('H_MEASURE_RESULTS'),
    connTable: u32('H_CONN_TABLE'),
    svcTable: u32('H_SVC_TABLE'),
    staging: u32('H_STAGING'),
    end: u32('H_END'),
  };
}

/** Main thread: instantiate on `config.memory` (or a new shared memory), grow it, init everything. */
export function createState(config: StateConfig): State {
  const memory = config.memory ?? newSharedMemory(1);
  const instance = instantiate(memory);
  const ex = instance.exports as unknown as DecoderExports;
  const connCap = Math.max(1, Math.floor(config.connCapacity));
  const svcCap = pow2(config.serviceCapacity);
  const { workers, stagingBytes } = config;
  const end = ex.layoutBytes(connCap, svcCap, workers, stagingBytes) >>> 0;
  if (end === 0) {
    throw new RangeError(
      `meshprobe: layout too large (connCap=${connCap} svcCap=${svcCap} workers=${workers} stagingBytes=${stagingBytes})`,
    );
  }
  const have = memory.buffer.byteLength;
  if (have < end) memory.grow(Math.ceil((end - have) / 65536));
  // a new memory is all zeros past the module's data: init() leaves its pages untouched (resident when used)
  const zeroed = config.memory === undefined ? 1 : 0;
  if (ex.init(connCap, svcCap, workers, stagingBytes, zeroed) >>> 0 !== end) throw new Error('meshprobe: init failed');
  return makeState(memory, instance);
}

/** Worker: instantiate on a memory that createState() already initialized. */
export function attachState(memory: WebAssembly.Memory): State {
  return makeState(memory, instantiate(memory));
}

/** The staging area of worker i as bytes. */
export function stagingView(state: State, i: number): Uint8Array {
  const { staging, stagingBytes, workers } = state.layout;
  if (i < 0 || i >= workers) throw new RangeError(`staging area ${i} out of range`);
  return new Uint8Array(state.memory.buffer, staging + i * stagingBytes, stagingBytes);
}

/** decode() on bytes already in memory; returns bytes consumed. */
export function decode(state: State, ptr: number, len: number): number {
  return state.exports.decode(ptr, len) >>> 0;
}

/**
 * Copies `bytes` (whole perf records) through staging area `worker` and
 * decodes them, in chunks of at most stagingBytes. Returns the bytes consumed
 * (less than bytes.length if the data ends with a truncated record).
 */
export function decodeBytes(state: State, worker: number, bytes: Uint8Array): number {
  const area = stagingView(state, worker);
  const ptr = area.byteOffset;
  if (bytes.length === 0) return 0;
  let off = 0;
  while (off < bytes.length) {
    const n = Math.min(area.length, bytes.length - off);
    area.set(bytes.subarray(off, off + n));
    const used = state.exports.decode(ptr, n) >>> 0;
    off += used;
    if (used === 0) break; // truncated record (or one larger than the staging area)
  }
  return off;
}

// ---------------------------------------------------------------------------
// Readers

/** Counter names in the order of the module's counter block (C_* in assembly/layout.ts). */
export const COUNTER_NAMES = [
  'records_total',
  'latency_records',
  'open_records',
  'close_records',
  'lost_records',
  'lost_events',
  'unknown_records',
  'conn_table_full',
  'svc_table_full',
  'bytes_decoded',
  'unknown_role',
  'perf_other',
  'decode_calls',
  /** measure records (MP_REC_MEASURE) decoded, whatever their metric and role */
  'measure_records',
  /** measure records whose metric is not one of METRIC_* (counted nowhere else) */
  'measure_unknown_metric',
  /** connections that found no free row: not tracked (their records are in conn_table_full) */
  'conn_refused',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];
export type Counters = Record<CounterName, number>;

/** Lock attempts per worker area before flush() gives up on it (a decode() holds it for one batch). */
export const FLUSH_MAX_SPINS = 1 << 22;

/**
 * Moves the figures the workers keep pending (global histograms, service
 * histograms, counters; see assembly/layout.ts "scratch") into the shared
 * memory. The readers below do it first unless told not to; call it yourself
 * before reading the memory by other means. Returns the number of worker
 * areas it gave up on (a worker stuck inside decode()).
 */
export function flush(state: State, maxSpins = FLUSH_MAX_SPINS): number {
  return state.exports.flushPending(maxSpins) >>> 0;
}

export interface FlushOption {
  /** flush pending worker figures first (default true) */
  flush?: boolean;
}

function u64view(state: State): BigUint64Array {
  return new BigUint64Array(state.memory.buffer);
}

export function readCounters(state: State, opts: FlushOption = {}): Counters {
  if (opts.flush !== false) flush(state);
  const v = u64view(state);
  const out = {} as Counters;
  COUNTER_NAMES.forEach((name, i) => {
    out[name] = Number(Atomics.load(v, (state.layout.counters >>> 3) + i));
  });
  return out;
}

const U64_MAX = 0xffffffffffffffffn;

/**
 * Snapshot of the histogram at `addr`. `count` is the sum of the bucket
 * counts read (so percentiles are consistent even while workers write).
 */
export function readHistogramAt(state: State, addr: number, v: BigUint64Array = u64view(state)): HistogramSnapshot {
  const nb = state.layout.nb;
  const i0 = addr >>> 3;
  const buckets: [number, number][] = [];
  let count = 0;
  for (let i = 0; i < nb; i++) {
    const c = v[i0 + i];
    if (c !== 0n) {
      const n = Number(c);
      buckets.push([i, n]);
      count += n;
    }
  }
  return snapshot(count, v[i0 + nb + 1], v[i0 + nb + 2], v[i0 + nb + 3], buckets);
}

/** A histogram's snapshot from its count, its u64 sum/min/max (min U64_MAX when empty) and its buckets. */
function snapshot(
  count: number,
  sum: bigint,
  min: bigint,
  max: bigint,
  buckets: [number, number][],
): HistogramSnapshot {
  return {
    count,
    sum_ns: Number(sum),
    min_ns: count === 0 || min === U64_MAX ? 0 : Number(min),
    max_ns: count === 0 ? 0 : Number(max),
    buckets,
  };
}

/** The geometry of connection rows' compact histograms (assembly/layout.ts ROW_*), from the module. */
interface RowGeometry {
  nb: number;
  shift: number;
  fine: number;
  max: number;
  overflow: number;
}
let rowGeo: RowGeometry | undefined;
function rowGeometry(): RowGeometry {
  rowGeo ??= {
    nb: wasmConst('ROW_NB'),
    shift: wasmConst('ROW_SHIFT'),
    fine: wasmConst('ROW_FINE'),
    max: wasmConst('ROW_COUNT_MAX') >>> 0,
    overflow: wasmConst('HIST_OVERFLOW'),
  };
  return rowGeo;
}

/**
 * The fine bucket (HIST_* index) that stands for row bucket i in a
 * connection's HistogramSnapshot: the one just below its middle
 * (ROW_FINE / 2 - 1 past its first), the fine overflow bucket for the row's
 * overflow bucket. A percentile of the snapshot (that fine bucket's
 * midpoint, clamped to the exact min and max) is then within 1/16 (6.25 %)
 * of every value of the row bucket from 128 ns on, within 4 ns below.
 */
export function rowRepresentative(i: number): number {
  const g = rowGeometry();
  return i >= g.nb - 1 ? g.overflow : (i << g.shift) + (g.fine >> 1) - 1;
}

/**
 * The true bounds [lower, upper) in ns of the row bucket that fine bucket
 * `fineIdx` of a connection's snapshot stands for (any fine bucket of the
 * row bucket gives the same answer). upper is 2^64 for the overflow bucket.
 */
export function rowBucketBounds(fineIdx: number): [number, number] {
  const ex = wasmExports();
  const i = fineIdx >> rowGeometry().shift;
  return [Number(BigInt.asUintN(64, ex.rowBucketLower(i))), Number(BigInt.asUintN(64, ex.rowBucketUpper(i)))];
}

/**
 * A fine snapshot (service, global, histogramOf) as a connection row holds it:
 * the counts of each run of ROW_FINE fine buckets on that row bucket's
 * representative (rowRepresentative), count/sum/min/max unchanged.
 */
export function rowHistogram(h: HistogramSnapshot): HistogramSnapshot {
  const { shift } = rowGeometry();
  const counts = new Map<number, number>();
  for (const [i, c] of h.buckets) {
    const r = rowRepresentative(i >> shift);
    counts.set(r, (counts.get(r) ?? 0) + c);
  }
  return { ...h, buckets: [...counts.entries()].sort((a, b) => a[0] - b[0]) };
}

/**
 * Snapshot of connection row `row`'s compact histogram (ROW_* in
 * assembly/layout.ts): per-connection buckets are 1/8 of a power of two
 * (12.5 % wide, 8 ns below 128 ns), each on its representative fine bucket
 * (rowRepresentative; rowBucketBounds gives its true bounds), so every
 * HistogramSnapshot function applies. sum/min/max are the row's exact u64s.
 * `count` is the sum of the bucket counts read (as readHistogramAt), except
 * that a bucket whose u32 count saturated (ROW_COUNT_MAX) gets back what the
 * exact u64 count says the buckets lack (split evenly when several did), so
 * that count and mean stay exact.
 */
export function readRowHistogramAt(state: State, row: number): HistogramSnapshot {
  const o = off();
  const g = rowGeometry();
  const v = u64view(state);
  const w = new Uint32Array(state.memory.buffer);
  const exact = Number(v[(row + o.CS_REQUESTS) >>> 3]); // first: buckets are added before the count
  const i0 = (row + o.CS_HIST) >>> 2;
  const buckets: [number, number][] = [];
  const saturated: number[] = [];
  let count = 0;
  for (let i = 0; i < g.nb; i++) {
    const c = w[i0 + i];
    if (c !== 0) {
      if (c === g.max) saturated.push(buckets.length);
      buckets.push([rowRepresentative(i), c]);
      count += c;
    }
  }
  const lack = exact - count;
  if (saturated.length > 0 && lack > 0) {
    const share = Math.floor(lack / saturated.length);
    saturated.forEach((at, k) => {
      buckets[at][1] += share + (k === 0 ? lack - share * saturated.length : 0);
    });
    count = exact;
  }
  return snapshot(count, v[(row + o.CS_SUM) >>> 3], v[(row + o.CS_MIN) >>> 3], v[(row + o.CS_MAX) >>> 3], buckets);
}

export interface GlobalHistograms {
  /** latency records with role client */
  client: HistogramSnapshot;
  /** latency records with role server */
  server: HistogramSnapshot;
  /** min_rtt_us * 1000 of latency records with min_rtt_us > 0: the kernel's windowed minimum RTT (the path) */
  network: HistogramSnapshot;
  /** srtt_us * 1000 of latency records with srtt_us > 0: the kernel's smoothed RTT (with delayed-ACK waits) */
  srtt: HistogramSnapshot;
}

export function readGlobalHistograms(state: State, opts: FlushOption = {}): GlobalHistograms {
  if (opts.flush !== false) flush(state);
  const v = u64view(state);
  const hb = state.layout.histBytes;
  const g = state.layout.globalHists;
  return {
    client: readHistogramAt(state, g + wasmConst('GH_CLIENT') * hb, v),
    server: readHistogramAt(state, g + wasmConst('GH_SERVER') * hb, v),
    network: readHistogramAt(state, g + wasmConst('GH_NETWORK') * hb, v),
    srtt: readHistogramAt(state, g + wasmConst('GH_SRTT') * hb, v),
  };
}

export interface MeasureHistogramPair {
  /** measure records with role client */
  client: HistogramSnapshot;
  /** measure records with role server */
  server: HistogramSnapshot;
}

/** Per metric (METRIC_SETUP .. METRIC_IDLE, see src/records.ts), the `value`s of its measure records. */
export type MeasureHistograms = { [metric: number]: MeasureHistogramPair };

/** Metrics with histograms: 1 .. METRIC__COUNT-1. */
export function measureMetrics(): number[] {
  const n = wasmConst('METRIC__COUNT');
  return Array.from({ length: n - 1 }, (_, i) => i + 1);
}

/**
 * Global histograms of measure records' `value` (ns; a count for
 * METRIC_REQUESTS), per metric and role. Records with a role other than
 * client/server are in none (counted in unknown_role).
 */
export function readMeasureHistograms(state: State, opts: FlushOption = {}): MeasureHistograms {
  if (opts.flush !== false) flush(state);
  const v = u64view(state);
  const hb = state.layout.histBytes;
  const g = state.layout.globalHists;
  const first = wasmConst('GH_MEASURE');
  const out: MeasureHistograms = {};
  for (const m of measureMetrics()) {
    const i = first + 2 * (m - 1);
    out[m] = {
      client: readHistogramAt(state, g + i * hb, v),
      server: readHistogramAt(state, g + (i + 1) * hb, v),
    };
  }
  return out;
}

/**
 * Measure records per [metric][result]: METRIC__COUNT rows (row 0 unused:
 * records of unknown metrics are only in the measure_unknown_metric counter),
 * RESULT__COUNT + 1 columns (the last one: results >= RESULT__COUNT). Records
 * of every role are counted.
 */
export function readMeasureResults(state: State, opts: FlushOption = {}): number[][] {
  if (opts.flush !== false) flush(state);
  const v = u64view(state);
  const rows = wasmConst('MR_METRICS');
  const cols = wasmConst('MR_RESULTS');
  const i0 = state.layout.measureResults >>> 3;
  const out: number[][] = [];
  for (let m = 0; m < rows; m++) {
    const row: number[] = [];
    for (let r = 0; r < cols; r++) row.push(Number(Atomics.load(v, i0 + m * cols + r)));
    out.push(row);
  }
  return out;
}

/** "a.b.c.d" for AF_INET, RFC 5952-ish text for AF_INET6, hex otherwise. */
/** "addr:port", or "[addr]:port" for IPv6 (family 10): how every report writes an endpoint. */
export function endpoint(addr: string, port: number, family: number): string {
  return family === 10 ? `[${addr}]:${port}` : `${addr}:${port}`;
}

export function formatAddr(bytes: Uint8Array, family: number): string {
  if (family === 2) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (family === 10) {
    const g: number[] = [];
    for (let i = 0; i < 16; i += 2) g.push((bytes[i] << 8) | bytes[i + 1]);
    // longest run of zero groups (>= 2) becomes "::"
    let best = -1,
      bestLen = 0;
    for (let i = 0; i < 8;) {
      if (g[i] !== 0) {
        i++;
        continue;
      }
      let j = i;
      while (j < 8 && g[j] === 0) j++;
      if (j - i > bestLen && j - i >= 2) {
        best = i;
        bestLen = j - i;
      }
      i = j;
    }
    const hex = (a: number[]) => a.map((x) => x.toString(16)).join(':');
    if (best < 0) return hex(g);
    return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
  }
  return Buffer.from(bytes).toString('hex');
}

export interface ConnSlot {
  slot: number;
  conn_id: bigint;
  role: number;
  family: number;
  flags: number;
  tgid: number;
  pid: number;
  netns: number;
  lport: number;
  rport: number;
  laddr: string;
  raddr: string;
  comm: string;
  cgroup_id: bigint;
  start_ns: number;
  end_ns: number;
  closed: boolean;
  /** an open record was seen */
  opened: boolean;
  /** latency records decoded for this connection */
  requests: number;
  /** `requests` of the close record (exchanges the kernel counted) */
  requests_kernel: number;
  bytes_sent: number;
  bytes_received: number;
  /** the close record's srtt_us, else the last one seen on a latency record */
  srtt_us: number;
  /** the last min_rtt_us seen on a latency record (0 or absent: none) */
  min_rtt_us?: number;
  /**
   * latencies of this connection (undefined when read with histograms: false), from the row's compact
   * histogram (readRowHistogramAt): exact count/sum/min/max, buckets of 1/8 of a power of two, so its
   * percentiles have 1/8 the resolution of the service and global ones
   */
  hist?: HistogramSnapshot;
}

export interface ServiceSlot {
  slot: number;
  key: bigint;
  /** 0: latency records (requests, latencies); else the METRIC_* of the measure records it holds */
  metric: number;
  role: number;
  family: number;
  /** lport for servers, rport for clients */
  port: number;
  /** remote address (clients only) */
  raddr: string;
  /** network namespace inode of the sockets (part of the key of servers, and of clients of a loopback address) */
  netns: number;
  /** tgid of the first record seen */
  tgid: number;
  /** records in the slot (latency records, or measure records of `metric`) */
  requests: number;
  /** latencies, or measure values of `metric` */
  hist?: HistogramSnapshot;
}

/** The histogram of a slot read with histograms (the default); throws for one read with `histograms: false`. */
export function slotHistogram(s: { slot: number; hist?: HistogramSnapshot }): HistogramSnapshot {
  if (!s.hist) throw new Error(`meshprobe: slot ${s.slot} was read without its histogram`);
  return s.hist;
}

export interface ReadOptions extends FlushOption {
  /** include each slot's histogram (default true) */
  histograms?: boolean;
}

export interface SvcReadOptions extends ReadOptions {
  /** readSvcTable: only the slots of this metric (0 = latency records); all by default */
  metric?: number;
}

const K = (n: string) => wasmConst(n);
let slotOffsets: Record<string, number> | undefined;
function off(): Record<string, number> {
  if (!slotOffsets) {
    slotOffsets = {};
    for (const n of [
      'CS_KEY',
      'CS_TGID',
      'CS_PID',
      'CS_NETNS',
      'CS_FLAGS',
      'CS_ROLE',
      'CS_FAMILY',
      'CS_LPORT',
      'CS_RPORT',
      'CS_FILLED',
      'CS_CLOSED',
      'CS_SRTT_US',
      'CS_MIN_RTT_US',
      'CS_REQUESTS_KERNEL',
      'CS_CGROUP_ID',
      'CS_START_NS',
      'CS_END_NS',
      'CS_REQUESTS',
      'CS_SUM',
      'CS_MIN',
      'CS_MAX',
      'CS_BYTES_SENT',
      'CS_BYTES_RECEIVED',
      'CS_LADDR',
      'CS_RADDR',
      'CS_COMM',
      'CS_HIST',
      'CF_OPEN',
      'SS_KEY',
      'SS_TGID',
      'SS_ROLE',
      'SS_FAMILY',
      'SS_PORT',
      'SS_METRIC',
      'SS_RADDR',
      'SS_NETNS',
      'SS_REQUESTS',
      'SS_HIST',
    ])
      slotOffsets[n] = K(n);
  }
  return slotOffsets;
}

function cstr(b: Uint8Array): string {
  const z = b.indexOf(0);
  return new TextDecoder().decode(z < 0 ? b : b.subarray(0, z));
}

/** Connection slot i, or null if empty. */
export function readConnSlot(state: State, i: number, opts: ReadOptions = {}): ConnSlot | null {
  if (i < 0 || i >= state.layout.connCap) throw new RangeError(`conn slot ${i} out of range`);
  const o = off();
  const buf = state.memory.buffer;
  const s = state.layout.connTable + i * state.layout.connSlotBytes;
  const dv = new DataView(buf, s, state.layout.connSlotBytes);
  const key = dv.getBigUint64(o.CS_KEY, true);
  if (key === 0n) return null;
  const family = dv.getUint8(o.CS_FAMILY);
  const bytes = (at: number) => new Uint8Array(buf, s + at, 16).slice();
  return {
    slot: i,
    conn_id: key,
    role: dv.getUint8(o.CS_ROLE),
    family,
    flags: dv.getUint32(o.CS_FLAGS, true),
    tgid: dv.getUint32(o.CS_TGID, true),
    pid: dv.getUint32(o.CS_PID, true),
    netns: dv.getUint32(o.CS_NETNS, true),
    lport: dv.getUint16(o.CS_LPORT, true),
    rport: dv.getUint16(o.CS_RPORT, true),
    laddr: formatAddr(bytes(o.CS_LADDR), family),
    raddr: formatAddr(bytes(o.CS_RADDR), family),
    comm: cstr(bytes(o.CS_COMM)),
    cgroup_id: dv.getBigUint64(o.CS_CGROUP_ID, true),
    start_ns: Number(dv.getBigUint64(o.CS_START_NS, true)),
    end_ns: Number(dv.getBigUint64(o.CS_END_NS, true)),
    closed: dv.getUint32(o.CS_CLOSED, true) !== 0,
    opened: (dv.getUint32(o.CS_FILLED, true) & o.CF_OPEN) !== 0,
    requests: Number(dv.getBigUint64(o.CS_REQUESTS, true)),
    requests_kernel: dv.getUint32(o.CS_REQUESTS_KERNEL, true),
    bytes_sent: Number(dv.getBigUint64(o.CS_BYTES_SENT, true)),
    bytes_received: Number(dv.getBigUint64(o.CS_BYTES_RECEIVED, true)),
    srtt_us: dv.getUint32(o.CS_SRTT_US, true),
    min_rtt_us: dv.getUint32(o.CS_MIN_RTT_US, true),
    hist: opts.histograms === false ? undefined : readRowHistogramAt(state, s),
  };
}

/** All rows in use (the connections of the table; not the aged ones). */
export function readConnTable(state: State, opts: ReadOptions = {}): ConnSlot[] {
  const out: ConnSlot[] = [];
  for (let i = 0; i < state.layout.connCap; i++) {
    const c = readConnSlot(state, i, opts);
    if (c) out.push(c);
  }
  return out;
}

/** The table's rows and the folded rows of the connections aged out of it (for pairing ends and naming services). */
export function allConnections(
  state: State,
  rows: ConnSlot[] = readConnTable(state, { histograms: false }),
): ConnSlot[] {
  return state.aged.rows.length ? [...rows, ...state.aged.rows] : rows;
}

/** Service slot i, or null if empty. */
export function readSvcSlot(state: State, i: number, opts: ReadOptions = {}): ServiceSlot | null {
  if (i < 0 || i >= state.layout.svcCap) throw new RangeError(`service slot ${i} out of range`);
  if (opts.flush !== false) flush(state);
  const o = off();
  const buf = state.memory.buffer;
  const s = state.layout.svcTable + i * state.layout.svcSlotBytes;
  const dv = new DataView(buf, s, state.layout.svcSlotBytes);
  const key = dv.getBigUint64(o.SS_KEY, true);
  if (key === 0n || key === REMOVED_KEY) return null;
  const family = dv.getUint8(o.SS_FAMILY);
  return {
    slot: i,
    key,
    metric: dv.getUint8(o.SS_METRIC),
    role: dv.getUint8(o.SS_ROLE),
    family,
    port: dv.getUint16(o.SS_PORT, true),
    raddr: formatAddr(new Uint8Array(buf, s + o.SS_RADDR, 16).slice(), family),
    netns: dv.getUint32(o.SS_NETNS, true),
    tgid: dv.getUint32(o.SS_TGID, true),
    requests: Number(dv.getBigUint64(o.SS_REQUESTS, true)),
    hist: opts.histograms === false ? undefined : readHistogramAt(state, s + o.SS_HIST),
  };
}

/** The key of a removed slot (CI_REMOVED in assembly/layout.ts). */
const REMOVED_KEY = 0xffffffffffffffffn;

/**
 * All services: the table's slots, with the figures of the idle ones whose
 * slots were freed (src/pipeline/aging.ts) added back, so that every
 * service's figures only ever grow. Latency ones (metric 0) and measure ones
 * (metric > 0) unless opts.metric picks one.
 */
export function readSvcTable(state: State, opts: SvcReadOptions = {}): ServiceSlot[] {
  if (opts.flush !== false) flush(state);
  const out: ServiceSlot[] = [];
  const one = { ...opts, flush: false };
  const aged = state.aged.services;
  const want = (c: ServiceSlot) => opts.metric === undefined || c.metric === opts.metric;
  const seen = new Set<bigint>();
  for (let i = 0; i < state.layout.svcCap; i++) {
    const c = readSvcSlot(state, i, one);
    if (!c || !want(c)) continue;
    const old = aged.get(c.key);
    if (old) {
      seen.add(c.key);
      c.requests += old.requests;
      if (c.hist && old.hist) c.hist = mergeHistograms(c.hist, old.hist);
    }
    out.push(c);
  }
  for (const [k, a] of aged)
    if (!seen.has(k) && want(a)) out.push(opts.histograms === false ? { ...a, hist: undefined } : a);
  return out;
}
