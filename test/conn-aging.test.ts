// The connection table holds exactly --max-connections rows, counts what it
// refuses in connections, and gives closed connections' rows back without
// changing any figure: the views, the services and the mesh-overhead
// analysis read the same before and after a sweep (src/pipeline/aging.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as R from '../src/records.js';
import * as H from '../src/histogram.js';
import {
  allConnections,
  createState,
  decodeBytes,
  readConnTable,
  readCounters,
  readGlobalHistograms,
  readSvcTable,
  rowHistogram,
  type ConnSlot,
  type State,
} from '../src/wasm.js';
import { ConnectionAger, ServiceAger } from '../src/pipeline/aging.js';
import { analyzeOverhead } from '../src/report/overhead.js';
import { concatBytes, encodeClose, encodeLatency, encodeMeasure, encodeOpen, perfSample } from './helpers/records.js';
import { connectionsSection, readConnectionFigures } from '../src/report/connections.js';
import { decodeInWorkers } from './helpers/decode-workers.js';

const state = (rows: number, workers = 1) =>
  createState({ connCapacity: rows, serviceCapacity: 64, workers, stagingBytes: 1 << 16 });
const NETNS = 4026531840;
const LATER = 10n ** 15n; // "now" for sweeps: every test close (end_ns below 1e12) is older than the grace

interface Conn {
  id: number;
  role: number;
  tgid: number;
  comm: string;
  lport: number;
  rport: number;
  laddr?: string;
  raddr?: string;
}

/** Open, `lats` latency records, close (end_ns `end`; 0 = no close) of one connection. */
function connBytes(c: Conn, lats: number[], end = 1000): Uint8Array {
  const addr = { laddr: c.laddr ?? '127.0.0.1', raddr: c.raddr ?? '127.0.0.1' };
  const parts = [
    perfSample(
      encodeOpen({
        conn_id: c.id,
        role: c.role,
        tgid: c.tgid,
        pid: c.tgid,
        comm: c.comm,
        netns: NETNS,
        start_ns: 10n,
        lport: c.lport,
        rport: c.rport,
        ...addr,
      }),
    ),
    ...lats.map((v) =>
      perfSample(
        encodeLatency({
          conn_id: c.id,
          role: c.role,
          tgid: c.tgid,
          latency_ns: v,
          lport: c.lport,
          rport: c.rport,
          raddr: addr.raddr,
        }),
      ),
    ),
  ];
  if (end > 0) parts.push(perfSample(encodeClose({ conn_id: c.id, role: c.role, end_ns: end, requests: lats.length })));
  return concatBytes(parts);
}

function decodeAll(st: State, bytes: Uint8Array): void {
  assert.equal(decodeBytes(st, 0, bytes), bytes.length);
}

test('--max-connections N holds N connections (not a power of two), the next is refused and counted once', () => {
  for (const rows of [5, 3000]) {
    const st = state(rows);
    const parts: Uint8Array[] = [];
    for (let i = 1; i <= rows + 1; i++)
      parts.push(
        connBytes({ id: i, role: R.ROLE_CLIENT, tgid: 7, comm: 'c', lport: 20000 + i, rport: 80 }, [1000, 2000], 0),
      );
    decodeAll(st, concatBytes(parts));
    const c = readCounters(st);
    assert.equal(readConnTable(st, { histograms: false }).length, rows, `${rows} rows`);
    assert.equal(st.exports.connRowsInUse(), rows);
    assert.equal(c.conn_refused, 1, 'one connection refused');
    assert.equal(c.conn_table_full, 3, 'its records: open + 2 latency');
    assert.equal(readGlobalHistograms(st).client.count, 2 * (rows + 1), 'the views have every request');
  }
});

