// Connection rows keep a compact histogram (assembly/layout.ts ROW_*): 8 sub-buckets per power of
// two, u32 counts that saturate, exact u64 count/sum/min/max. These tests hold a row against the
// fine histogram of the same values (the service's, which keeps the full form), check the row
// geometry, and the u32 edge.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as R from '../src/records.js';
import * as H from '../src/histogram.js';
import { concatBytes, encodeLatency, perfSample } from './helpers/records.js';
import {
  createState,
  decodeBytes,
  readConnTable,
  readGlobalHistograms,
  readSvcTable,
  rowBucketBounds,
  rowHistogram,
  rowRepresentative,
  wasmConst,
  wasmExports,
  type ConnSlot,
  type State,
} from '../src/wasm.js';

const state = (rows = 16): State =>
  createState({ connCapacity: rows, serviceCapacity: 16, workers: 1, stagingBytes: 1 << 16 });
const lat = (conn_id: number, latency_ns: number | bigint) =>
  perfSample(encodeLatency({ conn_id, role: R.ROLE_SERVER, latency_ns, lport: 80, rport: 40000 + conn_id }));

function histOf(x: { hist?: H.HistogramSnapshot }): H.HistogramSnapshot {
  assert.ok(x.hist, 'read without its histogram');
  return x.hist;
}

function onlyRow(st: State): ConnSlot {
  const rows = readConnTable(st);
  assert.equal(rows.length, 1);
  return rows[0];
}

const SHIFT = wasmConst('ROW_SHIFT');
const ROW_NB = wasmConst('ROW_NB');
const OVERFLOW = wasmConst('HIST_OVERFLOW');
const U32_MAX = 0xffffffff;
/** last fine bucket of row bucket r */
const lastFine = (r: number) => Math.min((r << SHIFT) + (1 << SHIFT) - 1, OVERFLOW);

// every row bucket's edges, values below 128 ns, and the overflow (>= 2^36 ns)
const VALUES: number[] = [0, 1, 7, 8, 63, 64, 127, 128, 129, 255, 256, 1000, 1023, 1024, 999_999, 1_000_000];
for (let r = 16; r < ROW_NB - 1; r += 5) {
  const lo = H.bucketLower(r << SHIFT);
  VALUES.push(lo, lo + 1, H.bucketUpper(lastFine(r)) - 1);
}
VALUES.push(2 ** 36 - 1, 2 ** 36, 2 ** 40);
for (let i = 0; i < 500; i++) VALUES.push(Math.round(50_000 * 1.02 ** i) % 2 ** 35);

test("a row's compact histogram against the fine one of the same values: counts per row bucket equal, count/sum/min/max exact", () => {
  const st = state();
  const bytes = concatBytes(VALUES.map((v) => lat(1, v)));
  assert.equal(decodeBytes(st, 0, bytes), bytes.length);
  const row = onlyRow(st);
  const fine = histOf(readSvcTable(st)[0]);
  // the service (and the global view) keep the full form: bit-identical to the values' fine histogram
  assert.deepEqual(fine, H.histogramOf(VALUES));
  assert.deepEqual(readGlobalHistograms(st).server, H.histogramOf(VALUES));
  const h = histOf(row);
  assert.equal(row.requests, VALUES.length);
  assert.equal(h.count, VALUES.length);
  assert.equal(h.sum_ns, fine.sum_ns);
  assert.equal(
    h.sum_ns,
    VALUES.reduce((a, v) => a + v, 0),
  );
  assert.equal(h.min_ns, Math.min(...VALUES));
  assert.equal(h.max_ns, Math.max(...VALUES));
  // per row bucket: the sum of the fine counts of its run of fine buckets
  const perRow = new Map<number, number>();
  for (const [i, c] of fine.buckets) perRow.set(i >> SHIFT, (perRow.get(i >> SHIFT) ?? 0) + c);
  assert.deepEqual(
    h.buckets,
    [...perRow.entries()].sort((a, b) => a[0] - b[0]).map(([r, c]) => [rowRepresentative(r), c]),
  );
  assert.deepEqual(h, rowHistogram(fine));
  // each row bucket's true bounds hold exactly the values counted in it
  for (const [rep, c] of h.buckets) {
    const [lo, hi] = rowBucketBounds(rep);
    assert.equal(VALUES.filter((v) => v >= lo && v < hi).length, c, `row bucket [${String(lo)}, ${String(hi)})`);
  }
  // a per-connection percentile lies in the row bucket of the exact nearest-rank value
  const sorted = [...VALUES].sort((a, b) => a - b);
  for (const q of [0, 0.1, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1]) {
    const exact = sorted[Math.max(1, Math.ceil(q * sorted.length)) - 1];
    const [lo, hi] = rowBucketBounds(H.bucketIndex(exact));
    const p = H.percentile(h, q);
    assert.ok(
      p >= lo && p < hi,
      `q ${String(q)}: ${String(p)} in [${String(lo)}, ${String(hi)}) with ${String(exact)}`,
    );
    // within 1/16 of the exact value (the views: 1/128), 4 ns below 128 ns
    if (exact < 2 ** 36)
      assert.ok(Math.abs(p - exact) <= Math.max(4, exact / 16), `q ${String(q)}: ${String(p)} near ${String(exact)}`);
    // no coarser than 1/8 of a power of two: the row bucket's width is at most 1/8 of its lower bound (128 ns .. 2^36 ns)
    if (lo >= 128 && lo < 2 ** 36) assert.ok(hi - lo <= lo / 8, `width of [${String(lo)}, ${String(hi)})`);
  }
});

