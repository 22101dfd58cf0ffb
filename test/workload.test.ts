// Tests of the ground-truth workload tools themselves (mpload client/server
// and their helpers). No BPF involved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  buildTools,
  mploadBinary,
  plannedCounts,
  readSamples,
  runClient,
  startServer,
  ClientError,
  type RunningServer,
} from './helpers/workload.js';
import { createVethPair, ipBin, netnsSupport } from './helpers/netns.js';

const SLEEPS = [0, 1000, 5000, 20000];
const WEIGHTS = [30, 30, 28, 12];

async function withServer<T>(
  opts: Parameters<typeof startServer>[0],
  fn: (s: RunningServer) => Promise<T>,
): Promise<{ value: T; summary: Awaited<ReturnType<RunningServer['stop']>> }> {
  const s = await startServer(opts);
  let value: T;
  try {
    value = await fn(s);
  } catch (e) {
    await s.stop().catch(() => undefined);
    throw e;
  }
  return { value, summary: await s.stop() };
}

test('buildTools compiles mpload', async () => {
  const bin = await buildTools();
  assert.equal(bin, mploadBinary);
  assert.ok(existsSync(bin));
  // a second call is a no-op returning the same path
  assert.equal(await buildTools(), bin);
});

test('server sleeping 5 ms: client p50 in 5-5.3 ms, server processing p50 in 5-5.1 ms', async (t) => {
  const { value: c, summary: s } = await withServer({ addr: '127.0.0.1' }, (srv) =>
    runClient({ addr: '127.0.0.1', port: srv.port, requests: 300, concurrency: 2, sleeps: [5000] }),
  );
  t.diagnostic(`client latency_us ${JSON.stringify(c.latency_us)}`);
  t.diagnostic(`server processing_us ${JSON.stringify(s.processing_us)}`);
  assert.equal(c.errors, 0);
  assert.equal(c.requests, 300);
  assert.equal(s.requests, 300);
  assert.equal(s.connections, 2);
  assert.ok(c.latency_us.min >= 5000, `client min ${c.latency_us.min} < 5000`);
  assert.ok(c.latency_us.p50 >= 5000 && c.latency_us.p50 <= 5300, `client p50 ${c.latency_us.p50}`);
  assert.ok(s.processing_us.min >= 5000, `server min ${s.processing_us.min} < 5000`);
  assert.ok(s.processing_us.p50 >= 5000 && s.processing_us.p50 <= 5100, `server p50 ${s.processing_us.p50}`);
  // the client's view includes the server's: it can never be faster
  assert.ok(c.latency_us.p50 >= s.processing_us.p50);
});

test('mixed sleeps: by_sleep counts are exactly those planned for the seed', async (t) => {
  for (const seed of [42, 7]) {
    const expected = plannedCounts(2000, SLEEPS, WEIGHTS, seed);
    const { value: c, summary: s } = await withServer({ addr: '127.0.0.1' }, (srv) =>
      runClient({
        addr: '127.0.0.1',
        port: srv.port,
        requests: 2000,
        concurrency: 32,
        sleeps: SLEEPS,
        weights: WEIGHTS,
        seed,
      }),
    );
    t.diagnostic(`seed ${seed}: expected ${JSON.stringify(expected)}`);
    assert.equal(c.errors, 0);
    assert.equal(c.requests, 2000);
    assert.equal(s.requests, 2000);
    assert.deepEqual(Object.keys(c.by_sleep), SLEEPS.map(String));
    for (const sl of SLEEPS) {
      const k = String(sl);
      assert.equal(c.by_sleep[k].count, expected[k], `client count for sleep ${k}`);
      assert.equal(s.by_sleep[k].count, expected[k], `server count for sleep ${k}`);
      // roughly the weights (2000 draws)
      const share = expected[k] / 2000;
      const want = WEIGHTS[SLEEPS.indexOf(sl)] / 100;
      assert.ok(Math.abs(share - want) < 0.05, `share ${share} for ${k}, weight ${want}`);
      // each bucket is at least its sleep, and the server slept about that
      assert.ok(c.by_sleep[k].min >= sl, `client min ${c.by_sleep[k].min} for ${k}`);
      assert.ok(s.by_sleep[k].p50 >= sl && s.by_sleep[k].p50 < sl + 1000, `server p50 ${s.by_sleep[k].p50} for ${k}`);
    }
  }
  // same seed, different concurrency: same plan
  const again = await withServer({ addr: '127.0.0.1' }, (srv) =>
    runClient({
      addr: '127.0.0.1',
      port: srv.port,
      requests: 2000,
      concurrency: 5,
      sleeps: SLEEPS,
      weights: WEIGHTS,
      seed: 42,
    }),
  );
  const expected42 = plannedCounts(2000, SLEEPS, WEIGHTS, 42);
  for (const k of SLEEPS.map(String)) assert.equal(again.value.by_sleep[k].count, expected42[k]);
});

test('--new-conn: one connection per request, connect timed separately', async (t) => {
  const { value: c, summary: s } = await withServer({ addr: '127.0.0.1' }, (srv) =>
    runClient({ addr: '127.0.0.1', port: srv.port, requests: 500, concurrency: 8, newConn: true, sleeps: [0, 1000] }),
  );
  t.diagnostic(`connect_us ${JSON.stringify(c.connect_us)} latency_us ${JSON.stringify(c.latency_us)}`);
  assert.equal(c.errors, 0);
  assert.equal(c.requests, 500);
  assert.equal(c.connections, 500);
  assert.equal(s.connections, 500);
  assert.equal(s.requests, 500);
  assert.ok(c.connect_us, 'connect_us is reported');
  assert.ok(c.connect_us.p50 > 0 && c.connect_us.p50 <= c.connect_us.p99);
});