test('a sweep frees closed rows; their figures stay in the views, services and aged counts; the rows take new connections', () => {
  const st = state(8);
  const ager = new ConnectionAger(st);
  const lats = (i: number) => Array.from({ length: i }, (_, k) => 1000 * i + k);
  const round = (from: number) =>
    concatBytes(
      Array.from({ length: 8 }, (_, k) =>
        connBytes(
          { id: from + k, role: R.ROLE_CLIENT, tgid: 7, comm: 'c', lport: 30000 + from + k, rport: 80 },
          lats(k + 1),
        ),
      ),
    );
  decodeAll(st, round(1));
  const before = readGlobalHistograms(st).client;
  assert.equal(ager.tick(LATER), 8, 'the table is full: all 8 closed rows go');
  assert.equal(st.exports.connRowsInUse(), 0);
  assert.deepEqual(readGlobalHistograms(st).client, before);
  assert.equal(st.aged.connections, 8);
  assert.equal(st.aged.requests, 36);
  // one folded row: the same process, peer and service
  assert.equal(st.aged.rows.length, 1);
  assert.equal(st.aged.rows[0].requests, 36);
  // the sum of the rows' compact histograms: those values at a row's resolution, count/sum/min/max exact
  assert.deepEqual(st.aged.rows[0].hist, rowHistogram(H.histogramOf([1, 2, 3, 4, 5, 6, 7, 8].flatMap(lats))));
  assert.ok(st.aged.rows[0].lport >= 65536, 'the ephemeral port became a pseudo-port');

  decodeAll(st, round(101));
  const c = readCounters(st);
  assert.equal(c.conn_refused, 0);
  assert.equal(c.conn_table_full, 0);
  assert.equal(readConnTable(st, { histograms: false }).length, 8);
  const [svc] = readSvcTable(st);
  assert.equal(svc.requests, 72, 'the service counts both rounds');
  // not full enough: nothing to do
  const st2 = state(8);
  decodeAll(st2, connBytes({ id: 1, role: R.ROLE_CLIENT, tgid: 7, comm: 'c', lport: 30001, rport: 80 }, [5]));
  assert.equal(new ConnectionAger(st2).tick(LATER), 0);
  assert.equal(st2.exports.connRowsInUse(), 1);
});

test('closes within the grace period, and open connections, keep their rows', () => {
  const st = state(4);
  const ager = new ConnectionAger(st);
  decodeAll(
    st,
    concatBytes([
      connBytes({ id: 1, role: R.ROLE_CLIENT, tgid: 7, comm: 'c', lport: 30001, rport: 80 }, [5], 1_000),
      connBytes({ id: 2, role: R.ROLE_CLIENT, tgid: 7, comm: 'c', lport: 30002, rport: 80 }, [5], 5_400_000_000),
      connBytes({ id: 3, role: R.ROLE_CLIENT, tgid: 7, comm: 'c', lport: 30003, rport: 80 }, [5], 0),
    ]),
  );
  assert.equal(ager.sweep(5_500_000_000n), 1, 'only the one closed more than 250 ms ago');
  assert.deepEqual(
    readConnTable(st, { histograms: false })
      .map((c) => c.conn_id)
      .sort(),
    [2n, 3n],
  );
});

/**
 * A mesh on one host: curl -> envoy (sidecar, :15001) -> nginx (:8080), each
 * hop a fresh connection; plus a client whose server is elsewhere.
 */
