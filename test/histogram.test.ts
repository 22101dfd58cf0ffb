import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as H from '../src/histogram.js';
import { createState, decodeBytes, readGlobalHistograms } from '../src/wasm.js';
import { ROLE_CLIENT } from '../src/records.js';
import { encodeLatency, perfSample, concatBytes } from './helpers/records.js';

// deterministic PRNG
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}
function lognormal(r: () => number, median: number, sigma: number): number {
  const g = Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  return Math.max(1, Math.round(median * Math.exp(sigma * g)));
}
/** nearest-rank percentile of a sorted array */
function exact(sorted: number[], q: number): number {
  const target = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[target - 1];
}

const NB = H.bucketCount();
const OVF = H.overflowIndex();
const LIMIT = 2 ** 36;

test('bucket layout: 1985 buckets, overflow at 2^36', () => {
  assert.equal(NB, 1985);
  assert.equal(OVF, 1984);
  assert.equal(H.bucketLower(OVF), LIMIT);
  assert.equal(H.bucketBoundsBig(OVF)[1], 0xffffffffffffffffn);
  assert.equal(H.bucketIndex(LIMIT), OVF);
  assert.equal(H.bucketIndex(LIMIT - 1), OVF - 1);
  assert.equal(H.bucketIndex(0xffffffffffffffffn), OVF);
  assert.equal(H.bucketIndex(0), 0);
  assert.equal(H.bucketIndex(127), 127);
  assert.equal(H.bucketIndex(128), 128);
});

test('bucket bounds are continuous, monotonic, and agree with bucketIndex', () => {
  for (let i = 0; i < OVF; i++) {
    const [lo, hi] = H.bucketBoundsBig(i);
    assert.ok(hi > lo, `bucket ${i} empty`);
    assert.equal(H.bucketBoundsBig(i + 1)[0], hi, `gap/overlap after bucket ${i}`);
    assert.equal(H.bucketIndex(lo), i, `index(lower(${i}))`);
    assert.equal(H.bucketIndex(hi - 1n), i, `index(upper(${i})-1)`);
    if (i >= 128) assert.ok(Number(hi - lo) / Number(lo) <= 1 / 64 + 1e-12, `relative width of ${i}`);
  }
});

test('relative error of the bucket midpoint < 1% for values 1 µs .. 60 s (incl. every bucket edge)', () => {
  const values: number[] = [];
  // log-spaced values
  const n = 100_000;
  for (let k = 0; k <= n; k++) values.push(Math.round(1e3 * Math.pow(60e9 / 1e3, k / n)));
  // every bucket's first and last value in range
  for (let i = 0; i < OVF; i++) {
    const lo = H.bucketLower(i),
      hi = H.bucketUpper(i);
    for (const v of [lo, hi - 1, lo + 1, hi - 2]) if (v >= 1e3 && v <= 60e9) values.push(v);
  }
  // random values
  const r = rng(7);
  for (let k = 0; k < 50_000; k++) values.push(Math.round(1e3 * Math.exp(r() * Math.log(60e6))));
  let worst = 0;
  for (const v of values) {
    const mid = H.bucketMid(H.bucketIndex(v));
    const err = Math.abs(mid - v) / v;
    if (err > worst) worst = err;
    assert.ok(err < 0.01, `value ${v}: midpoint ${mid}, error ${err}`);
  }
  assert.ok(worst < 1 / 128 + 1e-9, `worst error ${worst}`);
});

test('overflow bucket: values >= 2^36 ns; percentiles clamp to max', () => {
  const vals = [1000, 2000, LIMIT, LIMIT * 4, 1e12];
  const h = H.histogramOf(vals);
  assert.deepEqual(h.buckets.at(-1), [OVF, 3]);
  assert.equal(H.percentile(h, 1), 1e12);
  assert.equal(H.percentile(h, 0.9), 1e12); // overflow midpoint is +inf: clamped to max
  assert.equal(H.rangeCounts(h)['100ms+'], 3);
  const list = H.toBucketList(h);
  assert.deepEqual(list.at(-1), [LIMIT, 2 ** 64, 3]);
  assert.deepEqual(H.fromBucketList(list).buckets, h.buckets);
});

test('percentiles match exact sorted-array percentiles (nearest rank) within 1%', () => {
  const r = rng(42);
  for (const [median, sigma, n] of [
    [50_000, 0.3, 1000],
    [2e6, 1.0, 20_000],
    [30e6, 2.0, 5000],
    [5e3, 0.1, 1],
  ] as const) {
    const vals: number[] = [];
    for (let i = 0; i < n; i++) vals.push(lognormal(r, median, sigma));
    const h = H.histogramOf(vals);
    const sorted = [...vals].sort((a, b) => a - b);
    assert.equal(h.count, n);
    assert.equal(h.min_ns, sorted[0]);
    assert.equal(h.max_ns, sorted[n - 1]);
    for (const q of [0, 0.001, 0.1, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1]) {
      const want = exact(sorted, q);
      const got = H.percentile(h, q);
      assert.ok(
        Math.abs(got - want) / want < 0.01,
        `median ${median} sigma ${sigma} q=${q}: got ${got}, exact ${want}`,
      );
      // same bucket as the exact answer
      assert.equal(H.bucketIndex(Math.floor(got)), H.bucketIndex(want), `q=${q} bucket`);
    }
    // clamped to [min, max]
    assert.ok(H.percentile(h, 1) <= sorted[n - 1] && H.percentile(h, 0) >= sorted[0]);
  }
  assert.equal(H.percentile(H.emptyHistogram(), 0.5), 0);
});

