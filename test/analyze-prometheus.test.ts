// Ground truth for analyze-latency's quantiles: a real Prometheus
// (/usr/bin/prometheus, the Debian package) scrapes the fixtures from HTTP
// servers on 127.0.0.1 run by this test:
//   A  istio-envoy.txt + hubble.txt as text 0.0.4, as they are;
//   B  istio-openmetrics.txt as OpenMetrics (le "1.0", "3.6e+06", "1e+06");
//   C  istio-envoy.txt + hubble.txt with every value times the number of
//      scrapes so far, so that increase() has something to count.
// (a) Prometheus's own histogram_quantile over A and B equals ours from the
//     fixture files, exactly, for every quantile and group; and ours from
//     Prometheus's API answer (a vector of the raw buckets) equals it too.
// (b) analyze-latency --prometheus-url end to end: its figures equal
//     Prometheus's histogram_quantile(q, sum by (le, ...) (increase(...)))
//     at the same time, exactly, and the fixtures' hand-worked quantiles
//     (quantiles do not depend on the scale).
// Prometheus is ended by PID and its directory removed when the test ends.
// Without the binary the test is skipped, except under CI=true, where it fails.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { prometheusMissing, startPrometheus, type PrometheusServer } from './helpers/prometheus-server.js';
import { meshQuantile, readMeshText, type MeshHistogram, type MeshSource } from '../src/analyze/mesh.js';
import type { AnalysisReport } from '../src/analyze/types.js';
import { spawn } from 'node:child_process';

const F = fileURLToPath(new URL('../../test/fixtures/analyze/', import.meta.url));
const read = (f: string) => readFileSync(join(F, f), 'utf8');
const ENVOY = read('istio-envoy.txt');
const HUBBLE = read('hubble.txt');
const OPENMETRICS = read('istio-openmetrics.txt');
const CLI = fileURLToPath(new URL('../src/cli/analyze-latency.js', import.meta.url));

