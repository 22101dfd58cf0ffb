import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as R from '../src/records.js';
import {
  addrBytes,
  concatBytes,
  encodeClose,
  encodeLatency,
  encodeMeasure,
  encodeOpen,
  perfLost,
  perfOther,
  perfSample,
  type LatencyRecord,
  type MeasureRecord,
} from './helpers/records.js';
import { decodeInWorkers } from './helpers/decode-workers.js';
import * as H from '../src/histogram.js';
import {
  createState,
  decodeBytes,
  readCounters,
  readGlobalHistograms,
  readConnTable,
  readSvcTable,
  stagingView,
  flush,
  readMeasureHistograms,
  readMeasureResults,
  rowHistogram,
  type State,
  type ServiceSlot,
} from '../src/wasm.js';

function state(connCapacity = 64, serviceCapacity = 16, workers = 2, stagingBytes = 1 << 16): State {
  return createState({ connCapacity, serviceCapacity, workers, stagingBytes });
}
/** The histogram of a table slot (readConnTable and readSvcTable read it unless told not to). */
function histOf(x: { hist?: H.HistogramSnapshot }): H.HistogramSnapshot {
  assert.ok(x.hist, 'slot read without its histogram');
  return x.hist;
}
/** The list under k, added empty when missing. */
function listAt(m: Map<string, number[]>, k: string): number[] {
  let v = m.get(k);
  if (!v) m.set(k, (v = []));
  return v;
}
const lat = (conn_id: number, role: number, latency_ns: number, extra: Partial<LatencyRecord> = {}) =>
  perfSample(encodeLatency({ conn_id, role, latency_ns, ...extra }));
const meas = (conn_id: number, role: number, metric: number, value: number, extra: Partial<MeasureRecord> = {}) =>
  perfSample(encodeMeasure({ conn_id, role, metric, value, ...extra }));

test('all three record kinds: counters, global histograms, connection and service tables', () => {
  const st = state();
  const bytes = concatBytes([
    perfSample(
      encodeOpen({
        conn_id: 10,
        role: R.ROLE_CLIENT,
        family: R.AF_INET,
        tgid: 100,
        pid: 101,
        comm: 'curl',
        netns: 4026531840,
        cgroup_id: 77n,
        start_ns: 1_000n,
        lport: 40000,
        rport: 8080,
        laddr: '10.0.0.1',
        raddr: '10.0.0.2',
        flags: R.CONN_F_ROLE_INFERRED,
      }),
    ),
    lat(10, R.ROLE_CLIENT, 1_500_000, {
      tgid: 100,
      srtt_us: 250,
      min_rtt_us: 40,
      lport: 40000,
      rport: 8080,
      raddr: '10.0.0.2',
    }),
    lat(10, R.ROLE_CLIENT, 2_500_000, {
      tgid: 100,
      srtt_us: 300,
      min_rtt_us: 45,
      lport: 40000,
      rport: 8080,
      raddr: '10.0.0.2',
    }),
    lat(20, R.ROLE_SERVER, 700_000, { tgid: 200, family: R.AF_INET6, lport: 80, rport: 51000, raddr: 'fd00::5' }),
    lat(21, R.ROLE_SERVER, 900_000, { tgid: 201, family: R.AF_INET6, lport: 80, rport: 51001, raddr: 'fd00::6' }),
    perfSample(
      encodeClose({
        conn_id: 10,
        role: R.ROLE_CLIENT,
        end_ns: 9_000n,
        duration_ns: 8_000n,
        requests: 2,
        srtt_us: 310,
        bytes_sent: 1234n,
        bytes_received: 5678n,
      }),
    ),
  ]);
  assert.equal(decodeBytes(st, 0, bytes), bytes.length);
  const c = readCounters(st);
  assert.equal(c.records_total, 6);
  assert.equal(c.latency_records, 4);
  assert.equal(c.open_records, 1);
  assert.equal(c.close_records, 1);
  assert.equal(c.unknown_records, 0);
  assert.equal(c.unknown_role, 0);
  assert.equal(c.bytes_decoded, bytes.length);

  const g = readGlobalHistograms(st);
  assert.deepEqual(g.client, H.histogramOf([1_500_000, 2_500_000]));
  assert.deepEqual(g.server, H.histogramOf([700_000, 900_000]));
  // network: the windowed minimum RTT; srtt apart (it includes delayed-ACK waits)
  assert.deepEqual(g.network, H.histogramOf([40_000, 45_000]));
  assert.deepEqual(g.srtt, H.histogramOf([250_000, 300_000]));

  const conns = new Map(readConnTable(st).map((x) => [x.conn_id, x]));
  assert.equal(conns.size, 3);
  const c10 = conns.get(10n);
  assert.ok(c10);
  assert.equal(c10.role, R.ROLE_CLIENT);
  assert.equal(c10.family, R.AF_INET);
  assert.equal(c10.tgid, 100);
  assert.equal(c10.pid, 101);
  assert.equal(c10.comm, 'curl');
  assert.equal(c10.netns, 4026531840);
  assert.equal(c10.cgroup_id, 77n);
  assert.equal(c10.laddr, '10.0.0.1');
  assert.equal(c10.raddr, '10.0.0.2');
  assert.equal(c10.lport, 40000);
  assert.equal(c10.rport, 8080);
  assert.equal(c10.flags, R.CONN_F_ROLE_INFERRED);
  assert.equal(c10.start_ns, 1000);
  assert.equal(c10.end_ns, 9000);
  assert.equal(c10.closed, true);
  assert.equal(c10.opened, true);
  assert.equal(c10.requests, 2);
  assert.equal(c10.requests_kernel, 2);
  assert.equal(c10.bytes_sent, 1234);
  assert.equal(c10.bytes_received, 5678);
  assert.equal(c10.srtt_us, 310);
  assert.equal(c10.min_rtt_us, 45, 'the last minimum RTT a latency record carried');
  // the row's compact histogram: those values at its resolution (1/8 of a power of two), count/sum/min/max exact
  assert.deepEqual(c10.hist, rowHistogram(H.histogramOf([1_500_000, 2_500_000])));
  const c20 = conns.get(20n);
  assert.ok(c20);
  assert.equal(c20.role, R.ROLE_SERVER);
  assert.equal(c20.family, R.AF_INET6);
  assert.equal(c20.raddr, 'fd00::5');
  assert.equal(c20.tgid, 200);
  assert.equal(c20.closed, false);
  assert.equal(c20.opened, false);
  assert.equal(c20.requests, 1);

  const svcs = readSvcTable(st);
  assert.equal(svcs.length, 2, 'client 10.0.0.2:8080 and server :80');
  const server = svcs.find((s) => s.role === R.ROLE_SERVER);
  assert.ok(server);
  assert.equal(server.port, 80);
  assert.equal(server.requests, 2);
  assert.equal(server.tgid === 200 || server.tgid === 201, true);
  assert.deepEqual(server.hist, H.histogramOf([700_000, 900_000]));
  const client = svcs.find((s) => s.role === R.ROLE_CLIENT);
  assert.ok(client);
  assert.equal(client.port, 8080);
  assert.equal(client.raddr, '10.0.0.2');
  assert.equal(client.family, R.AF_INET);
  assert.equal(client.requests, 2);
});

