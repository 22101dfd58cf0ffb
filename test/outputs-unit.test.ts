// The outputs' pieces without the kernel (no root): the --sample-rate auto
// controller, interval figures (histogram diff, diffLatencyFigures), the live
// line's text, and the JSON stream's two ways of closing (a reader that went
// away, a file that cannot be written).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, constants, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { AutoSampler, MAX_CHANGES_KEPT, MAX_SAMPLE_RATE } from '../src/pipeline/sampling.js';
import {
  bucketIndex,
  bucketLower,
  bucketUpper,
  diff,
  emptyHistogram,
  histogramOf,
  overflowIndex,
  percentile,
} from '../src/histogram.js';
import { diffLatencyFigures, type LatencyFigures, type ServiceFigure } from '../src/report/latency.js';
import { LATENCY_STATS } from '../src/probes/latency.js';
import { COUNTER_NAMES, type Counters } from '../src/wasm.js';
import { progressLine } from '../src/cli/progress.js';
import { JsonStream } from '../src/export/stream.js';
import { tempDir } from './helpers/probe.js';

// ------------------------------------------------------------ AutoSampler

/** One tick of `seen` exchanges in one second. */
const tick = (s: AutoSampler, seen: number, lost = 0, at = 0) => s.tick({ seen, lost, seconds: 1 }, at);

test('AutoSampler: under the budget nothing changes; over it the rate rises to ceil(demand / budget) at once', () => {
  const s = new AutoSampler(1000);
  assert.equal(tick(s, 900), undefined);
  assert.equal(s.rate, 1);
  assert.equal(tick(s, 25_001, 0, 1.04), 26, 'ceil(25001 / 1000)');
  assert.equal(s.rate, 26);
  assert.equal(s.budget, 1000);
  assert.equal(s.changeCount, 1);
  assert.deepEqual(
    s.changes.map((c) => Object.fromEntries(Object.entries(c).filter(([k]) => k !== 'reason'))),
    [{ at_s: 1, from: 1, to: 26 }],
  );
  assert.match(s.changes[0].reason, /25001 exchanges\/s is over the budget of 1000\/s/);
  // the seconds of a tick count: 25001 in 2 s is 12501/s
  const t = new AutoSampler(1000);
  assert.equal(t.tick({ seen: 25_001, lost: 0, seconds: 2 }, 2), 13);
  // never above the kernel's maximum
  assert.equal(tick(new AutoSampler(1), 1e9), MAX_SAMPLE_RATE);
});

test('AutoSampler: a loss multiplies the rate by 4 (or more when needed) and lowers the budget to half what the ring took', () => {
  const s = new AutoSampler(1000);
  tick(s, 25_000);
  assert.equal(s.rate, 25);
  // 25000/s at 1 in 25 = 1000 records/s were too many: the budget becomes 500/s
  assert.equal(tick(s, 25_000, 7, 2), 100, 'max(25 x 4, ceil(25000 / 500))');
  assert.equal(s.budget, 500);
  assert.match(s.changes[1].reason, /7 records lost at 25000 exchanges\/s; budget now 500\/s/);
  // needed above rate x 4: needed wins
  const u = new AutoSampler(1000);
  assert.equal(tick(u, 100_000, 1), 100, 'ceil(100000 / 1000) > 1 x 4');
  assert.equal(u.budget, 1000, 'the ring took 100000/s: half of it is above the budget, which stays');
  // the budget never falls below 100/s
  const v = new AutoSampler(1000, 64);
  tick(v, 1000, 5);
  assert.equal(v.budget, 100);
  assert.equal(v.rate, 256);
});

