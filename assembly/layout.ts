// Shared-memory layout owned by the Wasm module. Everything here is exported
// from build/meshprobe.wasm as an immutable i32 global so that src/wasm.ts
// reads offsets from the module instead of duplicating them. Each offset is
// written from the one before it (the compiler folds them into constants);
// what depends on bpf/records.h (metrics, results) comes from ./records.

import { METRIC__COUNT, RESULT__COUNT } from './records';

// ---- histogram (log-linear, 64 sub-buckets per power of two) ----
export const HIST_NB: u32 = 1985; // buckets, index 1984 = overflow (>= 2^36 ns)
export const HIST_OVERFLOW: u32 = HIST_NB - 1;
export const HIST_COUNT: u32 = HIST_NB * 8; // u64 count, after the u64 buckets
export const HIST_SUM: u32 = HIST_COUNT + 8; // u64 sum_ns
export const HIST_MIN: u32 = HIST_SUM + 8; // u64 min_ns (u64 max when empty)
export const HIST_MAX: u32 = HIST_MIN + 8; // u64 max_ns
const HIST_END: u32 = HIST_MAX + 8; // not exported: the same as HIST_BYTES before rounding
export const HIST_BYTES: u32 = (HIST_END + 63) & ~63; // rounded up to 64 (15936)

// ---- header at regionBase() ----
export const HEADER_BYTES: u32 = 256;
export const MAGIC: u32 = 0x4d505242; // "BRPM" little-endian bytes: 'B','R','P','M'
export const LAYOUT_VERSION: u32 = 6; // 2: measure histograms/results, SS_METRIC; 3: metric TLS_CONNECT; 4: conn index + free rows; 5: network = min RTT, GH_SRTT, SS_NETNS; 6: compact row histograms (ROW_*)
export const H_MAGIC: u32 = 0;
export const H_VERSION: u32 = 4;
export const H_CONN_CAP: u32 = 8; // connection rows (any number >= 1: --max-connections)
export const H_SVC_CAP: u32 = 12;
export const H_WORKERS: u32 = 16;
export const H_STAGING_BYTES: u32 = 20;
export const H_NB: u32 = 24;
export const H_HIST_BYTES: u32 = 28;
export const H_CONN_SLOT_BYTES: u32 = 32;
export const H_SVC_SLOT_BYTES: u32 = 36;
export const H_COUNTERS: u32 = 40; // absolute address of the counter block
export const H_GLOBAL_HISTS: u32 = 44; // absolute address of the GH_TOTAL global histograms
export const H_CONN_TABLE: u32 = 48;
export const H_SVC_TABLE: u32 = 52;
export const H_STAGING: u32 = 56;
export const H_END: u32 = 60;
export const H_SCRATCH: u32 = 64; // absolute address of the per-worker scratch areas (workers + 1)
export const H_SCRATCH_BYTES: u32 = 68; // bytes per scratch area
export const H_MEASURE_RESULTS: u32 = 72; // absolute address of the measure results table (MR_*)
export const H_CONN_INDEX: u32 = 76; // absolute address of the connection index (CI_*)
export const H_CONN_IDX_CAP: u32 = 80; // its entries (a power of two, >= 4 x rows), followed by as many to rebuild it
export const H_CONN_FREE: u32 = 84; // absolute address of the free-row list (u32 row indexes)
export const H_FREE_HEAD: u32 = 88; // u32 atomic: rows taken = list position of the next free row
export const H_FREE_LEN: u32 = 92; // u32: entries in the list (= rows)
export const H_COUNTERS_OFF: u32 = 128; // counter block lives inside the header
export const H_COUNTERS_N: u32 = 16; // reserved u64 slots (only C_COUNT used)