function meshTraffic(first: number, n: number, closeAt: number): Uint8Array {
  const parts: Uint8Array[] = [];
  for (let k = 0; k < n; k++) {
    const id = first + 3 * k;
    const e1 = 40000 + id;
    const e2 = 50000 + id;
    const lat = [3_000_000 + 1000 * k, 3_100_000];
    const up = [2_000_000 + 1000 * k, 2_050_000];
    const app = [1_500_000 + 500 * k, 1_520_000];
    parts.push(
      connBytes({ id, role: R.ROLE_CLIENT, tgid: 100, comm: 'curl', lport: e1, rport: 15001 }, lat, closeAt),
      connBytes({ id: id + 1, role: R.ROLE_SERVER, tgid: 200, comm: 'envoy', lport: 15001, rport: e1 }, lat, closeAt),
      connBytes(
        { id: id + 100000, role: R.ROLE_CLIENT, tgid: 200, comm: 'envoy', lport: e2, rport: 8080 },
        up,
        closeAt,
      ),
      connBytes({ id: id + 2, role: R.ROLE_SERVER, tgid: 300, comm: 'nginx', lport: 8080, rport: e2 }, app, closeAt),
    );
    parts.push(
      connBytes(
        {
          id: id + 200000,
          role: R.ROLE_CLIENT,
          tgid: 100,
          comm: 'curl',
          lport: 60000 + k,
          rport: 443,
          raddr: '10.1.2.3',
        },
        [9_000_000],
        closeAt,
      ),
    );
  }
  return concatBytes(parts);
}

function overheadOf(st: State) {
  return analyzeOverhead({
    conns: allConnections(st, readConnTable(st)),
    proxyComms: ['envoy'],
    commOf: (c: ConnSlot) => c.comm,
    serviceOf: (c: ConnSlot) => `${c.comm}:${c.lport}`,
  });
}

test('the mesh-overhead analysis reads the same after the connections age out (both ends folded together)', () => {
  const st = state(256);
  decodeAll(st, meshTraffic(1, 40, 1000)); // 200 rows, all closed
  const before = overheadOf(st);
  assert.equal(before.by_service.length, 1);
  assert.ok(before.mesh_processing_ms !== null && before.mesh_processing_ms > 0);
  const ager = new ConnectionAger(st);
  assert.equal(ager.tick(LATER), 200);
  assert.equal(readConnTable(st, { histograms: false }).length, 0);
  // curl->envoy, envoy->nginx pairs, and curl's lone outside client: 5 folded rows
  assert.equal(st.aged.rows.length, 5);
  const after = overheadOf(st);
  assert.deepEqual(after, before);
  // more of the same traffic later: the same folded rows grow, the analysis still agrees with one over all rows
  const ref = state(1024);
  decodeAll(ref, meshTraffic(1, 40, 1000));
  decodeAll(ref, meshTraffic(1001, 40, 1000));
  decodeAll(st, meshTraffic(1001, 40, 1000));
  ager.tick(LATER);
  const a = overheadOf(st);
  const b = overheadOf(ref);
  assert.equal(a.requests, b.requests);
  assert.equal(a.mesh_processing_ms, b.mesh_processing_ms);
  assert.equal(a.application_ms, b.application_ms);
  assert.equal(a.requests_unpaired, b.requests_unpaired);
});

test('one end still open: neither end is folded until both closed', () => {
  const st = state(4);
  const ager = new ConnectionAger(st);
  decodeAll(
    st,
    concatBytes([
      connBytes({ id: 1, role: R.ROLE_CLIENT, tgid: 100, comm: 'curl', lport: 40001, rport: 8080 }, [5], 1000),
      connBytes({ id: 2, role: R.ROLE_SERVER, tgid: 300, comm: 'nginx', lport: 8080, rport: 40001 }, [4], 0),
    ]),
  );
  assert.equal(ager.sweep(LATER), 0);
  decodeAll(st, perfSample(encodeClose({ conn_id: 2, role: R.ROLE_SERVER, end_ns: 2000, requests: 1 })));
  assert.equal(ager.sweep(LATER), 2);
  assert.equal(st.aged.rows.length, 2);
  const [cl, sv] = [R.ROLE_CLIENT, R.ROLE_SERVER].map((r) => st.aged.rows.find((x) => x.role === r));
  assert.ok(cl && sv);
  assert.equal(cl.lport, sv.rport, 'the pair shares its pseudo-port');
});