test('AutoSampler: after a loss the rate does not fall straight back to the one that lost records; the budget recovers 5 % a tick', () => {
  const s = new AutoSampler(1000);
  tick(s, 25_000);
  tick(s, 25_000, 3); // rate 25 lost records: rate 100, budget 500
  const rates: number[] = [];
  const budgets: number[] = [];
  for (let i = 0; i < 40; i++) {
    tick(s, 25_000, 0, 3 + i);
    rates.push(s.rate);
    budgets.push(s.budget);
  }
  assert.ok(Math.abs(budgets[0] - 525) < 1e-9 && Math.abs(budgets[1] - 551.25) < 1e-9, budgets.slice(0, 2).join(','));
  assert.ok(
    budgets.every((b, i) => b <= 1000 && (i === 0 || b >= budgets[i - 1])),
    'grows towards --max-event-rate, never past it',
  );
  assert.equal(budgets[39], 1000);
  // the first ten ticks: never back at 25, never below what the lowered budget needs
  assert.ok(
    rates.slice(0, 10).every((r) => r >= 50),
    rates.join(' '),
  );
  rates.forEach((r, i) => {
    assert.ok(r >= Math.ceil(25_000 / budgets[i]), `tick ${i}: rate ${r}, budget ${budgets[i]}`);
  });
  // steps down by halving only: 100 -> 50 -> 25, each after 5 calm ticks
  assert.deepEqual([...new Set(rates)], [100, 50, 25]);
  assert.equal(rates.indexOf(50), 4, 'halved on the fifth calm tick');
  assert.ok(rates.indexOf(25) - rates.indexOf(50) >= 5);
  assert.equal(s.rate, 25, 'back to 25 once the budget has recovered');
});

test('AutoSampler: halves after 5 calm ticks in a row (not below what is needed); a busier tick resets the count', () => {
  const s = new AutoSampler(1000, 64);
  for (let i = 0; i < 4; i++) assert.equal(tick(s, 1000), undefined, `calm tick ${i + 1}`);
  assert.equal(tick(s, 1000), 32, 'the fifth calm tick halves');
  assert.match(s.changes[0].reason, /1000 exchanges\/s fits a lower rate/);
  for (let i = 0; i < 4; i++) tick(s, 1000);
  assert.equal(s.rate, 32);
  assert.equal(tick(s, 1000), 16);

  // needed = 10 of rate 16: not <= 16 / 2, not calm; the count restarts
  const t = new AutoSampler(1000, 16);
  for (let i = 0; i < 4; i++) tick(t, 1000);
  assert.equal(tick(t, 10_000), undefined, 'needed 10 keeps rate 16 and breaks the calm streak');
  for (let i = 0; i < 4; i++) assert.equal(tick(t, 1000), undefined);
  assert.equal(tick(t, 1000), 8);

  // needed 5 of rate 11: halving floors to 5, which is what is needed
  const u = new AutoSampler(1000, 11);
  for (let i = 0; i < 5; i++) tick(u, 4500);
  assert.equal(u.rate, 5);
  // at rate 1 there is nothing lower
  const w = new AutoSampler(1000, 1);
  for (let i = 0; i < 20; i++) assert.equal(tick(w, 0), undefined);
  assert.equal(w.changeCount, 0);
});

test('AutoSampler: the change list keeps the first half and the latest, changeCount counts them all', () => {
  const s = new AutoSampler(1000);
  const N = MAX_CHANGES_KEPT + 500;
  // each tick needs one more: rate k + 1
  for (let k = 1; k <= N; k++) assert.equal(tick(s, 1000 * (k + 1), 0, k), k + 1);
  assert.equal(s.changeCount, N);
  assert.equal(s.changes.length, MAX_CHANGES_KEPT);
  const half = MAX_CHANGES_KEPT / 2;
  assert.deepEqual(
    s.changes.slice(0, half).map((c) => c.to),
    Array.from({ length: half }, (_, i) => i + 2),
    'the first ones',
  );
  assert.deepEqual(
    s.changes.slice(half).map((c) => c.to),
    Array.from({ length: half }, (_, i) => N - half + i + 2),
    'then the latest',
  );
  for (let i = 1; i < s.changes.length; i++) assert.ok(s.changes[i].at_s > s.changes[i - 1].at_s);
});

// ------------------------------------------------------------ interval figures

const ramp = (from: number, n: number, step: number) => Array.from({ length: n }, (_, i) => from + i * step);

