// meshprobe decoder: perf-ring bytes -> counters, histograms, conn/service
// tables, all in ONE shared WebAssembly.Memory used by several workers.
// No allocation anywhere (stub runtime): raw load/store/atomic builtins only.

import {
  REC_VERSION, REC_LATENCY, REC_CONN_OPEN, REC_CONN_CLOSE, REC_MEASURE, ROLE_CLIENT, ROLE_SERVER, AF_INET,
  HDR_SIZE, HDR_ROLE, HDR_FAMILY, HDR_TGID, HDR_CONN_ID, HDR_VERSION, HDR_KIND,
  LAT_SIZE, LAT_LATENCY_NS, LAT_SRTT_US, LAT_MIN_RTT_US, LAT_NETNS, LAT_LPORT, LAT_RPORT, LAT_RADDR,
  OPEN_SIZE, OPEN_START_NS, OPEN_CGROUP_ID, OPEN_PID, OPEN_NETNS, OPEN_LPORT, OPEN_RPORT,
  OPEN_FLAGS, OPEN_LADDR, OPEN_RADDR, OPEN_COMM,
  CLOSE_SIZE, CLOSE_END_NS, CLOSE_DURATION_NS, CLOSE_REQUESTS, CLOSE_SRTT_US,
  CLOSE_BYTES_SENT, CLOSE_BYTES_RECEIVED, CLOSE_FLAGS,
  MEAS_SIZE, MEAS_VALUE, MEAS_NETNS, MEAS_LPORT, MEAS_RPORT, MEAS_METRIC, MEAS_RESULT, MEAS_RADDR,
  METRIC__COUNT, RESULT__COUNT,
  PERF_RECORD_LOST, PERF_RECORD_SAMPLE,
} from "./records";
import {
  HIST_NB, HIST_OVERFLOW, HIST_COUNT, HIST_SUM, HIST_MIN, HIST_MAX, HIST_BYTES,
  HEADER_BYTES, MAGIC, LAYOUT_VERSION, H_MAGIC, H_VERSION, H_CONN_CAP, H_SVC_CAP, H_WORKERS,
  H_STAGING_BYTES, H_NB, H_HIST_BYTES, H_CONN_SLOT_BYTES, H_SVC_SLOT_BYTES, H_COUNTERS,
  H_GLOBAL_HISTS, H_CONN_TABLE, H_SVC_TABLE, H_STAGING, H_END, H_COUNTERS_OFF, H_COUNTERS_N,
  H_SCRATCH, H_SCRATCH_BYTES, H_MEASURE_RESULTS,
  FLUSH_RECORDS, SC_LOCK, SC_PENDING, SC_GDIRTYN, SC_BDIRTYN, SC_SDIRTYN, SC_COUNTERS, SC_GSTAT,
  SC_GPEND, SC_GDIRTY, SC_SVC, SC_SVC_ENTRY, SC_BCACHE, SC_BDIRTY,
  C_RECORDS_TOTAL, C_LATENCY_RECORDS, C_OPEN_RECORDS, C_CLOSE_RECORDS, C_LOST_RECORDS,
  C_LOST_EVENTS, C_UNKNOWN_RECORDS, C_CONN_TABLE_FULL, C_SVC_TABLE_FULL, C_BYTES_DECODED,
  C_UNKNOWN_ROLE, C_PERF_OTHER, C_DECODE_CALLS, C_MEASURE_RECORDS, C_MEASURE_UNKNOWN_METRIC, C_COUNT,
  GH_CLIENT, GH_SERVER, GH_NETWORK, GH_SRTT, GH_COUNT, GH_MEASURE, GH_TOTAL, MR_RESULTS, MR_BYTES,
  CS_KEY, CS_TGID, CS_PID, CS_NETNS, CS_FLAGS, CS_ROLE, CS_FAMILY, CS_LPORT, CS_RPORT,
  CS_FILLED, CS_CLOSED, CS_SRTT_US, CS_MIN_RTT_US, CS_REQUESTS_KERNEL, CS_CGROUP_ID, CS_START_NS, CS_END_NS,
  CS_BYTES_SENT, CS_BYTES_RECEIVED, CS_LADDR, CS_RADDR, CS_COMM, CS_HIST,
  CS_REQUESTS, CS_SUM, CS_MIN, CS_MAX, ROW_SHIFT, ROW_FINE, ROW_COUNT_MAX,
  CONN_SLOT_BYTES, CF_PEER, CF_OPEN, CF_CLOSE, CS_SVC,
  SS_KEY, SS_NETNS, SS_TGID, SS_ROLE, SS_FAMILY, SS_PORT, SS_METRIC, SS_RADDR, SS_READY, SS_HIST,
  SVC_SLOT_BYTES, MAX_PROBE, C_CONN_REFUSED,
  H_CONN_INDEX, H_CONN_IDX_CAP, H_CONN_FREE, H_FREE_HEAD, H_FREE_LEN,
  CI_KEY, CI_ROW, CI_FLAGS, CI_ENTRY_BYTES, CI_REMOVED, CI_NO_ROW, CIF_CLOSED, CIF_SWEPT,
} from "./layout";

// Every constant is exported as an immutable global (read by src/wasm.ts and
// by test/records-layout.test.ts).
export * from "./records";
export * from "./layout";

// ---------------------------------------------------------------------------
// Histogram bucket math: the ONLY implementation (TS calls these exports).

const LIMIT: u64 = <u64>1 << 36;

// @ts-ignore: decorator
@inline function bucketOf(v: u64): usize {
  if (v < 128) return <usize>v;
  if (v >= LIMIT) return <usize>HIST_OVERFLOW;
  const e = <u64>63 - clz<u64>(v);
  return <usize>(((e - 5) << 6) + ((v >> (e - 6)) & 63));
}

export function bucketIndex(v: u64): u32 {
  return <u32>bucketOf(v);
}

export function bucketLower(idx: u32): u64 {
  if (idx < 128) return <u64>idx;
  if (idx >= HIST_OVERFLOW) return LIMIT;
  return (<u64>64 + <u64>(idx & 63)) << <u64>((idx >> 6) - 1);
}

/** Exclusive upper bound; u64 max for the overflow bucket. */
export function bucketUpper(idx: u32): u64 {
  if (idx < 128) return <u64>idx + 1;
  if (idx >= HIST_OVERFLOW) return u64.MAX_VALUE;
  return bucketLower(idx) + (<u64>1 << <u64>((idx >> 6) - 1));
}

// Connection rows keep a compact histogram: row bucket i = fine buckets
// i << ROW_SHIFT .. (i << ROW_SHIFT) + ROW_FINE - 1 (the last row bucket is
// the fine overflow bucket alone).

export function rowBucketIndex(v: u64): u32 {
  return <u32>(bucketOf(v) >> ROW_SHIFT);
}

export function rowBucketLower(i: u32): u64 {
  return bucketLower(i << ROW_SHIFT);
}

/** Exclusive upper bound; u64 max for the overflow row bucket. */
export function rowBucketUpper(i: u32): u64 {
  const last = (i << ROW_SHIFT) + ROW_FINE - 1;
  return bucketUpper(last < HIST_OVERFLOW ? last : HIST_OVERFLOW);
}

// ---------------------------------------------------------------------------
// Layout

export function regionBase(): usize {
  return (__heap_base + 63) & ~<usize>63;
}