/** analyze-latency as a child process, without blocking this one (its HTTP servers keep answering). */
function runAnalyze(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const QS = [0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1];
const TEXT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Every sample's value times n (lines are `series value`, no timestamps, in these fixtures). */
function scaled(text: string, n: number): string {
  return text
    .split('\n')
    .map((l) => {
      if (l === '' || l.startsWith('#')) return l;
      const i = l.lastIndexOf(' ');
      return `${l.slice(0, i)} ${Number(l.slice(i + 1)) * n}`;
    })
    .join('\n');
}

interface Target {
  hostPort: string;
  scrapes: () => number;
}

async function target(t: TestContext, type: string, body: (n: number) => string): Promise<Target> {
  let n = 0;
  const srv: Server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    n++;
    res.writeHead(200, { 'content-type': type });
    res.end(body(n));
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.after(
    () =>
      new Promise<void>((resolve) =>
        srv.close(() => {
          resolve();
        }),
      ),
  );
  const a = srv.address();
  return { hostPort: `127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`, scrapes: () => n };
}

/** Prometheus's value as a number ("NaN", "+Inf" included). */
const pv = (s: string) => (s === 'NaN' ? NaN : s === '+Inf' ? Infinity : s === '-Inf' ? -Infinity : Number(s));

function same(ours: number, theirs: number, what: string) {
  assert.ok(Object.is(ours, theirs) || ours === theirs, `${what}: ours ${ours}, Prometheus ${theirs}`);
}

function groupKey(h: MeshHistogram): string {
  return `${h.reporter}/${String(h.name)}`;
}

async function compareWithPrometheus(
  prom: PrometheusServer,
  hs: MeshHistogram[],
  source: MeshSource,
  selector: string,
  what: string,
  expr = (m: string) => m,
): Promise<number> {
  const metric =
    source === 'istio' ? 'istio_request_duration_milliseconds_bucket' : 'hubble_http_request_duration_seconds_bucket';
  const by = source === 'istio' ? 'destination_service_name' : 'destination_app';
  let compared = 0;
  for (const q of QS) {
    const res = await prom.query(
      `histogram_quantile(${q}, sum by (le, reporter, ${by}) (${expr(`${metric}${selector}`)}))`,
    );
    assert.equal(res.length, hs.length, `${what} q=${q}: one result per group`);
    for (const r of res) {
      const h = hs.find((x) => groupKey(x) === `${r.metric.reporter}/${r.metric[by]}`);
      assert.ok(h, `${what}: no group for ${JSON.stringify(r.metric)}`);
      same(meshQuantile(h, q).detail.value, pv(r.value[1]), `${what} ${groupKey(h)} q=${q}`);
      compared++;
    }
  }
  return compared;
}

test('a real Prometheus: its histogram_quantile equals ours on the fixtures; analyze-latency --prometheus-url end to end', async (t) => {
  const missing = prometheusMissing();
  if (missing) {
    if (process.env.CI === 'true') assert.fail(`${missing} (CI must run this test)`);
    t.skip(missing);
    return;
  }
  const A = await target(t, TEXT_TYPE, () => ENVOY + HUBBLE);
  const B = await target(t, 'application/openmetrics-text; version=1.0.0; charset=utf-8', () => OPENMETRICS);
  const C = await target(t, TEXT_TYPE, (n) => scaled(ENVOY, n) + scaled(HUBBLE, n));
  const prom = await startPrometheus(t, {
    targets: [A.hostPort, B.hostPort, C.hostPort],
    scrapeInterval: '1s',
    job: 'mesh',
  });
  await prom.waitFor('up == 1', (r) => r.length === 3, 20_000);

  // (a) the same data: Prometheus's histogram_quantile against ours from the files
  const envoy = readMeshText(ENVOY, 'istio', 'istio-envoy.txt').histograms;
  const om = readMeshText(OPENMETRICS, 'istio', 'istio-openmetrics.txt').histograms;
  const hubble = readMeshText(HUBBLE, 'cilium', 'hubble.txt').histograms;
  await prom.waitFor(
    `count(istio_request_duration_milliseconds_bucket{instance="${B.hostPort}"})`,
    (r) => r.length === 1,
    15_000,
  );
  let n = 0;
  n += await compareWithPrometheus(prom, envoy, 'istio', `{instance="${A.hostPort}"}`, 'envoy text');
  n += await compareWithPrometheus(prom, om, 'istio', `{instance="${B.hostPort}"}`, 'openmetrics');
  n += await compareWithPrometheus(prom, hubble, 'cilium', `{instance="${A.hostPort}"}`, 'hubble');
  assert.equal(n, QS.length * (3 + 4 + 2), 'every group at every quantile');
  // spot values, hand-worked in analyze-fixtures.test.ts, now from Prometheus itself
  // (74 comes out as 73.99999999999984 on both sides: 0.99 * 104 - 102 is 0.9599999999999937 in doubles)
  const p = async (e: string) => pv((await prom.query(e))[0].value[1]);
  const close = (a: number, b: number) => {
    assert.ok(Math.abs(a - b) <= 1e-9 * b, `${a} != ${b}`);
  };
  close(
    await p(
      `histogram_quantile(0.99, sum by (le) (istio_request_duration_milliseconds_bucket{instance="${A.hostPort}",reporter="destination",destination_service_name="reviews"}))`,
    ),
    74,
  );
  close(
    await p(
      `histogram_quantile(0.9, sum by (le) (istio_request_duration_milliseconds_bucket{instance="${B.hostPort}",destination_service_name="details"}))`,
    ),
    82,
  );
  close(
    await p(
      `histogram_quantile(0.9, sum by (le) (hubble_http_request_duration_seconds_bucket{instance="${A.hostPort}",reporter="server"}))`,
    ),
    0.00875,
  );

  // ... and ours from Prometheus's API answer (a vector of the raw buckets, le as Prometheus stored it)
  for (const [inst, source, metric, hs] of [
    [A.hostPort, 'istio', 'istio_request_duration_milliseconds', envoy],
    [B.hostPort, 'istio', 'istio_request_duration_milliseconds', om],
    [A.hostPort, 'cilium', 'hubble_http_request_duration_seconds', hubble],
  ] as [string, MeshSource, string, MeshHistogram[]][]) {
    const res = await fetch(
      `${prom.url}/api/v1/query?${new URLSearchParams({ query: `{__name__=~"${metric}_(bucket|sum|count)",instance="${inst}"}` })}`,
    );
    const api = readMeshText(await res.text(), source, 'api').histograms;
    assert.equal(api.length, hs.length);
    for (const h of hs) {
      const g = api.find((x) => groupKey(x) === groupKey(h));
      assert.ok(g, groupKey(h));
      assert.deepEqual(g.buckets, h.buckets, `${inst} ${groupKey(h)}: the same buckets through the API`);
      for (const q of QS)
        same(meshQuantile(g, q).detail.value, meshQuantile(h, q).detail.value, `api ${groupKey(h)} q=${q}`);
    }
  }

  // (b) end to end over increase(): C must have been scraped a few times
  while (C.scrapes() < 6) await sleep(200);
  const time = (Date.now() - 500) / 1000;
  const range = '10s';
  const r = await runAnalyze([
    '--ebpf-probe',
    join(F, 'latency-probe.json'),
    '--prometheus-url',
    prom.url,
    '--range',
    range,
    '--time',
    time.toFixed(3),
    '--json',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as AnalysisReport;
  assert.equal(rep.inputs.prometheus_url, prom.url);
  assert.equal(rep.windows?.prometheus_range_s, 10);
  assert.deepEqual(
    rep.services.map((s) => s.service),
    ['ratings', 'reviews'],
  );
  const reviews = rep.services.find((s) => s.service === 'reviews');
  const ratings = rep.services.find((s) => s.service === 'ratings');
  assert.ok(reviews && ratings, 'reviews and ratings compared');
  const mesh = (source: string, reporter: string) => {
    const m = [...reviews.mesh, ...ratings.mesh].find(
      (x) => x.source === source && x.reporter === reporter && x.input === prom.url,
    );
    assert.ok(m, `${source} ${reporter}`);
    return m;
  };
  const theirs = async (q: number, metric: string, sel: string) =>
    pv(
      (
        await prom.query(`histogram_quantile(${q}, sum by (le) (increase(${metric}{${sel}}[${range}])))`, time * 1000)
      )[0].value[1],
    );
  const checks: [string, string, string, string, number, { p50: number; p90: number; p99: number }][] = [
    // hand-worked in analyze-fixtures.test.ts
    [
      'istio',
      'destination',
      'istio_request_duration_milliseconds_bucket',
      'reporter="destination",destination_service_name="reviews"',
      1,
      { p50: 0.7, p90: 5 + 5 * (1.6 / 6), p99: 74 },
    ],
    [
      'istio',
      'source',
      'istio_request_duration_milliseconds_bucket',
      'reporter="source",destination_service_name="reviews"',
      1,
      { p50: 2.6, p90: 5 + 5 * (10 / 12), p99: 37.5 },
    ],
    [
      'cilium',
      'server',
      'hubble_http_request_duration_seconds_bucket',
      'reporter="server",destination_app="reviews"',
      1000,
      { p50: (5 * 55) / 90, p90: 8.75, p99: 36.25 },
    ],
    [
      'cilium',
      'client',
      'hubble_http_request_duration_seconds_bucket',
      'reporter="client",destination_app="reviews"',
      1000,
      { p50: (5 * 50) / 60, p90: 10, p99: 37.5 },
    ],
  ];
  for (const [source, reporter, metric, sel, toMs, hand] of checks) {
    const m = mesh(source, reporter);
    for (const [k, q] of [
      ['p50', 0.5],
      ['p90', 0.9],
      ['p99', 0.99],
    ] as const) {
      const ours = m[`${k}_ms`];
      assert.ok(ours !== null, `${source} ${reporter} ${k}: computed`);
      same(
        ours,
        (await theirs(q, metric, sel)) * toMs,
        `${source} ${reporter} ${k} against Prometheus over increase()`,
      );
      assert.ok(
        Math.abs(ours - hand[k]) <= 1e-9 * hand[k],
        `${source} ${reporter} ${k}: ${ours} against the hand-worked ${hand[k]}`,
      );
    }
  }
  // the mean from increase(_sum) / increase(_count): the fixture's, whatever the scale
  const meanMs = mesh('istio', 'destination').mean_ms;
  assert.ok(meanMs !== null && Math.abs(meanMs - 358.5 / 104) < 1e-9);
  // ratings: all sub-millisecond, read as 0 by Istio -> (0, 0.5]
  const rt = ratings.mesh[0];
  assert.deepEqual([rt.p50_ms, rt.quantile_buckets_ms?.p50], [0.25, [0, 0.5]]);
  assert.match(ratings.differences[0].likely_cause, /Prometheus range was 10 s/);

  // the table too, from the same Prometheus
  const human = await runAnalyze([
    '--ebpf-probe',
    join(F, 'latency-probe.json'),
    '--prometheus-url',
    prom.url,
    '--range',
    range,
    '--time',
    time.toFixed(3),
  ]);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /prometheus: http:\/\/127\.0\.0\.1:\d+ \(increase over 10 s to /);
  assert.match(
    human.stdout,
    /^ {2}istio destination +\d+(\.\d)? +0\.700 \(0\.5,1\] +6\.333 \(5,10\] +74\.000 \(50,100\]/m,
  );
});