test('records of one connection in any order fill the same slot', () => {
  const st = state();
  const bytes = concatBytes([
    perfSample(encodeClose({ conn_id: 5, role: R.ROLE_SERVER, tgid: 9, end_ns: 500n, duration_ns: 400n, requests: 1 })),
    lat(5, R.ROLE_SERVER, 42_000, { tgid: 9, lport: 443, rport: 1234, raddr: '192.168.1.9' }),
    perfSample(
      encodeOpen({
        conn_id: 5,
        role: R.ROLE_SERVER,
        tgid: 9,
        pid: 10,
        comm: 'nginx',
        start_ns: 100n,
        lport: 443,
        rport: 1234,
        laddr: '192.168.1.1',
        raddr: '192.168.1.9',
      }),
    ),
  ]);
  decodeBytes(st, 1, bytes);
  const [c] = readConnTable(st);
  assert.equal(c.conn_id, 5n);
  assert.equal(c.closed, true);
  assert.equal(c.opened, true);
  assert.equal(c.comm, 'nginx');
  assert.equal(c.start_ns, 100);
  assert.equal(c.end_ns, 500);
  assert.equal(c.raddr, '192.168.1.9');
  assert.equal(c.lport, 443);
  assert.equal(c.requests, 1);
});

test('PERF_RECORD_LOST, unknown perf types, bad version / kind / raw size, unknown role', () => {
  const st = state();
  const badVersion = encodeLatency({ conn_id: 1, role: R.ROLE_CLIENT, latency_ns: 5, version: 2 });
  const badKind = encodeLatency({ conn_id: 1, role: R.ROLE_CLIENT, latency_ns: 5, kind: 9 });
  const short = perfSample(encodeLatency({ conn_id: 1, role: R.ROLE_CLIENT, latency_ns: 5 }).subarray(0, 40)); // raw_size 44 < 64
  const bytes = concatBytes([
    perfLost(5, 1),
    perfOther(3 /* PERF_RECORD_COMM */, new Uint8Array(24)),
    lat(1, R.ROLE_CLIENT, 1000),
    perfSample(badVersion),
    perfSample(badKind),
    short,
    perfOther(14, new Uint8Array(8)),
    perfLost(1000, 2),
    lat(2, R.ROLE_UNKNOWN, 2000),
    lat(3, 7, 3000),
    lat(4, R.ROLE_SERVER, 4000),
  ]);
  assert.equal(decodeBytes(st, 0, bytes), bytes.length);
  const c = readCounters(st);
  assert.equal(c.lost_records, 1005);
  assert.equal(c.lost_events, 2);
  assert.equal(c.perf_other, 2);
  assert.equal(c.records_total, 7);
  assert.equal(c.unknown_records, 3);
  assert.equal(c.latency_records, 4);
  assert.equal(c.unknown_role, 2);
  const g = readGlobalHistograms(st);
  assert.equal(g.client.count, 1);
  assert.equal(g.server.count, 1);
  // role-0 records are nowhere else: no connection, no service
  assert.deepEqual(
    readConnTable(st)
      .map((x) => x.conn_id)
      .sort(),
    [1n, 4n],
  );
  assert.equal(
    readSvcTable(st).reduce((a, s) => a + s.requests, 0),
    2,
  );
});

test('a truncated last record is not consumed; a record with size < 8 stops decoding', () => {
  const st = state();
  const a = lat(1, R.ROLE_CLIENT, 1000);
  const b = lat(2, R.ROLE_CLIENT, 2000);
  const whole = concatBytes([a, b]);
  const area = stagingView(st, 0);
  for (const cut of [1, 7, 8, 20, b.length - 1]) {
    const part = whole.subarray(0, a.length + cut);
    area.set(part);
    assert.equal(st.decode(area.byteOffset, part.length), a.length, `cut ${cut}`);
  }
  // the rest arrives: whole record decoded once
  area.set(b);
  assert.equal(st.decode(area.byteOffset, b.length), b.length);
  // size 0 header stops decoding (would loop forever otherwise)
  const bad = concatBytes([a, new Uint8Array(16), b]);
  area.set(bad);
  assert.equal(st.decode(area.byteOffset, bad.length), a.length);
  // decodeBytes reports what it consumed
  assert.equal(decodeBytes(st, 0, whole.subarray(0, whole.length - 3)), a.length);
  const c = readCounters(st);
  assert.equal(c.latency_records, 5 + 1 + 1 + 1);
  assert.equal(c.records_total, 8);
  assert.equal(readGlobalHistograms(st).client.count, 8);
});

