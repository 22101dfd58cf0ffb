// InfluxDB exporter: line protocol (pure), then the exporter against real
// servers (victoria-metrics via /api/v2/write, influxd 1.x via /write), a
// server that is down or hangs, the bounded buffer, and the reachability
// check. Needs no root; never skipped.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import http from 'node:http';
import { gunzipSync } from 'node:zlib';
import {
  InfluxExporter,
  checkInfluxReachable,
  nsToSecondsString,
  toLineProtocol,
  validateInfluxOptions,
  type InfluxOptions,
} from '../src/export/influx.js';
import type { MetricSet } from '../src/export/model.js';
import { MeshprobeError } from '../src/errors.js';
import { bucketLower, bucketUpper, histogramOf, mean, overflowIndex, percentile } from '../src/histogram.js';
import { firstSeries, freePort, startInfluxdb1, startVictoriaMetrics } from './helpers/servers.js';

// any unhandled rejection anywhere in this file fails the last test
const unhandled: unknown[] = [];
process.on('unhandledRejection', (e) => unhandled.push(e));

// ------------------------------------------------------------ fixtures

/** 1..1000 µs (one value each) plus one 100 s value (overflow bucket). */
const VALUES_NS = [...Array.from({ length: 1000 }, (_, i) => (i + 1) * 1000), 100e9];
const HIST = histogramOf(VALUES_NS);
const END = new Date(Date.now() - 60_000); // a fixed past instant, whole ms
const END_NS = BigInt(END.getTime()) * 1_000_000n;

function metricSet(over: Partial<MetricSet> = {}): MetricSet {
  return {
    probe: 'latency',
    host: 'node 1',
    start: new Date(END.getTime() - 10_000),
    end: END,
    cumulative: false,
    histograms: [
      {
        name: 'request_duration',
        help: 'client view',
        labels: { service: 'a b,c=d', view: 'client', empty: '' },
        hist: HIST,
      },
    ],
    counters: [
      { name: 'requests', help: '', labels: { service: 'svc' }, value: 1001 },
      { name: 'ratio_odd', help: '', labels: {}, value: 1.5 },
    ],
    gauges: [{ name: 'connections_active', help: '', labels: {}, value: 3 }],
    ...over,
  };
}

// ------------------------------------------------------------ a line protocol reader for the assertions

interface Parsed {
  measurement: string;
  tags: Record<string, string>;
  fields: Record<string, { v: number; int: boolean }>;
  ts: string;
}

/** Splits on sep where it is not escaped with a backslash. */
function splitUnescaped(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && i + 1 < s.length) {
      cur += s[i] + s[i + 1];
      i++;
    } else if (s[i] === sep) {
      out.push(cur);
      cur = '';
    } else cur += s[i];
  }
  out.push(cur);
  return out;
}
const unescape = (s: string) => s.replace(/\\([, =])/g, '$1');

function parseLine(line: string): Parsed {
  const parts = splitUnescaped(line, ' ');
  assert.equal(parts.length, 3, `three space-separated parts in ${line}`);
  const [key, fieldStr, ts] = parts;
  const [meas, ...tagParts] = splitUnescaped(key, ',');
  const tags: Record<string, string> = {};
  for (const tp of tagParts) {
    const kv = splitUnescaped(tp, '=');
    assert.equal(kv.length, 2, `tag ${tp} in ${line}`);
    assert.notEqual(kv[1], '', `empty tag value in ${line}`);
    tags[unescape(kv[0])] = unescape(kv[1]);
  }
  const fields: Parsed['fields'] = {};
  for (const fp of splitUnescaped(fieldStr, ',')) {
    const kv = splitUnescaped(fp, '=');
    assert.equal(kv.length, 2, `field ${fp} in ${line}`);
    const int = kv[1].endsWith('i');
    const v = Number(int ? kv[1].slice(0, -1) : kv[1]);
    assert.ok(Number.isFinite(v), `field value ${kv[1]} in ${line}`);
    fields[unescape(kv[0])] = { v, int };
  }
  return { measurement: unescape(meas), tags, fields, ts };
}

// ------------------------------------------------------------ (1) toLineProtocol