// ---- global counters: u64 each, at counters + 8*index ----
export const C_RECORDS_TOTAL: u32 = 0; // PERF_RECORD_SAMPLEs seen (valid or not)
export const C_LATENCY_RECORDS: u32 = 1;
export const C_OPEN_RECORDS: u32 = 2;
export const C_CLOSE_RECORDS: u32 = 3;
export const C_LOST_RECORDS: u32 = 4; // sum of PERF_RECORD_LOST.lost
export const C_LOST_EVENTS: u32 = 5; // number of PERF_RECORD_LOST records
export const C_UNKNOWN_RECORDS: u32 = 6; // bad version / kind / raw size
export const C_CONN_TABLE_FULL: u32 = 7; // latency/open/close records without a conn slot
export const C_SVC_TABLE_FULL: u32 = 8; // latency/measure records without a service slot
export const C_BYTES_DECODED: u32 = 9; // bytes consumed by decode()
export const C_UNKNOWN_ROLE: u32 = 10; // latency/measure records with role not client/server
export const C_PERF_OTHER: u32 = 11; // other perf record types, skipped
export const C_DECODE_CALLS: u32 = 12;
export const C_MEASURE_RECORDS: u32 = 13; // measure records (whatever their metric/role)
export const C_MEASURE_UNKNOWN_METRIC: u32 = 14; // measure records with metric not 1..METRIC__COUNT-1 (nowhere else)
export const C_CONN_REFUSED: u32 = 15; // connections that found no free row (their records count in C_CONN_TABLE_FULL)
export const C_COUNT: u32 = 16;

// ---- global histograms (at H_GLOBAL_HISTS, HIST_BYTES apart) ----
// 0..GH_COUNT-1: latency records, batched in the worker scratch areas.
export const GH_CLIENT: u32 = 0;
export const GH_SERVER: u32 = 1;
export const GH_NETWORK: u32 = 2; // the kernel's windowed minimum RTT (min_rtt_us): the path
export const GH_SRTT: u32 = 3; // the kernel's smoothed RTT (srtt_us): includes delayed-ACK waits
export const GH_COUNT: u32 = 4;
// then the `value`s of measure records, per (metric 1..METRIC__COUNT-1, role client/server):
// index GH_MEASURE + 2*(metric-1) + (role-1), updated with atomics directly
// (measure records are rare: no scratch).
export const GH_MEASURE: u32 = GH_COUNT;
export const GH_MEASURE_N: u32 = (METRIC__COUNT - 1) * 2;
export const GH_TOTAL: u32 = GH_MEASURE + GH_MEASURE_N;

// ---- measure results table (at H_MEASURE_RESULTS) ----
// u64 [MR_METRICS][MR_RESULTS]: measure records per (metric, result), with
// atomics directly. Row 0 is unused (unknown metrics are only counted in
// C_MEASURE_UNKNOWN_METRIC); column MR_RESULTS-1 (= RESULT__COUNT) holds
// results >= RESULT__COUNT. Records of any role are counted.
export const MR_METRICS: u32 = METRIC__COUNT;
export const MR_RESULTS: u32 = RESULT__COUNT + 1;
export const MR_BYTES: u32 = (MR_METRICS * MR_RESULTS * 8 + 63) & ~63; // rounded up to 64