test('decode() also works on bytes outside the staging areas', () => {
  const st = state();
  const bytes = concatBytes([lat(1, R.ROLE_CLIENT, 1000), lat(2, R.ROLE_SERVER, 2000)]);
  // one more page past the region: not a staging area, so the extra scratch area is used
  st.memory.grow(1);
  const ptr = st.layout.end;
  new Uint8Array(st.memory.buffer, ptr, bytes.length).set(bytes);
  const n = st.decode(ptr, bytes.length);
  assert.equal(n, bytes.length);
  assert.equal(readCounters(st).latency_records, 2);
});

test('connection table overflow: what does not fit is counted, never lost from the global figures', () => {
  const st = state(4, 64, 1);
  const parts: Uint8Array[] = [];
  const vals: number[] = [];
  for (let conn = 1; conn <= 20; conn++) {
    parts.push(
      perfSample(encodeOpen({ conn_id: conn, role: R.ROLE_CLIENT, lport: 1000 + conn, rport: 80, raddr: '10.9.9.9' })),
    );
    for (let k = 0; k < conn; k++) {
      const v = 1000 * conn + k;
      vals.push(v);
      parts.push(lat(conn, R.ROLE_CLIENT, v, { lport: 1000 + conn, rport: 80, raddr: '10.9.9.9', srtt_us: 10 }));
    }
    parts.push(perfSample(encodeClose({ conn_id: conn, role: R.ROLE_CLIENT, requests: conn })));
  }
  const bytes = concatBytes(parts);
  assert.equal(decodeBytes(st, 0, bytes), bytes.length);
  const c = readCounters(st);
  const conns = readConnTable(st);
  assert.equal(conns.length, 4);
  const fitted = new Set(conns.map((x) => Number(x.conn_id)));
  let expectFull = 0;
  for (let conn = 1; conn <= 20; conn++) if (!fitted.has(conn)) expectFull += conn + 2; // latency + open + close
  assert.equal(c.conn_table_full, expectFull);
  assert.equal(c.latency_records, vals.length);
  const inTable = conns.reduce((a, x) => a + x.requests, 0);
  for (const x of conns) assert.equal(x.requests, Number(x.conn_id));
  assert.equal(inTable + (expectFull - 2 * (20 - 4)), vals.length);
  // global histogram and the service still have everything
  assert.deepEqual(readGlobalHistograms(st).client, H.histogramOf(vals));
  const [svc] = readSvcTable(st);
  assert.equal(svc.requests, vals.length);
  assert.equal(c.svc_table_full, 0);
});

test('service table overflow: counted, global figures and connections keep everything', () => {
  const st = state(64, 2, 1);
  const parts: Uint8Array[] = [];
  const vals: number[] = [];
  const perPort = new Map<number, number>();
  for (let i = 0; i < 200; i++) {
    const port = 8000 + (i % 5);
    const v = 10_000 + i;
    vals.push(v);
    perPort.set(port, (perPort.get(port) ?? 0) + 1);
    parts.push(lat(1 + (i % 10), R.ROLE_SERVER, v, { lport: port, rport: 5000 + i }));
  }
  const bytes = concatBytes(parts);
  decodeBytes(st, 0, bytes);
  const c = readCounters(st);
  const svcs = readSvcTable(st);
  assert.equal(svcs.length, 2);
  const inTable = svcs.reduce((a, s) => a + s.requests, 0);
  for (const s of svcs) assert.equal(s.requests, perPort.get(s.port));
  assert.equal(c.svc_table_full + inTable, vals.length);
  assert.ok(c.svc_table_full > 0);
  assert.equal(c.conn_table_full, 0);
  assert.deepEqual(readGlobalHistograms(st).server, H.histogramOf(vals));
  assert.equal(
    readConnTable(st).reduce((a, x) => a + x.requests, 0),
    vals.length,
  );
});

test('pending figures reach the shared memory on flush (and by themselves every FLUSH_RECORDS)', () => {
  const st = state();
  const bytes = concatBytes([lat(1, R.ROLE_CLIENT, 1000), lat(2, R.ROLE_CLIENT, 2000)]);
  decodeBytes(st, 0, bytes);
  assert.equal(readCounters(st, { flush: false }).latency_records, 0, 'still pending in the worker area');
  assert.equal(flush(st), 0);
  assert.equal(readCounters(st, { flush: false }).latency_records, 2);
  assert.equal(readGlobalHistograms(st, { flush: false }).client.count, 2);
});

// ---------------------------------------------------------------------------