function stagingStride(stagingBytes: u32): u64 {
  return (<u64>stagingBytes + 63) & ~<u64>63;
}

function scratchStride(svcCap: u32): u64 {
  return (<u64>SC_SVC + <u64>svcCap * (SC_SVC_ENTRY + 4) + 63) & ~<u64>63;
}

function isPow2(x: u32): bool {
  return x != 0 && (x & (x - 1)) == 0;
}

/**
 * Index entries for connCap rows: the power of two >= 4 x rows. At most half
 * the entries hold rows, so probes stay short; the rest leaves room for the
 * entries of refused connections (no row) until the next sweep removes them.
 */
function indexCap(connCap: u32): u64 {
  let n: u64 = 16;
  while (n < <u64>connCap * 4) n <<= 1;
  return n;
}

function freeListBytes(connCap: u32): u64 {
  return (<u64>connCap * 4 + 63) & ~<u64>63;
}

/** End address of the whole region, 0 if the arguments are invalid or too large. */
export function layoutBytes(connCap: u32, svcCap: u32, workers: u32, stagingBytes: u32): usize {
  if (connCap == 0 || connCap > 0x1000000 || !isPow2(svcCap)) return 0;
  let end: u64 = <u64>regionBase() + HEADER_BYTES + <u64>GH_TOTAL * HIST_BYTES + MR_BYTES;
  end += <u64>connCap * CONN_SLOT_BYTES + 2 * indexCap(connCap) * CI_ENTRY_BYTES + freeListBytes(connCap);
  end += <u64>svcCap * SVC_SLOT_BYTES;
  end += <u64>workers * stagingStride(stagingBytes);
  end += <u64>(workers + 1) * scratchStride(svcCap);
  if (end > <u64>0xffff0000) return 0;
  return <usize>end;
}

/**
 * Writes the header and initializes everything. Grows memory if needed.
 * `zeroed`: the region is known to be zero (a new memory): it is then not
 * written over, so that its pages become resident only as they are used
 * (connection rows are initialized when a connection takes one). Returns the
 * end address, 0 on error.
 */
export function init(connCap: u32, svcCap: u32, workers: u32, stagingBytes: u32, zeroed: bool): usize {
  const end = layoutBytes(connCap, svcCap, workers, stagingBytes);
  if (end == 0) return 0;
  const have = <usize>memory.size() << 16;
  if (have < end) {
    const need = <i32>((end - have + 0xffff) >> 16);
    if (memory.grow(need) < 0) return 0;
  }
  const b = regionBase();
  const gh = b + HEADER_BYTES;
  const mr = gh + <usize>GH_TOTAL * HIST_BYTES;
  const conn = mr + <usize>MR_BYTES;
  const index = conn + <usize>connCap * CONN_SLOT_BYTES;
  const idxCap = <u32>indexCap(connCap);
  const free = index + 2 * <usize>idxCap * CI_ENTRY_BYTES; // the index, then as much room to rebuild it
  const svc = free + <usize>freeListBytes(connCap);
  const staging = svc + <usize>svcCap * SVC_SLOT_BYTES;
  const scratch = staging + <usize>workers * <usize>stagingStride(stagingBytes);
  const scStride = <usize>scratchStride(svcCap);
  if (!zeroed) memory.fill(b, 0, end - b);
  store<u32>(b + H_VERSION, LAYOUT_VERSION);
  store<u32>(b + H_CONN_CAP, connCap);
  store<u32>(b + H_SVC_CAP, svcCap);
  store<u32>(b + H_WORKERS, workers);
  store<u32>(b + H_STAGING_BYTES, <u32>stagingStride(stagingBytes));
  store<u32>(b + H_NB, HIST_NB);
  store<u32>(b + H_HIST_BYTES, HIST_BYTES);
  store<u32>(b + H_CONN_SLOT_BYTES, CONN_SLOT_BYTES);
  store<u32>(b + H_SVC_SLOT_BYTES, SVC_SLOT_BYTES);
  store<u32>(b + H_COUNTERS, <u32>(b + H_COUNTERS_OFF));
  store<u32>(b + H_GLOBAL_HISTS, <u32>gh);
  store<u32>(b + H_CONN_TABLE, <u32>conn);
  store<u32>(b + H_SVC_TABLE, <u32>svc);
  store<u32>(b + H_STAGING, <u32>staging);
  store<u32>(b + H_END, <u32>end);
  store<u32>(b + H_SCRATCH, <u32>scratch);
  store<u32>(b + H_SCRATCH_BYTES, <u32>scStride);
  store<u32>(b + H_MEASURE_RESULTS, <u32>mr);
  store<u32>(b + H_CONN_INDEX, <u32>index);
  store<u32>(b + H_CONN_IDX_CAP, idxCap);
  store<u32>(b + H_CONN_FREE, <u32>free);
  store<u32>(b + H_FREE_HEAD, 0);
  store<u32>(b + H_FREE_LEN, connCap);
  for (let i: u32 = 0; i < connCap; i++) store<u32>(free + (<usize>i << 2), i);
  for (let w: u32 = 0; w <= workers; w++) {
    const sc = scratch + <usize>w * scStride;
    for (let i: u32 = 0; i < GH_COUNT; i++) store<u64>(sc + SC_GSTAT + (<usize>i << 5) + 16, u64.MAX_VALUE);
    for (let i: u32 = 0; i < svcCap; i++) store<u64>(sc + SC_SVC + <usize>i * SC_SVC_ENTRY + 16, u64.MAX_VALUE);
  }
  for (let i: u32 = 0; i < GH_TOTAL; i++) histInit(gh + <usize>i * HIST_BYTES);
  for (let i: u32 = 0; i < svcCap; i++) histInit(svc + <usize>i * SVC_SLOT_BYTES + SS_HIST);
  atomic.store<u32>(b + H_MAGIC, MAGIC); // last: marks the region as ready
  return end;
}

function histInit(h: usize): void {
  store<u64>(h + HIST_MIN, u64.MAX_VALUE);
}

// Readers for the layout (workers use these; they read the header).
export function isReady(): bool { return atomic.load<u32>(regionBase() + H_MAGIC) == MAGIC; }
export function headerAddr(): usize { return regionBase(); }
export function counterAddr(i: u32): usize { return <usize>load<u32>(regionBase() + H_COUNTERS) + (<usize>i << 3); }
export function counterCount(): u32 { return C_COUNT; }
export function globalHistAddr(i: u32): usize { return <usize>load<u32>(regionBase() + H_GLOBAL_HISTS) + <usize>i * HIST_BYTES; }
export function connSlotAddr(i: u32): usize { return <usize>load<u32>(regionBase() + H_CONN_TABLE) + <usize>i * CONN_SLOT_BYTES; }
export function measureResultsAddr(): usize { return <usize>load<u32>(regionBase() + H_MEASURE_RESULTS); }
export function svcSlotAddr(i: u32): usize { return <usize>load<u32>(regionBase() + H_SVC_TABLE) + <usize>i * SVC_SLOT_BYTES; }
export function stagingPtr(i: u32): usize {
  const b = regionBase();
  return <usize>load<u32>(b + H_STAGING) + <usize>i * <usize>load<u32>(b + H_STAGING_BYTES);
}
export function stagingSize(): u32 { return load<u32>(regionBase() + H_STAGING_BYTES); }
export function connCapacity(): u32 { return load<u32>(regionBase() + H_CONN_CAP); }
export function svcCapacity(): u32 { return load<u32>(regionBase() + H_SVC_CAP); }
export function workerCount(): u32 { return load<u32>(regionBase() + H_WORKERS); }
export function regionEnd(): usize { return <usize>load<u32>(regionBase() + H_END); }
export function scratchAddr(i: u32): usize {
  const b = regionBase();
  return <usize>load<u32>(b + H_SCRATCH) + <usize>i * <usize>load<u32>(b + H_SCRATCH_BYTES);
}

