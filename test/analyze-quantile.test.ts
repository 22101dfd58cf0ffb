// histogram_quantile as Prometheus computes it (promql/quantile.go,
// bucketQuantile), rule by rule, with every expected value worked out by hand
// in the comments; and the float syntax of `le` (Go's ParseFloat).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  histogramQuantile,
  normalizeBuckets,
  parseGoFloat,
  quantileDetail,
  sumBuckets,
  type Bucket,
} from '../src/analyze/quantile.js';

const B = (pairs: [number, number][]): Bucket[] => pairs.map(([le, count]) => ({ le, count }));
const near = (a: number, b: number) => {
  assert.ok(Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)), `${a} != ${b}`);
};

// cumulative 10 | 30 | 45 | 50 over le 1, 2, 4, +Inf
const H = B([
  [1, 10],
  [2, 30],
  [4, 45],
  [Infinity, 50],
]);

test('interpolation inside the bucket that holds the rank, from 0 in the first bucket', () => {
  // q=0.1: rank 5 <= 10 -> first bucket (0, 1]: 0 + 1 * 5/10 = 0.5
  near(histogramQuantile(0.1, H), 0.5);
  // q=0.5: rank 25 -> (1, 2] holding 30-10=20: 1 + 1 * (25-10)/20 = 1.75
  near(histogramQuantile(0.5, H), 1.75);
  // q=0.8: rank 40 -> (2, 4] holding 15: 2 + 2 * (40-30)/15 = 3.3333...
  near(histogramQuantile(0.8, H), 2 + 2 * (10 / 15));
  // q=0.9: rank 45 = the count at le=4 -> that bucket, its upper edge: 2 + 2 * 15/15 = 4
  near(histogramQuantile(0.9, H), 4);
  const d = quantileDetail(0.5, H);
  assert.deepEqual([d.index, d.lower, d.upper, d.inInf], [1, 1, 2, false]);
});

test('the rank in the +Inf bucket gives the second-highest bound', () => {
  // q=0.95: rank 47.5 > 45 -> +Inf bucket -> 4
  assert.equal(histogramQuantile(0.95, H), 4);
  const d = quantileDetail(0.99, H);
  assert.equal(d.inInf, true);
  assert.equal(d.value, 4);
  assert.equal(d.upper, Infinity);
});

test('q outside [0, 1] and NaN', () => {
  assert.equal(histogramQuantile(-0.1, H), -Infinity);
  assert.equal(histogramQuantile(1.1, H), Infinity);
  assert.ok(Number.isNaN(histogramQuantile(NaN, H)));
  // checked before the buckets, as Prometheus does: even with no +Inf bucket
  assert.equal(histogramQuantile(2, B([[1, 3]])), Infinity);
  assert.equal(histogramQuantile(-1, []), -Infinity);
  // q = 1: rank = total 50; no finite bucket reaches 50 -> +Inf bucket -> 4
  assert.equal(histogramQuantile(1, H), 4);
  // q = 0: rank 0 -> the first bucket: 0 + 1 * 0/10 = 0
  assert.equal(histogramQuantile(0, H), 0);
  // q = 0 with an empty first bucket: 0 * (0/0) = NaN in Prometheus too
  assert.ok(
    Number.isNaN(
      histogramQuantile(
        0,
        B([
          [1, 0],
          [2, 5],
          [Infinity, 5],
        ]),
      ),
    ),
  );
});

test('NaN cases: no +Inf bucket, fewer than two buckets, no observations', () => {
  assert.ok(
    Number.isNaN(
      histogramQuantile(
        0.5,
        B([
          [1, 10],
          [2, 20],
        ]),
      ),
    ),
  );
  assert.equal(
    quantileDetail(
      0.5,
      B([
        [1, 10],
        [2, 20],
      ]),
    ).reason,
    'no le="+Inf" bucket',
  );
  assert.ok(Number.isNaN(histogramQuantile(0.5, B([[Infinity, 10]]))));
  // two +Inf buckets merge into one: still fewer than two
  assert.ok(
    Number.isNaN(
      histogramQuantile(
        0.5,
        B([
          [Infinity, 4],
          [Infinity, 6],
        ]),
      ),
    ),
  );
  assert.ok(
    Number.isNaN(
      histogramQuantile(
        0.5,
        B([
          [1, 0],
          [2, 0],
          [Infinity, 0],
        ]),
      ),
    ),
  );
  assert.ok(Number.isNaN(histogramQuantile(0.5, [])));
});

test('unsorted buckets are sorted, equal bounds merged (le "1" and "1.0" are one bucket)', () => {
  // two series summed by le string give le=1 twice: 4 + 6 = 10, le=2: 30, +Inf: 50 -> same as H at q=0.5
  const split = B([
    [Infinity, 50],
    [2, 30],
    [1, 4],
    [4, 45],
    [1, 6],
  ]);
  near(histogramQuantile(0.5, split), 1.75);
  assert.deepEqual(normalizeBuckets(split).buckets, H);
});