test('two worker_threads decoding into one shared memory concurrently: exact totals', async () => {
  const st = state(512, 64, 2, 1 << 15);
  const passes = 20;
  // each worker: its own records; connections and services overlap between workers
  const mk = (w: number) => {
    const parts: Uint8Array[] = [];
    const vals: number[] = [];
    let x = 12345 + w * 777;
    for (let i = 0; i < 6000; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      const conn = 1 + (x % 300);
      const role = conn % 3 === 0 ? R.ROLE_SERVER : R.ROLE_CLIENT;
      const v = 1000 + (x % 50_000_000);
      vals.push(v);
      parts.push(
        lat(conn, role, v, {
          lport: role === R.ROLE_SERVER ? 80 + (conn % 7) : 30000 + conn,
          rport: role === R.ROLE_SERVER ? 40000 + conn : 443 + (conn % 11),
          raddr: `10.0.${conn % 11}.1`,
          srtt_us: 100 + (x % 900),
          min_rtt_us: 10 + (x % 90),
        }),
      );
      if (i % 1000 === 0) parts.push(perfLost(3));
    }
    // chunks of whole records, each smaller than the staging area
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < parts.length; i += 300) chunks.push(concatBytes(parts.slice(i, i + 300)));
    return { chunks, vals, bytes: chunks.reduce((a, c) => a + c.length, 0) };
  };
  const work = [mk(0), mk(1)];
  const consumed = await decodeInWorkers(
    st,
    work.map((w) => w.chunks),
    passes,
  );
  assert.deepEqual(
    consumed,
    work.map((w) => w.bytes * passes),
  );

  const allVals: number[] = [];
  for (let p = 0; p < passes; p++) for (const w of work) allVals.push(...w.vals);
  const total = allVals.length;
  const c = readCounters(st);
  assert.equal(c.latency_records, total);
  assert.equal(c.records_total, total);
  assert.equal(c.lost_events, 2 * 6 * passes);
  assert.equal(c.lost_records, 3 * 2 * 6 * passes);
  assert.equal(c.bytes_decoded, (work[0].bytes + work[1].bytes) * passes);
  assert.equal(c.conn_table_full, 0);
  assert.equal(c.svc_table_full, 0);

  const g = readGlobalHistograms(st);
  assert.equal(g.client.count + g.server.count, total);
  assert.deepEqual(H.merge(g.client, g.server), H.histogramOf(allVals));
  assert.equal(g.network.count, total);
  assert.equal(g.srtt.count, total);

  const conns = readConnTable(st);
  assert.equal(conns.length, 300);
  assert.equal(
    conns.reduce((a, x) => a + x.requests, 0),
    total,
  );
  // the rows' compact histograms (1/8 of a power of two): every value in its row bucket, none lost to a race
  assert.deepEqual(H.mergeAll(conns.map((x) => histOf(x))), rowHistogram(H.histogramOf(allVals)));
  for (const x of conns) assert.equal(histOf(x).count, x.requests);
  const svcs = readSvcTable(st);
  assert.equal(
    svcs.reduce((a, s) => a + s.requests, 0),
    total,
  );
  assert.deepEqual(H.mergeAll(svcs.map((s) => histOf(s))), H.histogramOf(allVals));
  for (const s of svcs) assert.equal(histOf(s).count, s.requests);
});

test('a perf sample carrying a batch of records (as the kernel side packs them) decodes every record', () => {
  const st = state();
  const batch = concatBytes([
    encodeOpen({
      conn_id: 30,
      role: R.ROLE_CLIENT,
      family: R.AF_INET,
      tgid: 300,
      pid: 300,
      comm: 'wrk',
      lport: 41000,
      rport: 80,
      laddr: '127.0.0.1',
      raddr: '127.0.0.1',
    }),
    ...Array.from({ length: 9 }, (_, i) =>
      encodeLatency({
        conn_id: 30,
        role: R.ROLE_CLIENT,
        latency_ns: 1_000_000 + i * 1000,
        lport: 41000,
        rport: 80,
        raddr: '127.0.0.1',
      }),
    ),
    encodeLatency({
      conn_id: 31,
      role: R.ROLE_SERVER,
      latency_ns: 400_000,
      lport: 80,
      rport: 41000,
      raddr: '127.0.0.1',
    }),
  ]);
  const bytes = concatBytes([perfSample(batch), lat(30, R.ROLE_CLIENT, 2_000_000)]);
  assert.equal(decodeBytes(st, 0, bytes), bytes.length);
  const c = readCounters(st);
  assert.equal(c.records_total, 12);
  assert.equal(c.latency_records, 11);
  assert.equal(c.open_records, 1);
  assert.equal(c.unknown_records, 0);
  const g = readGlobalHistograms(st);
  assert.equal(g.client.count, 10);
  assert.equal(g.server.count, 1);
  const conn = readConnTable(st).find((x) => x.conn_id === 30n);
  assert.ok(conn);
  assert.equal(conn.requests, 10);
  assert.equal(conn.comm, 'wrk');
  // a batch whose last record is cut short: the whole ones count, the rest is an unknown record
  const st2 = state();
  const cut = batch.subarray(0, batch.length - 10);
  assert.equal(decodeBytes(st2, 0, perfSample(cut)), perfSample(cut).length);
  const c2 = readCounters(st2);
  assert.equal(c2.latency_records, 9);
  assert.equal(c2.unknown_records, 1);
});

// ---------------------------------------------------------------------------
// Measure records (MP_REC_MEASURE)

const METRICS = [
  R.METRIC_SETUP,
  R.METRIC_CONNECT_FAIL,
  R.METRIC_TLS,
  R.METRIC_TLS_LIBSSL,
  R.METRIC_LIFETIME,
  R.METRIC_REQUESTS,
  R.METRIC_IDLE,
  R.METRIC_TLS_CONNECT,
];
const ROLES = [R.ROLE_CLIENT, R.ROLE_SERVER] as const;
const roleKey = (role: number) => (role === R.ROLE_CLIENT ? 'client' : 'server');

/** Exact nearest-rank percentile of the values. */
function exactPercentile(vals: readonly number[], q: number): number {
  const s = [...vals].sort((a, b) => a - b);
  return s[Math.max(1, Math.ceil(q * s.length)) - 1];
}

/** Values of (metric, role): distinct sets, ns except METRIC_REQUESTS (a small count). */
function measureValues(metric: number, role: number): number[] {
  const n = 5 + 3 * metric + role;
  return Array.from({ length: n }, (_, k) =>
    metric === R.METRIC_REQUESTS ? 1 + k * (role + 1) : metric * 1_000_000 + role * 250_000 + k * k * 9_973 + k * 101,
  );
}

