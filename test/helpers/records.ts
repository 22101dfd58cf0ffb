/**
 * Builders of synthetic perf data for the tests and benchmarks: records of
 * bpf/records.h laid out with the generated offsets (src/records.ts), wrapped
 * in perf records as the kernel writes them into the ring.
 */
import {
  AF_INET,
  CLOSE_BYTES_RECEIVED,
  CLOSE_BYTES_SENT,
  CLOSE_DURATION_NS,
  CLOSE_END_NS,
  CLOSE_FLAGS,
  CLOSE_REQUESTS,
  CLOSE_SIZE,
  CLOSE_SRTT_US,
  HDR_CONN_ID,
  HDR_FAMILY,
  HDR_KIND,
  HDR_ROLE,
  HDR_TGID,
  HDR_VERSION,
  LAT_END_NS,
  LAT_LATENCY_NS,
  LAT_LPORT,
  LAT_RADDR,
  LAT_MIN_RTT_US,
  LAT_RPORT,
  LAT_NETNS,
  LAT_SIZE,
  LAT_SRTT_US,
  MEAS_AT_NS,
  MEAS_DETAIL,
  MEAS_ERR,
  MEAS_LPORT,
  MEAS_METRIC,
  MEAS_NETNS,
  MEAS_RADDR,
  MEAS_RESULT,
  MEAS_RPORT,
  MEAS_SIZE,
  MEAS_VALUE,
  OPEN_CGROUP_ID,
  OPEN_COMM,
  OPEN_FLAGS,
  OPEN_LADDR,
  OPEN_LPORT,
  OPEN_NETNS,
  OPEN_PID,
  OPEN_RADDR,
  OPEN_RPORT,
  OPEN_SIZE,
  OPEN_START_NS,
  PERF_HDR_SIZE,
  PERF_LOST_ID_OFF,
  PERF_LOST_LOST_OFF,
  PERF_LOST_SIZE,
  PERF_MISC_OFF,
  PERF_RECORD_LOST,
  PERF_RECORD_SAMPLE,
  PERF_SAMPLE_RAW_OFF,
  PERF_SAMPLE_RAW_SIZE_OFF,
  PERF_SIZE_OFF,
  PERF_TYPE_OFF,
  REC_CONN_CLOSE,
  REC_CONN_OPEN,
  REC_LATENCY,
  REC_MEASURE,
  REC_VERSION,
  RESULT_OK,
  ROLE_UNKNOWN,
} from '../../src/records.js';

type U64 = bigint | number;
type Addr = string | ArrayLike<number>;

export interface RecHeader {
  kind?: number;
  version?: number;
  role?: number;
  family?: number;
  tgid?: number;
  conn_id: U64;
}

export interface LatencyRecord extends RecHeader {
  end_ns?: U64;
  latency_ns: U64;
  srtt_us?: number;
  min_rtt_us?: number;
  lport?: number;
  rport?: number;
  netns?: number;
  raddr?: Addr;
}

export interface ConnOpenRecord extends RecHeader {
  start_ns?: U64;
  cgroup_id?: U64;
  pid?: number;
  netns?: number;
  lport?: number;
  rport?: number;
  flags?: number;
  laddr?: Addr;
  raddr?: Addr;
  comm?: string;
}

export interface ConnCloseRecord extends RecHeader {
  end_ns?: U64;
  duration_ns?: U64;
  requests?: number;
  srtt_us?: number;
  bytes_sent?: U64;
  bytes_received?: U64;
  flags?: number;
}

export interface MeasureRecord extends RecHeader {
  /** ns, or a count for METRIC_REQUESTS */
  value: U64;
  at_ns?: U64;
  netns?: number;
  lport?: number;
  rport?: number;
  metric: number;
  result?: number;
  detail?: number;
  err?: number;
  raddr?: Addr;
}

/** 16 address bytes: "a.b.c.d" fills the first 4, an IPv6 string all 16, bytes are copied. */
export function addrBytes(a: Addr | undefined): Uint8Array {
  const out = new Uint8Array(16);
  if (a === undefined) return out;
  if (typeof a !== 'string') {
    out.set(Array.from(a).slice(0, 16));
    return out;
  }
  if (a.includes('.') && !a.includes(':')) {
    a.split('.').forEach((p, i) => {
      if (i < 4) out[i] = Number(p) & 255;
    });
    return out;
  }
  // IPv6 with optional "::"
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const hs = head ? head.split(':').filter((x) => x !== '') : [];
  const ts = tail ? tail.split(':').filter((x) => x !== '') : [];
  const groups = [...hs, ...new Array<string>(8 - hs.length - ts.length).fill('0'), ...ts];
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 255;
  });
  return out;
}

function writeHdr(dv: DataView, kind: number, r: RecHeader): void {
  dv.setUint8(HDR_KIND, r.kind ?? kind);
  dv.setUint8(HDR_VERSION, r.version ?? REC_VERSION);
  dv.setUint8(HDR_ROLE, r.role ?? ROLE_UNKNOWN);
  dv.setUint8(HDR_FAMILY, r.family ?? AF_INET);
  dv.setUint32(HDR_TGID, r.tgid ?? 0, true);
  dv.setBigUint64(HDR_CONN_ID, BigInt(r.conn_id), true);
}

const u64 = (v: U64 | undefined): bigint => BigInt(v ?? 0);

