/**
 * TS mirror of bpf/records.h (the contract) plus builders for synthetic perf
 * data. Checked against the C header and against assembly/records.ts by
 * test/records-layout.test.ts. Constant names are the same as in
 * assembly/records.ts: <PREFIX>_<FIELD> is a byte offset, <PREFIX>_SIZE a sizeof
 * (HDR = mp_rec_hdr, LAT = mp_latency_rec, OPEN = mp_conn_open_rec,
 * CLOSE = mp_conn_close_rec, MEAS = mp_measure_rec, DKEY = mp_drop_key,
 * DVAL = mp_drop_val, PKEY = mp_pkt_key).
 */

export const REC_VERSION = 1;

export const REC_LATENCY = 1;
export const REC_CONN_OPEN = 2;
export const REC_CONN_CLOSE = 3;
export const REC_MEASURE = 4;

export const ROLE_UNKNOWN = 0;
export const ROLE_CLIENT = 1;
export const ROLE_SERVER = 2;

/** mp_measure_rec.metric: what it measures (ns unless said otherwise) */
export const METRIC_SETUP = 1;
export const METRIC_CONNECT_FAIL = 2;
export const METRIC_TLS = 3;
export const METRIC_TLS_LIBSSL = 4;
export const METRIC_LIFETIME = 5;
/** a count of exchanges, not ns */
export const METRIC_REQUESTS = 6;
export const METRIC_IDLE = 7;
export const METRIC_TLS_CONNECT = 8;
export const METRIC__COUNT = 9;

/** mp_measure_rec.result */
export const RESULT_OK = 0;
export const RESULT_REFUSED = 1;
export const RESULT_TIMEOUT = 2;
export const RESULT_RESET = 3;
export const RESULT_UNREACH = 4;
export const RESULT_ABORTED = 5;
export const RESULT_OTHER = 6;
export const RESULT__COUNT = 7;

export const CONN_F_ROLE_INFERRED = 1;

export const AF_INET = 2;
export const AF_INET6 = 10;

// struct mp_rec_hdr
export const HDR_SIZE = 16;
export const HDR_KIND = 0;
export const HDR_VERSION = 1;
export const HDR_ROLE = 2;
export const HDR_FAMILY = 3;
export const HDR_TGID = 4;
export const HDR_CONN_ID = 8;

// struct mp_latency_rec
export const LAT_SIZE = 64;
export const LAT_HDR = 0;
export const LAT_END_NS = 16;
export const LAT_LATENCY_NS = 24;
export const LAT_SRTT_US = 32;
export const LAT_REQ_BYTES = 36;
export const LAT_LPORT = 40;
export const LAT_RPORT = 42;
export const LAT_SEQ = 44;
export const LAT_RADDR = 48;

// struct mp_conn_open_rec
export const OPEN_SIZE = 96;
export const OPEN_HDR = 0;
export const OPEN_START_NS = 16;
export const OPEN_CGROUP_ID = 24;
export const OPEN_PID = 32;
export const OPEN_NETNS = 36;
export const OPEN_LPORT = 40;
export const OPEN_RPORT = 42;
export const OPEN_FLAGS = 44;
export const OPEN_LADDR = 48;
export const OPEN_RADDR = 64;
export const OPEN_COMM = 80;

// struct mp_conn_close_rec
export const CLOSE_SIZE = 64;
export const CLOSE_HDR = 0;
export const CLOSE_END_NS = 16;
export const CLOSE_DURATION_NS = 24;
export const CLOSE_REQUESTS = 32;
export const CLOSE_SRTT_US = 36;
export const CLOSE_BYTES_SENT = 40;
export const CLOSE_BYTES_RECEIVED = 48;
export const CLOSE_FLAGS = 56;
export const CLOSE__PAD = 60;

// struct mp_measure_rec
export const MEAS_SIZE = 64;
export const MEAS_HDR = 0;
export const MEAS_VALUE = 16;
export const MEAS_AT_NS = 24;
export const MEAS_NETNS = 32;
export const MEAS_LPORT = 36;
export const MEAS_RPORT = 38;
export const MEAS_METRIC = 40;
export const MEAS_RESULT = 41;
export const MEAS_DETAIL = 42;
export const MEAS__PAD = 43;
export const MEAS_ERR = 44;
export const MEAS_RADDR = 48;

