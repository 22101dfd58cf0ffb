// Record layouts of bpf/records.h, as seen by the Wasm decoder.
// Mirrors bpf/records.h; checked by test/records-layout.test.ts (which reads
// these values back as exported globals of build/meshprobe.wasm).
// Naming: <PREFIX>_<FIELD> = byte offset of the field, <PREFIX>_SIZE = sizeof.
//   HDR = struct mp_rec_hdr, LAT = mp_latency_rec, OPEN = mp_conn_open_rec,
//   CLOSE = mp_conn_close_rec, MEAS = mp_measure_rec, DKEY = mp_drop_key,
//   DVAL = mp_drop_val, PKEY = mp_pkt_key.

export const REC_VERSION: u32 = 1;

export const REC_LATENCY: u32 = 1;
export const REC_CONN_OPEN: u32 = 2;
export const REC_CONN_CLOSE: u32 = 3;
export const REC_MEASURE: u32 = 4;

export const ROLE_UNKNOWN: u32 = 0;
export const ROLE_CLIENT: u32 = 1;
export const ROLE_SERVER: u32 = 2;

// mp_measure_rec.metric
export const METRIC_SETUP: u32 = 1;
export const METRIC_CONNECT_FAIL: u32 = 2;
export const METRIC_TLS: u32 = 3;
export const METRIC_TLS_LIBSSL: u32 = 4;
export const METRIC_LIFETIME: u32 = 5;
export const METRIC_REQUESTS: u32 = 6;
export const METRIC_IDLE: u32 = 7;
export const METRIC_TLS_CONNECT: u32 = 8;
export const METRIC__COUNT: u32 = 9;

// mp_measure_rec.result
export const RESULT_OK: u32 = 0;
export const RESULT_REFUSED: u32 = 1;
export const RESULT_TIMEOUT: u32 = 2;
export const RESULT_RESET: u32 = 3;
export const RESULT_UNREACH: u32 = 4;
export const RESULT_ABORTED: u32 = 5;
export const RESULT_OTHER: u32 = 6;
export const RESULT__COUNT: u32 = 7;

export const CONN_F_ROLE_INFERRED: u32 = 1;

export const AF_INET: u32 = 2;
export const AF_INET6: u32 = 10;

// struct mp_rec_hdr
export const HDR_SIZE: u32 = 16;
export const HDR_KIND: u32 = 0;
export const HDR_VERSION: u32 = 1;
export const HDR_ROLE: u32 = 2;
export const HDR_FAMILY: u32 = 3;
export const HDR_TGID: u32 = 4;
export const HDR_CONN_ID: u32 = 8;

// struct mp_latency_rec
export const LAT_SIZE: u32 = 64;
export const LAT_HDR: u32 = 0;
export const LAT_END_NS: u32 = 16;
export const LAT_LATENCY_NS: u32 = 24;
export const LAT_SRTT_US: u32 = 32;
export const LAT_REQ_BYTES: u32 = 36;
export const LAT_LPORT: u32 = 40;
export const LAT_RPORT: u32 = 42;
export const LAT_SEQ: u32 = 44;
export const LAT_RADDR: u32 = 48;

// struct mp_conn_open_rec
export const OPEN_SIZE: u32 = 96;
export const OPEN_HDR: u32 = 0;
export const OPEN_START_NS: u32 = 16;
export const OPEN_CGROUP_ID: u32 = 24;
export const OPEN_PID: u32 = 32;
export const OPEN_NETNS: u32 = 36;
export const OPEN_LPORT: u32 = 40;
export const OPEN_RPORT: u32 = 42;
export const OPEN_FLAGS: u32 = 44;
export const OPEN_LADDR: u32 = 48;
export const OPEN_RADDR: u32 = 64;
export const OPEN_COMM: u32 = 80;

// struct mp_conn_close_rec
export const CLOSE_SIZE: u32 = 64;
export const CLOSE_HDR: u32 = 0;
export const CLOSE_END_NS: u32 = 16;
export const CLOSE_DURATION_NS: u32 = 24;
export const CLOSE_REQUESTS: u32 = 32;
export const CLOSE_SRTT_US: u32 = 36;
export const CLOSE_BYTES_SENT: u32 = 40;
export const CLOSE_BYTES_RECEIVED: u32 = 48;
export const CLOSE_FLAGS: u32 = 56;
export const CLOSE__PAD: u32 = 60;

// struct mp_measure_rec
export const MEAS_SIZE: u32 = 64;
export const MEAS_HDR: u32 = 0;
export const MEAS_VALUE: u32 = 16;
export const MEAS_AT_NS: u32 = 24;
export const MEAS_NETNS: u32 = 32;
export const MEAS_LPORT: u32 = 36;
export const MEAS_RPORT: u32 = 38;
export const MEAS_METRIC: u32 = 40;
export const MEAS_RESULT: u32 = 41;
export const MEAS_DETAIL: u32 = 42;
export const MEAS__PAD: u32 = 43;
export const MEAS_ERR: u32 = 44;
export const MEAS_RADDR: u32 = 48;

// mp_drop_key.dir
export const DIR_UNKNOWN: u32 = 0;
export const DIR_INGRESS: u32 = 1;
export const DIR_EGRESS: u32 = 2;

// struct mp_drop_key
export const DKEY_SIZE: u32 = 56;
export const DKEY_LOCATION: u32 = 0;
export const DKEY_REASON: u32 = 8;
export const DKEY_NETNS: u32 = 12;
export const DKEY_LPORT: u32 = 16;
export const DKEY_RPORT: u32 = 18;
export const DKEY_PROTOCOL: u32 = 20;
export const DKEY_FAMILY: u32 = 21;
export const DKEY_DIR: u32 = 22;
export const DKEY__PAD: u32 = 23;
export const DKEY_LADDR: u32 = 24;
export const DKEY_RADDR: u32 = 40;

// struct mp_drop_val
export const DVAL_SIZE: u32 = 16;
export const DVAL_PACKETS: u32 = 0;
export const DVAL_BYTES: u32 = 8;

// struct mp_pkt_key
export const PKEY_SIZE: u32 = 8;
export const PKEY_NETNS: u32 = 0;
export const PKEY_LPORT: u32 = 4;
export const PKEY_PROTOCOL: u32 = 6;
export const PKEY__PAD: u32 = 7;

// perf_event_header framing
export const PERF_RECORD_LOST: u32 = 2;
export const PERF_RECORD_SAMPLE: u32 = 9;
export const PERF_HDR_SIZE: u32 = 8;
export const PERF_SAMPLE_RAW_OFF: u32 = 12; // our record starts here (after u32 raw_size at +8)