// ---------------------------------------------------------------------------
// Per-instance (= per-worker) state: the layout, cached by every decode() /
// flushPending() call, and the figures of the current decode() call, added
// to the scratch area (worker-private, see assembly/layout.ts) at its end.

let hdrBase: usize = 0;
let connBase: usize = 0;
let idxBase: usize = 0;
let idxMask: u32 = 0;
let freeBase: usize = 0;
let lastEntry: usize = 0; // connFind's index entry (also when it returns 0 for a refused connection)
let indexFull: bool = false; // connFind found no entry to claim (onOpen counts the connection refused)
let svcBase: usize = 0;
let svcCap: u32 = 0;
let svcMask: u32 = 0;
let svcProbe: u32 = 0;
let ghBase: usize = 0;
let mrBase: usize = 0;
let countersBase: usize = 0;
let scBase: usize = 0;       // the scratch area in use
let scSvcDirty: usize = 0;   // its dirty service list
let gDirtyN: u32 = 0;
let sDirtyN: u32 = 0;
let bDirtyN: u32 = 0;

let nRecords: u64 = 0;
let nLatency: u64 = 0;
let nOpen: u64 = 0;
let nClose: u64 = 0;
let nLostRecords: u64 = 0;
let nLostEvents: u64 = 0;
let nUnknown: u64 = 0;
let nConnFull: u64 = 0;
let nConnRefused: u64 = 0;
let nSvcFull: u64 = 0;
let nUnknownRole: u64 = 0;
let nPerfOther: u64 = 0;
let nMeasure: u64 = 0;
let nUnknownMetric: u64 = 0;

// count/sum/min/max of the 3 global histograms in this call
let cCount: u64 = 0; let cSum: u64 = 0; let cMin: u64 = u64.MAX_VALUE; let cMax: u64 = 0;
let sCount: u64 = 0; let sSum: u64 = 0; let sMin: u64 = u64.MAX_VALUE; let sMax: u64 = 0;
let nwCount: u64 = 0; let nwSum: u64 = 0; let nwMin: u64 = u64.MAX_VALUE; let nwMax: u64 = 0;
let srCount: u64 = 0; let srSum: u64 = 0; let srMin: u64 = u64.MAX_VALUE; let srMax: u64 = 0;

function cacheLayout(b: usize): void {
  hdrBase = b;
  svcCap = load<u32>(b + H_SVC_CAP);
  connBase = <usize>load<u32>(b + H_CONN_TABLE);
  idxBase = <usize>load<u32>(b + H_CONN_INDEX);
  idxMask = load<u32>(b + H_CONN_IDX_CAP) - 1;
  freeBase = <usize>load<u32>(b + H_CONN_FREE);
  svcBase = <usize>load<u32>(b + H_SVC_TABLE);
  svcMask = svcCap - 1;
  svcProbe = svcCap < MAX_PROBE ? svcCap : MAX_PROBE;
  ghBase = <usize>load<u32>(b + H_GLOBAL_HISTS);
  mrBase = <usize>load<u32>(b + H_MEASURE_RESULTS);
  countersBase = <usize>load<u32>(b + H_COUNTERS);
}

function useScratch(sc: usize): void {
  scBase = sc;
  scSvcDirty = sc + SC_SVC + <usize>svcCap * SC_SVC_ENTRY;
}

/** Takes the lock of scratch area sc; gives up after maxSpins failed attempts (0 = never). */
function lockScratch(sc: usize, maxSpins: u32): bool {
  let n: u32 = 0;
  while (atomic.cmpxchg<u32>(sc + SC_LOCK, 0, 1) != 0) {
    n++;
    if (maxSpins != 0 && n >= maxSpins) return false;
  }
  return true;
}

function unlockScratch(sc: usize): void {
  atomic.store<u32>(sc + SC_LOCK, 0);
}

// @ts-ignore: decorator
@inline function atomicMin(a: usize, v: u64): void {
  let m = atomic.load<u64>(a);
  while (v < m) {
    const o = atomic.cmpxchg<u64>(a, m, v);
    if (o == m) break;
    m = o;
  }
}

// @ts-ignore: decorator
@inline function atomicMax(a: usize, v: u64): void {
  let m = atomic.load<u64>(a);
  while (v > m) {
    const o = atomic.cmpxchg<u64>(a, m, v);
    if (o == m) break;
    m = o;
  }
}

/** +1 on a row bucket's u32 count, saturating at ROW_COUNT_MAX (a compare-exchange: never wraps). */
// @ts-ignore: decorator
@inline function rowBucketAdd(p: usize): void {
  let o = atomic.load<u32>(p);
  while (o != ROW_COUNT_MAX) {
    const w = atomic.cmpxchg<u32>(p, o, o + 1);
    if (w == o) return;
    o = w;
  }
}

// @ts-ignore: decorator
@inline function histAdd(h: usize, v: u64): void {
  atomic.add<u64>(h + (bucketOf(v) << 3), 1);
  atomic.add<u64>(h + HIST_COUNT, 1);
  atomic.add<u64>(h + HIST_SUM, v);
  atomicMin(h + HIST_MIN, v);
  atomicMax(h + HIST_MAX, v);
}

function histFlush(h: usize, count: u64, sum: u64, mn: u64, mx: u64): void {
  if (count == 0) return;
  atomic.add<u64>(h + HIST_COUNT, count);
  atomic.add<u64>(h + HIST_SUM, sum);
  atomicMin(h + HIST_MIN, mn);
  atomicMax(h + HIST_MAX, mx);
}

// @ts-ignore: decorator
@inline function mix64(x: u64): u64 {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccd;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53;
  x ^= x >> 33;
  return x;
}

/** A free row's index, or -1 when none is left (workers: pop only; the main thread pushes under all locks). */
function takeRow(): i64 {
  const head = hdrBase + H_FREE_HEAD;
  const len = load<u32>(hdrBase + H_FREE_LEN);
  if (atomic.load<u32>(head) >= len) return -1;
  const h = atomic.add<u32>(head, 1); // past len when several raced for the last rows: sweepBegin() trims it
  if (h >= len) return -1;
  return <i64>load<u32>(freeBase + (<usize>h << 2));
}

/** The row of index entry e, 0 for a refused connection; waits the few instructions between a claim and its row. */
function rowOf(e: usize): usize {
  let r = atomic.load<u32>(e + CI_ROW);
  while (r == 0) r = atomic.load<u32>(e + CI_ROW);
  if (r == CI_NO_ROW) return 0;
  return connBase + <usize>(r - 1) * CONN_SLOT_BYTES;
}

/** Claims entry e (empty or removed, `was`) for id and gives it a row; false if another thread took e first. */
function claim(e: usize, was: u64, id: u64): bool {
  if (atomic.cmpxchg<u64>(e + CI_KEY, was, id) != was) return false;
  const row = takeRow();
  if (row < 0) {
    nConnRefused++;
    atomic.store<u32>(e + CI_ROW, CI_NO_ROW);
  } else {
    const c = connBase + <usize>row * CONN_SLOT_BYTES; // zero (init(), releaseRow())
    store<u64>(c + CS_MIN, u64.MAX_VALUE);
    atomic.store<u64>(c + CS_KEY, id);
    atomic.store<u32>(e + CI_ROW, <u32>row + 1); // publishes the row (its key written first)
  }
  return true;
}

