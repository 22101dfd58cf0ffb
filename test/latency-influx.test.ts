// latency-probe --format influx against real servers from Debian's packages,
// started by the test, with real traffic: VictoriaMetrics through the
// InfluxDB 2 path (/api/v2/write, read back through its export API) and
// InfluxDB 1.x through /write (read back through /query); and a server that
// goes away mid-run: the probe keeps measuring, reports what it could not write.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildTools, runClient, startServer, type RunningServer } from './helpers/workload.js';
import { needsRoot, startProbe } from './helpers/probe.js';
import { startInfluxdb1, startVictoriaMetrics } from './helpers/servers.js';

async function server(t: any): Promise<RunningServer> {
  await buildTools();
  const s = await startServer({ addr: '127.0.0.1' });
  t.after(() => s.stop().catch(() => undefined));
  return s;
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

test('--format influx to VictoriaMetrics (/api/v2/write): per-interval counts add up to the report, buckets too', async (t) => {
  if (!needsRoot(t)) return;
  const vm = await startVictoriaMetrics(t);
  const s = await server(t);
  const probe = startProbe('latency-probe', ['--filter', `port=${s.port}`, '--format', 'influx', '--url', vm.url,
    '--org', 'meshprobe', '--bucket', 'test', '--token', 'unused-by-vm', '--aggregate-interval', '500ms']);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  const c = await runClient({ addr: s.addr, port: s.port, requests: 1500, concurrency: 3, sleeps: [0, 1000, 5000], rate: 1000 });
  await sleep(700);
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  assert.equal(exit.report.exports.influx.points_dropped, 0);
  assert.ok(exit.report.exports.influx.points_written > 0);
  await vm.flush();

  const counts = await vm.exportSeries('meshprobe_request_duration_count');
  const client = counts.filter((x) => x.metric.view === 'client');
  assert.ok(client.length === 1, JSON.stringify(counts.map((x) => x.metric)));
  assert.equal(client[0].metric.probe, 'latency-probe');
  assert.ok(client[0].metric.host);
  assert.ok(client[0].values.length >= 3, `${client[0].values.length} intervals`);
  assert.equal(sum(client[0].values), c.requests, 'intervals add up to every request');
  assert.equal(sum(counts.find((x) => x.metric.view === 'server')!.values), c.requests);
  // histograms as bucket counts: mergeable, they add up to the count too
  const buckets = (await vm.exportSeries('meshprobe_request_duration_bucket_count')).filter((x) => x.metric.view === 'server');
  assert.equal(sum(buckets.flatMap((b) => b.values)), c.requests);
  // per service, tagged with service and role
  const svc = await vm.exportSeries('meshprobe_service_request_duration_count');
  const srv = svc.find((x) => x.metric.role === 'server')!;
  assert.equal(srv.metric.service, `mpload:${s.port}`);
  assert.equal(sum(srv.values), c.requests);
  // a percentile of the last busy interval is the report's, for the same requests, when one interval held them all
  const p99 = await vm.exportSeries('meshprobe_request_duration_p99_seconds');
  assert.ok(p99.some((x) => x.metric.view === 'client' && x.values.some((v) => v > 0.004 && v < 0.006)), 'p99 near the 5 ms sleep');
});

test('--format influx to InfluxDB 1.x (/write, --db): the same figures read back through /query', async (t) => {
  if (!needsRoot(t)) return;
  const ifx = await startInfluxdb1(t);
  await ifx.createDatabase('meshprobe');
  const s = await server(t);
  const probe = startProbe('latency-probe', ['--filter', `port=${s.port}`, '--format', 'influx', '--url', ifx.url, '--db', 'meshprobe',
    '--aggregate-interval', '500ms']);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  const c = await runClient({ addr: s.addr, port: s.port, requests: 1200, concurrency: 2, sleeps: [1000] });
  await sleep(700);
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  assert.equal(exit.report.exports.influx.points_dropped, 0);
  const r = await ifx.query(`SELECT sum("count") FROM "meshprobe_request_duration" WHERE "view" = 'client'`, 'meshprobe');
  assert.equal(r.results[0].series![0].values[0][1], c.requests);
  const p50 = await ifx.query(`SELECT "p50_seconds" FROM "meshprobe_request_duration" WHERE "view" = 'server' AND "count" > 100`, 'meshprobe');
  for (const row of p50.results[0].series![0].values) {
    assert.ok(Math.abs((row[1] as number) - 0.001) < 0.0001, `server p50 ${row[1]} s vs the 1 ms sleep`);
  }
  const lost = await ifx.query(`SELECT last("value") FROM "meshprobe_lost_records"`, 'meshprobe');
  assert.equal(lost.results[0].series![0].values[0][1], 0);
  const rate = await ifx.query(`SELECT last("value") FROM "meshprobe_sample_rate"`, 'meshprobe');
  assert.equal(rate.results[0].series![0].values[0][1], 1);
});

test('an InfluxDB that goes away mid-run: the probe keeps measuring, writes what it can, reports what it could not', async (t) => {
  if (!needsRoot(t)) return;
  const vm = await startVictoriaMetrics(t);
  const s = await server(t);
  const probe = startProbe('latency-probe', ['--filter', `port=${s.port}`, '--format', 'influx', '--url', vm.url,
    '--org', 'o', '--bucket', 'b', '--aggregate-interval', '500ms']);
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
  // every request measured, whatever happened to the writes
  assert.equal(exit.report.metrics.client.total_requests, c1.requests + c2.requests);
  const st = exit.report.exports.influx;
  assert.ok(st.points_written > 0, 'written while the server was up');
  assert.ok(st.points_dropped > 0, 'what could not be written is counted');
  assert.ok(st.write_errors > 0 && st.last_error, JSON.stringify(st));
  assert.match(exit.stderr, /InfluxDB write failed/);
  assert.match(exit.stderr, /InfluxDB: \d+ points could not be written/);
  assert.equal(exit.stderr.match(/InfluxDB write failed/g)!.length, 1, 'warned once, not per point');
});