test('a record that arrives after its row was freed is folded into the same group at the next sweep', () => {
  const st = state(4);
  const ager = new ConnectionAger(st);
  decodeAll(st, connBytes({ id: 9, role: R.ROLE_CLIENT, tgid: 7, comm: 'c', lport: 30009, rport: 80 }, [5, 6]));
  assert.equal(ager.sweep(LATER), 1);
  decodeAll(
    st,
    perfSample(encodeLatency({ conn_id: 9, role: R.ROLE_CLIENT, tgid: 7, latency_ns: 7, lport: 30009, rport: 80 })),
  );
  assert.equal(st.exports.connRowsInUse(), 1, 'the late record took a row');
  assert.equal(ager.sweep(LATER), 1);
  assert.equal(st.aged.rows.length, 1);
  assert.equal(st.aged.rows[0].requests, 3);
  assert.equal(st.aged.connections, 1, 'one connection, counted when it was first folded');
});

test('refused connections that closed leave the index; a long churn through a small table keeps every figure', () => {
  const st = state(16);
  const ager = new ConnectionAger(st);
  let total = 0;
  let id = 1;
  for (let round = 0; round < 300; round++) {
    const parts: Uint8Array[] = [];
    for (let k = 0; k < 20; k++, id++) {
      const lats = Array.from({ length: 1 + (id % 5) }, (_, j) => 1000 + id + j);
      total += lats.length;
      parts.push(
        connBytes({ id, role: R.ROLE_CLIENT, tgid: 7, comm: 'c', lport: 1024 + (id % 60000), rport: 80 }, lats),
      );
    }
    decodeAll(st, concatBytes(parts)); // 20 connections into 16 rows: 4 refused a round
    ager.sweep(LATER);
  }
  const c = readCounters(st);
  assert.equal(c.conn_refused, 4 * 300);
  assert.equal(readGlobalHistograms(st).client.count, total);
  assert.equal(readSvcTable(st)[0].requests, total);
  const refusedLatency = c.conn_table_full - 2 * c.conn_refused; // open + close of each refused one
  assert.equal(st.aged.requests + refusedLatency, total, 'every request is in a folded row or counted as refused');
  assert.equal(st.exports.connRowsInUse(), 0);
});

test('two workers decode a churn while the main thread sweeps: no request lost or counted twice', async () => {
  const st = state(64, 2);
  const ager = new ConnectionAger(st);
  const mk = (w: number) => {
    const chunks: Uint8Array[] = [];
    let n = 0;
    for (let b = 0; b < 600; b++) {
      const parts: Uint8Array[] = [];
      for (let k = 0; k < 10; k++) {
        const id = 1 + w * 1_000_000 + b * 10 + k;
        const lats = [1000 + k, 2000 + b];
        n += lats.length;
        parts.push(
          connBytes({ id, role: R.ROLE_CLIENT, tgid: 7, comm: 'c', lport: 1024 + (id % 50000), rport: 80 }, lats),
        );
      }
      chunks.push(concatBytes(parts));
    }
    return { chunks, n };
  };
  const work = [mk(0), mk(1)];
  const passes = 1; // every connection id once: its 4 records are refused together or not at all
  const decoding = { on: true }; // an object: the loop below reads it after each await
  const sweeps = (async () => {
    let n = 0;
    while (decoding.on) {
      ager.sweep(LATER);
      n++;
      await new Promise((r) => setImmediate(r));
    }
    return n;
  })();
  assert.deepEqual(
    await decodeInWorkers(
      st,
      work.map((w) => w.chunks),
      passes,
    ),
    work.map((w) => w.chunks.reduce((a, x) => a + x.length, 0) * passes),
  );
  decoding.on = false;
  const nSweeps = await sweeps;
  ager.sweep(LATER);
  const total = (work[0].n + work[1].n) * passes;
  const c = readCounters(st);
  assert.equal(readGlobalHistograms(st).client.count, total);
  const inRows = readConnTable(st, { histograms: false }).reduce((a, x) => a + x.requests, 0);
  // a connection's records are in one chunk, decoded in one call (no sweep in between): refused whole, 4 records
  assert.equal(c.conn_table_full, 4 * c.conn_refused);
  assert.ok(nSweeps > 1, `swept ${nSweeps} times while decoding`);
  assert.equal(inRows + st.aged.requests + 2 * c.conn_refused, total);
  // no connection has two rows
  const ids = readConnTable(st, { histograms: false }).map((x) => x.conn_id);
  assert.equal(new Set(ids).size, ids.length);
});