describe('toLineProtocol', () => {
  const lines = toLineProtocol(metricSet(), {});
  const parsed = lines.map(parseLine);
  const summary = parsed.filter((p) => p.measurement === 'meshprobe_request_duration');
  const buckets = parsed.filter((p) => p.measurement === 'meshprobe_request_duration_bucket');

  test('escapes spaces, commas and = in tag values; drops empty tags; adds host and probe', () => {
    assert.equal(summary.length, 1);
    const raw = lines.find((l) => l.startsWith('meshprobe_request_duration,'));
    assert.ok(raw, 'a meshprobe_request_duration line');
    assert.ok(
      raw.startsWith('meshprobe_request_duration,host=node\\ 1,probe=latency,service=a\\ b\\,c\\=d,view=client count='),
      raw,
    );
    assert.deepEqual(summary[0].tags, { host: 'node 1', probe: 'latency', service: 'a b,c=d', view: 'client' });
    assert.ok(!raw.includes('empty'), 'an empty label is left out');
    // a measurement with a space or comma is escaped too
    const odd = toLineProtocol(
      metricSet({ histograms: [], gauges: [], counters: [{ name: 'a b,c', help: '', labels: {}, value: 1 }] }),
      {},
    );
    assert.equal(odd[0].split(' ')[0], 'meshprobe_a\\', 'measurement escape');
    assert.equal(parseLine(odd[0]).measurement, 'meshprobe_a b,c');
  });

  test('summary fields: integer count, seconds, percentiles of the histogram', () => {
    const f = summary[0].fields;
    assert.deepEqual(f.count, { v: 1001, int: true });
    assert.equal(f.sum_seconds.int, false);
    assert.equal(f.sum_seconds.v, HIST.sum_ns / 1e9);
    assert.equal(f.mean_seconds.v, mean(HIST) / 1e9);
    assert.equal(f.p50_seconds.v, percentile(HIST, 0.5) / 1e9);
    assert.equal(f.p90_seconds.v, percentile(HIST, 0.9) / 1e9);
    assert.equal(f.p99_seconds.v, percentile(HIST, 0.99) / 1e9);
    assert.equal(f.p999_seconds.v, percentile(HIST, 0.999) / 1e9);
    assert.equal(f.min_seconds.v, 1e-6);
    assert.equal(f.max_seconds.v, 100);
    // p99 of 1..1000 µs (+1 outlier): the 991st value, 991 µs, within the bucket's 1/128
    assert.ok(Math.abs(f.p99_seconds.v - 991e-6) / 991e-6 < 1 / 128, `p99 ${f.p99_seconds.v}`);
    assert.deepEqual(Object.keys(f).sort(), [
      'count',
      'max_seconds',
      'mean_seconds',
      'min_seconds',
      'p50_seconds',
      'p90_seconds',
      'p999_seconds',
      'p99_seconds',
      'sum_seconds',
    ]);
  });

  test('bucket lines: one per non-empty bucket, own counts (not cumulative) summing to count, exact le', () => {
    assert.equal(buckets.length, HIST.buckets.length);
    let sum = 0;
    for (const [k, [idx, c]] of HIST.buckets.entries()) {
      const b = buckets[k];
      assert.deepEqual(b.fields.count, { v: c, int: true });
      assert.equal(b.fields.lower_seconds.v, bucketLower(idx) / 1e9);
      const le = idx === overflowIndex() ? '+Inf' : nsToSecondsString(bucketUpper(idx));
      assert.equal(b.tags.le, le);
      if (le !== '+Inf') assert.equal(Number(le), bucketUpper(idx) / 1e9);
      assert.equal(b.tags.service, 'a b,c=d');
      assert.equal(b.tags.host, 'node 1');
      sum += b.fields.count.v;
    }
    assert.equal(sum, HIST.count);
    const last = buckets.at(-1);
    assert.ok(last, 'bucket lines');
    assert.equal(last.tags.le, '+Inf');
    assert.equal(last.fields.count.v, 1);
    assert.equal(nsToSecondsString(128), '0.000000128');
    assert.equal(nsToSecondsString(1e9), '1');
    assert.equal(nsToSecondsString(2 ** 36), '68.719476736');
  });

  test('counters integer when integral, gauges float; timestamps are MetricSet.end in ns', () => {
    const req = parsed.find((p) => p.measurement === 'meshprobe_requests');
    assert.ok(req, 'a meshprobe_requests line');
    assert.deepEqual(req.fields.value, { v: 1001, int: true });
    assert.deepEqual(req.tags, { host: 'node 1', probe: 'latency', service: 'svc' });
    assert.deepEqual(parsed.find((p) => p.measurement === 'meshprobe_ratio_odd')?.fields.value, { v: 1.5, int: false });
    const g = lines.find((l) => l.startsWith('meshprobe_connections_active,'));
    assert.ok(g, 'a meshprobe_connections_active line');
    assert.match(g, / value=3 \d+$/, 'gauge without the i suffix');
    for (const p of parsed) assert.equal(p.ts, END_NS.toString());
    assert.equal(parsed.length, 1 + HIST.buckets.length + 3);
  });

  test('an empty histogram gives count=0i and sum only; prefix option', () => {
    const l = toLineProtocol(
      metricSet({ histograms: [{ name: 'h', help: '', labels: {}, hist: histogramOf([]) }], counters: [], gauges: [] }),
      { measurementPrefix: 'x_' },
    );
    assert.deepEqual(l, [`x_h,host=node\\ 1,probe=latency count=0i,sum_seconds=0 ${END_NS}`]);
  });
});

// ------------------------------------------------------------ options and reachability (6)