/**
 * Row address for conn_id (taking a row if it has none), 0 if no row is free
 * (the connection is then refused for as long as it lives: counted once in
 * C_CONN_REFUSED). Workers only turn empty or removed entries into keys, so
 * a probe that saw an entry taken never needs to look at it again; a claim
 * that loses its race starts over.
 */
function connFind(id: u64): usize {
  lastEntry = 0;
  indexFull = false;
  if (id == 0) return 0;
  for (let attempt: u32 = 0; attempt < 64; attempt++) {
    let i = <u32>mix64(id) & idxMask;
    let freeAt: usize = 0;
    let freeWas: u64 = 0;
    for (let n: u32 = 0; n <= idxMask; n++) {
      const e = idxBase + <usize>i * CI_ENTRY_BYTES;
      const k = atomic.load<u64>(e + CI_KEY);
      if (k == id) {
        lastEntry = e;
        return rowOf(e);
      }
      if (k == 0) {
        if (freeAt == 0) { freeAt = e; freeWas = 0; }
        break;
      }
      if (k == CI_REMOVED && freeAt == 0) { freeAt = e; freeWas = CI_REMOVED; }
      i = (i + 1) & idxMask;
    }
    if (freeAt == 0) { indexFull = true; return 0; } // every entry taken: refused connections piled up since the last sweep
    if (claim(freeAt, freeWas, id) || atomic.load<u64>(freeAt + CI_KEY) == id) {
      lastEntry = freeAt;
      return rowOf(freeAt);
    }
  }
  return 0;
}

const TAG_SERVER: u64 = 0x5345525645520000;
const TAG_CLIENT: u64 = 0x434c49454e540000;

function copy16(dst: usize, src: usize): void {
  store<u64>(dst, load<u64>(src, 0, 4));
  store<u64>(dst, load<u64>(src, 8, 4), 8);
}

function svcInsertMeta(s: usize, r: usize, role: u32, family: u32, metric: u32, port: u32, raddrOff: usize, netns: u32): void {
  store<u32>(s + SS_TGID, load<u32>(r + HDR_TGID, 0, 4));
  store<u32>(s + SS_NETNS, netns);
  store<u8>(s + SS_ROLE, <u8>role);
  store<u8>(s + SS_FAMILY, <u8>family);
  store<u8>(s + SS_METRIC, <u8>metric);
  store<u16>(s + SS_PORT, <u16>port);
  if (role != ROLE_SERVER) {
    if (family == AF_INET) {
      store<u32>(s + SS_RADDR, load<u32>(r + raddrOff, 0, 4));
    } else {
      copy16(s + SS_RADDR, r + raddrOff);
    }
  }
  atomic.store<u32>(s + SS_READY, 1);
}

/** A loopback address (127/8, ::1, ::ffff:127/104) at p. */
function isLoopback(p: usize, family: u32): bool {
  if (family == AF_INET) return load<u8>(p) == 127;
  if (load<u64>(p, 0, 1) != 0) return false;
  const lo = load<u64>(p, 8, 1); // bytes 8..15, little-endian
  if (lo == 0x0100000000000000) return true; // ::1
  return (lo & 0xffffffff) == 0xffff0000 && <u8>(lo >> 32) == 127; // ::ffff:127.x.x.x
}

/**
 * Service slot of (metric, role, port, netns for servers, family+raddr for
 * clients, and their netns when that address is loopback) for record r
 * (inserting it if absent), 0 if none. port: lport for servers, rport for
 * clients; raddrOff: offset of the record's raddr; netns: the socket's
 * network namespace inode (pods on one node listen on the same ports).
 * Another metric flips bits 48..55 of the input of the first mix64.
 */
function svcFind(r: usize, role: u32, family: u32, metric: u32, port: u32, raddrOff: usize, netns: u32): usize {
  let key: u64;
  const m = <u64>metric << 48;
  if (role == ROLE_SERVER) {
    key = mix64(mix64((TAG_SERVER | (<u64>role << 16) | <u64>port) ^ m) ^ <u64>netns);
  } else {
    let a = load<u64>(r + raddrOff, 0, 4);
    let b: u64 = 0;
    if (family == AF_INET) a &= 0xffffffff;
    else b = load<u64>(r + raddrOff, 8, 4);
    key = mix64(mix64(a ^ TAG_CLIENT) ^ b ^ (((<u64>role << 40) | (<u64>family << 24) | <u64>port) ^ m));
    if (isLoopback(r + raddrOff, family)) key = mix64(key ^ <u64>netns);
  }
  if (key == 0 || key == CI_REMOVED) key = 1;
  // A removed slot (releaseSvc, under every lock) is skipped and may be taken again: the same
  // rules as the connection index (workers only turn empty or removed slots into keys).
  for (let attempt: u32 = 0; attempt < 64; attempt++) {
    let i = <u32>(key >> 32) & svcMask;
    let freeAt: usize = 0;
    let freeWas: u64 = 0;
    for (let n: u32 = 0; n < svcProbe; n++) {
      const s = svcBase + <usize>i * SVC_SLOT_BYTES;
      const k = atomic.load<u64>(s + SS_KEY);
      if (k == key) return s;
      if (k == 0) {
        if (freeAt == 0) { freeAt = s; freeWas = 0; }
        break;
      }
      if (k == CI_REMOVED && freeAt == 0) { freeAt = s; freeWas = CI_REMOVED; }
      i = (i + 1) & svcMask;
    }
    if (freeAt == 0) return 0;
    const o = atomic.cmpxchg<u64>(freeAt + SS_KEY, freeWas, key);
    if (o == freeWas) { svcInsertMeta(freeAt, r, role, family, metric, port, raddrOff, netns); return freeAt; }
    if (o == key) return freeAt;
  }
  return 0;
}

// @ts-ignore: decorator
@inline function pendGlobal(key: usize): void {
  const p = scBase + SC_GPEND + (key << 2);
  const c = load<u32>(p);
  if (c == 0) {
    store<u16>(scBase + SC_GDIRTY + (<usize>gDirtyN << 1), <u16>key);
    gDirtyN++;
  }
  store<u32>(p, c + 1);
}

// @ts-ignore: decorator
@inline function bucketCacheAddr(key: u32): usize {
  const k = key - 1;
  const si = <usize>(k / HIST_NB);
  return svcBase + si * SVC_SLOT_BYTES + SS_HIST + (<usize>(k - <u32>si * HIST_NB) << 3);
}

/** +1 on service bucket (svcSlot*NB + bucket), through the worker's bucket cache. */
// @ts-ignore: decorator
@inline function pendSvcBucket(key0: u32): void {
  const key = key0 + 1;
  const i = <usize>((key * 0x9e3779b1) >> 18); // 14 bits: SC_BCACHE_N = 16384
  const p = scBase + SC_BCACHE + (i << 3);
  const e = load<u64>(p);
  if (<u32>e == key) {
    store<u64>(p, e + (<u64>1 << 32));
    return;
  }
  if (e == 0) {
    store<u16>(scBase + SC_BDIRTY + (<usize>bDirtyN << 1), <u16>i);
    bDirtyN++;
  } else {
    atomic.add<u64>(bucketCacheAddr(<u32>e), e >> 32);
  }
  store<u64>(p, (<u64>1 << 32) | <u64>key);
}