test('idle services give their slots back; every service reads the same, one that comes back keeps counting', () => {
  const st = createState({ connCapacity: 64, serviceCapacity: 8, workers: 1, stagingBytes: 1 << 16 });
  const svcAger = new ServiceAger(st, { everyMs: 10, highWater: 0.5, idleMs: 100, maxKept: 100 });
  // 6 client services (peer ports 81..86), one connection each, kept open
  const conn = (k: number) => ({ id: k, role: R.ROLE_CLIENT, tgid: 7, comm: 'c', lport: 30000 + k, rport: 80 + k });
  const lats = (k: number, n: number) => Array.from({ length: n }, (_, j) => 1000 * k + j);
  decodeAll(st, concatBytes([1, 2, 3, 4, 5, 6].map((k) => connBytes(conn(k), lats(k, k), 0))));
  const view = () =>
    new Map(
      readSvcTable(st).map((s) => {
        assert.ok(s.hist);
        return [s.port, [s.requests, s.hist.count, s.hist.sum_ns]];
      }),
    );
  const before = view();
  assert.equal(svcAger.tick(0), 0, 'first look: nothing known to be idle');
  // service 1 stays busy; the others go idle
  const more = (k: number, n: number) =>
    concatBytes(
      lats(k, n).map((v) =>
        perfSample(
          encodeLatency({
            conn_id: k,
            role: R.ROLE_CLIENT,
            tgid: 7,
            latency_ns: v,
            lport: 30000 + k,
            rport: 80 + k,
            raddr: '127.0.0.1',
          }),
        ),
      ),
    );
  decodeAll(st, more(1, 3));
  assert.equal(svcAger.tick(200), 5, 'the five idle services leave the table');
  assert.equal(st.exports.svcSlotsInUse(), 1);
  const after = view();
  for (const k of [2, 3, 4, 5, 6]) assert.deepEqual(after.get(80 + k), before.get(80 + k), `service ${80 + k}`);
  assert.equal(after.get(81)?.[0], 4);
  assert.equal(st.aged.servicesExpired, 5);
  // service 4 comes back on its open connection (whose cached slot was cleared): a new slot, counts add up
  decodeAll(st, more(4, 2));
  assert.equal(st.exports.svcSlotsInUse(), 2);
  assert.deepEqual(view().get(84)?.slice(0, 2), [6, 6]);
  assert.equal(readSvcTable(st).length, 6, 'one entry per service, never two');
  // the global view never changed its mind
  assert.equal(readGlobalHistograms(st).client.count, 1 + 2 + 3 + 4 + 5 + 6 + 3 + 2);
});