test('counts made monotonic before the search (each at least the one before)', () => {
  // 10 | 8 | 45 | 50 -> 10 | 10 | 45 | 50; q=0.5: rank 25 -> (2, 4] holding 35: 2 + 2 * 15/35
  const { buckets, forcedMonotonic } = normalizeBuckets(
    B([
      [1, 10],
      [2, 8],
      [4, 45],
      [Infinity, 50],
    ]),
  );
  assert.equal(forcedMonotonic, true);
  assert.deepEqual(
    buckets.map((b) => b.count),
    [10, 10, 45, 50],
  );
  near(
    histogramQuantile(
      0.5,
      B([
        [1, 10],
        [2, 8],
        [4, 45],
        [Infinity, 50],
      ]),
    ),
    2 + 2 * (15 / 35),
  );
  // a +Inf count below the finite ones is raised too: total 45, rank 22.5 -> (1, 2]: 1 + 1 * 12.5/20
  near(
    histogramQuantile(
      0.5,
      B([
        [1, 10],
        [2, 30],
        [4, 45],
        [Infinity, 40],
      ]),
    ),
    1.625,
  );
});

test('counts within 1e-12 of the previous one are float noise (set equal)', () => {
  const noisy = B([
    [1, 10],
    [2, 10 * (1 + 1e-13)],
    [4, 20],
    [Infinity, 20],
  ]);
  assert.equal(normalizeBuckets(noisy).buckets[1].count, 10);
  // q=0.5: rank 10 <= 10 at le=1 -> 0 + 1 * 10/10 = 1
  assert.equal(histogramQuantile(0.5, noisy), 1);
});

test('a first bound <= 0 is returned as it is when the rank falls there', () => {
  // le -1: 5, 0: 5, 1: 10, +Inf: 10; q=0.2: rank 2 -> first bucket (bound -1 <= 0) -> -1
  const neg = B([
    [-1, 5],
    [0, 5],
    [1, 10],
    [Infinity, 10],
  ]);
  assert.equal(histogramQuantile(0.2, neg), -1);
  // q=0.7: rank 7 -> (0, 1] holding 5: 0 + 1 * 2/5 = 0.4
  near(histogramQuantile(0.7, neg), 0.4);
  // first bound exactly 0: the rank there returns 0
  assert.equal(
    histogramQuantile(
      0.1,
      B([
        [0, 3],
        [1, 10],
        [Infinity, 10],
      ]),
    ),
    0,
  );
  // a negative second bucket interpolates from the first bound: le -2: 2, -1: 6; q=0.5 rank 5 -> -2 + 1 * 3/4
  near(
    histogramQuantile(
      0.5,
      B([
        [-2, 2],
        [-1, 6],
        [Infinity, 10],
      ]),
    ),
    -1.25,
  );
});

test('fractional counts (rate/increase results) interpolate the same way', () => {
  // 0.5 | 1.5 | 2 ; q=0.5 rank 1 -> (1, 2]: 1 + 1 * 0.5/1
  near(
    histogramQuantile(
      0.5,
      B([
        [1, 0.5],
        [2, 1.5],
        [Infinity, 2],
      ]),
    ),
    1.5,
  );
});

test('sumBuckets adds series by numeric le', () => {
  const a = B([
    [0.5, 1],
    [1, 3],
    [Infinity, 4],
  ]);
  const b = B([
    [0.5, 2],
    [1, 2],
    [Infinity, 5],
  ]);
  assert.deepEqual(
    sumBuckets([a, b]),
    B([
      [0.5, 3],
      [1, 5],
      [Infinity, 9],
    ]),
  );
});

test('le as Go ParseFloat reads it', () => {
  for (const [s, v] of [
    ['1', 1],
    ['1.0', 1],
    ['1e+06', 1e6],
    ['3.6e+06', 3.6e6],
    ['0.005', 0.005],
    ['.5', 0.5],
    ['5.', 5],
    ['+Inf', Infinity],
    ['Inf', Infinity],
    ['inf', Infinity],
    ['+infinity', Infinity],
    ['-Inf', -Infinity],
    ['1E3', 1000],
    ['-0.5', -0.5],
    ['3600000', 3600000],
  ] as const) {
    assert.equal(parseGoFloat(s), v, s);
  }
  assert.ok(Number.isNaN(parseGoFloat('NaN')));
  assert.ok(Number.isNaN(parseGoFloat('nan')));
  for (const s of ['', ' 1', '1 ', '0x10', '1,5', 'abc', '+nan', '1e', 'e5', 'Infinit'])
    assert.equal(parseGoFloat(s), undefined, JSON.stringify(s));
});