test('row geometry: one hot line, row bucket = fine bucket >> ROW_SHIFT, contiguous bounds, 1,216-byte rows', () => {
  const ex = wasmExports();
  assert.equal(wasmConst('CONN_SLOT_BYTES'), 1216);
  assert.equal(ROW_NB, 249);
  assert.equal(OVERFLOW >> SHIFT, ROW_NB - 1, 'the fine overflow bucket alone is the last row bucket');
  assert.equal(wasmConst('CS_HIST') % 4, 0);
  assert.ok(wasmConst('CS_HIST') + 4 * ROW_NB <= wasmConst('CONN_SLOT_BYTES'));
  // count/sum/min/max and every field a latency record reads share the first 64-byte line
  const hot = ['CS_REQUESTS', 'CS_SUM', 'CS_MIN', 'CS_MAX', 'CS_KEY', 'CS_FILLED', 'CS_SVC', 'CS_SRTT_US'];
  for (const n of [...hot, 'CS_MIN_RTT_US', 'CS_NETNS', 'CS_ROLE', 'CS_FAMILY', 'CS_LPORT'])
    assert.ok(wasmConst(n) < 64, `${n} in the first line`);
  assert.equal(wasmConst('CS_LPORT') + 2, 64);
  for (const n of ['CS_REQUESTS', 'CS_SUM', 'CS_MIN', 'CS_MAX', 'CS_KEY', 'CS_CGROUP_ID', 'CS_START_NS'])
    assert.equal(wasmConst(n) % 8, 0, `${n} 8-byte aligned (u64 atomics)`);
  for (const v of [0n, 7n, 8n, 127n, 128n, 200n, 1000n, 123_456_789n, (1n << 36n) - 1n, 1n << 36n, 1n << 63n])
    assert.equal(ex.rowBucketIndex(v), ex.bucketIndex(v) >> SHIFT, `value ${String(v)}`);
  let prevUpper = 0n;
  for (let r = 0; r < ROW_NB; r++) {
    const lo = BigInt.asUintN(64, ex.rowBucketLower(r));
    const hi = BigInt.asUintN(64, ex.rowBucketUpper(r));
    assert.equal(lo, prevUpper, `row bucket ${String(r)} starts where the one before ends`);
    assert.equal(lo, BigInt.asUintN(64, ex.bucketLower(r << SHIFT)));
    assert.equal(hi, BigInt.asUintN(64, ex.bucketUpper(lastFine(r))));
    const rep = rowRepresentative(r);
    assert.equal(rep >> SHIFT, r, 'the representative is one of its fine buckets');
    assert.deepEqual(rowBucketBounds(rep), [Number(lo), Number(hi)]);
    prevUpper = hi;
  }
  assert.equal(prevUpper, 0xffffffffffffffffn);
  // the bound the docs give: a row bucket's percentile is within 1/16 of each of its values (4 ns below 128 ns)
  for (let r = 0; r < ROW_NB - 1; r++) {
    const lo = H.bucketLower(r << SHIFT);
    const top = H.bucketUpper(lastFine(r)) - 1;
    const p = H.percentile(rowHistogram(H.histogramOf([lo, top])), 0.5);
    for (const x of [lo, top])
      assert.ok(Math.abs(p - x) <= Math.max(4, x / 16), `row bucket ${String(r)}: ${String(p)} for ${String(x)}`);
  }
});