const SRV_PORT = 8443;
const CLI_PORT = 443;
const CLI_ADDR = '10.0.0.9';

test('measure records: each metric and role in its global histogram and service slot; results per (metric, result)', () => {
  const st = state(64, 64, 1);
  const parts: Uint8Array[] = [];
  const results = Array.from({ length: R.METRIC__COUNT }, () => new Array<number>(R.RESULT__COUNT + 1).fill(0));
  const causes = [
    R.RESULT_OK,
    R.RESULT_REFUSED,
    R.RESULT_TIMEOUT,
    R.RESULT_RESET,
    R.RESULT_UNREACH,
    R.RESULT_ABORTED,
    R.RESULT_OTHER,
    9 /* out of range */,
  ];
  let n = 0;
  for (const metric of METRICS) {
    for (const role of ROLES) {
      measureValues(metric, role).forEach((value, k) => {
        const result = metric === R.METRIC_CONNECT_FAIL ? causes[k % causes.length] : R.RESULT_OK;
        results[metric][Math.min(result, R.RESULT__COUNT)]++;
        const conn = 100 + (n++ % 13);
        parts.push(
          meas(
            conn,
            role,
            metric,
            value,
            role === R.ROLE_SERVER
              ? { lport: SRV_PORT, rport: 50000 + k, raddr: `10.1.0.${k}`, result, tgid: 7 }
              : {
                  lport: 40000 + k,
                  rport: CLI_PORT,
                  raddr: CLI_ADDR,
                  result,
                  tgid: 8,
                  detail: 3,
                  err: result ? 111 : 0,
                  netns: 4026531840,
                },
          ),
        );
        // latency records of the same ports and peer, interleaved
        if (k % 3 === 0) {
          parts.push(
            lat(
              conn,
              role,
              2_000_000 + k,
              role === R.ROLE_SERVER
                ? { lport: SRV_PORT, rport: 50000 + k, raddr: `10.1.0.${k}` }
                : { lport: 40000 + k, rport: CLI_PORT, raddr: CLI_ADDR },
            ),
          );
        }
      });
    }
  }
  // an IPv6 client peer: its own slot
  const v6 = [3_000_000, 5_000_000, 4_000_000];
  for (const v of v6)
    parts.push(
      meas(200, R.ROLE_CLIENT, R.METRIC_TLS, v, { family: R.AF_INET6, rport: CLI_PORT, raddr: 'fd00::9', detail: 2 }),
    );
  results[R.METRIC_TLS][R.RESULT_OK] += v6.length;
  const bytes = concatBytes(parts);
  assert.equal(decodeBytes(st, 0, bytes), bytes.length);

  const nMeasure =
    METRICS.reduce((a, m) => a + ROLES.reduce((b, r) => b + measureValues(m, r).length, 0), 0) + v6.length;
  const c = readCounters(st);
  assert.equal(c.measure_records, nMeasure);
  assert.equal(c.latency_records, parts.length - nMeasure);
  assert.equal(c.records_total, parts.length);
  assert.equal(c.unknown_records, 0);
  assert.equal(c.unknown_role, 0);
  assert.equal(c.measure_unknown_metric, 0);
  assert.equal(c.svc_table_full, 0);

  // global histograms of each (metric, role): exact counts, sums, min/max, buckets; percentiles within 1%
  const mh = readMeasureHistograms(st);
  assert.deepEqual(Object.keys(mh).map(Number), METRICS);
  for (const metric of METRICS) {
    for (const role of ROLES) {
      const vals = measureValues(metric, role);
      if (metric === R.METRIC_TLS && role === R.ROLE_CLIENT) vals.push(...v6);
      const h = mh[metric][roleKey(role)];
      assert.equal(h.count, vals.length, `count ${metric}/${role}`);
      assert.equal(
        h.sum_ns,
        vals.reduce((a, b) => a + b, 0),
        `sum ${metric}/${role}`,
      );
      assert.equal(h.min_ns, Math.min(...vals));
      assert.equal(h.max_ns, Math.max(...vals));
      assert.deepEqual(h, H.histogramOf(vals), `histogram ${metric}/${role}`);
      for (const q of [0.5, 0.9, 0.99]) {
        const want = exactPercentile(vals, q);
        assert.ok(
          Math.abs(H.percentile(h, q) - want) <= want * 0.01,
          `p${q * 100} ${metric}/${role}: ${H.percentile(h, q)} vs ${want}`,
        );
      }
    }
  }
  // METRIC_REQUESTS values < 128 are exact
  assert.equal(
    H.percentile(mh[R.METRIC_REQUESTS].server, 0.5),
    exactPercentile(measureValues(R.METRIC_REQUESTS, R.ROLE_SERVER), 0.5),
  );

  // latency global histograms hold latency records only
  const g = readGlobalHistograms(st);
  assert.equal(g.client.count + g.server.count, c.latency_records);
  assert.ok(g.client.min_ns >= 2_000_000 && g.server.max_ns < 2_000_100);

  // results per (metric, result), every role
  assert.deepEqual(readMeasureResults(st), results);

  // service slots: one per (metric, role, port[, peer]) plus the two latency ones
  const svcs = readSvcTable(st);
  assert.equal(svcs.length, 2 + METRICS.length * 2 + 1);
  const latencySlots = svcs.filter((s) => s.metric === 0);
  assert.equal(latencySlots.length, 2);
  assert.deepEqual(readSvcTable(st, { metric: 0 }), latencySlots);
  assert.equal(
    latencySlots.reduce((a, s) => a + s.requests, 0),
    c.latency_records,
  );
  for (const metric of METRICS) {
    assert.equal(readSvcTable(st, { metric }).length, metric === R.METRIC_TLS ? 3 : 2);
    for (const role of ROLES) {
      const vals = measureValues(metric, role);
      const slot = svcs.find(
        (s) => s.metric === metric && s.role === role && (role === R.ROLE_SERVER || s.raddr === CLI_ADDR),
      );
      assert.ok(slot, `slot ${metric}/${role}`);
      assert.equal(slot.port, role === R.ROLE_SERVER ? SRV_PORT : CLI_PORT);
      assert.equal(slot.family, R.AF_INET);
      assert.equal(slot.tgid, role === R.ROLE_SERVER ? 7 : 8);
      assert.equal(slot.requests, vals.length);
      assert.deepEqual(slot.hist, H.histogramOf(vals));
    }
  }
  const v6slot = svcs.find((s) => s.family === R.AF_INET6);
  assert.ok(v6slot);
  assert.equal(v6slot.metric, R.METRIC_TLS);
  assert.equal(v6slot.raddr, 'fd00::9');
  assert.equal(v6slot.port, CLI_PORT);
  assert.deepEqual(v6slot.hist, H.histogramOf(v6));

  // measure records do not touch the connection table
  for (const x of readConnTable(st)) assert.equal(x.requests, histOf(x).count);
  assert.equal(
    readConnTable(st).reduce((a, x) => a + x.requests, 0),
    c.latency_records,
  );
});

