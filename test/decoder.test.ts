import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import * as R from '../src/records.js';
import * as H from '../src/histogram.js';
import {
  createState, decodeBytes, readCounters, readGlobalHistograms, readConnTable, readSvcTable, stagingView,
  flush, type State,
} from '../src/wasm.js';

const { encodeLatency, encodeOpen, encodeClose, perfSample, perfLost, perfOther, concatBytes } = R;

function state(connCapacity = 64, serviceCapacity = 16, workers = 2, stagingBytes = 1 << 16): State {
  return createState({ connCapacity, serviceCapacity, workers, stagingBytes });
}
const lat = (conn_id: number, role: number, latency_ns: number, extra: Partial<R.LatencyRecord> = {}) =>
  perfSample(encodeLatency({ conn_id, role, latency_ns, ...extra }));

test('all three record kinds: counters, global histograms, connection and service tables', () => {
  const st = state();
  const bytes = concatBytes([
    perfSample(encodeOpen({
      conn_id: 10, role: R.ROLE_CLIENT, family: R.AF_INET, tgid: 100, pid: 101, comm: 'curl', netns: 4026531840,
      cgroup_id: 77n, start_ns: 1_000n, lport: 40000, rport: 8080, laddr: '10.0.0.1', raddr: '10.0.0.2',
      flags: R.CONN_F_ROLE_INFERRED,
    })),
    lat(10, R.ROLE_CLIENT, 1_500_000, { tgid: 100, srtt_us: 250, lport: 40000, rport: 8080, raddr: '10.0.0.2', seq: 1 }),
    lat(10, R.ROLE_CLIENT, 2_500_000, { tgid: 100, srtt_us: 300, lport: 40000, rport: 8080, raddr: '10.0.0.2', seq: 2 }),
    lat(20, R.ROLE_SERVER, 700_000, { tgid: 200, family: R.AF_INET6, lport: 80, rport: 51000, raddr: 'fd00::5' }),
    lat(21, R.ROLE_SERVER, 900_000, { tgid: 201, family: R.AF_INET6, lport: 80, rport: 51001, raddr: 'fd00::6' }),
    perfSample(encodeClose({
      conn_id: 10, role: R.ROLE_CLIENT, end_ns: 9_000n, duration_ns: 8_000n, requests: 2, srtt_us: 310,
      bytes_sent: 1234n, bytes_received: 5678n,
    })),
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
  assert.deepEqual(g.network, H.histogramOf([250_000, 300_000]));

  const conns = new Map(readConnTable(st).map((x) => [x.conn_id, x]));
  assert.equal(conns.size, 3);
  const c10 = conns.get(10n)!;
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
  assert.deepEqual(c10.hist, H.histogramOf([1_500_000, 2_500_000]));
  const c20 = conns.get(20n)!;
  assert.equal(c20.role, R.ROLE_SERVER);
  assert.equal(c20.family, R.AF_INET6);
  assert.equal(c20.raddr, 'fd00::5');
  assert.equal(c20.tgid, 200);
  assert.equal(c20.closed, false);
  assert.equal(c20.opened, false);
  assert.equal(c20.requests, 1);

  const svcs = readSvcTable(st);
  assert.equal(svcs.length, 2, 'client 10.0.0.2:8080 and server :80');
  const server = svcs.find((s) => s.role === R.ROLE_SERVER)!;
  assert.equal(server.port, 80);
  assert.equal(server.requests, 2);
  assert.equal(server.tgid === 200 || server.tgid === 201, true);
  assert.deepEqual(server.hist, H.histogramOf([700_000, 900_000]));
  const client = svcs.find((s) => s.role === R.ROLE_CLIENT)!;
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
    perfSample(encodeOpen({ conn_id: 5, role: R.ROLE_SERVER, tgid: 9, pid: 10, comm: 'nginx', start_ns: 100n, lport: 443, rport: 1234, laddr: '192.168.1.1', raddr: '192.168.1.9' })),
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
  assert.deepEqual(readConnTable(st).map((x) => x.conn_id).sort(), [1n, 4n]);
  assert.equal(readSvcTable(st).reduce((a, s) => a + s.requests, 0), 2);
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
    parts.push(perfSample(encodeOpen({ conn_id: conn, role: R.ROLE_CLIENT, lport: 1000 + conn, rport: 80, raddr: '10.9.9.9' })));
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
  assert.equal(readConnTable(st).reduce((a, x) => a + x.requests, 0), vals.length);
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

const WORKER_SRC = `
const { workerData, parentPort } = require('node:worker_threads');
import(workerData.wasmUrl).then((W) => {
  const st = W.attachState(workerData.memory);
  const sig = new Int32Array(workerData.signal);
  Atomics.add(sig, 1, 1);
  Atomics.wait(sig, 0, 0);
  let consumed = 0;
  for (let pass = 0; pass < workerData.passes; pass++) {
    for (const chunk of workerData.chunks) consumed += W.decodeBytes(st, workerData.index, chunk);
  }
  parentPort.postMessage(consumed);
}).catch((e) => { throw e; });
`;

test('two worker_threads decoding into one shared memory concurrently: exact totals', async () => {
  const st = state(512, 64, 2, 1 << 15);
  const passes = 20;
  // each worker: its own records; connections and services overlap between workers
  const mk = (w: number) => {
    const parts: Uint8Array[] = [];
    const vals: number[] = [];
    let x = 12345 + w * 777;
    for (let i = 0; i < 6000; i++) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      const conn = 1 + (x % 300);
      const role = conn % 3 === 0 ? R.ROLE_SERVER : R.ROLE_CLIENT;
      const v = 1000 + (x % 50_000_000);
      vals.push(v);
      parts.push(lat(conn, role, v, { lport: role === R.ROLE_SERVER ? 80 + (conn % 7) : 30000 + conn, rport: role === R.ROLE_SERVER ? 40000 + conn : 443 + (conn % 11), raddr: `10.0.${conn % 11}.1`, srtt_us: 100 + (x % 900) }));
      if (i % 1000 === 0) parts.push(perfLost(3));
    }
    // chunks of whole records, each smaller than the staging area
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < parts.length; i += 300) chunks.push(concatBytes(parts.slice(i, i + 300)));
    return { chunks, vals, bytes: chunks.reduce((a, c) => a + c.length, 0) };
  };
  const work = [mk(0), mk(1)];
  const signal = new SharedArrayBuffer(8);
  const sig = new Int32Array(signal);
  const wasmUrl = new URL('../src/wasm.js', import.meta.url).href;
  const results = work.map((wk, index) => {
    const w = new Worker(WORKER_SRC, { eval: true, workerData: { wasmUrl, memory: st.memory, index, chunks: wk.chunks, passes, signal } });
    return new Promise<number>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
  });
  while (Atomics.load(sig, 1) < 2) await new Promise((r) => setTimeout(r, 2));
  Atomics.store(sig, 0, 1);
  Atomics.notify(sig, 0);
  const consumed = await Promise.all(results);
  assert.deepEqual(consumed, work.map((w) => w.bytes * passes));

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

  const conns = readConnTable(st);
  assert.equal(conns.length, 300);
  assert.equal(conns.reduce((a, x) => a + x.requests, 0), total);
  assert.deepEqual(H.mergeAll(conns.map((x) => x.hist!)), H.histogramOf(allVals));
  for (const x of conns) assert.equal(x.hist!.count, x.requests);
  const svcs = readSvcTable(st);
  assert.equal(svcs.reduce((a, s) => a + s.requests, 0), total);
  assert.deepEqual(H.mergeAll(svcs.map((s) => s.hist!)), H.histogramOf(allVals));
  for (const s of svcs) assert.equal(s.hist!.count, s.requests);
});

test('a perf sample carrying a batch of records (as the kernel side packs them) decodes every record', () => {
  const st = state();
  const batch = concatBytes([
    encodeOpen({ conn_id: 30, role: R.ROLE_CLIENT, family: R.AF_INET, tgid: 300, pid: 300, comm: 'wrk', lport: 41000, rport: 80, laddr: '127.0.0.1', raddr: '127.0.0.1' }),
    ...Array.from({ length: 9 }, (_, i) => encodeLatency({ conn_id: 30, role: R.ROLE_CLIENT, latency_ns: 1_000_000 + i * 1000, lport: 41000, rport: 80, raddr: '127.0.0.1', seq: i + 1 })),
    encodeLatency({ conn_id: 31, role: R.ROLE_SERVER, latency_ns: 400_000, lport: 80, rport: 41000, raddr: '127.0.0.1' }),
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
  const conn = readConnTable(st).find((x) => x.conn_id === 30n)!;
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