// per-CPU kernel counters (array map "stats")
export const STAT_SEND = 0;
export const STAT_RECV = 1;
export const STAT_CLEANUP = 2;
export const STAT_TRACKED = 3;
export const STAT_EVICTED = 4;
export const STAT_OUTPUT_FAIL = 5;
export const STAT_FILTERED = 6;
export const STAT_EMITTED = 7;
export const STAT_DISCARDED = 8;
export const STAT_UNSAMPLED_CLIENT = 9;
export const STAT_UNSAMPLED_SERVER = 10;
export const STAT_MEASURED_CLIENT = 11;
export const STAT_MEASURED_SERVER = 12;
export const STAT_TLS_HELLO = 13;
export const STAT_TLS_DONE = 14;
export const STAT_TLS_LOST_SYNC = 15;
export const STAT_TLS_GAP = 16;
export const STAT_TLS_SPLIT_HDR = 17;
export const STAT_TLS_ABORTED = 18;
export const STAT_TLS_NO_VERSION = 19;
export const STAT_TLS_LIBSSL_DONE = 20;
export const STAT_TLS_LIBSSL_NO_ROLE = 21;
export const STAT_REUSED_CLIENT = 22;
export const STAT_REUSED_SERVER = 23;
export const STAT_DROP_SEEN = 24;
export const STAT_DROP_FILTERED = 25;
export const STAT_DROP_TABLE_FULL = 26;
export const STAT_DROP_NO_HEADER = 27;
export const STAT__COUNT = 28;

/** mp_drop_key.dir */
export const DIR_UNKNOWN = 0;
export const DIR_INGRESS = 1;
export const DIR_EGRESS = 2;

// struct mp_drop_key
export const DKEY_SIZE = 56;
export const DKEY_LOCATION = 0;
export const DKEY_REASON = 8;
export const DKEY_NETNS = 12;
export const DKEY_LPORT = 16;
export const DKEY_RPORT = 18;
export const DKEY_PROTOCOL = 20;
export const DKEY_FAMILY = 21;
export const DKEY_DIR = 22;
export const DKEY__PAD = 23;
export const DKEY_LADDR = 24;
export const DKEY_RADDR = 40;

// struct mp_drop_val
export const DVAL_SIZE = 16;
export const DVAL_PACKETS = 0;
export const DVAL_BYTES = 8;

// struct mp_pkt_key
export const PKEY_SIZE = 8;
export const PKEY_NETNS = 0;
export const PKEY_LPORT = 4;
export const PKEY_PROTOCOL = 6;
export const PKEY__PAD = 7;

// perf_event_header framing
export const PERF_RECORD_LOST = 2;
export const PERF_RECORD_SAMPLE = 9;
export const PERF_HDR_SIZE = 8;
export const PERF_SAMPLE_RAW_OFF = 12;

/** [offset, size] of every field, keyed by the C struct and field names. */
export type FieldTable = Record<string, readonly [offset: number, size: number]>;
export interface StructLayout {
  readonly size: number;
  readonly fields: FieldTable;
}