// The key formula of layout version 1 (assembly/index.ts svcFind), for latency records.
const M64 = (1n << 64n) - 1n;
function mix64(x: bigint): bigint {
  x ^= x >> 33n;
  x = (x * 0xff51afd7ed558ccdn) & M64;
  x ^= x >> 33n;
  x = (x * 0xc4ceb9fe1a85ec53n) & M64;
  x ^= x >> 33n;
  return x;
}
/** The key of a latency-record service slot: servers by port and network namespace, clients by peer. */
function latencyKey(s: ServiceSlot, raddr: Uint8Array): bigint {
  let k: bigint;
  if (s.role === R.ROLE_SERVER) {
    k = mix64(mix64(0x5345525645520000n | (BigInt(s.role) << 16n) | BigInt(s.port)) ^ BigInt(s.netns));
  } else {
    const dv = new DataView(raddr.buffer);
    let a = dv.getBigUint64(0, true);
    let b = 0n;
    if (s.family === R.AF_INET) a &= 0xffffffffn;
    else b = dv.getBigUint64(8, true);
    k = mix64(
      mix64(a ^ 0x434c49454e540000n) ^ b ^ ((BigInt(s.role) << 40n) | (BigInt(s.family) << 24n) | BigInt(s.port)),
    );
  }
  return k === 0n ? 1n : k;
}

test('latency-record service slots: same keys and figures with or without measure records on the same ports', () => {
  const latParts: Uint8Array[] = [];
  const mixed: Uint8Array[] = [];
  for (let i = 0; i < 300; i++) {
    const conn = 1 + (i % 60);
    const role = conn % 2 ? R.ROLE_SERVER : R.ROLE_CLIENT;
    const family = conn % 5 === 0 ? R.AF_INET6 : R.AF_INET;
    const raddr = family === R.AF_INET6 ? `fd00::${1 + (conn % 3)}` : `10.0.0.${1 + (conn % 3)}`;
    const ports =
      role === R.ROLE_SERVER
        ? { lport: 80 + (conn % 4), rport: 40000 + conn }
        : { lport: 40000 + conn, rport: 443 + (conn % 4) };
    const l = lat(conn, role, 10_000 + i * 997, { family, raddr, ...ports, tgid: 5 });
    latParts.push(l);
    // around each latency record: measure records of some metrics with the same role, ports and peer
    for (const metric of METRICS)
      if ((i + metric) % 4 === 0) mixed.push(meas(conn, role, metric, 1000 + i, { family, raddr, ...ports, tgid: 5 }));
    mixed.push(l);
    if (i % 7 === 0) mixed.push(meas(conn, role, R.METRIC_IDLE, 77 + i, { family, raddr, ...ports, tgid: 5 }));
  }
  const a = state(64, 64, 1);
  const b = state(64, 64, 1);
  decodeBytes(a, 0, concatBytes(latParts));
  decodeBytes(b, 0, concatBytes(mixed));
  // slot indexes differ between the two tables: compared as 0
  const strip = (xs: ServiceSlot[]) => xs.map((x) => ({ ...x, slot: 0 })).sort((x, y) => (x.key < y.key ? -1 : 1));
  const only = strip(readSvcTable(a));
  assert.ok(only.every((s) => s.metric === 0));
  assert.equal(only.length, 2 + 2 * 3 * 2, 'servers on 2 ports; clients: 2 ports x 3 peers x 2 families');
  assert.deepEqual(strip(readSvcTable(b, { metric: 0 })), only);
  assert.ok(readSvcTable(b).length > only.length, 'measure slots of the same ports are separate');
  // the keys are as written down (latencyKey)
  for (const s of readSvcTable(a))
    assert.equal(s.key, latencyKey(s, addrBytes(s.raddr)), `key of ${s.role} ${s.raddr}:${s.port}`);
  // measure slots never share a key with a latency slot of the same (role, port, peer)
  const keys = readSvcTable(b).map((s) => s.key);
  assert.equal(new Set(keys).size, keys.length);
  assert.deepEqual(readGlobalHistograms(b), readGlobalHistograms(a));
  assert.deepEqual(readConnTable(b), readConnTable(a));
  const ca = readCounters(a),
    cb = readCounters(b);
  assert.equal(cb.latency_records, ca.latency_records);
  assert.equal(cb.measure_records, mixed.length - latParts.length);
});