test('merge: equals the histogram of the union; empty is the identity; commutative', () => {
  const r = rng(3);
  const a: number[] = [],
    b: number[] = [];
  for (let i = 0; i < 3000; i++) a.push(lognormal(r, 1e6, 1));
  for (let i = 0; i < 2000; i++) b.push(lognormal(r, 20e6, 0.5));
  const ha = H.histogramOf(a),
    hb = H.histogramOf(b);
  const m = H.merge(ha, hb);
  assert.deepEqual(m, H.histogramOf([...a, ...b]));
  assert.deepEqual(H.merge(hb, ha), m);
  assert.deepEqual(H.merge(ha, H.emptyHistogram()), ha);
  assert.deepEqual(H.merge(H.emptyHistogram(), hb), hb);
  assert.deepEqual(H.mergeAll([ha, H.emptyHistogram(), hb]), m);
  // inputs untouched
  assert.deepEqual(ha, H.histogramOf(a));
});

test('range counts by bucket midpoint', () => {
  const h = H.histogramOf([10, 500_000, 999_000, 1_000_001, 4_000_000, 7e6, 20e6, 60e6, 99e6, 150e6, 5e9]);
  assert.deepEqual(H.rangeCounts(h), { '0-1ms': 3, '1-5ms': 2, '5-10ms': 1, '10-50ms': 1, '50-100ms': 2, '100ms+': 2 });
  // a bucket straddling 1 ms goes where its midpoint is
  const i = H.bucketIndex(1e6);
  const lo = H.bucketLower(i),
    hi = H.bucketUpper(i);
  assert.ok(lo < 1e6 && hi > 1e6, 'the bucket of 1 ms straddles 1 ms');
  const mid = H.bucketMid(i);
  const hs = H.histogramOf([lo, hi - 1]);
  const rc = H.rangeCounts(hs);
  assert.equal(mid < 1e6 ? rc['0-1ms'] : rc['1-5ms'], 2);
  const total = Object.values(H.rangeCounts(h)).reduce((x, y) => x + y, 0);
  assert.equal(total, h.count);
});

test('bucket list export / import round trip, JSON and cross-host merge', () => {
  const r = rng(11);
  const a: number[] = [],
    b: number[] = [];
  for (let i = 0; i < 1000; i++) a.push(lognormal(r, 3e6, 0.8));
  for (let i = 0; i < 1000; i++) b.push(lognormal(r, 300e3, 0.8));
  const ha = H.histogramOf(a),
    hb = H.histogramOf(b);
  const la = H.toBucketList(ha);
  for (const [lo, hi, c] of la) {
    assert.ok(hi > lo && c > 0);
    assert.equal(H.bucketIndex(lo), H.bucketIndex(hi - 1));
  }
  const back = H.fromBucketList(JSON.parse(JSON.stringify(la)) as typeof la, {
    sum_ns: ha.sum_ns,
    min_ns: ha.min_ns,
    max_ns: ha.max_ns,
  });
  assert.deepEqual(back, ha);
  // without extras: min/max are bucket bounds around the true values, percentiles within 1%
  const approx = H.fromBucketList(la);
  assert.equal(approx.count, ha.count);
  assert.ok(approx.min_ns <= ha.min_ns && approx.max_ns >= ha.max_ns);
  assert.ok(Math.abs(approx.sum_ns - ha.sum_ns) / ha.sum_ns < 0.01);
  // two hosts: concatenated lists rebuild the merged histogram
  const merged = H.fromBucketList([...la, ...H.toBucketList(hb)]);
  assert.deepEqual(merged.buckets, H.merge(ha, hb).buckets);
  assert.deepEqual(H.fromBucketList([]), H.emptyHistogram());
});

test('the Wasm decoder builds the same histogram as histogramOf()', () => {
  const st = createState({ connCapacity: 16, serviceCapacity: 4, workers: 1, stagingBytes: 1 << 16 });
  const r = rng(5);
  const vals: number[] = [];
  const parts: Uint8Array[] = [];
  for (let i = 0; i < 5000; i++) {
    const v = i < 10 ? [0, 1, 127, 128, 2 ** 36 - 1, 2 ** 36, 1e12, 999_999, 1_000_000, 64][i] : lognormal(r, 5e6, 1.5);
    vals.push(v);
    parts.push(
      perfSample(encodeLatency({ conn_id: 1 + (i % 7), role: ROLE_CLIENT, latency_ns: v, lport: 1, rport: 2 })),
    );
  }
  const bytes = concatBytes(parts);
  assert.equal(decodeBytes(st, 0, bytes), bytes.length);
  const got = readGlobalHistograms(st).client;
  assert.deepEqual(got, H.histogramOf(vals));
});