/** Row `row`'s u32 bucket counts and its u64 count/sum. */
function rowMemory(st: State, row: ConnSlot) {
  const at = st.exports.connSlotAddr(row.slot);
  const u32 = new Uint32Array(st.memory.buffer, at + wasmConst('CS_HIST'), ROW_NB);
  const u64 = new BigUint64Array(st.memory.buffer, at, 4); // CS_REQUESTS, CS_SUM, CS_MIN, CS_MAX
  assert.equal(wasmConst('CS_REQUESTS'), 0);
  assert.equal(wasmConst('CS_SUM'), 8);
  return { u32, u64 };
}

test('the u32 edge: a row bucket saturates (never wraps); the exact count gives it back its true count', () => {
  const st = state();
  const v = 3_000_000; // 3 ms
  const r = H.bucketIndex(v) >> SHIFT;
  decodeBytes(st, 0, lat(1, v));
  const row0 = onlyRow(st);
  const { u32, u64 } = rowMemory(st, row0);
  assert.equal(u32[r], 1);
  // as if 2^32 - 3 records had reached it: then 5 more
  const before = U32_MAX - 2;
  u32[r] = before;
  u64[0] = BigInt(before);
  u64[1] = BigInt(before) * BigInt(v);
  decodeBytes(st, 0, concatBytes(Array.from({ length: 5 }, () => lat(1, v))));
  assert.equal(u32[r], U32_MAX, 'saturated, not wrapped to 0..2');
  const total = before + 5; // > 2^32
  const row = onlyRow(st);
  assert.equal(row.requests, total, 'requests: the exact u64 count');
  const h = histOf(row);
  assert.deepEqual(h.buckets, [[rowRepresentative(r), total]]);
  assert.equal(h.count, total);
  assert.equal(h.sum_ns, total * v);
  assert.equal(H.mean(h), v);
  assert.equal(H.percentile(h, 0.5), v, 'clamped to min = max');

  // another bucket below the edge: exact; its counts do not go to the saturated one
  const w = 200_000;
  decodeBytes(st, 0, concatBytes(Array.from({ length: 3 }, () => lat(1, w))));
  const h2 = histOf(onlyRow(st));
  assert.deepEqual(h2.buckets, [
    [rowRepresentative(H.bucketIndex(w) >> SHIFT), 3],
    [rowRepresentative(r), total],
  ]);
  assert.equal(h2.count, total + 3);
  assert.equal(h2.sum_ns, total * v + 3 * w);

  // two saturated buckets: what they lack together is known exactly, split evenly between them
  const r2 = H.bucketIndex(w) >> SHIFT;
  u32[r2] = U32_MAX;
  u64[0] = BigInt(total + U32_MAX + 10);
  const h3 = histOf(onlyRow(st));
  assert.equal(h3.count, total + U32_MAX + 10, 'count: exact');
  assert.equal(h3.buckets.length, 2);
  assert.equal(h3.buckets[0][1] + h3.buckets[1][1], total + U32_MAX + 10);
  assert.ok(Math.abs(h3.buckets[0][1] - h3.buckets[1][1]) <= 1, 'evenly');

  // the service keeps u64 counts of its own: the 9 records decoded
  const svc = readSvcTable(st)[0];
  assert.equal(svc.requests, 9);
  assert.deepEqual(svc.hist, H.histogramOf([v, v, v, v, v, v, w, w, w]));
});

test('a freed row is zeroed: the next connection starts with an empty compact histogram (min reset)', () => {
  const st = state(2);
  decodeBytes(st, 0, concatBytes([lat(1, 5000), lat(2, 7000)]));
  const rows = readConnTable(st);
  assert.equal(rows.length, 2);
  const first = rows.find((x) => x.conn_id === 1n);
  assert.ok(first);
  assert.equal(st.exports.sweepBegin(), 1);
  try {
    assert.equal(st.exports.releaseRow(first.slot), 1);
  } finally {
    st.exports.sweepEnd();
  }
  decodeBytes(st, 0, lat(3, 9000));
  const third = readConnTable(st).find((x) => x.conn_id === 3n);
  assert.ok(third);
  assert.equal(third.slot, first.slot, 'the freed row taken again');
  assert.deepEqual(third.hist, rowHistogram(H.histogramOf([9000])));
});
