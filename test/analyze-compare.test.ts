// analyze-latency's comparison: which probe view each mesh figure is set
// against, the differences, and likely causes computed from the figures
// (bucket bounds, Istio's truncation, the kernel's own requests re-bucketed,
// request counts, the probe's overhead analysis), on the fixtures and on
// small histograms built here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { analyze, realInterval, rebin, truncationLoss, WHOLE_PROBE, type MeshInput } from '../src/analyze/compare.js';
import { readProbeReport } from '../src/analyze/ebpf.js';
import { readMeshText, type MeshHistogram } from '../src/analyze/mesh.js';
import { histogramQuantile } from '../src/analyze/quantile.js';
import type { AnalysisReport, Difference } from '../src/analyze/types.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/analyze/', import.meta.url));
const text = (f: string) => readFileSync(join(FIXTURES, f), 'utf8');
const probe = () => readProbeReport(text('latency-probe.json'), 'latency-probe.json');
const meshFile = (f: string, source: 'istio' | 'cilium'): MeshInput => ({
  source,
  input: f,
  ranged: false,
  histograms: readMeshText(text(f), source, f).histograms,
});
const near = (a: number | null | undefined, b: number, what = '') => {
  assert.ok(
    typeof a === 'number' && Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)),
    `${what}: ${String(a)} != ${b}`,
  );
};
/** The fixture report as JSON, the parts these tests read or rewrite. */
type ReportJson = Record<string, unknown> & {
  metrics: Record<string, unknown> & { services: Record<string, unknown>[]; overhead_analysis: unknown };
};
const reportJson = () => JSON.parse(text('latency-probe.json')) as ReportJson;

function diff(
  r: AnalysisReport,
  service: string,
  source: string,
  reporter: string,
  q: Difference['quantile'],
): Difference {
  const s = r.services.find((x) => x.service === service);
  assert.ok(s, `no service ${service}`);
  const d = s.differences.find((x) => x.source === source && x.reporter === reporter && x.quantile === q);
  assert.ok(d, `no ${source} ${reporter} ${q} for ${service}`);
  return d;
}

function hist(
  source: 'istio' | 'cilium',
  reporter: string,
  name: string | null,
  pairs: [number, number][],
  extra: Partial<MeshHistogram> = {},
): MeshHistogram {
  return {
    source,
    metric: source === 'istio' ? 'istio_request_duration_milliseconds' : 'hubble_http_request_duration_seconds',
    reporter,
    name,
    namespace: null,
    aliases: name ? [name] : [],
    buckets: pairs.map(([le, count]) => ({ le, count })),
    toMs: source === 'istio' ? 1 : 1000,
    sum: null,
    count: null,
    series: pairs.length,
    badLe: 0,
    ...extra,
  };
}

test('the real durations a mesh bucket holds: Istio truncates to whole ms, Hubble does not', () => {
  const istio = hist('istio', 'destination', 'a', [
    [0.5, 1],
    [1, 2],
    [5, 3],
    [Infinity, 3],
  ]);
  // recorded 0 -> durations [0, 1); recorded 1 -> [1, 2); recorded 2..5 -> [2, 6); above 5 -> [6, inf)
  assert.deepEqual(
    [0, 1, 2, 3].map((j) => realInterval(istio, istio.buckets, j)),
    [
      [0, 1],
      [1, 2],
      [2, 6],
      [6, Infinity],
    ],
  );
  const hub = hist('cilium', 'server', 'a', [
    [0.005, 1],
    [0.01, 2],
    [Infinity, 3],
  ]);
  assert.deepEqual(
    [0, 1].map((j) => realInterval(hub, hub.buckets, j)),
    [
      [0, 5],
      [5, 10],
    ],
  );
});