// ---- connection table slot ----
// The row holds its connection's latencies as a compact histogram: the same
// log-linear scheme with 8 sub-buckets per power of two (row bucket i = the
// ROW_FINE fine buckets ROW_FINE*i .. ROW_FINE*i+ROW_FINE-1 of HIST_*, so a
// row bucket's bounds are fine-bucket bounds; below 128 ns, 8-ns buckets;
// the last one is the fine overflow bucket alone), u32 counts that saturate
// at ROW_COUNT_MAX (src/wasm.ts gives a saturated bucket back what the exact
// u64 count says it lacks), and the exact u64 count/sum/min/max first. The
// service and global histograms keep the full HIST_* form.
// The first 64-byte line holds count/sum/min/max and every field a latency
// record reads (key, filled, cached service, srtt, min RTT, netns, role,
// family, lport), so a latency record touches 2 lines of its connection:
// that one and its bucket's. `requests` IS the histogram's count.
export const ROW_SHIFT: u32 = 3; // log2 of the fine buckets per row bucket
export const ROW_FINE: u32 = 1 << ROW_SHIFT;
export const ROW_NB: u32 = (HIST_OVERFLOW >> ROW_SHIFT) + 1; // 249 row buckets, index 248 = overflow (>= 2^36 ns)
export const ROW_COUNT_MAX: u32 = 0xffffffff; // a row bucket's count saturates here
export const CS_REQUESTS: u32 = 0; // u64 atomic, latency records decoded (= the histogram's exact count)
export const CS_SUM: u32 = CS_REQUESTS + 8; // u64 sum_ns
export const CS_MIN: u32 = CS_SUM + 8; // u64 min_ns (u64 max when empty)
export const CS_MAX: u32 = CS_MIN + 8; // u64 max_ns
export const CS_KEY: u32 = CS_MAX + 8; // u64 conn_id, 0 = empty (32)
export const CS_FILLED: u32 = CS_KEY + 8; // u32 bits: 1 peer info, 2 open seen, 4 close seen
export const CS_SVC: u32 = CS_FILLED + 4; // u32 service slot index + 1 (0 = not resolved yet)
export const CS_SRTT_US: u32 = CS_SVC + 4; // u32 (close's, else the last latency record's)
export const CS_MIN_RTT_US: u32 = CS_SRTT_US + 4; // u32, the last non-zero one of a latency record
export const CS_NETNS: u32 = CS_MIN_RTT_US + 4; // u32
export const CS_ROLE: u32 = CS_NETNS + 4; // u8
export const CS_FAMILY: u32 = CS_ROLE + 1; // u8
export const CS_LPORT: u32 = CS_FAMILY + 1; // u16 (ends the first line: 64)
export const CS_RPORT: u32 = CS_LPORT + 2; // u16, then 2 bytes free
export const CS_TGID: u32 = CS_RPORT + 4; // u32
export const CS_PID: u32 = CS_TGID + 4; // u32
export const CS_FLAGS: u32 = CS_PID + 4; // u32, OR of open/close flags
export const CS_CLOSED: u32 = CS_FLAGS + 4; // u32
export const CS_REQUESTS_KERNEL: u32 = CS_CLOSED + 4; // u32, from the close record
export const CS_CGROUP_ID: u32 = CS_REQUESTS_KERNEL + 4; // u64 (88)
export const CS_START_NS: u32 = CS_CGROUP_ID + 8; // u64
export const CS_END_NS: u32 = CS_START_NS + 8; // u64
export const CS_BYTES_SENT: u32 = CS_END_NS + 8; // u64
export const CS_BYTES_RECEIVED: u32 = CS_BYTES_SENT + 8; // u64
export const CS_LADDR: u32 = CS_BYTES_RECEIVED + 8; // 16 bytes
export const CS_RADDR: u32 = CS_LADDR + 16; // 16 bytes
export const CS_COMM: u32 = CS_RADDR + 16; // 16 bytes
export const CS_HIST: u32 = CS_COMM + 16; // ROW_NB u32 bucket counts (176 .. 1172)
export const CONN_SLOT_BYTES: u32 = (CS_HIST + ROW_NB * 4 + 63) & ~63; // rounded up to 64 (1216)

// ---- connection index (at H_CONN_INDEX, H_CONN_IDX_CAP entries) ----
// Open addressing on conn_id with linear probing. Workers only ever turn an
// empty or removed entry into a key (a compare-exchange on CI_KEY), then take
// a row from the free list and publish it in CI_ROW. Only the main thread
// removes entries and frees rows, between sweepBegin() and sweepEnd(), while
// it holds every worker's scratch lock: no decode() runs then, so no worker
// holds a row address or is half-way along a probe sequence.
export const CI_KEY: u32 = 0; // u64 conn_id; 0 = empty (ends a probe), CI_REMOVED = removed (skipped, reusable)
export const CI_ROW: u32 = 8; // u32 row + 1; 0 = being assigned, CI_NO_ROW = refused (no row was free)
export const CI_FLAGS: u32 = 12; // u32: CIF_CLOSED once a refused connection's close record is seen
export const CI_ENTRY_BYTES: u32 = 16;
export const CI_REMOVED: u64 = 0xffffffffffffffff;
export const CI_NO_ROW: u32 = 0xffffffff;
export const CIF_CLOSED: u32 = 1;
export const CIF_SWEPT: u32 = 2; // added per sweep after the close: the entry goes at the third