function onLatency(r: usize): void {
  nLatency++;
  const role = <u32>load<u8>(r + HDR_ROLE);
  if (role != ROLE_CLIENT && role != ROLE_SERVER) { nUnknownRole++; return; }
  const family = <u32>load<u8>(r + HDR_FAMILY);
  const lat = load<u64>(r + LAT_LATENCY_NS, 0, 4);
  const srtt = load<u32>(r + LAT_SRTT_US, 0, 4);
  const minRtt = load<u32>(r + LAT_MIN_RTT_US, 0, 4);
  const bucket = bucketOf(lat);

  // global histograms: worker-private pending figures, flushed by decode()
  if (role == ROLE_CLIENT) {
    pendGlobal(<usize>GH_CLIENT * HIST_NB + bucket);
    cCount++; cSum += lat;
    if (lat < cMin) cMin = lat;
    if (lat > cMax) cMax = lat;
  } else {
    pendGlobal(<usize>GH_SERVER * HIST_NB + bucket);
    sCount++; sSum += lat;
    if (lat < sMin) sMin = lat;
    if (lat > sMax) sMax = lat;
  }
  if (minRtt != 0) {
    const ns = <u64>minRtt * 1000;
    pendGlobal(<usize>GH_NETWORK * HIST_NB + bucketOf(ns));
    nwCount++; nwSum += ns;
    if (ns < nwMin) nwMin = ns;
    if (ns > nwMax) nwMax = ns;
  }
  if (srtt != 0) {
    const ns = <u64>srtt * 1000;
    pendGlobal(<usize>GH_SRTT * HIST_NB + bucketOf(ns));
    srCount++; srSum += ns;
    if (ns < srMin) srMin = ns;
    if (ns > srMax) srMax = ns;
  }

  // connection: shared atomics (its records are spread over workers)
  const c = connFind(load<u64>(r + HDR_CONN_ID, 0, 4));
  if (c == 0) {
    nConnFull++;
  } else {
    rowBucketAdd(c + CS_HIST + ((bucket >> ROW_SHIFT) << 2));
    atomic.add<u64>(c + CS_REQUESTS, 1);
    atomic.add<u64>(c + CS_SUM, lat);
    atomicMin(c + CS_MIN, lat);
    atomicMax(c + CS_MAX, lat);
    const filled = atomic.load<u32>(c + CS_FILLED);
    if ((filled & CF_PEER) == 0 || load<u8>(c + CS_ROLE) == 0) {
      store<u8>(c + CS_ROLE, <u8>role);
      store<u8>(c + CS_FAMILY, <u8>family);
      store<u32>(c + CS_TGID, load<u32>(r + HDR_TGID, 0, 4));
      store<u16>(c + CS_LPORT, load<u16>(r + LAT_LPORT, 0, 2));
      store<u16>(c + CS_RPORT, load<u16>(r + LAT_RPORT, 0, 2));
      copy16(c + CS_RADDR, r + LAT_RADDR);
      atomic.or<u32>(c + CS_FILLED, CF_PEER);
    }
    if ((filled & CF_CLOSE) == 0 && srtt != 0 && load<u32>(c + CS_SRTT_US) != srtt) {
      store<u32>(c + CS_SRTT_US, srtt);
    }
    if (minRtt != 0 && load<u32>(c + CS_MIN_RTT_US) != minRtt) store<u32>(c + CS_MIN_RTT_US, minRtt);
    // a connection that predates the probe has no open record: its namespace comes from here
    if (load<u32>(c + CS_NETNS) == 0) store<u32>(c + CS_NETNS, load<u32>(r + LAT_NETNS, 0, 4));
  }

  // service: bucket now, count/sum/min/max pending per worker. The
  // connection caches its service slot index.
  let si: usize = 0;
  let s: usize = 0;
  const cached = c != 0 ? load<u32>(c + CS_SVC) : 0;
  if (cached != 0) {
    si = <usize>(cached - 1);
    s = svcBase + si * SVC_SLOT_BYTES;
  } else {
    const port = <u32>load<u16>(r + (role == ROLE_SERVER ? LAT_LPORT : LAT_RPORT), 0, 2);
    s = svcFind(r, role, family, 0, port, LAT_RADDR, load<u32>(r + LAT_NETNS, 0, 4));
    if (s != 0) {
      si = (s - svcBase) / SVC_SLOT_BYTES;
      if (c != 0) store<u32>(c + CS_SVC, <u32>si + 1);
    }
  }
  if (s == 0) {
    nSvcFull++;
  } else {
    pendSvcBucket(<u32>si * HIST_NB + <u32>bucket);
    const p = scBase + SC_SVC + si * SC_SVC_ENTRY;
    const n = load<u64>(p);
    if (n == 0) {
      store<u32>(scSvcDirty + (<usize>sDirtyN << 2), <u32>si);
      sDirtyN++;
    }
    store<u64>(p, n + 1);
    store<u64>(p, load<u64>(p, 8) + lat, 8);
    if (lat < load<u64>(p, 16)) store<u64>(p, lat, 16);
    if (lat > load<u64>(p, 24)) store<u64>(p, lat, 24);
  }
}

function onOpen(r: usize): void {
  nOpen++;
  const c = connFind(load<u64>(r + HDR_CONN_ID, 0, 4));
  if (c == 0) {
    nConnFull++;
    if (indexFull) nConnRefused++; // not even an index entry: counted here, once per connection opened
    return;
  }
  const role = load<u8>(r + HDR_ROLE);
  store<u32>(c + CS_TGID, load<u32>(r + HDR_TGID, 0, 4));
  store<u32>(c + CS_PID, load<u32>(r + OPEN_PID, 0, 4));
  store<u32>(c + CS_NETNS, load<u32>(r + OPEN_NETNS, 0, 4));
  if (role != 0) store<u8>(c + CS_ROLE, role);
  store<u8>(c + CS_FAMILY, load<u8>(r + HDR_FAMILY));
  store<u16>(c + CS_LPORT, load<u16>(r + OPEN_LPORT, 0, 2));
  store<u16>(c + CS_RPORT, load<u16>(r + OPEN_RPORT, 0, 2));
  store<u64>(c + CS_CGROUP_ID, load<u64>(r + OPEN_CGROUP_ID, 0, 4));
  store<u64>(c + CS_START_NS, load<u64>(r + OPEN_START_NS, 0, 4));
  copy16(c + CS_LADDR, r + OPEN_LADDR);
  copy16(c + CS_RADDR, r + OPEN_RADDR);
  copy16(c + CS_COMM, r + OPEN_COMM);
  atomic.or<u32>(c + CS_FLAGS, load<u32>(r + OPEN_FLAGS, 0, 4));
  atomic.or<u32>(c + CS_FILLED, CF_OPEN | CF_PEER);
}