test("connection-tracker's pools: the open time of aged connections still counts", () => {
  const st = state(8);
  const ager = new ConnectionAger(st);
  // 6 client connections to 10.9.9.9:5432, each open from 1 s to 3 s (CLOCK_MONOTONIC ns), one request each
  const parts: Uint8Array[] = [];
  for (let k = 1; k <= 6; k++) {
    const c = { id: k, role: R.ROLE_CLIENT, tgid: 7, comm: 'app', lport: 40000 + k, rport: 5432, raddr: '10.9.9.9' };
    parts.push(
      perfSample(
        encodeOpen({
          conn_id: k,
          role: c.role,
          tgid: 7,
          pid: 7,
          comm: 'app',
          netns: NETNS,
          start_ns: 1_000_000_000n,
          lport: c.lport,
          rport: c.rport,
          laddr: '10.0.0.1',
          raddr: c.raddr,
        }),
      ),
      perfSample(
        encodeMeasure({
          conn_id: k,
          role: c.role,
          metric: R.METRIC_SETUP,
          value: 100_000,
          rport: 5432,
          raddr: c.raddr,
        }),
      ),
      perfSample(
        encodeLatency({
          conn_id: k,
          role: c.role,
          tgid: 7,
          latency_ns: 1_000_000,
          lport: c.lport,
          rport: 5432,
          raddr: c.raddr,
        }),
      ),
      perfSample(encodeClose({ conn_id: k, role: c.role, end_ns: 3_000_000_000n, requests: 1 })),
    );
  }
  decodeAll(st, concatBytes(parts));
  const poolOf = () => {
    const f = readConnectionFigures(st, []);
    const [svc] = connectionsSection(f, 10, 0).by_service.filter((s) => s.role === 'client');
    return svc.pool;
  };
  const before = poolOf();
  assert.ok(before);
  assert.equal(before.connections_open_avg, 1.2, '6 connections x 2 s over 10 s');
  assert.equal(ager.tick(LATER), 6);
  assert.deepEqual(poolOf(), before);
});

test('a refused connection is counted once, even with records after its close and index rebuilds in between', () => {
  const st = state(2);
  const ager = new ConnectionAger(st, { highWater: 0, graceNs: 0n, maxGroups: 100, openTimesNs: 1e12 });
  const c = (id: number) => ({ id, role: R.ROLE_CLIENT, tgid: 7, comm: 'c', lport: 30000 + id, rport: 80 });
  const late = (id: number) =>
    perfSample(
      encodeLatency({ conn_id: id, role: R.ROLE_CLIENT, tgid: 7, latency_ns: 9, lport: 30000 + id, rport: 80 }),
    );
  // two rows held by open connections; connection 3 refused, 4 refused and closed
  decodeAll(
    st,
    concatBytes([connBytes(c(1), [5], 0), connBytes(c(2), [5], 0), connBytes(c(3), [5], 0), connBytes(c(4), [5])]),
  );
  assert.equal(readCounters(st).conn_refused, 2);
  ager.sweep(LATER);
  decodeAll(st, late(4)); // a record of 4 after its close, one sweep later: its entry is still there
  // churn through the index (closed connections whose ids come and go) until it is rebuilt several times
  for (let round = 0; round < 40; round++) {
    decodeAll(st, concatBytes([connBytes(c(100 + round), [5])]));
    ager.sweep(LATER);
    decodeAll(st, late(3)); // 3 is still open: its entry survives every rebuild
  }
  const n = readCounters(st);
  assert.equal(n.conn_refused, 2 + 40, 'the two, then each churned connection (the rows stay held by 1 and 2)');
  assert.equal(readGlobalHistograms(st).client.count, 4 + 1 + 40 + 40);
});

test('a 4-tuple used again while the old rows wait: no row is folded twice, the new connection keeps its rows', () => {
  const st = state(8);
  const ager = new ConnectionAger(st);
  const cl = (id: number) => ({ id, role: R.ROLE_CLIENT, tgid: 100, comm: 'curl', lport: 40001, rport: 8080 });
  const sv = (id: number) => ({ id, role: R.ROLE_SERVER, tgid: 300, comm: 'nginx', lport: 8080, rport: 40001 });
  decodeAll(
    st,
    concatBytes([
      connBytes(cl(1), [5, 6], 1000),
      connBytes(sv(2), [4, 4], 1000),
      connBytes(cl(3), [7], 0), // the same ports again, still open
      connBytes(sv(4), [3], 0),
    ]),
  );
  assert.equal(ager.sweep(LATER), 2);
  assert.equal(st.aged.connections, 2);
  assert.equal(st.aged.requests, 4, 'each old row once');
  assert.deepEqual(
    readConnTable(st, { histograms: false })
      .map((c) => c.conn_id)
      .sort(),
    [3n, 4n],
  );
});