export const CF_PEER: u32 = 1;
export const CF_OPEN: u32 = 2;
export const CF_CLOSE: u32 = 4;

// ---- service table slot (same idea) ----
// Keyed by (metric, role, port, family+raddr for clients). Latency records use
// metric 0 (and go through the scratch areas); measure records use their
// metric and add to the slot with atomics directly.
export const SS_HIST: u32 = 0;
export const SS_REQUESTS: u32 = SS_HIST + HIST_COUNT; // u64 atomic (= histogram count)
export const SS_KEY: u32 = SS_HIST + HIST_END; // u64 hash, 0 = empty (15912)
export const SS_READY: u32 = SS_KEY + 8; // u32, 1 once the meta below is written
export const SS_TGID: u32 = SS_READY + 4; // u32, first seen
export const SS_ROLE: u32 = SS_TGID + 4; // u8
export const SS_FAMILY: u32 = SS_ROLE + 1; // u8
export const SS_PORT: u32 = SS_FAMILY + 1; // u16: lport (server) / rport (client)
export const SS_METRIC: u32 = SS_PORT + 2; // u8: 0 = latency records, else METRIC_* of measure records, then 3 bytes free
export const SS_RADDR: u32 = SS_METRIC + 4; // 16 bytes (clients only)
export const SS_NETNS: u32 = SS_RADDR + 16; // u32: network namespace inode (in the key of servers and loopback clients)
export const SVC_SLOT_BYTES: u32 = (SS_NETNS + 4 + 63) & ~63; // rounded up to 64 (16000)

export const MAX_PROBE: u32 = 32;

// ---- per-worker scratch area ----
// Worker-private pending figures: global histogram buckets and
// count/sum/min/max, service buckets and count/sum/min/max, and the counters.
// decode() adds to them without atomics and moves them into the shared
// figures with atomics once FLUSH_RECORDS samples are pending; flushPending()
// (called by the readers in src/wasm.ts) moves them at any time. Each area has
// a spin lock taken by decode() and by flushPending(). Area i belongs to
// staging area i; area `workers` serves decode() calls on other addresses.
export const FLUSH_RECORDS: u32 = 131072;
export const SC_LOCK: u32 = 0; // u32
export const SC_PENDING: u32 = 8; // u64 samples since the last flush
export const SC_GDIRTYN: u32 = 16; // u32 entries in SC_GDIRTY
export const SC_BDIRTYN: u32 = 20; // u32 entries in SC_BDIRTY
export const SC_SDIRTYN: u32 = 24; // u32 entries in the service dirty list
export const SC_COUNTERS: u32 = 64; // H_COUNTERS_N u64 pending counter increments
export const SC_GSTAT: u32 = SC_COUNTERS + H_COUNTERS_N * 8; // GH_COUNT x {u64 count, u64 sum, u64 min, u64 max}
export const SC_GPEND: u32 = (SC_GSTAT + GH_COUNT * 32 + 63) & ~63; // GH_COUNT*NB u32: pending global bucket counts
export const SC_GDIRTY: u32 = SC_GPEND + ((GH_COUNT * HIST_NB * 4 + 63) & ~63); // GH_COUNT*NB u16: keys (hist*NB + bucket) with a pending count
export const SC_BCACHE: u32 = (SC_GDIRTY + GH_COUNT * HIST_NB * 2 + 63) & ~63; // SC_BCACHE_N x u64 {u32 key+1, u32 count}: pending service bucket
export const SC_BCACHE_N: u32 = 16384; //   counts, key = svcSlot*NB + bucket, direct-mapped, evicted with an atomic add
export const SC_BDIRTY: u32 = SC_BCACHE + SC_BCACHE_N * 8; // SC_BCACHE_N u16: entries that became non-empty
export const SC_SVC: u32 = SC_BDIRTY + SC_BCACHE_N * 2; // svcCap x {u64 count, u64 sum, u64 min, u64 max}
export const SC_SVC_ENTRY: u32 = 32;
// then svcCap u32: dirty service slot indexes