function onClose(r: usize): void {
  nClose++;
  const c = connFind(load<u64>(r + HDR_CONN_ID, 0, 4));
  if (c == 0) {
    nConnFull++;
    if (lastEntry != 0) atomic.or<u32>(lastEntry + CI_FLAGS, CIF_CLOSED); // its entry can go at the next sweep
    return;
  }
  const end = load<u64>(r + CLOSE_END_NS, 0, 4);
  const dur = load<u64>(r + CLOSE_DURATION_NS, 0, 4);
  store<u64>(c + CS_END_NS, end);
  store<u32>(c + CS_SRTT_US, load<u32>(r + CLOSE_SRTT_US, 0, 4));
  store<u32>(c + CS_REQUESTS_KERNEL, load<u32>(r + CLOSE_REQUESTS, 0, 4));
  store<u64>(c + CS_BYTES_SENT, load<u64>(r + CLOSE_BYTES_SENT, 0, 4));
  store<u64>(c + CS_BYTES_RECEIVED, load<u64>(r + CLOSE_BYTES_RECEIVED, 0, 4));
  // start_ns from the close if the open record was never seen
  if ((atomic.load<u32>(c + CS_FILLED) & CF_OPEN) == 0 && load<u64>(c + CS_START_NS) == 0 && dur <= end) {
    store<u64>(c + CS_START_NS, end - dur);
  }
  if (load<u8>(c + CS_ROLE) == 0) {
    const role = load<u8>(r + HDR_ROLE);
    if (role != 0) {
      store<u8>(c + CS_ROLE, role);
      store<u8>(c + CS_FAMILY, load<u8>(r + HDR_FAMILY));
      store<u32>(c + CS_TGID, load<u32>(r + HDR_TGID, 0, 4));
    }
  }
  atomic.or<u32>(c + CS_FLAGS, load<u32>(r + CLOSE_FLAGS, 0, 4));
  atomic.store<u32>(c + CS_CLOSED, 1);
  atomic.or<u32>(c + CS_FILLED, CF_CLOSE);
}

// Measure records (connection-tracker: set-up, failed connects, TLS, lifetime,
// requests, idle gaps) are rare next to latency records: they add to the
// shared figures with atomics directly, no scratch. The counters
// (C_MEASURE_*, C_UNKNOWN_ROLE, C_SVC_TABLE_FULL) go the usual way.
function onMeasure(r: usize): void {
  nMeasure++;
  const metric = <u32>load<u8>(r + MEAS_METRIC);
  if (metric == 0 || metric >= METRIC__COUNT) { nUnknownMetric++; return; }
  let result = <u32>load<u8>(r + MEAS_RESULT);
  if (result > RESULT__COUNT) result = RESULT__COUNT; // last column: results out of range
  atomic.add<u64>(mrBase + ((<usize>metric * MR_RESULTS + <usize>result) << 3), 1);
  const role = <u32>load<u8>(r + HDR_ROLE);
  if (role != ROLE_CLIENT && role != ROLE_SERVER) { nUnknownRole++; return; }
  const family = <u32>load<u8>(r + HDR_FAMILY);
  const v = load<u64>(r + MEAS_VALUE, 0, 4);
  histAdd(ghBase + <usize>(GH_MEASURE + ((metric - 1) << 1) + (role - 1)) * HIST_BYTES, v);
  const port = <u32>load<u16>(r + (role == ROLE_SERVER ? MEAS_LPORT : MEAS_RPORT), 0, 2);
  const s = svcFind(r, role, family, metric, port, MEAS_RADDR, load<u32>(r + MEAS_NETNS, 0, 4));
  if (s == 0) { nSvcFull++; return; }
  histAdd(s + SS_HIST, v);
}

// A perf sample holds one record, or several back to back (the kernel side
// batches records made in process context). Each record's kind gives its size.
// @ts-ignore: decorator
@inline function onSample(r: usize, raw: u32): void {
  let off: u32 = 0;
  do {
    const rem = raw - off;
    const p = r + <usize>off;
    nRecords++;
    if (rem < HDR_SIZE || <u32>load<u8>(p + HDR_VERSION) != REC_VERSION) { nUnknown++; return; }
    const kind = <u32>load<u8>(p + HDR_KIND);
    let size: u32 = 0;
    if (kind == REC_LATENCY) size = LAT_SIZE;
    else if (kind == REC_CONN_OPEN) size = OPEN_SIZE;
    else if (kind == REC_CONN_CLOSE) size = CLOSE_SIZE;
    else if (kind == REC_MEASURE) size = MEAS_SIZE;
    if (size == 0 || rem < size) { nUnknown++; return; }
    if (kind == REC_LATENCY) onLatency(p);
    else if (kind == REC_CONN_OPEN) onOpen(p);
    else if (kind == REC_CONN_CLOSE) onClose(p);
    else onMeasure(p);
    off += size;
  } while (raw - off >= HDR_SIZE);
}

// @ts-ignore: decorator
@inline function addPending(sc: usize, i: u32, v: u64): void {
  const p = sc + SC_COUNTERS + (<usize>i << 3);
  store<u64>(p, load<u64>(p) + v);
}

// @ts-ignore: decorator
@inline function addGStat(sc: usize, i: u32, count: u64, sum: u64, mn: u64, mx: u64): void {
  if (count == 0) return;
  const p = sc + SC_GSTAT + (<usize>i << 5);
  store<u64>(p, load<u64>(p) + count);
  store<u64>(p, load<u64>(p, 8) + sum, 8);
  if (mn < load<u64>(p, 16)) store<u64>(p, mn, 16);
  if (mx > load<u64>(p, 24)) store<u64>(p, mx, 24);
}

/** Adds this call's figures to the scratch area (no atomics) and resets them. */
function endCall(consumed: u64): void {
  const sc = scBase;
  addGStat(sc, GH_CLIENT, cCount, cSum, cMin, cMax);
  addGStat(sc, GH_SERVER, sCount, sSum, sMin, sMax);
  addGStat(sc, GH_NETWORK, nwCount, nwSum, nwMin, nwMax);
  addGStat(sc, GH_SRTT, srCount, srSum, srMin, srMax);
  cCount = 0; cSum = 0; cMin = u64.MAX_VALUE; cMax = 0;
  sCount = 0; sSum = 0; sMin = u64.MAX_VALUE; sMax = 0;
  nwCount = 0; nwSum = 0; nwMin = u64.MAX_VALUE; nwMax = 0;
  srCount = 0; srSum = 0; srMin = u64.MAX_VALUE; srMax = 0;
  addPending(sc, C_RECORDS_TOTAL, nRecords);
  addPending(sc, C_LATENCY_RECORDS, nLatency);
  addPending(sc, C_OPEN_RECORDS, nOpen);
  addPending(sc, C_CLOSE_RECORDS, nClose);
  addPending(sc, C_LOST_RECORDS, nLostRecords);
  addPending(sc, C_LOST_EVENTS, nLostEvents);
  addPending(sc, C_UNKNOWN_RECORDS, nUnknown);
  addPending(sc, C_CONN_TABLE_FULL, nConnFull);
  addPending(sc, C_CONN_REFUSED, nConnRefused);
  addPending(sc, C_SVC_TABLE_FULL, nSvcFull);
  addPending(sc, C_UNKNOWN_ROLE, nUnknownRole);
  addPending(sc, C_PERF_OTHER, nPerfOther);
  addPending(sc, C_MEASURE_RECORDS, nMeasure);
  addPending(sc, C_MEASURE_UNKNOWN_METRIC, nUnknownMetric);
  addPending(sc, C_BYTES_DECODED, consumed);
  addPending(sc, C_DECODE_CALLS, 1);
  store<u64>(sc + SC_PENDING, load<u64>(sc + SC_PENDING) + nRecords + nLostEvents + nPerfOther);
  nRecords = 0; nLatency = 0; nOpen = 0; nClose = 0; nLostRecords = 0; nLostEvents = 0;
  nUnknown = 0; nConnFull = 0; nConnRefused = 0; nSvcFull = 0; nUnknownRole = 0; nPerfOther = 0;
  nMeasure = 0; nUnknownMetric = 0;
  store<u32>(sc + SC_GDIRTYN, gDirtyN);
  store<u32>(sc + SC_BDIRTYN, bDirtyN);
  store<u32>(sc + SC_SDIRTYN, sDirtyN);
}