test('measure records: truncated, unknown version, unknown metric, unknown role, service table full', () => {
  const st = state(64, 4, 1);
  const good = encodeMeasure({
    conn_id: 1,
    role: R.ROLE_CLIENT,
    metric: R.METRIC_SETUP,
    value: 5000,
    rport: 80,
    raddr: '10.0.0.1',
  });
  const bytes = concatBytes([
    perfSample(good), // ok
    perfSample(good.subarray(0, 40)), // raw size 44 < 64: unknown
    perfSample(good, 60), // raw_size says 60: unknown
    perfSample(encodeMeasure({ conn_id: 1, role: R.ROLE_CLIENT, metric: R.METRIC_SETUP, value: 1, version: 2 })), // unknown
    perfSample(
      concatBytes([
        encodeLatency({ conn_id: 2, role: R.ROLE_SERVER, latency_ns: 700, lport: 9 }),
        good.subarray(0, 63),
      ]),
      64 + 63,
    ), // latency ok + unknown
    meas(3, R.ROLE_CLIENT, 0, 1000), // metric 0: unknown metric
    meas(3, R.ROLE_SERVER, R.METRIC__COUNT, 1000), // metric 8: unknown metric
    meas(3, R.ROLE_SERVER, 255, 1000), // unknown metric
    meas(4, R.ROLE_UNKNOWN, R.METRIC_CONNECT_FAIL, 9000, { result: R.RESULT_REFUSED }), // unknown role: results only
    meas(4, 7, R.METRIC_LIFETIME, 9000), // unknown role
  ]);
  assert.equal(decodeBytes(st, 0, bytes), bytes.length);
  let c = readCounters(st);
  assert.equal(c.records_total, 11);
  assert.equal(c.unknown_records, 4);
  assert.equal(c.latency_records, 1);
  assert.equal(c.measure_records, 6);
  assert.equal(c.measure_unknown_metric, 3);
  assert.equal(c.unknown_role, 2);
  assert.equal(c.svc_table_full, 0);
  const mh = readMeasureHistograms(st);
  assert.deepEqual(mh[R.METRIC_SETUP].client, H.histogramOf([5000]));
  for (const m of METRICS) {
    for (const r of ROLES)
      if (!(m === R.METRIC_SETUP && r === R.ROLE_CLIENT)) assert.equal(mh[m][roleKey(r)].count, 0, `${m}/${r}`);
  }
  const res = readMeasureResults(st);
  assert.equal(res[R.METRIC_SETUP][R.RESULT_OK], 1);
  assert.equal(res[R.METRIC_CONNECT_FAIL][R.RESULT_REFUSED], 1);
  assert.equal(res[R.METRIC_LIFETIME][R.RESULT_OK], 1);
  assert.equal(
    res.flat().reduce((a, b) => a + b, 0),
    3,
  );
  assert.deepEqual(res[0], new Array(R.RESULT__COUNT + 1).fill(0));
  assert.deepEqual(
    readSvcTable(st)
      .map((s) => [s.metric, s.role, s.port])
      .sort(),
    [
      [0, R.ROLE_SERVER, 9],
      [R.METRIC_SETUP, R.ROLE_CLIENT, 80],
    ],
  );

  // a full service table: counted; the global figures keep everything
  const vals: number[] = [];
  const more: Uint8Array[] = [];
  for (let i = 0; i < 40; i++) {
    vals.push(100_000 + i);
    more.push(meas(10 + i, R.ROLE_SERVER, R.METRIC_IDLE, 100_000 + i, { lport: 1000 + i }));
  }
  decodeBytes(st, 0, concatBytes(more));
  c = readCounters(st);
  const idle = readSvcTable(st, { metric: R.METRIC_IDLE });
  assert.equal(readSvcTable(st).length, 4);
  assert.equal(idle.length, 2);
  assert.equal(c.svc_table_full + idle.reduce((a, s) => a + s.requests, 0), 40);
  assert.deepEqual(readMeasureHistograms(st)[R.METRIC_IDLE].server, H.histogramOf(vals));
  assert.equal(readMeasureResults(st)[R.METRIC_IDLE][R.RESULT_OK], 40);
});