test("the kernel's raw buckets re-bucketed into the mesh's, and what truncation takes off a mean", () => {
  const istio = hist('istio', 'destination', 'a', [
    [0.5, 0],
    [1, 0],
    [5, 0],
    [Infinity, 0],
  ]);
  // 10 requests in [0.6, 0.8) ms: truncated to 0 -> le 0.5. 10 in [0.9, 1.1): half below 1 ms (-> 0.5), half in [1, 1.1) (-> 1).
  // 4 in [3, 3.5) -> recorded 3 -> le 5. 2 in the overflow bucket (68.7 s and up) -> +Inf.
  const fine: [number, number, number][] = [
    [600000, 800000, 10],
    [900000, 1100000, 10],
    [3000000, 3500000, 4],
    [2 ** 36, 2 ** 64, 2],
  ];
  const r = rebin(fine, istio);
  [15, 20, 24, 26].forEach((c, j) => {
    near(r[j].count, c, `bucket ${j}`);
  });
  // p50 of that: rank 13 -> first bucket: 0.5 * 13/15
  near(histogramQuantile(0.5, r), 0.5 * (13 / 15), 'p50');
  // d - floor(d): [0.6, 0.8) averages 0.7; [0.9, 1.1) half at 0.95, half at 0.05 -> 0.5; [3, 3.5) -> 0.25; overflow counted 0.5
  near(truncationLoss(fine), (0.7 * 10 + 0.5 * 10 + 0.25 * 4 + 0.5 * 2) / 26, 'loss');
  // Hubble: seconds, no truncation; [4, 6) ms splits evenly across le 0.005
  const hub = hist('cilium', 'server', 'a', [
    [0.005, 0],
    [0.01, 0],
    [Infinity, 0],
  ]);
  assert.deepEqual(
    rebin([[4000000, 6000000, 10]], hub).map((b) => b.count),
    [5, 10, 10],
  );
});