/**
 * Moves everything pending in scratch area sc (locked by the caller, layout
 * cached) into the shared figures with atomics: histogram buckets first, then
 * count/sum/min/max, then the counters.
 */
function flushScratch(sc: usize): void {
  useScratch(sc);
  const gn = load<u32>(sc + SC_GDIRTYN);
  for (let i: u32 = 0; i < gn; i++) {
    const key = <usize>load<u16>(sc + SC_GDIRTY + (<usize>i << 1));
    const p = sc + SC_GPEND + (key << 2);
    const hi = key / HIST_NB;
    atomic.add<u64>(ghBase + hi * HIST_BYTES + ((key - hi * HIST_NB) << 3), <u64>load<u32>(p));
    store<u32>(p, 0);
  }
  const bn = load<u32>(sc + SC_BDIRTYN);
  for (let i: u32 = 0; i < bn; i++) {
    const p = sc + SC_BCACHE + (<usize>load<u16>(sc + SC_BDIRTY + (<usize>i << 1)) << 3);
    const e = load<u64>(p);
    atomic.add<u64>(bucketCacheAddr(<u32>e), e >> 32);
    store<u64>(p, 0);
  }
  const sn = load<u32>(sc + SC_SDIRTYN);
  for (let i: u32 = 0; i < sn; i++) {
    const si = <usize>load<u32>(scSvcDirty + (<usize>i << 2));
    const p = sc + SC_SVC + si * SC_SVC_ENTRY;
    histFlush(svcBase + si * SVC_SLOT_BYTES + SS_HIST, load<u64>(p), load<u64>(p, 8), load<u64>(p, 16), load<u64>(p, 24));
    store<u64>(p, 0);
    store<u64>(p, 0, 8);
    store<u64>(p, u64.MAX_VALUE, 16);
    store<u64>(p, 0, 24);
  }
  for (let i: u32 = 0; i < GH_COUNT; i++) {
    const p = sc + SC_GSTAT + (<usize>i << 5);
    histFlush(ghBase + <usize>i * HIST_BYTES, load<u64>(p), load<u64>(p, 8), load<u64>(p, 16), load<u64>(p, 24));
    store<u64>(p, 0);
    store<u64>(p, 0, 8);
    store<u64>(p, u64.MAX_VALUE, 16);
    store<u64>(p, 0, 24);
  }
  for (let i: u32 = 0; i < C_COUNT; i++) {
    const p = sc + SC_COUNTERS + (<usize>i << 3);
    const v = load<u64>(p);
    if (v != 0) {
      atomic.add<u64>(countersBase + (<usize>i << 3), v);
      store<u64>(p, 0);
    }
  }
  store<u32>(sc + SC_GDIRTYN, 0);
  store<u32>(sc + SC_BDIRTYN, 0);
  store<u32>(sc + SC_SDIRTYN, 0);
  store<u64>(sc + SC_PENDING, 0);
}

/**
 * Moves the pending figures of every worker into the shared counters and
 * histograms (the readers in src/wasm.ts call this first). Waits for a
 * decode() in progress on an area; gives up on an area after maxSpins
 * attempts to take its lock (0 = wait forever). Returns the number of areas
 * given up on.
 */
export function flushPending(maxSpins: u32): u32 {
  const b = regionBase();
  if (atomic.load<u32>(b + H_MAGIC) != MAGIC) return 0;
  cacheLayout(b);
  const n = load<u32>(b + H_WORKERS) + 1;
  let skipped: u32 = 0;
  for (let w: u32 = 0; w < n; w++) {
    const sc = scratchAddr(w);
    if (!lockScratch(sc, maxSpins)) { skipped++; continue; }
    flushScratch(sc);
    unlockScratch(sc);
  }
  return skipped;
}

/**
 * Decodes whole perf records in [ptr, ptr+len). Returns the bytes consumed;
 * stops at a record whose size is < 8 or runs past len (left for the next call).
 * Returns 0 (and decodes nothing) if init() has not run.
 * Global figures and service histograms are batched in the worker's scratch
 * area and reach the shared memory every FLUSH_RECORDS samples or on
 * flushPending(); connection figures are updated in place.
 */
export function decode(ptr: usize, len: u32): u32 {
  const b = regionBase();
  if (atomic.load<u32>(b + H_MAGIC) != MAGIC) return 0;
  cacheLayout(b);

  // Scratch area: the one of the staging area ptr lies in, otherwise the extra one.
  const workers = load<u32>(b + H_WORKERS);
  const staging = <usize>load<u32>(b + H_STAGING);
  const stride = <usize>load<u32>(b + H_STAGING_BYTES);
  let w = <usize>workers;
  if (ptr >= staging && stride != 0) {
    const k = (ptr - staging) / stride;
    if (k < <usize>workers) w = k;
  }
  const sc = <usize>load<u32>(b + H_SCRATCH) + w * <usize>load<u32>(b + H_SCRATCH_BYTES);
  lockScratch(sc, 0);
  useScratch(sc);
  gDirtyN = load<u32>(sc + SC_GDIRTYN);
  bDirtyN = load<u32>(sc + SC_BDIRTYN);
  sDirtyN = load<u32>(sc + SC_SDIRTYN);

  let p = ptr;
  const end = ptr + <usize>len;
  while (end - p >= 8) {
    const type = load<u32>(p, 0, 4);
    const size = <usize>load<u16>(p, 6, 2);
    if (size < 8 || size > end - p) break;
    if (type == PERF_RECORD_SAMPLE) {
      if (size < 12) {
        nRecords++; nUnknown++;
      } else {
        let raw = load<u32>(p, 8, 4);
        const avail = <u32>(size - 12);
        if (raw > avail) raw = avail;
        onSample(p + 12, raw);
      }
    } else if (type == PERF_RECORD_LOST) {
      if (size >= 24) {
        nLostRecords += load<u64>(p, 16, 4);
        nLostEvents++;
      } else {
        nPerfOther++;
      }
    } else {
      nPerfOther++;
    }
    p += size;
  }
  const consumed = <u32>(p - ptr);
  endCall(<u64>consumed);
  if (load<u64>(sc + SC_PENDING) >= <u64>FLUSH_RECORDS) flushScratch(sc);
  unlockScratch(sc);
  return consumed;
}

// ---------------------------------------------------------------------------
// Ageing the connection table (main thread only). Between sweepBegin() and
// sweepEnd() the main thread holds every scratch lock: no decode() runs, so
// rows and index entries can be removed without a worker holding a row's
// address or being half-way along a probe sequence. The caller reads the
// rows it wants to free (src/pipeline/aging.ts folds their figures first),
// then releaseRow()s them.

/** Rows in use (taken from the free list and not released). */
export function connRowsInUse(): u32 {
  const b = regionBase();
  const head = atomic.load<u32>(b + H_FREE_HEAD);
  const len = load<u32>(b + H_FREE_LEN);
  return head < len ? head : len;
}