describe('options and reachability', () => {
  test('flag combinations are usage errors naming the flags', () => {
    const usage = (o: InfluxOptions, re: RegExp) => {
      assert.throws(
        () => validateInfluxOptions(o),
        (e: unknown) => {
          assert.ok(e instanceof MeshprobeError);
          assert.equal(e.code, 'MP_USAGE');
          assert.equal(e.exitCode, 2);
          assert.match(e.message, re);
          assert.ok(!e.message.includes('\n'));
          return true;
        },
      );
    };
    usage({ url: 'http://127.0.0.1:1' }, /--db.*--org\/--bucket\/--token/);
    usage({ url: 'http://127.0.0.1:1', db: 'x', bucket: 'b', org: 'o' }, /not both/);
    usage({ url: 'http://127.0.0.1:1', bucket: 'b' }, /--bucket needs --org/);
    usage({ url: 'nonsense', db: 'x' }, /--url/);
    usage(
      { url: 'http://127.0.0.1:1', bucket: 'b', org: 'o', retentionPolicy: 'rp' },
      /--retention-policy is for InfluxDB 1.x/,
    );
    assert.throws(() => new InfluxExporter({ url: 'http://127.0.0.1:1' }), /--db/);
    assert.equal(validateInfluxOptions({ url: 'http://127.0.0.1:1', db: 'x' }).kind, 'v1');
    assert.equal(validateInfluxOptions({ url: 'http://127.0.0.1:1', bucket: 'b', org: 'o' }).kind, 'v2');
  });

  test('checkInfluxReachable on a dead port rejects with MP_INFLUX_UNREACHABLE, exit 2', async () => {
    const port = await freePort();
    const t0 = Date.now();
    await assert.rejects(checkInfluxReachable({ url: `http://127.0.0.1:${port}`, db: 'x' }), (e: unknown) => {
      assert.ok(e instanceof MeshprobeError);
      assert.equal(e.code, 'MP_INFLUX_UNREACHABLE');
      assert.equal(e.exitCode, 2);
      assert.equal(
        e.message,
        `cannot reach InfluxDB at http://127.0.0.1:${port} (ECONNREFUSED): check --url, or start the server`,
      );
      return true;
    });
    assert.ok(Date.now() - t0 < 3000);
  });

  test('checkInfluxReachable: a server that never answers times out; a non-2xx /ping is refused', async (t) => {
    const hang = http.createServer(() => {
      /* never answers */
    });
    const notInflux = http.createServer((_req, res) => res.writeHead(404).end('no'));
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => notInflux.listen(0, '127.0.0.1', r));
    t.after(() => {
      hang.closeAllConnections();
      hang.close();
      notInflux.close();
    });
    const port = (s: http.Server) => (s.address() as { port: number }).port;
    const t0 = Date.now();
    await assert.rejects(
      checkInfluxReachable({ url: `http://127.0.0.1:${port(hang)}`, db: 'x', timeoutMs: 300 }),
      (e: MeshprobeError) => e.code === 'MP_INFLUX_UNREACHABLE' && /no answer within 300 ms/.test(e.message),
    );
    assert.ok(Date.now() - t0 < 2000);
    await assert.rejects(
      checkInfluxReachable({ url: `http://127.0.0.1:${port(notInflux)}`, db: 'x' }),
      (e: MeshprobeError) => e.code === 'MP_INFLUX_UNREACHABLE' && /HTTP 404 on \/ping/.test(e.message),
    );
  });
});