test('histogram diff: the interval holds exactly the new values; min/max become the bounds of the buckets that changed', () => {
  const before = ramp(200_000, 300, 1000); // 0.2 .. 0.5 ms
  const added = [...ramp(1_000_000, 200, 50), 7_000_000, 7_000_000];
  const prev = histogramOf(before);
  const cur = histogramOf([...before, ...added]);
  const d = diff(cur, prev);
  const want = histogramOf(added);
  assert.deepEqual(d.buckets, want.buckets);
  assert.equal(d.count, added.length);
  assert.equal(d.sum_ns, want.sum_ns);
  assert.equal(d.min_ns, bucketLower(bucketIndex(1_000_000)));
  assert.equal(d.max_ns, bucketUpper(bucketIndex(7_000_000)) - 1);
  for (const q of [0.5, 0.99]) assert.equal(percentile(d, q), percentile(want, q), `q ${q}: the interval's percentile`);
  // a bucket that held values before and gained some: only the gain
  const shared = diff(histogramOf([...before, 300_000, 300_000]), prev);
  assert.deepEqual(shared.buckets, [[bucketIndex(300_000), 2]]);

  // nothing new: empty; no (or an empty) previous reading: a copy of the current one
  assert.deepEqual(diff(cur, cur), emptyHistogram());
  for (const p of [undefined, emptyHistogram()]) {
    const all = diff(cur, p);
    assert.deepEqual(all, cur);
    all.buckets[0][1] = -1;
    assert.notEqual(cur.buckets[0][1], -1, 'the copy does not share buckets');
  }
  // the overflow bucket has no upper bound: max is its lower bound
  const ovf = diff(histogramOf([...before, 2 ** 37]), prev);
  assert.deepEqual(ovf.buckets, [[overflowIndex(), 1]]);
  assert.equal(ovf.max_ns, bucketLower(overflowIndex()));
});

const kernel = (v: Partial<Record<(typeof LATENCY_STATS)[number], number>>) =>
  Object.fromEntries(LATENCY_STATS.map((n) => [n, v[n] ?? 0])) as LatencyFigures['kernel'];
const counters = (v: Partial<Counters>) => Object.fromEntries(COUNTER_NAMES.map((n) => [n, v[n] ?? 0])) as Counters;
const service = (key: string, values: number[]): ServiceFigure => ({
  key,
  name: `svc${key}`,
  role: 'server',
  port: 8000 + Number(key),
  requests: values.length,
  hist: histogramOf(values),
});

test('diffLatencyFigures: views, services, kernel counters and pipeline counters of one interval', () => {
  const c1 = ramp(1_000_000, 100, 100),
    s1 = ramp(900_000, 100, 100),
    n1 = [50_000, 60_000];
  const prev: LatencyFigures = {
    client: histogramOf(c1),
    server: histogramOf(s1),
    network: histogramOf(n1),
    services: [service('1', s1.slice(0, 60)), service('2', s1.slice(60))],
    kernel: kernel({ send: 400, receive: 400, measured_client: 100, measured_server: 100, unsampled_client: 7 }),
    counters: counters({ records_total: 200, latency_records: 200, lost_records: 1 }),
  };
  const c2 = ramp(5_000_000, 50, 1000),
    s2 = ramp(4_900_000, 50, 1000);
  const cur: LatencyFigures = {
    client: histogramOf([...c1, ...c2]),
    server: histogramOf([...s1, ...s2]),
    network: histogramOf(n1),
    // service 1 gained requests, service 2 none (left out), service 3 is new
    services: [
      service('1', [...s1.slice(0, 60), ...s2.slice(0, 30)]),
      service('2', s1.slice(60)),
      service('3', s2.slice(30)),
    ],
    kernel: kernel({ send: 500, receive: 500, measured_client: 150, measured_server: 150, unsampled_client: 10 }),
    counters: counters({ records_total: 300, latency_records: 300, lost_records: 1 }),
  };
  assert.equal(diffLatencyFigures(cur, undefined), cur, 'the first interval is everything so far');
  const d = diffLatencyFigures(cur, prev);
  assert.deepEqual(d.client.buckets, histogramOf(c2).buckets);
  assert.deepEqual(d.server.buckets, histogramOf(s2).buckets);
  assert.equal(d.client.count, 50);
  assert.equal(d.network.count, 0, 'no new network samples');
  assert.deepEqual(
    d.services.map((s) => [s.key, s.requests, s.hist.count]),
    [
      ['1', 30, 30],
      ['3', 20, 20],
    ],
  );
  assert.deepEqual(d.services[0].hist.buckets, histogramOf(s2.slice(0, 30)).buckets);
  assert.deepEqual(d.services[1].hist, cur.services[2].hist, 'a new service: all of it');
  assert.deepEqual(
    d.kernel,
    kernel({ send: 100, receive: 100, measured_client: 50, measured_server: 50, unsampled_client: 3 }),
  );
  assert.deepEqual(d.counters, counters({ records_total: 100, latency_records: 100 }));
  // the readings are left as they were
  assert.equal(cur.services.length, 3);
  assert.equal(cur.kernel.send, 500);
});