/** Rows of connections closed at or before oldNs (CLOCK_MONOTONIC): is a sweep worth its locks? */
export function connDue(oldNs: u64): u32 {
  const b = regionBase();
  if (atomic.load<u32>(b + H_MAGIC) != MAGIC) return 0;
  const base = <usize>load<u32>(b + H_CONN_TABLE);
  const rows = load<u32>(b + H_CONN_CAP);
  let n: u32 = 0;
  for (let r: u32 = 0; r < rows; r++) {
    const c = base + <usize>r * CONN_SLOT_BYTES;
    if (atomic.load<u32>(c + CS_CLOSED) != 0 && load<u64>(c + CS_END_NS) <= oldNs && atomic.load<u64>(c + CS_KEY) != 0) n++;
  }
  return n;
}

/** Takes every worker's scratch lock (waits for the decode() calls in progress). False before init(). */
export function sweepBegin(): bool {
  const b = regionBase();
  if (atomic.load<u32>(b + H_MAGIC) != MAGIC) return false;
  cacheLayout(b);
  const n = load<u32>(b + H_WORKERS) + 1;
  for (let w: u32 = 0; w < n; w++) lockScratch(scratchAddr(w), 0);
  const len = load<u32>(b + H_FREE_LEN);
  if (atomic.load<u32>(b + H_FREE_HEAD) > len) atomic.store<u32>(b + H_FREE_HEAD, len); // failed takes overshoot
  return true;
}

/** Frees row i (between sweepBegin() and sweepEnd()): its index entry is removed, the row zeroed and listed free. */
export function releaseRow(i: u32): bool {
  if (i >= load<u32>(hdrBase + H_CONN_CAP)) return false;
  const c = connBase + <usize>i * CONN_SLOT_BYTES;
  const id = load<u64>(c + CS_KEY);
  if (id == 0) return false;
  let k = <u32>mix64(id) & idxMask;
  for (let n: u32 = 0; n <= idxMask; n++) {
    const e = idxBase + <usize>k * CI_ENTRY_BYTES;
    const key = load<u64>(e + CI_KEY);
    if (key == 0) break;
    if (key == id && load<u32>(e + CI_ROW) == i + 1) {
      store<u64>(e + CI_KEY, CI_REMOVED);
      store<u32>(e + CI_ROW, 0);
      store<u32>(e + CI_FLAGS, 0);
      break;
    }
    k = (k + 1) & idxMask;
  }
  memory.fill(c, 0, CONN_SLOT_BYTES); // the next connection to take it initializes its min
  const head = load<u32>(hdrBase + H_FREE_HEAD) - 1; // rows in use = head: >= 1 here
  store<u32>(freeBase + (<usize>head << 2), i);
  store<u32>(hdrBase + H_FREE_HEAD, head);
  return true;
}

/** Slots of the service table in use. */
export function svcSlotsInUse(): u32 {
  const b = regionBase();
  const base = <usize>load<u32>(b + H_SVC_TABLE);
  const cap = load<u32>(b + H_SVC_CAP);
  let n: u32 = 0;
  for (let i: u32 = 0; i < cap; i++) {
    const k = atomic.load<u64>(base + <usize>i * SVC_SLOT_BYTES + SS_KEY);
    if (k != 0 && k != CI_REMOVED) n++;
  }
  return n;
}

/**
 * Moves every worker's pending figures into the shared ones (between
 * sweepBegin() and sweepEnd(), whose locks it relies on): a service about
 * to be released must have nothing pending in a worker.
 */
export function sweepFlush(): void {
  const n = load<u32>(hdrBase + H_WORKERS) + 1;
  for (let w: u32 = 0; w < n; w++) flushScratch(scratchAddr(w));
}

/**
 * Frees service slot i (between sweepBegin() and sweepEnd(), after
 * sweepFlush()): its key becomes removed, its figures zero, and the
 * connections that cached it look their service up again.
 */
export function releaseSvc(i: u32): bool {
  if (i >= svcCap) return false;
  const s = svcBase + <usize>i * SVC_SLOT_BYTES;
  const k = load<u64>(s + SS_KEY);
  if (k == 0 || k == CI_REMOVED) return false;
  memory.fill(s, 0, SVC_SLOT_BYTES);
  histInit(s + SS_HIST);
  store<u64>(s + SS_KEY, CI_REMOVED);
  const rows = load<u32>(hdrBase + H_CONN_CAP);
  for (let r: u32 = 0; r < rows; r++) {
    const c = connBase + <usize>r * CONN_SLOT_BYTES;
    if (load<u32>(c + CS_SVC) == i + 1) store<u32>(c + CS_SVC, 0);
  }
  return true;
}

/**
 * Ends a sweep: removes the entries of refused connections that closed two
 * sweeps ago or more (a late record of theirs then still finds its entry:
 * a connection is refused, and counted, once), rebuilds the index when
 * removed entries pass a quarter of it (they lengthen probes), and releases
 * the locks. Returns the removed entries left in the index.
 */
export function sweepEnd(): u32 {
  const idxCap = idxMask + 1;
  let removed: u32 = 0;
  for (let i: u32 = 0; i < idxCap; i++) {
    const e = idxBase + <usize>i * CI_ENTRY_BYTES;
    const key = load<u64>(e + CI_KEY);
    if (key == CI_REMOVED) {
      removed++;
    } else if (key != 0 && load<u32>(e + CI_ROW) == CI_NO_ROW) {
      const f = load<u32>(e + CI_FLAGS);
      if ((f & CIF_CLOSED) == 0) continue;
      if (f < CIF_CLOSED + 2 * CIF_SWEPT) {
        store<u32>(e + CI_FLAGS, f + CIF_SWEPT);
        continue;
      }
      store<u64>(e + CI_KEY, CI_REMOVED);
      store<u32>(e + CI_ROW, 0);
      store<u32>(e + CI_FLAGS, 0);
      removed++;
    }
  }
  if (removed > (idxCap >> 2)) {
    // copy the live entries (rows and refused connections) aside, then put them back
    const spare = idxBase + <usize>idxCap * CI_ENTRY_BYTES;
    let n: u32 = 0;
    for (let i: u32 = 0; i < idxCap; i++) {
      const e = idxBase + <usize>i * CI_ENTRY_BYTES;
      const key = load<u64>(e + CI_KEY);
      if (key == 0 || key == CI_REMOVED) continue;
      memory.copy(spare + <usize>n * CI_ENTRY_BYTES, e, CI_ENTRY_BYTES);
      n++;
    }
    memory.fill(idxBase, 0, <usize>idxCap * CI_ENTRY_BYTES);
    for (let j: u32 = 0; j < n; j++) {
      const from = spare + <usize>j * CI_ENTRY_BYTES;
      let k = <u32>mix64(load<u64>(from + CI_KEY)) & idxMask;
      while (load<u64>(idxBase + <usize>k * CI_ENTRY_BYTES + CI_KEY) != 0) k = (k + 1) & idxMask;
      memory.copy(idxBase + <usize>k * CI_ENTRY_BYTES, from, CI_ENTRY_BYTES);
    }
    removed = 0;
  }
  const n = load<u32>(hdrBase + H_WORKERS) + 1;
  for (let w: u32 = 0; w < n; w++) unlockScratch(scratchAddr(w));
  return removed;
}