test('InfluxDB 1.x credentials travel as HTTP Basic authentication, never in the URL (check and writes)', async (t) => {
  const seen: { url: string; auth: string | undefined }[] = [];
  const srv = http.createServer((req, res) => {
    seen.push({ url: req.url ?? '', auth: req.headers.authorization });
    req.resume();
    req.on('end', () => res.writeHead(204).end());
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => {
    srv.closeAllConnections();
    srv.close();
  });
  const url = `http://127.0.0.1:${(srv.address() as { port: number }).port}`;
  const opts = { url, db: 'mp', username: 'meshprobe', password: 's3cret&p=x' };
  await checkInfluxReachable(opts);
  const exp = new InfluxExporter(opts);
  exp.write(metricSet());
  const st = await exp.close(5000);
  assert.ok(st.points_written > 0);
  const writes = seen.filter((x) => x.url.startsWith('/write'));
  assert.ok(writes.length >= 2, 'the empty check write and the data');
  const basic = `Basic ${Buffer.from('meshprobe:s3cret&p=x').toString('base64')}`;
  for (const w of writes) {
    assert.doesNotMatch(w.url, /[?&](u|p)=/, w.url);
    assert.doesNotMatch(w.url, /s3cret/);
    assert.equal(w.auth, basic);
  }
});

// ------------------------------------------------------------ (2) VictoriaMetrics via /api/v2/write

describe('against victoria-metrics (/api/v2/write)', () => {
  test('written figures read back exactly: counts, p99, buckets, tags, timestamps', async (t) => {
    const vm = await startVictoriaMetrics(t);
    await checkInfluxReachable({ url: vm.url, org: 'o', bucket: 'b', token: 'ignored' });
    const exp = new InfluxExporter({ url: vm.url, org: 'o', bucket: 'b', token: 'ignored', batchSize: 500 });
    const m = metricSet();
    const n = toLineProtocol(m, {}).length;
    exp.write(m);
    const st = await exp.close(5000);
    assert.deepEqual(st, { points_written: n, points_dropped: 0, write_errors: 0, retries: 0 });
    await vm.flush();

    const tags = { host: 'node 1', probe: 'latency', service: 'a b,c=d', view: 'client' };
    const one = async (name: string) => {
      const s = await vm.exportSeries(name);
      assert.equal(s.length, 1, `${name}: ${JSON.stringify(s)}`);
      assert.deepEqual(s[0].timestamps, [END.getTime()]);
      return s[0];
    };
    const count = await one('meshprobe_request_duration_count');
    assert.deepEqual(count.metric, { __name__: 'meshprobe_request_duration_count', ...tags });
    assert.deepEqual(count.values, [1001]);
    assert.deepEqual((await one('meshprobe_request_duration_p99_seconds')).values, [percentile(HIST, 0.99) / 1e9]);
    assert.deepEqual((await one('meshprobe_request_duration_p50_seconds')).values, [percentile(HIST, 0.5) / 1e9]);
    assert.deepEqual((await one('meshprobe_request_duration_max_seconds')).values, [100]);
    assert.deepEqual((await one('meshprobe_requests_value{service="svc"}')).values, [1001]);
    assert.deepEqual((await one('meshprobe_connections_active_value')).values, [3]);

    const buckets = await vm.exportSeries('meshprobe_request_duration_bucket_count');
    assert.equal(buckets.length, HIST.buckets.length);
    const byLe = new Map(buckets.map((s) => [s.metric.le, s]));
    let sum = 0;
    for (const [idx, c] of HIST.buckets) {
      const le = idx === overflowIndex() ? '+Inf' : nsToSecondsString(bucketUpper(idx));
      const s = byLe.get(le);
      assert.ok(s, `bucket le=${le}`);
      assert.deepEqual(s.values, [c]);
      assert.deepEqual(s.metric, { __name__: 'meshprobe_request_duration_bucket_count', ...tags, le });
      sum += s.values[0];
    }
    assert.equal(sum, 1001);
  });
});

// ------------------------------------------------------------ (3) InfluxDB 1.x via /write

describe('against influxdb 1.x (/write?db=)', () => {
  test('written figures read back exactly through /query', async (t) => {
    const ifx = await startInfluxdb1(t);
    await ifx.createDatabase('mp');
    await checkInfluxReachable({ url: ifx.url, db: 'mp' });
    const exp = new InfluxExporter({ url: ifx.url, db: 'mp', retentionPolicy: 'autogen' });
    const m = metricSet();
    const n = toLineProtocol(m, {}).length;
    exp.write(m);
    const st = await exp.close(5000);
    assert.deepEqual(st, { points_written: n, points_dropped: 0, write_errors: 0, retries: 0 });

    const r = await ifx.query('SELECT * FROM "meshprobe_request_duration"', 'mp');
    const s = firstSeries(r);
    assert.equal(s.values.length, 1);
    const row = Object.fromEntries(s.columns.map((c, i) => [c, s.values[0][i]]));
    assert.deepEqual(row, {
      time: Number(END_NS), // epoch=ns: JSON number (exact enough to compare with END_NS below)
      count: 1001,
      sum_seconds: HIST.sum_ns / 1e9,
      mean_seconds: mean(HIST) / 1e9,
      p50_seconds: percentile(HIST, 0.5) / 1e9,
      p90_seconds: percentile(HIST, 0.9) / 1e9,
      p99_seconds: percentile(HIST, 0.99) / 1e9,
      p999_seconds: percentile(HIST, 0.999) / 1e9,
      min_seconds: 1e-6,
      max_seconds: 100,
      host: 'node 1',
      probe: 'latency',
      service: 'a b,c=d',
      view: 'client',
    });
    // integer field type
    const keys = await ifx.query('SHOW FIELD KEYS FROM "meshprobe_request_duration"', 'mp');
    const types = Object.fromEntries(firstSeries(keys).values as [string, string][]);
    assert.equal(types.count, 'integer');
    assert.equal(types.p99_seconds, 'float');
    // the exact ns timestamp, as a string
    const exact = await fetch(
      `${ifx.url}/query?db=mp&epoch=ns&q=${encodeURIComponent('SELECT "count" FROM "meshprobe_request_duration"')}`,
    ).then((x) => x.text());
    assert.ok(exact.includes(`[${END_NS},1001]`), exact);

    const b = await ifx.query('SELECT sum("count"), count("count") FROM "meshprobe_request_duration_bucket"', 'mp');
    assert.deepEqual(firstSeries(b).values[0].slice(1), [1001, HIST.buckets.length]);
    const inf = await ifx.query(
      `SELECT "count", lower_seconds FROM "meshprobe_request_duration_bucket" WHERE le = '+Inf'`,
      'mp',
    );
    assert.deepEqual(firstSeries(inf).values[0].slice(1), [1, 2 ** 36 / 1e9]);
    const le = await ifx.query('SHOW TAG VALUES FROM "meshprobe_request_duration_bucket" WITH KEY = "le"', 'mp');
    assert.equal(firstSeries(le).values.length, HIST.buckets.length);
    const c = await ifx.query('SELECT "value" FROM "meshprobe_requests" WHERE service = \'svc\'', 'mp');
    assert.equal(firstSeries(c).values[0][1], 1001);
  });

  test('an unknown database is not retried: the lines are dropped and counted', async (t) => {
    const ifx = await startInfluxdb1(t);
    const exp = new InfluxExporter({ url: ifx.url, db: 'nope', minRetryDelayMs: 10 });
    const n = toLineProtocol(metricSet(), {}).length;
    exp.write(metricSet());
    const { result: st, lines: logged } = await captureStderr(() => exp.close(3000));
    assert.deepEqual(logged, [
      `[meshprobe warn] InfluxDB rejected a write (HTTP 404: database not found: "nope"): ${n} points dropped`,
    ]);
    assert.equal(st.points_written, 0);
    assert.equal(st.points_dropped, n);
    assert.equal(st.write_errors, 1);
    assert.equal(st.retries, 0);
    assert.equal(st.last_error, 'HTTP 404: database not found: "nope"');
  });
});

// ------------------------------------------------------------ (4) a server that is down or hangs

/** Captures the logger's stderr lines while fn runs. */
async function captureStderr<T>(fn: () => T | Promise<T>): Promise<{ result: T; lines: string[] }> {
  const lines: string[] = [];
  const orig = process.stderr.write.bind(process.stderr);
  (process.stderr as { write: unknown }).write = (chunk: unknown, ...rest: unknown[]) => {
    const s = String(chunk);
    if (s.startsWith('[meshprobe')) {
      lines.push(s.trimEnd());
      return true;
    }
    return (orig as (...a: unknown[]) => boolean)(chunk, ...rest);
  };
  try {
    return { result: await fn(), lines };
  } finally {
    process.stderr.write = orig;
  }
}

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('a server that is down', () => {
  test('nobody listening: write() never throws, retries, close() returns in time counting every line', async () => {
    const port = await freePort();
    const { result: st, lines: logged } = await captureStderr(async () => {
      const exp = new InfluxExporter({
        url: `http://127.0.0.1:${port}`,
        db: 'x',
        minRetryDelayMs: 20,
        maxRetryDelayMs: 50,
        maxRetries: 1000,
      });
      let n = 0;
      for (let i = 0; i < 5; i++) {
        const m = metricSet({ end: new Date(END.getTime() + i * 1000) });
        n += toLineProtocol(m, {}).length;
        assert.doesNotThrow(() => {
          exp.write(m);
        });
      }
      await until(() => exp.stats().retries >= 3, 5000, 'retries');
      const t0 = Date.now();
      const s = await exp.close(400);
      const took = Date.now() - t0;
      assert.ok(took >= 0 && took < 1000, `close took ${took} ms`);
      // after close: counted, not thrown
      assert.doesNotThrow(() => {
        exp.write(metricSet());
      });
      return { ...s, n, after: exp.stats() };
    });
    assert.equal(st.points_written, 0);
    assert.equal(st.points_dropped, st.n);
    assert.ok(st.write_errors >= 4 && st.retries >= 3, JSON.stringify(st));
    // one batch (all lines fit), retried until close; a retry may still be in flight at the deadline
    assert.ok(st.write_errors === st.retries + 1 || st.write_errors === st.retries, JSON.stringify(st));
    assert.match(st.last_error ?? '', /ECONNREFUSED/);
    assert.equal(st.after.points_dropped, st.n + toLineProtocol(metricSet(), {}).length);
    const failed = logged.filter((l) => l.includes('InfluxDB write failed'));
    assert.equal(failed.length, 1, `one warning per state change: ${logged.join('\n')}`);
    assert.match(failed[0], /InfluxDB write failed \(ECONNREFUSED.*\): retrying/);
  });

  test('retries run out: the batch is given up and counted as dropped before close', async () => {
    const port = await freePort();
    const exp = new InfluxExporter({
      url: `http://127.0.0.1:${port}`,
      bucket: 'b',
      org: 'o',
      minRetryDelayMs: 10,
      maxRetryDelayMs: 20,
      maxRetries: 2,
    });
    const n = toLineProtocol(metricSet(), {}).length;
    await captureStderr(async () => {
      exp.write(metricSet());
      await until(() => exp.stats().points_dropped === n, 5000, 'dropped');
    });
    const st = await exp.close(100);
    assert.deepEqual(
      { ...st, last_error: undefined },
      {
        points_written: 0,
        points_dropped: n,
        write_errors: 3,
        retries: 2,
        last_error: undefined,
      },
    );
  });

  test('victoria-metrics stopped mid-test, then back on the same port: queued lines get written', async (t) => {
    const vm = await startVictoriaMetrics(t);
    const exp = new InfluxExporter({
      url: vm.url,
      bucket: 'b',
      org: 'o',
      minRetryDelayMs: 50,
      maxRetryDelayMs: 200,
      maxRetries: 1000,
    });
    const m1 = metricSet({ end: new Date(END.getTime() - 3000) });
    const n = toLineProtocol(m1, {}).length;
    const { lines: logged } = await captureStderr(async () => {
      exp.write(m1);
      await until(() => exp.stats().points_written === n, 5000, 'first write');
      await vm.stop({ keepData: true });
      const m2 = metricSet();
      exp.write(m2);
      await until(() => exp.stats().retries >= 2, 5000, 'retries while down');
      assert.equal(exp.stats().points_written, n);
      const vm2 = await startVictoriaMetrics(t, { port: vm.port, dataDir: vm.dir });
      // a given dataDir is ours to remove
      t.after(() => {
        rmSync(vm.dir, { recursive: true, force: true });
      });
      await until(() => exp.stats().points_written === 2 * n, 8000, 'written after the restart');
      const st = await exp.close(2000);
      assert.equal(st.points_dropped, 0);
      assert.equal(st.points_written, 2 * n);
      await vm2.flush();
      const s = await vm2.exportSeries('meshprobe_request_duration_count');
      assert.deepEqual(s[0].timestamps, [m1.end.getTime(), END.getTime()]);
      assert.deepEqual(s[0].values, [1001, 1001]);
    });
    assert.equal(logged.filter((l) => l.includes('InfluxDB write failed')).length, 1, logged.join('\n'));
    assert.equal(logged.filter((l) => l.includes('InfluxDB writes work again')).length, 1, logged.join('\n'));
  });

  test('a server that accepts but never answers: requests time out, retried; close() ends in time', async (t) => {
    const vm = await startVictoriaMetrics(t);
    vm.pause();
    t.after(() => {
      vm.resume();
    });
    const exp = new InfluxExporter({
      url: vm.url,
      bucket: 'b',
      org: 'o',
      timeoutMs: 200,
      minRetryDelayMs: 20,
      maxRetryDelayMs: 40,
    });
    const n = toLineProtocol(metricSet(), {}).length;
    await captureStderr(async () => {
      exp.write(metricSet());
      await until(() => exp.stats().write_errors >= 2, 5000, 'timeouts');
    });
    assert.match(exp.stats().last_error ?? '', /ETIMEDOUT|timed out|no answer/i);
    const t0 = Date.now();
    const st = await captureStderr(() => exp.close(300));
    assert.ok(Date.now() - t0 < 1000, `close took ${Date.now() - t0} ms`);
    assert.equal(st.result.points_written, 0);
    assert.equal(st.result.points_dropped, n);
  });
  test('timed-out requests do not leave their connections open', async (t) => {
    const hang = http.createServer(() => {
      /* never answers */
    });
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
    t.after(() => {
      hang.closeAllConnections();
      hang.close();
    });
    const url = `http://127.0.0.1:${(hang.address() as { port: number }).port}`;
    const exp = new InfluxExporter({ url, db: 'x', timeoutMs: 100, minRetryDelayMs: 10, maxRetryDelayMs: 10 });
    const open = () =>
      new Promise<number>((r) =>
        hang.getConnections((_e, n) => {
          r(n);
        }),
      );
    let most = 0;
    await captureStderr(async () => {
      exp.writeLines(['m v=1i 1']);
      while (exp.stats().write_errors < 5) {
        most = Math.max(most, await open());
        await new Promise((r) => setTimeout(r, 20));
      }
    });
    assert.ok(most <= 2, `at most the current request's connection (and one closing) open, saw ${most}`);
    const st = await captureStderr(() => exp.close(50));
    assert.equal(st.result.points_dropped, 1);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(await open(), 0, 'close() ends the last connection');
  });
});

// ------------------------------------------------------------ (5) bounded buffer

describe('bounded buffer', () => {
  test('overflow while nothing can be sent is counted exactly', async () => {
    const port = await freePort();
    const exp = new InfluxExporter({
      url: `http://127.0.0.1:${port}`,
      db: 'x',
      maxBufferLines: 10,
      minRetryDelayMs: 60_000,
    });
    const lines = (p: string, k: number) => Array.from({ length: k }, (_, i) => `m,p=${p} v=${i}i 1`);
    // synchronously: 3 x 7 lines, nothing sent yet
    const { lines: logged } = await captureStderr(() => {
      exp.writeLines(lines('a', 7));
      exp.writeLines(lines('b', 7));
      exp.writeLines(lines('c', 7));
    });
    assert.deepEqual(logged, ['[meshprobe warn] InfluxDB: buffer full (10 lines): dropping the oldest points']);
    assert.equal(exp.pendingLines(), 10);
    assert.equal(exp.stats().points_dropped, 11);
    const st = await captureStderr(() => exp.close(200));
    assert.equal(st.result.points_dropped, 21);
    assert.equal(st.result.points_written, 0);
  });

  test('the oldest lines go, the newest arrive, in order', async (t) => {
    const received: string[] = [];
    let fail = true;
    const srv = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (fail) return void res.writeHead(503).end('busy');
        let body = Buffer.concat(chunks);
        if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
        received.push(...body.toString('utf8').split('\n'));
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    t.after(() => srv.close());
    const url = `http://127.0.0.1:${(srv.address() as { port: number }).port}`;
    const exp = new InfluxExporter({
      url,
      bucket: 'b',
      org: 'o',
      maxBufferLines: 10,
      minRetryDelayMs: 300,
      maxRetryDelayMs: 300,
      batchSize: 4,
    });
    const a = Array.from({ length: 5 }, (_, i) => `m a=${i}i 1`);
    const b = Array.from({ length: 8 }, (_, i) => `m b=${i}i 1`);
    await captureStderr(async () => {
      exp.writeLines(a);
      // first batch a0..a3 failed with 503 and waits for its retry; a4 is queued
      await until(() => exp.stats().write_errors === 1, 3000, 'the first 503');
      exp.writeLines(b); // 4 + 1 + 8 = 13 > 10: a0, a1, a2 go
      assert.equal(exp.stats().points_dropped, 3);
      fail = false;
      await until(() => exp.stats().points_written === 10, 5000, 'the rest');
    });
    const st = await exp.close(1000);
    assert.deepEqual(
      { ...st, last_error: undefined },
      {
        points_written: 10,
        points_dropped: 3,
        write_errors: 1,
        retries: 1,
        last_error: undefined,
      },
    );
    assert.match(st.last_error ?? '', /HTTP 503/);
    assert.deepEqual(received, [...a.slice(3), ...b]);
  });
});

// ------------------------------------------------------------ (6) the client's retries, counted exactly

interface FakeRequest {
  at: number;
  lines: string[];
}

/**
 * A write endpoint whose answer to each request is answer(number of the request, its lines): a
 * status (with an optional body and headers; 204 records the lines in `received`), or 'reset'
 * (the connection is destroyed), or 'hang' (never answered).
 */
async function fakeWriteServer(
  t: { after(fn: () => unknown): void },
  answer: (
    n: number,
    lines: string[],
  ) => { status: number; body?: string; headers?: Record<string, string> } | 'reset' | 'hang',
): Promise<{ url: string; requests: FakeRequest[]; received: string[]; connections(): Promise<number> }> {
  const requests: FakeRequest[] = [];
  const received: string[] = [];
  const srv = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
      const lines = body.toString('utf8').split('\n');
      requests.push({ at: Date.now(), lines });
      const a = answer(requests.length, lines);
      if (a === 'hang') return;
      if (a === 'reset') return void req.socket.destroy();
      if (a.status === 204) received.push(...lines);
      res.writeHead(a.status, a.headers).end(a.body);
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => {
    srv.closeAllConnections();
    srv.close();
  });
  const a = srv.address();
  assert.ok(a && typeof a === 'object');
  return {
    url: `http://127.0.0.1:${String(a.port)}`,
    requests,
    received,
    connections: () =>
      new Promise<number>((r) =>
        srv.getConnections((_e, n) => {
          r(n);
        }),
      ),
  };
}

