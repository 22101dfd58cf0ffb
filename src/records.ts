/**
 * The contract between the BPF programs and user space, bpf/records.h: its
 * constants, struct layouts and kernel counters, as scripts/gen-layout.mjs
 * writes them into ./generated/layout.ts from the header and the C compiler
 * (never copy a value here). Names are the same as in assembly/records.ts:
 * <PREFIX>_<FIELD> is a byte offset, <PREFIX>_SIZE a sizeof (HDR = mp_rec_hdr,
 * LAT = mp_latency_rec, OPEN = mp_conn_open_rec, CLOSE = mp_conn_close_rec,
 * MEAS = mp_measure_rec, DKEY = mp_drop_key, DVAL = mp_drop_val,
 * PKEY = mp_pkt_key, LKEY = listen_key); MP_X is X; STAT_NAMES names the
 * kernel counters. Builders of synthetic records: test/helpers/records.ts.
 */
export * from './generated/layout.js';
