// The mesh fixtures in test/fixtures/analyze/, each in the exact format its
// source writes, read by analyze-latency's readers, against quantiles worked
// out by hand below (histogram_quantile's rule: rank = q * total; the first
// bucket whose cumulative count >= rank; lower + (upper - lower) * (rank -
// count below) / (count in the bucket), lower = 0 for the first bucket; a rank
// in +Inf gives the highest finite bound). test/analyze-prometheus.test.ts
// checks the same files against a real Prometheus.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readMeshText, meshQuantile, requestsOf, type MeshHistogram, type MeshSource } from '../src/analyze/mesh.js';
// dist/test/ -> the repository
export const FIXTURES = fileURLToPath(new URL('../../test/fixtures/analyze/', import.meta.url));

function load(file: string, source: MeshSource) {
  return readMeshText(readFileSync(join(FIXTURES, file), 'utf8'), source, file);
}

function find(hs: MeshHistogram[], name: string | null, reporter: string): MeshHistogram {
  const h = hs.find((x) => x.name === name && x.reporter === reporter);
  assert.ok(
    h,
    `no ${String(name)} reporter=${reporter} in ${hs.map((x) => `${String(x.name)}/${x.reporter}`).join(', ')}`,
  );
  return h;
}

const near = (a: number | null, b: number, what: string) => {
  assert.ok(a !== null && Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)), `${what}: ${String(a)} != ${b}`);
};

function expectFigures(
  h: MeshHistogram,
  want: { requests: number; p50: number; p90: number; p99: number; mean: number | null },
  what: string,
) {
  assert.equal(requestsOf(h), want.requests, `${what} requests`);
  near(meshQuantile(h, 0.5).ms, want.p50, `${what} p50`);
  near(meshQuantile(h, 0.9).ms, want.p90, `${what} p90`);
  near(meshQuantile(h, 0.99).ms, want.p99, `${what} p99`);
  const mean = h.sum !== null && h.count ? (h.sum / h.count) * h.toMs : null;
  if (want.mean === null) assert.equal(mean, null);
  else near(mean, want.mean, `${what} mean`);
}

// reviews, reporter="destination": two series (response_code 200 and 503) summed by le.
//   200: le 0.5: 40, 1: 70, 5: 90, 10: 96, 25..+Inf: 100      503: 5: 2, 10: 2, 25: 2, 50: 2, 100..+Inf: 4
//   sum:  0.5: 40, 1: 70, 5: 92, 10: 98, 25: 102, 50: 102, 100..+Inf: 104
//   p50: rank 52   -> (0.5, 1]:  0.5 + 0.5 * (52 - 40) / (70 - 40)     = 0.5 + 0.2      = 0.7
//   p90: rank 93.6 -> (5, 10]:   5 + 5 * (93.6 - 92) / (98 - 92)        = 5 + 1.3333...  = 6.3333...
//   p99: rank 102.96 -> (50, 100]: 50 + 50 * (102.96 - 102) / (104 - 102) = 50 + 24     = 74
//   mean: (192.5 + 166) / (100 + 4) = 358.5 / 104 = 3.4471153846...
const REVIEWS_DEST = { requests: 104, p50: 0.7, p90: 5 + 5 * (1.6 / 6), p99: 74, mean: 358.5 / 104 };
// reviews, reporter="source": le 0.5: 5, 1: 30, 5: 80, 10: 92, 25: 98, 50..+Inf: 100
//   p50: rank 50 -> (1, 5]:   1 + 4 * (50 - 30) / 50 = 1 + 1.6 = 2.6
//   p90: rank 90 -> (5, 10]:  5 + 5 * (90 - 80) / 12 = 5 + 4.1666... = 9.1666...
//   p99: rank 99 -> (25, 50]: 25 + 25 * (99 - 98) / 2 = 37.5
//   mean: Envoy's _sum 380.00000000000005684341886080801 (%.32g of a double) / 100
const REVIEWS_SRC = { requests: 100, p50: 2.6, p90: 5 + 5 * (10 / 12), p99: 37.5, mean: 380.00000000000006 / 100 };
// ratings, reporter="destination": all 50 requests took under 1 ms, recorded as 0 ms by Istio: le 0.5..+Inf: 50
//   p50: rank 25 -> first bucket (0, 0.5]: 0 + 0.5 * 25/50 = 0.25; p90: 0.5 * 45/50 = 0.45; p99: 0.5 * 49.5/50 = 0.495; mean 0/50 = 0
const RATINGS_DEST = { requests: 50, p50: 0.25, p90: 0.45, p99: 0.495, mean: 0 };