describe("the client's retries, counted exactly", () => {
  test('408, 429 and 5xx are retried after the backoff (not after Retry-After read as ms); 400, 401, 404, 413, 431 are dropped at once', async (t) => {
    const cases: [number, boolean][] = [
      [408, true],
      [429, true],
      [500, true],
      [503, true],
      [400, false],
      [401, false],
      [404, false],
      [413, false],
      [431, false], // the client alone would retry it (it retries every status from 429 up)
    ];
    for (const [status, retried] of cases) {
      const srv = await fakeWriteServer(t, (n) =>
        n === 1 ? { status, body: 'no', headers: { 'Retry-After': '1' } } : { status: 204 },
      );
      const exp = new InfluxExporter({ url: srv.url, db: 'x', minRetryDelayMs: 150, maxRetryDelayMs: 150 });
      const { result: st } = await captureStderr(async () => {
        exp.writeLines(['m v=1i 1']);
        await until(() => exp.stats().points_written + exp.stats().points_dropped === 1, 3000, `HTTP ${status}`);
        await new Promise((r) => setTimeout(r, 300)); // past the backoff: a retry would have been sent
        return exp.close(1000);
      });
      const what = `HTTP ${status}: ${JSON.stringify(st)}`;
      assert.equal(st.last_error, `HTTP ${status}: no`, what);
      if (retried) {
        assert.deepEqual(
          { ...st, last_error: undefined },
          { points_written: 1, points_dropped: 0, write_errors: 1, retries: 1, last_error: undefined },
          what,
        );
        assert.equal(srv.requests.length, 2, what);
        const gap = srv.requests[1].at - srv.requests[0].at;
        assert.ok(gap >= 140, `${what}: retried after ${gap} ms, not after the 150 ms backoff`);
      } else {
        assert.deepEqual(
          { ...st, last_error: undefined },
          { points_written: 0, points_dropped: 1, write_errors: 1, retries: 0, last_error: undefined },
          what,
        );
        assert.equal(srv.requests.length, 1, `${what}: not retried`);
      }
    }
  });

  test("InfluxDB Enterprise's hinted handoff answer counts as written, once", async (t) => {
    const srv = await fakeWriteServer(t, () => ({
      status: 500,
      body: JSON.stringify({ error: 'write failed: hinted handoff queue not empty' }),
      headers: { 'Content-Type': 'application/json' },
    }));
    const exp = new InfluxExporter({ url: srv.url, db: 'x', minRetryDelayMs: 10 });
    exp.writeLines(['m v=1i 1', 'm v=2i 2']);
    const st = await captureStderr(() => exp.close(2000));
    assert.deepEqual(st.result, { points_written: 2, points_dropped: 0, write_errors: 0, retries: 0 });
    assert.equal(srv.requests.length, 1);
  });

  test('a batch waiting for its retry, dropped whole by the bound: counted once, its retry sends nothing', async (t) => {
    const srv = await fakeWriteServer(t, (n) => (n === 1 ? { status: 503, body: 'busy' } : { status: 204 }));
    const exp = new InfluxExporter({
      url: srv.url,
      bucket: 'b',
      org: 'o',
      maxBufferLines: 4,
      batchSize: 4,
      minRetryDelayMs: 200,
      maxRetryDelayMs: 200,
    });
    const a = Array.from({ length: 4 }, (_, i) => `m a=${String(i)}i 1`);
    const b = Array.from({ length: 4 }, (_, i) => `m b=${String(i)}i 1`);
    await captureStderr(async () => {
      exp.writeLines(a);
      await until(() => exp.stats().write_errors === 1, 3000, 'the 503');
      assert.equal(exp.pendingLines(), 4, 'the batch waiting for its retry counts in the bound');
      exp.writeLines(b); // 4 + 4 > 4: the whole waiting batch goes
      assert.equal(exp.stats().points_dropped, 4);
      assert.equal(exp.pendingLines(), 4);
      await until(() => exp.stats().points_written === 4, 3000, 'b');
      await new Promise((r) => setTimeout(r, 400)); // past the emptied batch's retry time
    });
    assert.equal(srv.requests.length, 2, 'the failed request and b: the emptied retry sent nothing');
    assert.deepEqual(srv.received, b);
    const st = await exp.close(1000);
    assert.deepEqual(
      { ...st, last_error: undefined },
      { points_written: 4, points_dropped: 4, write_errors: 1, retries: 0, last_error: undefined },
    );
  });

  test('hurry(): close() stops waiting at once; the request in flight and the queued lines count as dropped', async (t) => {
    const srv = await fakeWriteServer(t, () => 'hang');
    const exp = new InfluxExporter({ url: srv.url, db: 'x', batchSize: 2 });
    exp.writeLines(['m v=1i 1', 'm v=2i 2', 'm v=3i 3', 'm v=4i 4', 'm v=5i 5']);
    await until(() => srv.requests.length === 1, 3000, 'the first request');
    assert.equal(exp.pendingLines(), 3, 'in flight: not pending');
    const t0 = Date.now();
    const closing = captureStderr(() => exp.close(10_000));
    setTimeout(() => {
      exp.hurry();
    }, 100);
    const { result: st, lines: logged } = await closing;
    const took = Date.now() - t0;
    assert.ok(took >= 90 && took < 1000, `close took ${String(took)} ms`);
    assert.deepEqual(st, { points_written: 0, points_dropped: 5, write_errors: 0, retries: 0 });
    assert.deepEqual(logged, ['[meshprobe warn] InfluxDB: 5 points could not be written before exit']);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(await srv.connections(), 0, 'no socket outlives the exporter');
    assert.equal(srv.requests.length, 1, 'one request at a time');
    assert.deepEqual(exp.stats(), st, 'the request ended by close() is not counted again');
  });

  test('random failures, resets and rejections: every line written once or dropped, in order, counts exact', async (t) => {
    let seed = 12345;
    const rnd = () => {
      // mulberry32: the same run every time
      seed = (seed + 0x6d2b79f5) | 0;
      let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
      return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
    };
    let chaos = true;
    let ok = 0;
    const srv = await fakeWriteServer(t, () => {
      const r = chaos ? rnd() : 1;
      if (r < 0.25) return { status: 503, body: 'busy' };
      if (r < 0.35) return { status: 400, body: 'bad line' };
      if (r < 0.45) return 'reset';
      if (r < 0.5) return { status: 408, body: 'slow' };
      ok++;
      return { status: 204 };
    });
    const exp = new InfluxExporter({
      url: srv.url,
      db: 'x',
      maxBufferLines: 30,
      batchSize: 7,
      minRetryDelayMs: 2,
      maxRetryDelayMs: 8,
      maxRetries: 3,
    });
    let produced = 0;
    const { result: st } = await captureStderr(async () => {
      for (let round = 0; round < 60; round++) {
        const k = 1 + (round % 12);
        exp.writeLines(Array.from({ length: k }, (_, i) => `m id=${String(produced + i)}i 1`));
        produced += k;
        await new Promise((r) => setTimeout(r, 3));
      }
      chaos = false;
      return exp.close(5000);
    });
    const what = JSON.stringify({ ...st, produced, requests: srv.requests.length });
    assert.equal(st.points_written + st.points_dropped, produced, what);
    assert.equal(srv.received.length, st.points_written, `written = what the server took: ${what}`);
    const ids = srv.received.map((l) => Number(/id=(\d+)i/.exec(l)?.[1]));
    for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1], `in order, none twice: ${ids.join(',')}`);
    assert.equal(srv.requests.length, st.write_errors + ok, `each request counted once: ${what}`);
    assert.ok(st.points_dropped > 0 && st.points_written > 0 && st.retries > 0, what);
    assert.ok(st.retries <= st.write_errors, what);
  });
});

after(() => {
  assert.deepEqual(unhandled, [], 'no unhandled promise rejections');
});