// ------------------------------------------------------------ the live line

test('progressLine: elapsed and remaining time, requests, p50/p99 of the last second, loss, sample rate', () => {
  const f = { requests: 123_456, lost: 0, recent: { requests: 980, p50_ms: 1.0213, p99_ms: 1.2 }, rate: 1 };
  assert.equal(
    progressLine(5.4, 60, f),
    '0:05 elapsed, 0:55 left  123,456 requests (980/s)  p50 1.0213 ms p99 1.2 ms  lost 0',
  );
  assert.equal(
    progressLine(3725, undefined, { ...f, lost: 3, rate: 10 }),
    '1:02:05 elapsed (Ctrl-C stops)  123,456 requests (980/s)  p50 1.0213 ms p99 1.2 ms  lost 3  sampled 1/10',
  );
  assert.equal(
    progressLine(61, 60, { requests: 0, lost: 0, recent: { requests: 0, p50_ms: null, p99_ms: null }, rate: 1 }),
    '1:01 elapsed, 0:00 left  0 requests (0/s)  p50 - p99 -  lost 0',
    'past the end: 0:00 left, no figures without requests',
  );
  assert.match(progressLine(0, 3600, f), /^0:00 elapsed, 1:00:00 left /);
});

// ------------------------------------------------------------ JsonStream

test('JsonStream: a reader that goes away (EPIPE) closes the stream quietly: closed, not failed', () => {
  const fifo = path.join(tempDir(), 'stream.fifo');
  const mk = spawnSync('mkfifo', [fifo]);
  assert.equal(mk.status, 0, String(mk.stderr));
  // the read end first (non-blocking), so that opening the write end does not wait
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  let readerOpen = true;
  const stream = new JsonStream(fifo);
  try {
    assert.equal(stream.write({ type: 'interval', seq: 0 }), true);
    const buf = Buffer.alloc(256);
    const n = readSync(reader, buf);
    assert.equal(buf.subarray(0, n).toString(), '{"type":"interval","seq":0}\n');
    closeSync(reader);
    readerOpen = false;
    assert.equal(stream.write({ type: 'interval', seq: 1 }), false);
    assert.equal(stream.closed, 'the reader closed the stream');
    assert.equal(stream.failed, false);
    assert.equal(stream.lines, 1);
    assert.equal(stream.write({ type: 'summary' }), false, 'stays closed');
    assert.equal(stream.lines, 1);
  } finally {
    stream.close();
    if (readerOpen) closeSync(reader);
  }
});

test('JsonStream: a write error such as ENOSPC (/dev/full) is a failure, named with its code', () => {
  const stream = new JsonStream('/dev/full');
  try {
    assert.equal(stream.closed, undefined);
    assert.equal(stream.failed, false);
    assert.equal(stream.write({ type: 'interval', seq: 0 }), false);
    assert.equal(stream.closed, 'cannot write the stream (ENOSPC)');
    assert.equal(stream.failed, true);
    assert.equal(stream.lines, 0);
  } finally {
    stream.close();
  }
});