test('two worker_threads decoding interleaved latency and measure batches: exact totals', async () => {
  const st = state(512, 256, 2, 1 << 15);
  const passes = 10;
  const mk = (w: number) => {
    const parts: Uint8Array[] = [];
    const lats: number[] = [];
    const mvals = new Map<string, number[]>(); // "metric/role" -> values
    const perSlot = new Map<string, number[]>(); // "metric/role/port/raddr" -> values
    const results = Array.from({ length: R.METRIC__COUNT }, () => new Array<number>(R.RESULT__COUNT + 1).fill(0));
    let x = 999 + w * 4242;
    const next = () => {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      return x;
    };
    for (let i = 0; i < 5000; i++) {
      const r = next();
      const conn = 1 + (r % 200);
      const role = conn % 3 === 0 ? R.ROLE_SERVER : R.ROLE_CLIENT;
      const lport = role === R.ROLE_SERVER ? 80 + (conn % 5) : 30000 + conn;
      const rport = role === R.ROLE_SERVER ? 40000 + conn : 443 + (conn % 7);
      const raddr = `10.0.${conn % 7}.1`;
      if (r % 5 === 0) {
        const metric = METRICS[(r >>> 3) % METRICS.length];
        const value = metric === R.METRIC_REQUESTS ? (r >>> 5) % 500 : 1000 + ((r >>> 5) % 80_000_000);
        const result = metric === R.METRIC_CONNECT_FAIL ? (r >>> 11) % R.RESULT__COUNT : R.RESULT_OK;
        results[metric][result]++;
        const k = `${metric}/${role}`;
        listAt(mvals, k).push(value);
        const sk = `${metric}/${role}/${role === R.ROLE_SERVER ? lport : rport}/${role === R.ROLE_SERVER ? '0.0.0.0' : raddr}`;
        listAt(perSlot, sk).push(value);
        parts.push(meas(conn, role, metric, value, { lport, rport, raddr, result }));
      } else {
        const v = 1000 + (r % 50_000_000);
        lats.push(v);
        parts.push(lat(conn, role, v, { lport, rport, raddr, srtt_us: 100 + (r % 900) }));
      }
    }
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < parts.length; i += 250) chunks.push(concatBytes(parts.slice(i, i + 250)));
    return {
      chunks,
      lats,
      mvals,
      perSlot,
      results,
      measures: parts.length - lats.length,
      bytes: chunks.reduce((a, c) => a + c.length, 0),
    };
  };
  const work = [mk(0), mk(1)];
  assert.deepEqual(
    await decodeInWorkers(
      st,
      work.map((w) => w.chunks),
      passes,
    ),
    work.map((w) => w.bytes * passes),
  );

  const times = <T>(xs: T[]) => Array.from({ length: passes }, () => xs).flat();
  const allLats = times([...work[0].lats, ...work[1].lats]);
  const c = readCounters(st);
  assert.equal(c.latency_records, allLats.length);
  assert.equal(c.measure_records, (work[0].measures + work[1].measures) * passes);
  assert.equal(c.records_total, c.latency_records + c.measure_records);
  assert.equal(c.bytes_decoded, (work[0].bytes + work[1].bytes) * passes);
  assert.equal(c.svc_table_full, 0);
  assert.equal(c.conn_table_full, 0);
  const g = readGlobalHistograms(st);
  assert.deepEqual(H.merge(g.client, g.server), H.histogramOf(allLats));

  const mh = readMeasureHistograms(st);
  for (const metric of METRICS) {
    for (const role of ROLES) {
      const k = `${metric}/${role}`;
      const vals = times([...(work[0].mvals.get(k) ?? []), ...(work[1].mvals.get(k) ?? [])]);
      assert.deepEqual(mh[metric][roleKey(role)], H.histogramOf(vals), k);
    }
  }
  const results = work[0].results.map((row, m) => row.map((n, r) => (n + work[1].results[m][r]) * passes));
  assert.deepEqual(readMeasureResults(st), results);

  const svcs = readSvcTable(st);
  const lat0 = svcs.filter((s) => s.metric === 0);
  assert.equal(
    lat0.reduce((a, s) => a + s.requests, 0),
    allLats.length,
  );
  assert.deepEqual(H.mergeAll(lat0.map((s) => histOf(s))), H.histogramOf(allLats));
  const slotKeys = new Set([...work[0].perSlot.keys(), ...work[1].perSlot.keys()]);
  assert.equal(svcs.length - lat0.length, slotKeys.size);
  for (const s of svcs) {
    assert.equal(histOf(s).count, s.requests);
    if (s.metric === 0) continue;
    const k = `${s.metric}/${s.role}/${s.port}/${s.role === R.ROLE_SERVER ? '0.0.0.0' : s.raddr}`;
    const vals = times([...(work[0].perSlot.get(k) ?? []), ...(work[1].perSlot.get(k) ?? [])]);
    assert.deepEqual(s.hist, H.histogramOf(vals), k);
  }
});

test('services: servers on one port in two network namespaces (two pods) are two; loopback peers too, other peers not', () => {
  const st = state(64, 64, 1);
  const [A, B] = [4026532001, 4026532002];
  decodeBytes(
    st,
    0,
    concatBytes([
      lat(1, R.ROLE_SERVER, 1000, { lport: 8080, rport: 40001, raddr: '10.1.0.9', netns: A }),
      lat(2, R.ROLE_SERVER, 2000, { lport: 8080, rport: 40002, raddr: '10.1.0.9', netns: B }),
      lat(3, R.ROLE_CLIENT, 3000, { lport: 40003, rport: 15001, raddr: '127.0.0.1', netns: A }),
      lat(4, R.ROLE_CLIENT, 4000, { lport: 40004, rport: 15001, raddr: '127.0.0.1', netns: B }),
      lat(5, R.ROLE_CLIENT, 5000, { lport: 40005, rport: 80, raddr: '10.96.0.10', netns: A }),
      lat(6, R.ROLE_CLIENT, 6000, { lport: 40006, rport: 80, raddr: '10.96.0.10', netns: B }),
      lat(7, R.ROLE_CLIENT, 7000, {
        lport: 40007,
        rport: 15001,
        raddr: '::ffff:7f00:1',
        family: R.AF_INET6,
        netns: A,
      }),
      lat(8, R.ROLE_CLIENT, 8000, {
        lport: 40008,
        rport: 15001,
        raddr: '::ffff:7f00:1',
        family: R.AF_INET6,
        netns: B,
      }),
    ]),
  );
  const svcs = readSvcTable(st);
  const at = (role: number, port: number) => svcs.filter((x) => x.role === role && x.port === port);
  assert.deepEqual(
    at(R.ROLE_SERVER, 8080)
      .map((x) => x.netns)
      .sort(),
    [A, B],
  );
  assert.equal(at(R.ROLE_CLIENT, 15001).length, 4, 'loopback peers per namespace (IPv4 and v4-mapped)');
  assert.equal(at(R.ROLE_CLIENT, 80).length, 1, 'one service 10.96.0.10:80 whatever the caller');
  for (const x of svcs) assert.equal(x.requests, x.role === R.ROLE_CLIENT && x.port === 80 ? 2 : 1);
});