export const LAYOUTS: Readonly<Record<string, StructLayout>> = {
  mp_rec_hdr: {
    size: HDR_SIZE,
    fields: {
      kind: [HDR_KIND, 1],
      version: [HDR_VERSION, 1],
      role: [HDR_ROLE, 1],
      family: [HDR_FAMILY, 1],
      tgid: [HDR_TGID, 4],
      conn_id: [HDR_CONN_ID, 8],
    },
  },
  mp_latency_rec: {
    size: LAT_SIZE,
    fields: {
      hdr: [LAT_HDR, HDR_SIZE],
      end_ns: [LAT_END_NS, 8],
      latency_ns: [LAT_LATENCY_NS, 8],
      srtt_us: [LAT_SRTT_US, 4],
      req_bytes: [LAT_REQ_BYTES, 4],
      lport: [LAT_LPORT, 2],
      rport: [LAT_RPORT, 2],
      seq: [LAT_SEQ, 4],
      raddr: [LAT_RADDR, 16],
    },
  },
  mp_conn_open_rec: {
    size: OPEN_SIZE,
    fields: {
      hdr: [OPEN_HDR, HDR_SIZE],
      start_ns: [OPEN_START_NS, 8],
      cgroup_id: [OPEN_CGROUP_ID, 8],
      pid: [OPEN_PID, 4],
      netns: [OPEN_NETNS, 4],
      lport: [OPEN_LPORT, 2],
      rport: [OPEN_RPORT, 2],
      flags: [OPEN_FLAGS, 4],
      laddr: [OPEN_LADDR, 16],
      raddr: [OPEN_RADDR, 16],
      comm: [OPEN_COMM, 16],
    },
  },
  mp_conn_close_rec: {
    size: CLOSE_SIZE,
    fields: {
      hdr: [CLOSE_HDR, HDR_SIZE],
      end_ns: [CLOSE_END_NS, 8],
      duration_ns: [CLOSE_DURATION_NS, 8],
      requests: [CLOSE_REQUESTS, 4],
      srtt_us: [CLOSE_SRTT_US, 4],
      bytes_sent: [CLOSE_BYTES_SENT, 8],
      bytes_received: [CLOSE_BYTES_RECEIVED, 8],
      flags: [CLOSE_FLAGS, 4],
      _pad: [CLOSE__PAD, 4],
    },
  },
  mp_measure_rec: {
    size: MEAS_SIZE,
    fields: {
      hdr: [MEAS_HDR, HDR_SIZE],
      value: [MEAS_VALUE, 8],
      at_ns: [MEAS_AT_NS, 8],
      netns: [MEAS_NETNS, 4],
      lport: [MEAS_LPORT, 2],
      rport: [MEAS_RPORT, 2],
      metric: [MEAS_METRIC, 1],
      result: [MEAS_RESULT, 1],
      detail: [MEAS_DETAIL, 1],
      _pad: [MEAS__PAD, 1],
      err: [MEAS_ERR, 4],
      raddr: [MEAS_RADDR, 16],
    },
  },
  mp_drop_key: {
    size: DKEY_SIZE,
    fields: {
      location: [DKEY_LOCATION, 8],
      reason: [DKEY_REASON, 4],
      netns: [DKEY_NETNS, 4],
      lport: [DKEY_LPORT, 2],
      rport: [DKEY_RPORT, 2],
      protocol: [DKEY_PROTOCOL, 1],
      family: [DKEY_FAMILY, 1],
      dir: [DKEY_DIR, 1],
      _pad: [DKEY__PAD, 1],
      laddr: [DKEY_LADDR, 16],
      raddr: [DKEY_RADDR, 16],
    },
  },
  mp_drop_val: {
    size: DVAL_SIZE,
    fields: { packets: [DVAL_PACKETS, 8], bytes: [DVAL_BYTES, 8] },
  },
  mp_pkt_key: {
    size: PKEY_SIZE,
    fields: { netns: [PKEY_NETNS, 4], lport: [PKEY_LPORT, 2], protocol: [PKEY_PROTOCOL, 1], _pad: [PKEY__PAD, 1] },
  },
};

/** Name prefix of each struct's constants (here and in assembly/records.ts). */
export const STRUCT_PREFIX: Readonly<Record<string, string>> = {
  mp_rec_hdr: 'HDR',
  mp_latency_rec: 'LAT',
  mp_conn_open_rec: 'OPEN',
  mp_conn_close_rec: 'CLOSE',
  mp_measure_rec: 'MEAS',
  mp_drop_key: 'DKEY',
  mp_drop_val: 'DVAL',
  mp_pkt_key: 'PKEY',
};

// ---------------------------------------------------------------------------
// Builders for synthetic records (tests, benchmarks, replay tools).

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
  req_bytes?: number;
  lport?: number;
  rport?: number;
  seq?: number;
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
  const groups = [...hs, ...new Array(8 - hs.length - ts.length).fill('0'), ...ts];
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
  dv.setUint32(LAT_REQ_BYTES, r.req_bytes ?? 0, true);
  dv.setUint16(LAT_LPORT, r.lport ?? 0, true);
  dv.setUint16(LAT_RPORT, r.rport ?? 0, true);
  dv.setUint32(LAT_SEQ, r.seq ?? 0, true);
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
  dv.setUint32(0, PERF_RECORD_SAMPLE, true);
  dv.setUint16(4, 0, true);
  dv.setUint16(6, size, true);
  dv.setUint32(8, rawSize ?? size - PERF_SAMPLE_RAW_OFF, true);
  b.set(rec, PERF_SAMPLE_RAW_OFF);
  return b;
}

/** A PERF_RECORD_LOST: u64 id, u64 lost. */
export function perfLost(lost: U64, id: U64 = 0): Uint8Array {
  const b = new Uint8Array(24);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, PERF_RECORD_LOST, true);
  dv.setUint16(6, 24, true);
  dv.setBigUint64(8, BigInt(id), true);
  dv.setBigUint64(16, BigInt(lost), true);
  return b;
}

/** Any other perf record type with an opaque body (size = 8 + body, the caller keeps it 8-aligned). */
export function perfOther(type: number, body: Uint8Array = new Uint8Array(8)): Uint8Array {
  const b = new Uint8Array(PERF_HDR_SIZE + body.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, type, true);
  dv.setUint16(6, b.length, true);
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