test('fixtures: each mesh figure against the probe view of its side, differences and computed causes', () => {
  const p = probe();
  const r = analyze({
    probe: p,
    mesh: [meshFile('istio-envoy.txt', 'istio'), meshFile('hubble.txt', 'cilium')],
    inputs: { ebpf_probe: 'latency-probe.json' },
  });
  assert.equal(r.tool, 'analyze-latency');
  assert.equal(r.report_version, 1);
  assert.deepEqual(
    r.services.map((s) => s.service),
    ['ratings', 'reviews'],
  );
  const reviews = r.services.find((s) => s.service === 'reviews');
  assert.ok(reviews, 'reviews compared');
  assert.deepEqual(reviews.mesh.map((m) => `${m.source}/${m.reporter}`).sort(), [
    'cilium/client',
    'cilium/server',
    'istio/destination',
    'istio/source',
  ]);
  assert.deepEqual(reviews.ebpf.map((e) => `${e.probe_service}/${e.view}`).sort(), [
    'reviews/client',
    'reviews/server',
  ]);
  const srv = p.services.find((s) => s.service === 'reviews' && s.role === 'server');
  const cli = p.services.find((s) => s.service === 'reviews' && s.role === 'client');
  assert.ok(srv?.percentiles && cli?.percentiles, 'reviews has both sides, with percentiles');
  const srvP50 = srv.percentiles.p50;
  assert.ok(srvP50 !== undefined, 'the server p50');

  // reporter=destination <-> the server view; the mesh p50 0.7 (hand-worked in analyze-fixtures)
  const d50 = diff(r, 'reviews', 'istio', 'destination', 'p50');
  assert.equal(d50.ebpf_view, 'server');
  assert.equal(d50.ebpf_ms, srvP50);
  near(d50.mesh_ms, 0.7);
  near(d50.diff_ms, 0.7 - srvP50);
  assert.deepEqual(d50.mesh_bucket_ms, [0.5, 1]);
  // the report has reviews' own raw buckets: its requests truncated and put in Istio's buckets
  assert.ok(typeof d50.mesh_from_ebpf_ms === 'number');
  assert.match(
    d50.likely_cause,
    /the kernel's own requests in the mesh's buckets, truncated to whole ms, would read \d/,
  );
  // the mesh's p50 bucket (0.5, 1] holds durations [1, 2) ms: at least 1 - 0.7004 = 0.2996 ms more than the kernel
  assert.match(d50.likely_cause, /at least 0\.3 ms more than the kernel/);
  assert.match(d50.likely_cause, /durations of 1 to 2 ms before Istio truncates them/);
  assert.match(d50.likely_cause, /server's sidecar/);
  assert.match(d50.likely_cause, /overhead analysis puts the mesh at 0\.83 ms/, 'by_service mesh_processing_ms');
  assert.match(d50.likely_cause, /104 in the mesh, 1000 in the kernel/);
  assert.match(d50.likely_cause, /^[A-Z].*\.$/);

  // reporter=source <-> the client view, whose raw buckets are in the report (the only client service)
  const s90 = diff(r, 'reviews', 'istio', 'source', 'p90');
  assert.equal(s90.ebpf_view, 'client');
  assert.equal(s90.ebpf_ms, cli.percentiles.p90);
  assert.ok(typeof s90.mesh_from_ebpf_ms === 'number');
  assert.match(
    s90.likely_cause,
    new RegExp(`would read ${String(Math.round(s90.mesh_from_ebpf_ms * 1000) / 1000).replace('.', '\\.')} ms`),
  );
  // mean: Istio's truncation loss computed from the kernel's own buckets
  const smean = diff(r, 'reviews', 'istio', 'source', 'mean');
  near(smean.mesh_ms, 3.8000000000000007);
  assert.match(smean.likely_cause, /after adding back the 0\.\d+ ms that Istio's truncation/);

  // a sub-millisecond service: recorded as 0, its quantiles in (0, 0.5]
  const r50 = diff(r, 'ratings', 'istio', 'destination', 'p50');
  near(r50.mesh_ms, 0.25);
  assert.deepEqual(r50.mesh_bucket_ms, [0, 0.5]);
  assert.match(
    r50.likely_cause,
    /^Resolution: the kernel's 0\.33 ms lies in the bucket .* \(0, 0\.5\] ms, which holds durations of 0 to 1 ms/,
  );
  assert.match(r50.likely_cause, /recorded as 0 and counts in the first bucket \(0, 0\.5\]/);
  assert.match(
    diff(r, 'ratings', 'istio', 'destination', 'p99').likely_cause,
    /only 50 requests, too few for a steady p99/,
  );

  // Hubble server <-> server view
  const h99 = diff(r, 'reviews', 'cilium', 'server', 'p99');
  assert.equal(h99.ebpf_view, 'server');
  near(h99.mesh_ms, 36.25);
  assert.deepEqual(h99.mesh_bucket_ms, [25, 50]);
  assert.match(h99.likely_cause, /Cilium's proxy/);

  const mv = reviews.mesh.find((m) => m.source === 'istio' && m.reporter === 'destination');
  assert.ok(mv, 'the istio destination figures');
  assert.deepEqual(
    mv.bucket_bounds_ms,
    [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000],
  );
  assert.deepEqual(mv.quantile_buckets_ms, { p50: [0.5, 1], p90: [5, 10], p99: [50, 100] });
  assert.equal(mv.requests, 104);
  assert.deepEqual(r.overhead_analysis, reportJson().metrics.overhead_analysis);
  assert.ok(
    r.notes.some((n) => /no mesh figures for the probe services details \(server\), python3:9080 \(server\)/.test(n)),
    r.notes.join(' | '),
  );
});

test("a report without per-service buckets: a service alone on its side gets its view's, the others none", () => {
  const p = probe();
  for (const s of p.services) delete s.buckets;
  // readProbeReport's rule, applied again: reviews is the only client service, with all the client view's requests
  const fixture = reportJson();
  const again = readProbeReport(
    JSON.stringify({
      ...fixture,
      metrics: {
        ...fixture.metrics,
        services: fixture.metrics.services.map((x) => {
          const withoutBuckets = { ...x };
          delete withoutBuckets.buckets;
          return withoutBuckets;
        }),
      },
    }),
    'x.json',
  );
  const client = again.services.find((s) => s.role === 'client');
  assert.ok(client && again.views.client, 'a client service and view');
  assert.deepEqual(client.buckets, again.views.client.buckets);
  const reviewsServer = again.services.find((s) => s.service === 'reviews' && s.role === 'server');
  assert.ok(reviewsServer, 'reviews (server)');
  assert.equal(reviewsServer.buckets, undefined, 'four server services');
  const r = analyze({ probe: again, mesh: [meshFile('istio-envoy.txt', 'istio')], inputs: {} });
  assert.equal(diff(r, 'reviews', 'istio', 'destination', 'p50').mesh_from_ebpf_ms, undefined);
  assert.equal(typeof diff(r, 'reviews', 'istio', 'source', 'p50').mesh_from_ebpf_ms, 'number');
  // without the kernel's buckets, the mean's truncation correction is the 0-1 ms band
  assert.match(
    diff(r, 'reviews', 'istio', 'destination', 'mean').likely_cause,
    /takes 0 to 1 ms off its mean \(0\.5 ms when fractions spread evenly\)/,
  );
});

test('only the other side seen: compared with it, and the cause says so', () => {
  const p = probe();
  p.services = p.services.filter((s) => !(s.service === 'reviews' && s.role === 'client'));
  const r = analyze({ probe: p, mesh: [meshFile('istio-envoy.txt', 'istio')], inputs: {} });
  const d = diff(r, 'reviews', 'istio', 'source', 'p50');
  assert.equal(d.ebpf_view, 'server');
  assert.match(
    d.likely_cause,
    /^The probe saw no client side of reviews, so istio reporter=source is compared with its server view/,
  );
  // source p50 bucket (1, 5] holds [2, 6) ms; the app's 0.7004 ms: both sidecars and the network
  assert.match(d.likely_cause, /at least 1\.3 ms more .* both sidecars and the network/);
});

test("Hubble without destination labels: the whole probe's views, with a note", () => {
  const r = analyze({ probe: probe(), mesh: [meshFile('hubble-basic.txt', 'cilium')], inputs: {} });
  const s = r.services.find((x) => x.service === WHOLE_PROBE);
  assert.ok(s, 'the whole probe compared');
  assert.deepEqual(s.ebpf.map((e) => `${e.probe_service}/${e.view}`).sort(), [
    `${WHOLE_PROBE}/client`,
    `${WHOLE_PROBE}/server`,
  ]);
  const p = probe();
  const d = diff(r, WHOLE_PROBE, 'cilium', 'server', 'p50');
  assert.ok(p.views.server?.percentiles, 'the server view has percentiles');
  assert.equal(d.ebpf_ms, p.views.server.percentiles.p50);
  near(d.mesh_ms, 3.125);
  assert.ok(typeof d.mesh_from_ebpf_ms === 'number', 'the whole view has its raw buckets');
  assert.ok(
    r.notes.some((n) => /name no destination .* compared with the probe's whole client and server views/.test(n)),
  );
});

test('--service-map pairs names that differ; unmatched and misspelt maps become notes; nothing to compare is an error', () => {
  const h = hist(
    'istio',
    'destination',
    'productpage',
    [
      [1, 5],
      [10, 10],
      [Infinity, 10],
    ],
    { aliases: ['productpage', 'productpage-v1'] },
  );
  const mesh: MeshInput[] = [{ source: 'istio', input: 'x', ranged: false, histograms: [h] }];
  assert.throws(
    () => analyze({ probe: probe(), mesh, inputs: {} }),
    (e: Error & { code?: string }) =>
      e.code === 'MP_NOTHING_TO_COMPARE' &&
      /no probe service matches a mesh service \(probe: reviews, ratings, details, python3:9080; mesh: productpage\).*--service-map reviews=productpage/.test(
        e.message,
      ),
  );
  const r = analyze({
    probe: probe(),
    mesh,
    serviceMap: new Map([
      ['python3:9080', 'productpage-v1'],
      ['nosuch:1', 'x'],
    ]),
    inputs: {},
  });
  const d = diff(r, 'productpage', 'istio', 'destination', 'p50');
  assert.equal(d.probe_service, 'python3:9080');
  // le 1: 5, 10: 10: p50 rank 5 -> first bucket: 1 * 5/5 = 1
  near(d.mesh_ms, 1);
  assert.ok(r.notes.some((n) => /--service-map nosuch:1=x: the probe report has no service nosuch:1/.test(n)));
  // a comm:port name matches a mesh service called like its comm
  const byComm = analyze({
    probe: probe(),
    mesh: [{ ...mesh[0], histograms: [{ ...h, name: 'python3', aliases: ['python3'] }] }],
    inputs: {},
  });
  assert.equal(diff(byComm, 'python3', 'istio', 'destination', 'p50').probe_service, 'python3:9080');
});

test('causes: a quantile in the +Inf bucket, the kernel above the mesh, live windows', () => {
  const p = probe();
  const srvP99 = p.services.find((s) => s.service === 'reviews' && s.role === 'server')?.percentiles?.p99;
  assert.ok(srvP99 !== undefined, 'reviews (server) has a p99');
  // 100 requests: 50 at <= 0.5 ms, 50 above 10 ms (+Inf): p90 falls in +Inf -> 10
  const h = hist(
    'istio',
    'destination',
    'reviews',
    [
      [0.5, 50],
      [10, 50],
      [Infinity, 100],
    ],
    { sum: 3000, count: 100 },
  );
  const r = analyze({
    probe: p,
    mesh: [{ source: 'istio', input: 'http://prom:9090', ranged: true, histograms: [h] }],
    inputs: {},
    live: { rangeS: 30, time: new Date(0) },
  });
  const d90 = diff(r, 'reviews', 'istio', 'destination', 'p90');
  assert.equal(d90.mesh_ms, 10);
  assert.deepEqual(d90.mesh_bucket_ms, [10, null]);
  assert.match(d90.likely_cause, /above the mesh's highest finite bucket bound, 10 ms, .* "more than 10 ms"/);
  assert.match(d90.likely_cause, /\(the probe ran 60\.004 s; the Prometheus range was 30 s\)/);
  // p50: rank 50 -> first bucket, 0.5 * 50/50 = 0.5, durations [0, 1): the kernel's 0.7004 is inside
  assert.match(diff(r, 'reviews', 'istio', 'destination', 'p50').likely_cause, /^Resolution/);
  // the kernel's p99 (17.17 ms) above a mesh whose p99 bucket ends lower: 1000 requests, 990 in (1, 5]
  const low = hist('istio', 'destination', 'reviews', [
    [1, 0],
    [5, 990],
    [Infinity, 1000],
  ]);
  const r2 = analyze({
    probe: p,
    mesh: [{ source: 'istio', input: 'f', ranged: false, histograms: [low] }],
    inputs: {},
  });
  const d99 = diff(r2, 'reviews', 'istio', 'destination', 'p99');
  // rank 990 -> (1, 5] holds durations [2, 6): the kernel measured at least p99 - 6 ms more
  assert.match(
    d99.likely_cause,
    new RegExp(
      `kernel measured at least ${String(Math.round((srvP99 - 6) * 1000) / 1000).replace('.', '\\.')} ms more`,
    ),
  );
  assert.match(d99.likely_cause, /cover different requests or time windows/);
  assert.doesNotMatch(d99.likely_cause, /they count different requests/, '1000 requests each');
  assert.match(diff(r2, 'reviews', 'istio', 'destination', 'mean').likely_cause, /has no mean/);
});
