// latency-probe --format influx against real servers from Debian's packages,
// started by the test, with real traffic: VictoriaMetrics through the
// InfluxDB 2 path (/api/v2/write, read back through its export API) and
// InfluxDB 1.x through /write (read back through /query); and a server that
// goes away mid-run: the probe keeps measuring, reports what it could not write.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { runClient, startTestServer } from './helpers/workload.js';
import { near, needsRoot, startProbe } from './helpers/probe.js';
import { firstSeries, startInfluxdb1, startVictoriaMetrics, type VmSeries } from './helpers/servers.js';
import type { LatencyReportRead } from './helpers/report-types.js';

// latencies against the client's or the server's own timing: 3 %, at least 50 µs (as test/latency-accuracy.test.ts)
const REL = 0.03;
const ABS_S = 50e-6;

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

test('--format influx to VictoriaMetrics (/api/v2/write): per-interval counts add up to the report, buckets too', async (t) => {
  if (!needsRoot(t)) return;
  const vm = await startVictoriaMetrics(t);
  // every concurrent sleeper may busy-wait its last 150 µs: the sleeps are exact
  const s = await startTestServer(t, { maxSpinners: 3 });
  const probe = startProbe<LatencyReportRead>('latency-probe', [
    '--filter',
    `port=${s.port}`,
    '--format',
    'influx',
    '--url',
    vm.url,
    '--org',
    'meshprobe',
    '--bucket',
    'test',
    '--token',
    'unused-by-vm',
    '--aggregate-interval',
    '500ms',
  ]);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  const c = await runClient({
    addr: s.addr,
    port: s.port,
    requests: 1500,
    concurrency: 3,
    sleeps: [0, 1000, 5000],
    rate: 1000,
  });
  await sleep(700);
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(exit.report?.exports?.influx, `no exports.influx: ${exit.stderr}`);
  assert.equal(exit.report.exports.influx.points_dropped, 0);
  assert.ok(exit.report.exports.influx.points_written > 0);
  // every interval's points, once the server shows them all (written samples take a moment to be searchable)
  const viewTotal = (xs: VmSeries[], view: string) =>
    sum(xs.filter((x) => x.metric.view === view).flatMap((x) => x.values));
  const counts = await vm.exportWhen(
    'meshprobe_request_duration_count',
    (xs) => viewTotal(xs, 'client') >= c.requests && viewTotal(xs, 'server') >= c.requests,
  );
  const client = counts.filter((x) => x.metric.view === 'client');
  assert.ok(client.length === 1, JSON.stringify(counts.map((x) => x.metric)));
  assert.equal(client[0].metric.probe, 'latency-probe');
  assert.ok(client[0].metric.host);
  assert.ok(client[0].values.length >= 3, `${client[0].values.length} intervals`);
  assert.equal(sum(client[0].values), c.requests, 'intervals add up to every request');
  const server = counts.find((x) => x.metric.view === 'server');
  assert.ok(server, JSON.stringify(counts.map((x) => x.metric)));
  assert.equal(sum(server.values), c.requests);
  // histograms as bucket counts: mergeable, they add up to the count too
  const buckets = await vm.exportWhen(
    'meshprobe_request_duration_bucket_count',
    (xs) => viewTotal(xs, 'server') >= c.requests,
  );
  assert.equal(viewTotal(buckets, 'server'), c.requests);
  // per service, tagged with service and role
  const svc = await vm.exportWhen(
    'meshprobe_service_request_duration_count',
    (xs) => sum(xs.filter((x) => x.metric.role === 'server').flatMap((x) => x.values)) >= c.requests,
  );
  const srv = svc.find((x) => x.metric.role === 'server');
  assert.ok(srv, JSON.stringify(svc.map((x) => x.metric)));
  assert.equal(srv.metric.service, `mpload:${s.port}`);
  assert.equal(sum(srv.values), c.requests);
  // 1 request in 3 sleeps 5 ms: each busy interval's p99 is one of those, within what the client timed for them
  const [lo, hi] = [c.by_sleep['5000'].min / 1e6, c.by_sleep['5000'].max / 1e6];
  const tol = (x: number) => Math.max(REL * x, ABS_S);
  const busy = client[0].timestamps.filter((_, i) => client[0].values[i] >= 30);
  assert.ok(busy.length >= 2, `${busy.length} busy intervals`);
  const p99 = (
    await vm.exportWhen('meshprobe_request_duration_p99_seconds', (xs) =>
      xs.some((x) => x.metric.view === 'client' && busy.every((ts) => x.timestamps.includes(ts))),
    )
  ).find((x) => x.metric.view === 'client');
  assert.ok(p99, 'a client-view p99 series');
  for (const ts of busy) {
    const v = p99.values[p99.timestamps.indexOf(ts)];
    assert.ok(
      v >= lo - tol(lo) && v <= hi + tol(hi),
      `client p99 ${v} s at ${ts}: the client timed its 5 ms requests ${lo}..${hi} s`,
    );
  }
});