test('Envoy scrape (istio-envoy.txt): no HELP, le="0.5"/"1"/"3600000", empty grpc_response_status, both reporters', () => {
  const text = readFileSync(join(FIXTURES, 'istio-envoy.txt'), 'utf8');
  assert.ok(
    !text.includes('# HELP') &&
      text.includes('le="3600000"') &&
      text.includes('grpc_response_status=""') &&
      text.includes('le="1"}'),
  );
  const set = load('istio-envoy.txt', 'istio');
  assert.equal(
    set.histograms.length,
    3,
    'reviews (destination, source) and ratings; envoy_cluster_* is not a mesh histogram',
  );
  const dest = find(set.histograms, 'reviews', 'destination');
  expectFigures(dest, REVIEWS_DEST, 'reviews destination');
  assert.equal(dest.namespace, 'bookinfo');
  assert.ok(dest.aliases.includes('reviews-v1') && dest.aliases.includes('reviews.bookinfo.svc.cluster.local'));
  assert.equal(dest.buckets.length, 20, '19 Envoy bounds and +Inf');
  expectFigures(find(set.histograms, 'reviews', 'source'), REVIEWS_SRC, 'reviews source');
  expectFigures(find(set.histograms, 'ratings', 'destination'), RATINGS_DEST, 'ratings destination');
  // the buckets the quantiles were interpolated in
  const d = meshQuantile(dest, 0.99).detail;
  assert.deepEqual([d.buckets[d.index - 1].le, d.upper], [50, 100]);
});

test('OpenMetrics / Prometheus 3 style (istio-openmetrics.txt): le="1.0", "3.6e+06", "1e+06", empty labels dropped, exemplar, # EOF', () => {
  const text = readFileSync(join(FIXTURES, 'istio-openmetrics.txt'), 'utf8');
  assert.ok(
    text.includes('le="1.0"') &&
      text.includes('le="1e+06"') &&
      text.includes('le="3.6e+06"') &&
      text.trimEnd().endsWith('# EOF'),
  );
  assert.ok(!text.includes('=""') && text.includes('# {trace_id='));
  const set = load('istio-openmetrics.txt', 'istio');
  const envoy = load('istio-envoy.txt', 'istio');
  // the same requests as the Envoy scrape: identical figures, whatever the le spelling
  for (const [name, rep] of [
    ['reviews', 'destination'],
    ['reviews', 'source'],
    ['ratings', 'destination'],
  ]) {
    const a = find(set.histograms, name, rep);
    const b = find(envoy.histograms, name, rep);
    assert.deepEqual(a.buckets, b.buckets, `${name} ${rep}`);
    for (const q of [0.5, 0.9, 0.99]) assert.equal(meshQuantile(a, q).ms, meshQuantile(b, q).ms);
  }
  expectFigures(find(set.histograms, 'reviews', 'destination'), REVIEWS_DEST, 'reviews destination (OpenMetrics)');
  // details: a custom layout 1, 10, 100, 1000, 10000, 100000, 1e+06 (sidecar.istio.io/statsHistogramBuckets)
  //   le 1: 10, 10: 70, 100: 95, 1000: 99, 10000: 99, 100000: 99, 1e+06: 100, +Inf: 100
  //   p50: rank 50 -> (1, 10]:      1 + 9 * (50 - 10) / 60   = 1 + 6  = 7
  //   p90: rank 90 -> (10, 100]:    10 + 90 * (90 - 70) / 25 = 10 + 72 = 82
  //   p99: rank 99 -> (100, 1000]:  100 + 900 * (99 - 95) / 4 = 1000
  //   mean: 12345.5 / 100 = 123.455
  const det = find(set.histograms, 'details', 'destination');
  assert.deepEqual(
    det.buckets.map((b) => b.le),
    [1, 10, 100, 1000, 10000, 100000, 1e6, Infinity],
  );
  expectFigures(det, { requests: 100, p50: 7, p90: 82, p99: 1000, mean: 123.455 }, 'details destination');
});

// Hubble, reviews, reporter="server": GET and POST summed (seconds):
//   GET  le .005: 80, .01: 92, .025: 98, .05..+Inf: 100      POST .005..+Inf: 10
//   sum  .005: 90, .01: 102, .025: 108, .05..+Inf: 110
//   p50: rank 55    -> (0, .005]:    .005 * 55/90                 = 0.0030555... s = 3.0555... ms
//   p90: rank 99    -> (.005, .01]:  .005 + .005 * (99 - 90) / 12 = .00875 s       = 8.75 ms
//   p99: rank 108.9 -> (.025, .05]:  .025 + .025 * 0.9 / 2        = .03625 s       = 36.25 ms
//   mean: (0.4312 + 0.021) / 110 s = 4.1109... ms
// reporter="client": .005: 60, .01: 90, .025: 98, .05..+Inf: 100
//   p50: .005 * 50/60 = 4.1666... ms; p90: rank 90 = the count at .01 -> .005 + .005 * 30/30 = 10 ms;
//   p99: .025 + .025 * (99 - 98) / 2 = 37.5 ms; mean 0.5874 / 100 s = 5.874 ms
const HUBBLE_CLIENT = { requests: 100, p50: ((0.005 * 50) / 60) * 1000, p90: 10, p99: 37.5, mean: 5.874 };