test('keep-alive closed loop: throughput and samples file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mpload-test-'));
  try {
    const samples = join(dir, 'samples.txt');
    const { value: c, summary: s } = await withServer({ addr: '127.0.0.1' }, (srv) =>
      runClient({ addr: '127.0.0.1', port: srv.port, requests: 200_000, concurrency: 64, samplesFile: samples }),
    );
    t.diagnostic(`keep-alive rps ${c.rps} (target > 50000 on 2 idle cores), p50 ${c.latency_us.p50} us`);
    assert.equal(c.errors, 0);
    assert.equal(c.connections, 64);
    assert.equal(s.requests, 200_000);
    const ns = readSamples(samples);
    assert.equal(ns.length, 200_000);
    assert.ok(ns.every((v) => Number.isInteger(v) && v > 0));
    // nearest-rank p50 recomputed from the samples matches the report
    const sorted = [...ns].sort((a, b) => a - b);
    assert.equal((sorted[Math.ceil(0.5 * sorted.length) - 1] / 1000).toFixed(3), c.latency_us.p50.toFixed(3));
    // a generous floor: the suite may share the machine with other work
    assert.ok(c.rps > 20_000, `rps ${c.rps}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--rate paces requests open loop', async () => {
  const { value: c } = await withServer({ addr: '127.0.0.1' }, (srv) =>
    runClient({ addr: '127.0.0.1', port: srv.port, requests: 300, concurrency: 4, rate: 600 }),
  );
  assert.equal(c.errors, 0);
  // request i is sent at i/rate: the last one at 299/600 s
  assert.ok(c.elapsed_s >= 0.49 && c.elapsed_s < 0.8, `elapsed ${c.elapsed_s}`);
});

test('IPv6 on ::1', async () => {
  const { value: c, summary: s } = await withServer({ addr: '::1' }, (srv) =>
    runClient({ addr: '::1', port: srv.port, requests: 400, concurrency: 4, sleeps: [0, 1000] }),
  );
  assert.equal(c.errors, 0);
  assert.equal(c.requests, 400);
  assert.equal(s.requests, 400);
  assert.equal(s.connections, 4);
});

test('500 concurrent connections are all served', async () => {
  const { value: c, summary: s } = await withServer({ addr: '127.0.0.1' }, (srv) =>
    runClient({ addr: '127.0.0.1', port: srv.port, requests: 5000, concurrency: 500, sleeps: [20000] }),
  );
  assert.equal(c.errors, 0);
  assert.equal(c.connections, 500);
  assert.equal(s.connections, 500);
  assert.equal(s.max_active_connections, 500);
  assert.equal(s.requests, 5000);
});

test('errors are counted and make the client fail', async () => {
  // a port nobody listens on: start a server, stop it, reuse its port
  const srv = await startServer({ addr: '127.0.0.1' });
  const port = srv.port;
  await srv.stop();
  const c = await runClient({ addr: '127.0.0.1', port, requests: 20, concurrency: 2, allowErrors: true });
  assert.equal(c.requests, 0);
  assert.equal(c.errors, 20);
  assert.equal(c.error_kinds.connect, 20);
  await assert.rejects(runClient({ addr: '127.0.0.1', port, requests: 5 }), (e: unknown) => {
    assert.ok(e instanceof ClientError);
    assert.equal(e.result?.errors, 5);
    return true;
  });
  // the binary itself exits non-zero
  const r = spawnSync(mploadBinary, ['client', '--connect', '127.0.0.1', '--port', String(port), '--requests', '3']);
  assert.equal(r.status, 1);
});

test('a run through a veth pair between two namespaces (IPv4 and IPv6)', async (t) => {
  const support = netnsSupport();
  if (!support.ok) {
    if (process.env.CI === 'true') assert.fail(`under CI this test may not be skipped: ${support.reason}`);
    t.skip(support.reason);
    return;
  }
  const pair = createVethPair();
  try {
    for (const [client, server] of [
      [pair.addrA4, pair.addrB4],
      [pair.addrA6, pair.addrB6],
    ]) {
      const { value: c, summary: s } = await withServer({ addr: server, netns: pair.nsB }, (srv) =>
        runClient({
          addr: server,
          port: srv.port,
          netns: pair.nsA,
          requests: 600,
          concurrency: 8,
          sleeps: [0, 1000, 5000],
        }),
      );
      t.diagnostic(`${client} -> ${server}: p50 ${c.latency_us.p50} us, rps ${c.rps}`);
      assert.equal(c.errors, 0);
      assert.equal(c.requests, 600);
      assert.equal(s.requests, 600);
      assert.equal(s.connections, 8);
      assert.ok(c.by_sleep['5000'].min >= 5000);
    }
  } finally {
    pair.cleanup();
    pair.cleanup(); // idempotent
  }
  const list = spawnSync(ipBin(), ['netns', 'list'], { encoding: 'utf8' }).stdout;
  assert.ok(!list.includes(pair.nsA) && !list.includes(pair.nsB), `namespaces left: ${list}`);
});