test('--format influx to InfluxDB 1.x (/write, --db): the same figures read back through /query', async (t) => {
  if (!needsRoot(t)) return;
  const ifx = await startInfluxdb1(t);
  await ifx.createDatabase('meshprobe');
  const s = await startTestServer(t, { maxSpinners: 2 });
  const probe = startProbe<LatencyReportRead>('latency-probe', [
    '--filter',
    `port=${s.port}`,
    '--format',
    'influx',
    '--url',
    ifx.url,
    '--db',
    'meshprobe',
    '--aggregate-interval',
    '500ms',
  ]);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  const c = await runClient({ addr: s.addr, port: s.port, requests: 1200, concurrency: 2, sleeps: [1000] });
  await sleep(700);
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(exit.report?.exports?.influx, `no exports.influx: ${exit.stderr}`);
  assert.equal(exit.report.exports.influx.points_dropped, 0);
  const r = await ifx.query(
    `SELECT sum("count") FROM "meshprobe_request_duration" WHERE "view" = 'client'`,
    'meshprobe',
  );
  assert.equal(firstSeries(r).values[0][1], c.requests);
  // every busy interval's server p50 is the server's own timing of the 1 ms sleep
  const own = (await s.stop()).by_sleep['1000'].p50 / 1e6;
  const p50 = await ifx.query(
    `SELECT "p50_seconds" FROM "meshprobe_request_duration" WHERE "view" = 'server' AND "count" > 100`,
    'meshprobe',
  );
  for (const row of firstSeries(p50).values) {
    assert.ok(
      near(row[1] as number, own, REL, ABS_S),
      `server p50 ${String(row[1])} s vs the server's own ${own} s for the 1 ms sleep`,
    );
  }
  const lost = await ifx.query(`SELECT last("value") FROM "meshprobe_lost_records"`, 'meshprobe');
  assert.equal(firstSeries(lost).values[0][1], 0);
  const rate = await ifx.query(`SELECT last("value") FROM "meshprobe_sample_rate"`, 'meshprobe');
  assert.equal(firstSeries(rate).values[0][1], 1);
});

test('an InfluxDB that goes away mid-run: the probe keeps measuring, writes what it can, reports what it could not', async (t) => {
  if (!needsRoot(t)) return;
  const vm = await startVictoriaMetrics(t);
  const s = await startTestServer(t);
  const probe = startProbe<LatencyReportRead>('latency-probe', [
    '--filter',
    `port=${s.port}`,
    '--format',
    'influx',
    '--url',
    vm.url,
    '--org',
    'o',
    '--bucket',
    'b',
    '--aggregate-interval',
    '500ms',
  ]);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  const c1 = await runClient({ addr: s.addr, port: s.port, requests: 500, concurrency: 2 });
  await sleep(800);
  await vm.stop();
  const c2 = await runClient({ addr: s.addr, port: s.port, requests: 700, concurrency: 2 });
  await sleep(800);
  const t0 = Date.now();
  const exit = await probe.stop('SIGINT');
  assert.ok(Date.now() - t0 < 10_000, 'shutdown is bounded');
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(exit.report, `no report: ${exit.stderr}`);
  // every request measured, whatever happened to the writes
  assert.equal(exit.report.metrics.client.total_requests, c1.requests + c2.requests);
  const st = exit.report.exports?.influx;
  assert.ok(st, JSON.stringify(exit.report.exports));
  assert.ok(st.points_written > 0, 'written while the server was up');
  assert.ok(st.points_dropped > 0, 'what could not be written is counted');
  assert.ok(st.write_errors > 0 && st.last_error, JSON.stringify(st));
  assert.match(exit.stderr, /InfluxDB write failed/);
  assert.match(exit.stderr, /InfluxDB: \d+ points could not be written/);
  assert.equal(exit.stderr.match(/InfluxDB write failed/g)?.length, 1, 'warned once, not per point');
});