test('Hubble (client_golang) scrape (hubble.txt): labels sorted, le last, labelsContext destination_app', () => {
  const text = readFileSync(join(FIXTURES, 'hubble.txt'), 'utf8');
  assert.match(
    text,
    /hubble_http_request_duration_seconds_bucket\{destination_app="reviews",destination_namespace="bookinfo",method="GET",reporter="server",source_app="productpage",source_namespace="bookinfo",le="0.005"\} 80/,
  );
  const set = load('hubble.txt', 'cilium');
  assert.equal(set.histograms.length, 2);
  const srv = find(set.histograms, 'reviews', 'server');
  assert.equal(srv.namespace, 'bookinfo');
  expectFigures(
    srv,
    { requests: 110, p50: ((0.005 * 55) / 90) * 1000, p90: 8.75, p99: 36.25, mean: ((0.4312 + 0.021) / 110) * 1000 },
    'hubble server',
  );
  expectFigures(find(set.histograms, 'reviews', 'client'), HUBBLE_CLIENT, 'hubble client');
});

test('Hubble with its default labels (hubble-basic.txt): method and reporter only, no service', () => {
  const set = load('hubble-basic.txt', 'cilium');
  // server: .005: 80, .01: 92, .025: 98, .05: 100
  //   p50: .005 * 50/80 = 3.125 ms; p90: .005 + .005 * (90 - 80) / 12 = 9.1666... ms; p99: .025 + .025 * 1/2 = 37.5 ms
  expectFigures(
    find(set.histograms, null, 'server'),
    { requests: 100, p50: 3.125, p90: (0.005 + 0.005 * (10 / 12)) * 1000, p99: 37.5, mean: 4.312 },
    'basic server',
  );
  expectFigures(find(set.histograms, null, 'client'), HUBBLE_CLIENT, 'basic client');
});

test('API vector JSON (istio-vector.json): two pods of reviews from a Prometheus 3 (le "1.0"), summed over instance', () => {
  const set = load('istio-vector.json', 'istio');
  assert.equal(set.histograms.length, 1);
  // pod a: 0.5: 10, 1: 30, 5: 45, 10..+Inf: 50     pod b: 0.5: 20, 1: 40, 5: 46, 10: 48, 25..+Inf: 50
  // sum:   0.5: 30, 1: 70, 5: 91, 10: 98, 25..+Inf: 100
  //   p50: rank 50 -> (0.5, 1]:  0.5 + 0.5 * (50 - 30) / 40 = 0.75
  //   p90: rank 90 -> (1, 5]:    1 + 4 * (90 - 70) / 21     = 4.8095238...
  //   p99: rank 99 -> (10, 25]:  10 + 15 * (99 - 98) / 2    = 17.5
  //   mean: (95 + 80) / 100 = 1.75
  expectFigures(
    find(set.histograms, 'reviews', 'destination'),
    { requests: 100, p50: 0.75, p90: 1 + 4 * (20 / 21), p99: 17.5, mean: 1.75 },
    'vector',
  );
});

test('API matrix JSON (istio-matrix.json): increase from first to last sample, the pod restart corrected', () => {
  const set = load('istio-matrix.json', 'istio');
  assert.ok(
    set.notes.some((n) => /range query .* counter resets corrected \(22 series had a reset\)/.test(n)),
    set.notes.join(' | '),
  );
  // samples at t0..t3 (cumulative by le):  t0: 100 150 180 190 200   t1: 110 170 205 216 226
  //   t2 (restart): 5 10 12 12 12   t3: 15 30 40 44 50   (le 0.5, 1, 5, 10, and 25..+Inf)
  // increase = (t1 - t0) + t3 (the counter restarted from 0 before t2): 25, 50, 65, 70, 76
  //   p50: rank 38    -> (0.5, 1]:  0.5 + 0.5 * (38 - 25) / 25     = 0.76
  //   p90: rank 68.4  -> (5, 10]:   5 + 5 * (68.4 - 65) / 5        = 8.4
  //   p99: rank 75.24 -> (10, 25]:  10 + 15 * (75.24 - 70) / 6     = 23.1
  //   mean: _sum 900, 1000, 40, 160 -> (1000 - 900) + 160 = 260; / 76
  const h = find(set.histograms, 'reviews', 'destination');
  assert.deepEqual(
    h.buckets.slice(0, 5).map((b) => b.count),
    [25, 50, 65, 70, 76],
  );
  expectFigures(h, { requests: 76, p50: 0.76, p90: 8.4, p99: 23.1, mean: 260 / 76 }, 'matrix');
});
