// Record layouts of bpf/records.h, as seen by the Wasm decoder: the constants
// scripts/gen-layout.mjs writes into ./generated/layout.ts from the header
// and the C compiler (do not copy them here). Naming: <PREFIX>_<FIELD> = byte
// offset of the field, <PREFIX>_SIZE = sizeof; HDR = struct mp_rec_hdr,
// LAT = mp_latency_rec, OPEN = mp_conn_open_rec, CLOSE = mp_conn_close_rec,
// MEAS = mp_measure_rec, DKEY = mp_drop_key, DVAL = mp_drop_val,
// PKEY = mp_pkt_key. Exported from the module as immutable globals (see
// index.ts), which test/records-layout.test.ts compares with the header.
export * from './generated/layout';