export function encodeLatency(r: LatencyRecord): Uint8Array {
  const b = new Uint8Array(LAT_SIZE);
  const dv = new DataView(b.buffer);
  writeHdr(dv, REC_LATENCY, r);
  dv.setBigUint64(LAT_END_NS, u64(r.end_ns), true);
  dv.setBigUint64(LAT_LATENCY_NS, u64(r.latency_ns), true);
  dv.setUint32(LAT_SRTT_US, r.srtt_us ?? 0, true);
  dv.setUint32(LAT_MIN_RTT_US, r.min_rtt_us ?? 0, true);
  dv.setUint16(LAT_LPORT, r.lport ?? 0, true);
  dv.setUint16(LAT_RPORT, r.rport ?? 0, true);
  dv.setUint32(LAT_NETNS, r.netns ?? 0, true);
  b.set(addrBytes(r.raddr), LAT_RADDR);
  return b;
}

export function encodeOpen(r: ConnOpenRecord): Uint8Array {
  const b = new Uint8Array(OPEN_SIZE);
  const dv = new DataView(b.buffer);
  writeHdr(dv, REC_CONN_OPEN, r);
  dv.setBigUint64(OPEN_START_NS, u64(r.start_ns), true);
  dv.setBigUint64(OPEN_CGROUP_ID, u64(r.cgroup_id), true);
  dv.setUint32(OPEN_PID, r.pid ?? 0, true);
  dv.setUint32(OPEN_NETNS, r.netns ?? 0, true);
  dv.setUint16(OPEN_LPORT, r.lport ?? 0, true);
  dv.setUint16(OPEN_RPORT, r.rport ?? 0, true);
  dv.setUint32(OPEN_FLAGS, r.flags ?? 0, true);
  b.set(addrBytes(r.laddr), OPEN_LADDR);
  b.set(addrBytes(r.raddr), OPEN_RADDR);
  const comm = new TextEncoder().encode(r.comm ?? '').subarray(0, 15);
  b.set(comm, OPEN_COMM);
  return b;
}

export function encodeClose(r: ConnCloseRecord): Uint8Array {
  const b = new Uint8Array(CLOSE_SIZE);
  const dv = new DataView(b.buffer);
  writeHdr(dv, REC_CONN_CLOSE, r);
  dv.setBigUint64(CLOSE_END_NS, u64(r.end_ns), true);
  dv.setBigUint64(CLOSE_DURATION_NS, u64(r.duration_ns), true);
  dv.setUint32(CLOSE_REQUESTS, r.requests ?? 0, true);
  dv.setUint32(CLOSE_SRTT_US, r.srtt_us ?? 0, true);
  dv.setBigUint64(CLOSE_BYTES_SENT, u64(r.bytes_sent), true);
  dv.setBigUint64(CLOSE_BYTES_RECEIVED, u64(r.bytes_received), true);
  dv.setUint32(CLOSE_FLAGS, r.flags ?? 0, true);
  return b;
}

export function encodeMeasure(r: MeasureRecord): Uint8Array {
  const b = new Uint8Array(MEAS_SIZE);
  const dv = new DataView(b.buffer);
  writeHdr(dv, REC_MEASURE, r);
  dv.setBigUint64(MEAS_VALUE, u64(r.value), true);
  dv.setBigUint64(MEAS_AT_NS, u64(r.at_ns), true);
  dv.setUint32(MEAS_NETNS, r.netns ?? 0, true);
  dv.setUint16(MEAS_LPORT, r.lport ?? 0, true);
  dv.setUint16(MEAS_RPORT, r.rport ?? 0, true);
  dv.setUint8(MEAS_METRIC, r.metric);
  dv.setUint8(MEAS_RESULT, r.result ?? RESULT_OK);
  dv.setUint8(MEAS_DETAIL, r.detail ?? 0);
  dv.setUint32(MEAS_ERR, r.err ?? 0, true);
  b.set(addrBytes(r.raddr), MEAS_RADDR);
  return b;
}

/**
 * A PERF_RECORD_SAMPLE carrying `rec` as raw data, padded like the kernel does
 * (total size a multiple of 8; raw_size includes the padding unless given).
 */
export function perfSample(rec: Uint8Array, rawSize?: number): Uint8Array {
  const size = Math.ceil((PERF_SAMPLE_RAW_OFF + rec.length) / 8) * 8;
  const b = new Uint8Array(size);
  const dv = new DataView(b.buffer);
  dv.setUint32(PERF_TYPE_OFF, PERF_RECORD_SAMPLE, true);
  dv.setUint16(PERF_MISC_OFF, 0, true);
  dv.setUint16(PERF_SIZE_OFF, size, true);
  dv.setUint32(PERF_SAMPLE_RAW_SIZE_OFF, rawSize ?? size - PERF_SAMPLE_RAW_OFF, true);
  b.set(rec, PERF_SAMPLE_RAW_OFF);
  return b;
}

/** A PERF_RECORD_LOST: u64 id, u64 lost (PERF_LOST_*). */
export function perfLost(lost: U64, id: U64 = 0): Uint8Array {
  const b = new Uint8Array(PERF_LOST_SIZE);
  const dv = new DataView(b.buffer);
  dv.setUint32(PERF_TYPE_OFF, PERF_RECORD_LOST, true);
  dv.setUint16(PERF_SIZE_OFF, PERF_LOST_SIZE, true);
  dv.setBigUint64(PERF_LOST_ID_OFF, BigInt(id), true);
  dv.setBigUint64(PERF_LOST_LOST_OFF, BigInt(lost), true);
  return b;
}

/** Any other perf record type with an opaque body (size = 8 + body, the caller keeps it 8-aligned). */
export function perfOther(type: number, body: Uint8Array = new Uint8Array(8)): Uint8Array {
  const b = new Uint8Array(PERF_HDR_SIZE + body.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(PERF_TYPE_OFF, type, true);
  dv.setUint16(PERF_SIZE_OFF, b.length, true);
  b.set(body, PERF_HDR_SIZE);
  return b;
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
