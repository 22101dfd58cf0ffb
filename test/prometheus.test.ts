// The Prometheus exporter: the text it renders (checked by promtool and by a
// structural check of our own), the bucket math, a real Prometheus server
// scraping it (histogram_quantile against our own percentiles), and the HTTP
// side (port in use, loopback by default, paths). Needs no root.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { request, Agent } from 'node:http';
import { createServer, connect, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { gunzipSync } from 'node:zlib';
import * as H from '../src/histogram.js';
import { MeshprobeError } from '../src/errors.js';
import { type MetricSet } from '../src/export/model.js';
import {
  DEFAULT_LE_SECONDS,
  PrometheusExporter,
  cumulativeBuckets,
  formatFloat,
  listenError,
  parseBuckets,
  renderPrometheus,
} from '../src/export/prometheus.js';
import { PROMTOOL_BIN, startPrometheus } from './helpers/prometheus-server.js';

// ---------------------------------------------------------------- helpers

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

function metricSet(partial: Partial<MetricSet>): MetricSet {
  return {
    probe: 'latency',
    host: 'node-1',
    start: new Date(0),
    end: new Date(1000),
    cumulative: true,
    histograms: [],
    counters: [],
    gauges: [],
    ...partial,
  };
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
  line: number;
}
interface ParsedFamily {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

/** Unescapes a label value of the text format (\\, \", \n); throws on anything else. */
function parseLabels(s: string, line: number): [Record<string, string>, string] {
  const labels: Record<string, string> = {};
  let i = 0;
  if (s[i] !== '{') return [labels, s];
  i++;
  while (s[i] !== '}') {
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(s.slice(i));
    assert.ok(m, `line ${line}: bad label name at ${JSON.stringify(s.slice(i))}`);
    const name = m[1];
    assert.ok(!(name in labels), `line ${line}: label ${name} twice`);
    i += m[0].length;
    let v = '';
    for (;;) {
      const c = s.at(i++); // undefined past the end
      assert.ok(c !== undefined && c !== '\n', `line ${line}: unterminated label value`);
      if (c === '"') break;
      if (c === '\\') {
        const e = s[i++];
        assert.ok(e === '\\' || e === '"' || e === 'n', `line ${line}: bad escape \\${e}`);
        v += e === 'n' ? '\n' : e;
      } else v += c;
    }
    assert.notEqual(v, '', `line ${line}: empty value of label ${name}`);
    labels[name] = v;
    if (s[i] === ',') i++;
  }
  return [labels, s.slice(i + 1)];
}

/**
 * A strict reading of text format 0.0.4 (what promtool does not check):
 * HELP and TYPE once per family, before its samples; each family one
 * contiguous group; histograms: per series, le increasing, counts cumulative,
 * le="+Inf" last and equal to _count, _sum present.
 */
/** The family `name` of a parsed exposition; fails the test when there is none. */
function family(fams: Map<string, ParsedFamily>, name: string): ParsedFamily {
  const f = fams.get(name);
  assert.ok(f, `family ${name}`);
  return f;
}

function parseExposition(text: string): Map<string, ParsedFamily> {
  assert.ok(text.endsWith('\n'), 'the exposition ends with a newline');
  const families = new Map<string, ParsedFamily>();
  const closed = new Set<string>();
  let current: ParsedFamily | undefined;
  const enter = (name: string, line: number): ParsedFamily => {
    if (current?.name === name) return current;
    assert.ok(!closed.has(name), `line ${line}: family ${name} is not contiguous`);
    if (current) closed.add(current.name);
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, type: '', help: '', samples: [] }));
    current = f;
    return f;
  };
  const lines = text.slice(0, -1).split('\n');
  lines.forEach((l, idx) => {
    const line = idx + 1;
    let m: RegExpExecArray | null;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(l))) {
      const f = enter(m[1], line);
      assert.equal(f.help, '', `line ${line}: second HELP for ${m[1]}`);
      assert.equal(f.samples.length, 0, `line ${line}: HELP after samples of ${m[1]}`);
      f.help = m[2].replace(/\\(\\|n)/g, (_, c) => (c === 'n' ? '\n' : '\\'));
      assert.ok(f.help !== '', `line ${line}: empty HELP`);
    } else if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(l))) {
      const f = enter(m[1], line);
      assert.equal(f.type, '', `line ${line}: second TYPE for ${m[1]}`);
      assert.equal(f.samples.length, 0, `line ${line}: TYPE after samples of ${m[1]}`);
      f.type = m[2];
    } else if ((m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(.*)$/.exec(l))) {
      const name = m[1];
      const [labels, rest] = parseLabels(m[2], line);
      const vm = /^ (\S+)$/.exec(rest);
      assert.ok(vm, `line ${line}: bad value in ${JSON.stringify(l)}`);
      const value = vm[1] === '+Inf' ? Infinity : vm[1] === '-Inf' ? -Infinity : Number(vm[1]);
      assert.ok(!Number.isNaN(value) || vm[1] === 'NaN', `line ${line}: bad value ${vm[1]}`);
      const hist = /^(.*)_(bucket|sum|count)$/.exec(name);
      const fam = hist && families.get(hist[1])?.type === 'histogram' ? hist[1] : name;
      const f = enter(fam, line);
      assert.ok(f.type !== '', `line ${line}: sample of ${fam} before its TYPE`);
      f.samples.push({ name, labels, value, line });
    } else {
      assert.fail(`line ${line}: not a valid line: ${JSON.stringify(l)}`);
    }
  });
  for (const f of families.values()) {
    assert.ok(f.type && f.help, `${f.name}: HELP and TYPE`);
    assert.ok(f.samples.length > 0, `${f.name}: no samples`);
    const keys = new Set<string>();
    for (const s of f.samples) {
      const k = s.name + JSON.stringify(Object.entries(s.labels).sort());
      assert.ok(!keys.has(k), `line ${s.line}: duplicate series ${k}`);
      keys.add(k);
    }
    if (f.type !== 'histogram') continue;
    const series = new Map<string, { le: [number, number][]; sum?: number; count?: number }>();
    for (const s of f.samples) {
      const labels: Record<string, string | undefined> = s.labels; // a parsed line may lack le
      const { le, ...rest } = labels;
      const key = JSON.stringify(Object.entries(rest).sort());
      const e = series.get(key) ?? { le: [] };
      series.set(key, e);
      if (s.name.endsWith('_bucket')) {
        assert.ok(le !== undefined, `line ${s.line}: bucket without le`);
        assert.equal(e.sum, undefined, `line ${s.line}: bucket after _sum`);
        e.le.push([le === '+Inf' ? Infinity : Number(le), s.value]);
      } else if (s.name.endsWith('_sum')) e.sum = s.value;
      else e.count = s.value;
    }
    for (const [key, e] of series) {
      assert.ok(e.le.length >= 2, `${f.name}${key}: at least one bound and +Inf`);
      for (let i = 1; i < e.le.length; i++) {
        assert.ok(e.le[i][0] > e.le[i - 1][0], `${f.name}${key}: le increasing`);
        assert.ok(e.le[i][1] >= e.le[i - 1][1], `${f.name}${key}: cumulative counts`);
      }
      assert.equal(e.le[e.le.length - 1][0], Infinity, `${f.name}${key}: le="+Inf" last`);
      assert.equal(e.le[e.le.length - 1][1], e.count, `${f.name}${key}: +Inf = _count`);
      assert.ok(e.sum !== undefined && e.sum >= 0, `${f.name}${key}: _sum`);
    }
  }
  return families;
}

function promtool(text: string): { status: number | null; out: string } {
  const r = spawnSync(PROMTOOL_BIN, ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 20_000 });
  if (r.error) throw r.error;
  return { status: r.status, out: (r.stdout + r.stderr).trim() };
}

const ms = (x: number) => x * 1e6;

// ---------------------------------------------------------------- rendering

test('formatFloat writes le and values as client_golang does (Go FormatFloat g -1)', () => {
  const cases: [number, string][] = [
    [0.00005, '5e-05'],
    [0.0001, '0.0001'],
    [0.00025, '0.00025'],
    [0.005, '0.005'],
    [0.025, '0.025'],
    [1, '1'],
    [2.5, '2.5'],
    [60, '60'],
    [0, '0'],
    [100000, '100000'],
    [1e6, '1e+06'],
    [1234567, '1.234567e+06'],
    [0.1 + 0.2, '0.30000000000000004'],
    [1e21, '1e+21'],
    [123456.7, '123456.7'],
    [1e-7, '1e-07'],
    [1.5e300, '1.5e+300'],
    [-2.5, '-2.5'],
    [Infinity, '+Inf'],
    [-Infinity, '-Inf'],
    [NaN, 'NaN'],
  ];
  for (const [v, s] of cases) assert.equal(formatFloat(v), s, String(v));
});

test('parseBuckets: strictly increasing positive seconds, else a usage error saying what to write', () => {
  assert.deepEqual(parseBuckets('0.001,0.01,0.1,1'), [0.001, 0.01, 0.1, 1]);
  assert.deepEqual(parseBuckets(' 5e-05 , 0.5 ,10,+Inf'), [0.00005, 0.5, 10]);
  for (const bad of ['', '0.01,0.001', '0.1,0.1', '0,1', '-1,1', 'abc', '0.1,,1', '0x10', '1,Infinity,2', 'inf']) {
    assert.throws(
      () => parseBuckets(bad),
      (e: unknown) => {
        assert.ok(e instanceof MeshprobeError, bad);
        assert.equal(e.code, 'MP_USAGE');
        assert.equal(e.exitCode, 2);
        assert.match(e.message, /^--buckets .*e\.g\. --buckets 0\.001,/, bad);
        assert.ok(!e.message.includes('\n'));
        return true;
      },
    );
  }
  assert.ok(DEFAULT_LE_SECONDS.every((b, i) => b > 0 && (i === 0 || b > DEFAULT_LE_SECONDS[i - 1])));
  assert.equal(DEFAULT_LE_SECONDS[0], 0.00005);
  assert.equal(DEFAULT_LE_SECONDS[DEFAULT_LE_SECONDS.length - 1], 60);
});

test('renderPrometheus passes promtool check metrics and a strict structural check', () => {
  const r = rng(7);
  const values = (center: number, n: number) => Array.from({ length: n }, () => Math.round(center * (0.8 + 0.4 * r())));
  const m = metricSet({
    histograms: [
      {
        name: 'request_duration',
        help: 'Request latency\nas the client sees it (C:\\ paths too)',
        labels: { service: 'say "hi"', path: 'C:\\dir\nnext', method: 'GET', empty: '' },
        hist: H.histogramOf([...values(ms(0.3), 500), ...values(ms(7), 50), 1e11]),
      },
      {
        name: 'request_duration',
        help: 'ignored: the first help wins',
        labels: { service: 'b', method: 'POST' },
        hist: H.histogramOf(values(ms(40), 20)),
      },
      // same labels once the empty one is left out: merged into one series
      {
        name: 'request_duration',
        help: '',
        labels: { service: 'b', method: 'POST', zone: '' },
        hist: H.histogramOf(values(ms(40), 5)),
      },
      {
        name: 'connectDuration',
        help: 'TCP connect time',
        labels: { 'peer-addr': '10.0.0.1:80', '0bad': 'x', __reserved: 'y', le: 'user le' },
        hist: H.histogramOf(values(ms(1), 10)),
      },
      { name: 'idle_seconds', help: 'never observed', labels: {}, hist: H.emptyHistogram() },
    ],
    counters: [
      { name: 'requests', help: 'Requests seen', labels: { service: 'say "hi"' }, value: 551 },
      { name: 'requests', help: 'Requests seen', labels: { service: 'b' }, value: 25 },
      { name: 'drops_total', help: 'Dropped events', labels: { reason: 'ring full' }, value: 0 },
    ],
    gauges: [
      { name: 'open_connections', help: 'Connections open now', labels: { role: 'client' }, value: 12 },
      { name: 'meshprobe_ring_fill_ratio', help: 'Ring buffer fill', labels: {}, value: 0.25 },
    ],
  });
  const text = renderPrometheus(m, { version: '0.1.0' });
  const pt = promtool(text);
  assert.equal(pt.status, 0, `promtool check metrics: ${pt.out}\n---\n${text}`);
  assert.equal(pt.out, '', 'no lint problems');

  const fams = parseExposition(text);
  assert.deepEqual(
    [...fams.keys()],
    [
      'meshprobe_request_duration_seconds',
      'meshprobe_connect_duration_seconds',
      'meshprobe_idle_seconds',
      'meshprobe_requests_total',
      'meshprobe_drops_total',
      'meshprobe_open_connections',
      'meshprobe_ring_fill_ratio',
      'meshprobe_build_info',
    ],
  );
  const req = family(fams, 'meshprobe_request_duration_seconds');
  assert.equal(req.type, 'histogram');
  assert.equal(req.help, 'Request latency\nas the client sees it (C:\\ paths too)');
  const inf = req.samples.filter((s) => s.labels.le === '+Inf');
  assert.deepEqual(
    inf.map((s) => s.labels),
    [
      { method: 'GET', path: 'C:\\dir\nnext', service: 'say "hi"', le: '+Inf' },
      { method: 'POST', service: 'b', le: '+Inf' },
    ],
  );
  assert.deepEqual(
    inf.map((s) => s.value),
    [551, 25],
  );
  // labels sorted, le last, as client_golang
  assert.ok(
    text.includes(
      'meshprobe_request_duration_seconds_bucket{method="GET",path="C:\\\\dir\\nnext",service="say \\"hi\\"",le="0.005"}',
    ),
    text,
  );
  const conn = family(fams, 'meshprobe_connect_duration_seconds');
  const lastConn = conn.samples.at(-1);
  assert.ok(lastConn, 'meshprobe_connect_duration_seconds has samples');
  assert.deepEqual(Object.keys(lastConn.labels).sort(), ['_0bad', '_reserved', 'exported_le', 'peer_addr']);
  assert.equal(family(fams, 'meshprobe_requests_total').type, 'counter');
  assert.equal(family(fams, 'meshprobe_drops_total').samples[0].value, 0);
  assert.equal(family(fams, 'meshprobe_ring_fill_ratio').type, 'gauge');
  const info = family(fams, 'meshprobe_build_info');
  assert.equal(info.type, 'gauge');
  assert.deepEqual(info.samples[0].labels, {
    host: 'node-1',
    nodejs: process.version,
    probe: 'latency',
    version: '0.1.0',
  });
  assert.equal(info.samples[0].value, 1);
  const sumLine = text.split('\n').find((l) => l.startsWith('meshprobe_request_duration_seconds_sum{method="GET"'));
  assert.ok(sumLine, 'a _sum line for method="GET"');
  const h0 = m.histograms[0].hist;
  assert.equal(Number(sumLine.split(' ').pop()), h0.sum_ns / 1e9);

  // promtool does catch what it is there for: the check above is not vacuous
  assert.notEqual(promtool('meshprobe_x{a="b} 1\n').status, 0);
  assert.match(promtool('# HELP meshprobe_x x\n# TYPE meshprobe_x counter\nmeshprobe_x 1\n').out, /_total/);
  assert.throws(
    () =>
      parseExposition(
        text.replace(/^(meshprobe_requests_total\{service="b"\} 25\n)/m, '') +
          'meshprobe_requests_total{service="b"} 25\n',
      ),
    /not contiguous/,
  );

  // what the exporter refuses to render
  assert.throws(() => renderPrometheus({ ...m, cumulative: false }), /cumulative/);
  assert.throws(
    () =>
      renderPrometheus(
        metricSet({
          histograms: [m.histograms[4]],
          gauges: [{ name: 'idle_seconds_count', help: 'x', labels: {}, value: 1 }],
        }),
      ),
    /clashes/,
  );
});

// ---------------------------------------------------------------- bucket math

test('bucket math: cumulative counts per le from histogramOf of known values', () => {
  // values (ns) ≥ 1 % away from every bound, so the midpoint rule cannot move them
  const values = [
    ...Array<number>(3).fill(30_000),
    ...Array<number>(2).fill(70_000),
    200_000,
    ...Array<number>(4).fill(400_000),
    ...Array<number>(5).fill(2_000_000),
    ...Array<number>(2).fill(7_000_000),
    40_000_000,
    3e9,
    45e9,
    65e9, // above 60 s
    1e11, // the overflow bucket (≥ 2^36 ns)
  ];
  const h = H.histogramOf(values);
  const lastBucket = h.buckets.at(-1);
  assert.ok(lastBucket, 'a bucket');
  assert.equal(lastBucket[0], H.overflowIndex());
  const expected: [number, number][] = [
    [0.00005, 3],
    [0.0001, 5],
    [0.00025, 6],
    [0.0005, 10],
    [0.001, 10],
    [0.0025, 15],
    [0.005, 15],
    [0.01, 17],
    [0.025, 17],
    [0.05, 18],
    [0.1, 18],
    [0.25, 18],
    [0.5, 18],
    [1, 18],
    [2.5, 18],
    [5, 19],
    [10, 19],
    [30, 19],
    [60, 20],
    [Infinity, 22],
  ];
  assert.deepEqual(cumulativeBuckets(h), expected);

  const text = renderPrometheus(metricSet({ histograms: [{ name: 'x', help: 'x', labels: {}, hist: h }] }));
  const lines = text.split('\n').filter((l) => l.startsWith('meshprobe_x_seconds'));
  assert.deepEqual(lines, [
    ...expected.map(([le, c]) => `meshprobe_x_seconds_bucket{le="${formatFloat(le)}"} ${c}`),
    `meshprobe_x_seconds_sum ${formatFloat(values.reduce((a, b) => a + b, 0) / 1e9)}`,
    'meshprobe_x_seconds_count 22',
  ]);
  assert.equal(lines[0], 'meshprobe_x_seconds_bucket{le="5e-05"} 3');

  // custom bounds (a trailing Infinity is accepted)
  assert.deepEqual(cumulativeBuckets(h, [0.001, 1, Infinity]), [
    [0.001, 10],
    [1, 18],
    [Infinity, 22],
  ]);
  assert.deepEqual(cumulativeBuckets(H.emptyHistogram(), [0.1]), [
    [0.1, 0],
    [Infinity, 0],
  ]);

  // the midpoint rule on a fine bucket that straddles a bound: 1 ms lies in
  // [999424, 1007616) ns, midpoint 1003519.5 > 1e6, so the whole bucket
  // counts above le=0.001, 999.5 µs included; with a bound of 1.004 ms the
  // whole bucket counts below it, 1.007 ms included
  const i = H.bucketIndex(1e6);
  assert.deepEqual([H.bucketLower(i), H.bucketUpper(i), H.bucketMid(i)], [999424, 1007616, 1003519.5]);
  assert.deepEqual(cumulativeBuckets(H.histogramOf([999_500]), [0.001]), [
    [0.001, 0],
    [Infinity, 1],
  ]);
  assert.deepEqual(cumulativeBuckets(H.histogramOf([1_007_000]), [0.001004]), [
    [0.001004, 1],
    [Infinity, 1],
  ]);

  // the documented error bound: a value lands on the wrong side of a bound
  // by at most half a fine bucket, < 1/128 of the bound (every default bound)
  for (const le of DEFAULT_LE_SECONDS) {
    const b = le * 1e9;
    const k = H.bucketIndex(b);
    const [lo, hi, mid] = [H.bucketLower(k), H.bucketUpper(k) - 1, H.bucketMid(k)];
    const err = mid <= b ? Math.max(0, hi - b) : b - lo;
    assert.ok(err <= (H.bucketUpper(k) - H.bucketLower(k)) / 2, `le ${le}: ${err} ns`);
    assert.ok(err / b < 1 / 128, `le ${le}: ${((100 * err) / b).toFixed(3)} %`);
    // and the placement agrees with the rule
    const placed = cumulativeBuckets({ count: 1, sum_ns: mid, min_ns: lo, max_ns: hi, buckets: [[k, 1]] }, [le]);
    assert.equal(placed[0][1], mid <= b ? 1 : 0, `le ${le}`);
  }
});

// ---------------------------------------------------------------- real Prometheus

test(
  'a real Prometheus scrapes the exporter: histogram_quantile agrees with our percentiles',
  { timeout: 40_000 },
  async (t) => {
    // one batch: 10,000 values, 50 % ~0.3 ms, 30 % ~1.2 ms, 15 % ~7 ms, 5 % ~40 ms (±10 %)
    const r = rng(42);
    const batch: number[] = [];
    for (const [center, n] of [
      [0.3, 5000],
      [1.2, 3000],
      [7, 1500],
      [40, 500],
    ] as const) {
      for (let i = 0; i < n; i++) batch.push(Math.round(ms(center) * (0.9 + 0.2 * r())));
    }
    const oneBatch = H.histogramOf(batch);
    const BATCHES = 3;
    const label = 'say "hi"\\ \nnext';
    let calls = 0;
    let hist = H.emptyHistogram();
    const collect = (): MetricSet => {
      // grows on the first BATCHES scrapes, then stays: every batch has the same
      // distribution, so every cumulative snapshot has the same percentiles
      if (calls++ < BATCHES) hist = H.merge(hist, oneBatch);
      return metricSet({
        histograms: [
          { name: 'request_duration', help: 'Request latency', labels: { service: label, role: 'client' }, hist },
        ],
        counters: [{ name: 'requests', help: 'Requests', labels: { service: label }, value: hist.count }],
        gauges: [{ name: 'open_connections', help: 'Open connections', labels: {}, value: 3 }],
      });
    };
    const exporter = new PrometheusExporter({ port: 0, collect, version: 'test' });
    await exporter.start();
    t.after(() => exporter.close());
    const { port } = exporter.address();

    const prom = await startPrometheus(t, { targets: [`127.0.0.1:${port}`], job: 'meshprobe' });
    const total = BATCHES * batch.length;
    await prom.waitFor(
      'meshprobe_request_duration_seconds_count',
      (res) => res.length === 1 && Number(res[0].value[1]) === total,
      20_000,
    );
    assert.ok(exporter.stats().scrapes >= BATCHES, `scrapes: ${exporter.stats().scrapes}`);
    const up = await prom.query('up{job="meshprobe"}');
    assert.equal(up.length, 1);
    assert.equal(up[0].value[1], '1');

    const final = hist;
    assert.equal(final.count, total);
    const bounds = [0, ...DEFAULT_LE_SECONDS, Infinity];
    for (const q of [0.25, 0.7, 0.9, 0.99]) {
      const res = await prom.query(`histogram_quantile(${q}, sum by (le) (meshprobe_request_duration_seconds_bucket))`);
      assert.equal(res.length, 1, `q=${q}: ${JSON.stringify(res)}`);
      const theirs = Number(res[0].value[1]);
      const ours = H.percentile(final, q) / 1e9;
      assert.equal(ours, H.percentile(oneBatch, q) / 1e9, 'same distribution in every batch');
      const j = bounds.findIndex((b) => b >= ours);
      const [lo, hi] = [bounds[j - 1], bounds[j]];
      t.diagnostic(
        `q=${q}: prometheus ${(theirs * 1e3).toFixed(3)} ms, ours ${(ours * 1e3).toFixed(3)} ms, exposition bucket (${lo}, ${hi}]`,
      );
      assert.ok(Number.isFinite(theirs), `q=${q}: ${theirs}`);
      assert.ok(
        Math.abs(theirs - ours) <= hi - lo,
        `q=${q}: prometheus ${theirs} vs ours ${ours}, bucket (${lo}, ${hi}]`,
      );
      assert.ok(theirs >= lo && theirs <= hi, `q=${q}: prometheus ${theirs} outside (${lo}, ${hi}]`);
    }

    // counters, gauges, sums and escaped label values come through as sent
    const reqs = await prom.query('meshprobe_requests_total');
    assert.equal(reqs.length, 1);
    assert.equal(reqs[0].metric.service, label);
    assert.equal(reqs[0].metric.job, 'meshprobe');
    assert.equal(Number(reqs[0].value[1]), total);
    const sum = await prom.query('meshprobe_request_duration_seconds_sum');
    assert.ok(Math.abs(Number(sum[0].value[1]) - final.sum_ns / 1e9) < 1e-9);
    assert.equal(sum[0].metric.service, label);
    const gauge = await prom.query('meshprobe_open_connections');
    assert.equal(gauge[0].value[1], '3');
    const info = await prom.query('meshprobe_build_info');
    assert.equal(info[0].metric.version, 'test');
    assert.equal(info[0].metric.probe, 'latency');
    const samples = await prom.query('count_over_time(meshprobe_request_duration_seconds_count[1m])');
    assert.ok(Number(samples[0].value[1]) >= 2, 'at least two scrapes stored');
  },
);

// ---------------------------------------------------------------- HTTP

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

function get(
  port: number,
  path: string,
  opts: { method?: string; host?: string; headers?: Record<string, string>; agent?: Agent } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: opts.host ?? '127.0.0.1',
        port,
        path,
        method: opts.method ?? 'GET',
        headers: opts.headers,
        agent: opts.agent,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          if (res.statusCode === undefined) reject(new Error(`${path}: a response without a status code`));
          else resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function listen(host: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      resolve(s);
    });
  });
}

function tryConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.setTimeout(2000, () => {
      s.destroy();
      resolve('timeout');
    });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      resolve(e.code ?? 'error');
    });
  });
}

test('exporter HTTP: /metrics, /, 404, HEAD, gzip, a port in use, loopback by default, close', async (t) => {
  const m = metricSet({
    histograms: [
      {
        name: 'request_duration',
        help: 'Request latency',
        labels: { service: 'a' },
        hist: H.histogramOf([ms(1), ms(2)]),
      },
    ],
    counters: [{ name: 'requests', help: 'Requests', labels: {}, value: 2 }],
  });
  let fail = false;
  const exporter = new PrometheusExporter({
    port: 0,
    collect: () => {
      if (fail) throw new Error('boom');
      return m;
    },
    version: '9.9.9',
    renderEveryMs: 0, // every scrape renders: the failure below is the next scrape's
  });
  await exporter.start();
  t.after(() => exporter.close());
  const addr = exporter.address();
  assert.equal(addr.host, '127.0.0.1', 'listens on loopback by default');
  const port = addr.port;

  const r = await get(port, '/metrics');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  assert.equal(r.body.toString(), renderPrometheus(m, { version: '9.9.9' }));
  const z = await get(port, '/metrics?x=1', { headers: { 'accept-encoding': 'gzip' } });
  assert.equal(z.headers['content-encoding'], 'gzip');
  assert.equal(gunzipSync(z.body).toString(), r.body.toString());
  const head = await get(port, '/metrics', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.body.length, 0);
  assert.equal(Number(head.headers['content-length']), r.body.length);
  assert.equal(exporter.stats().scrapes, 3);

  const root = await get(port, '/');
  assert.equal(root.status, 200);
  assert.match(root.body.toString(), /\/metrics/);
  const nf = await get(port, '/metricz');
  assert.equal(nf.status, 404);
  assert.equal((await get(port, '/metrics/')).status, 404);
  assert.equal((await get(port, '/metrics', { method: 'POST' })).status, 405);
  fail = true;
  assert.equal((await get(port, '/metrics')).status, 500);
  assert.deepEqual(exporter.stats(), { scrapes: 3, errors: 1, renders: 3 });
  fail = false;

  // not reachable on another local address (all of 127/8 is local on Linux;
  // any non-loopback IPv4 address of this machine too)
  assert.equal(await tryConnect('127.0.0.2', port), 'ECONNREFUSED');
  const other = Object.values(networkInterfaces())
    .flat()
    .find((a) => a && a.family === 'IPv4' && !a.internal);
  if (other) assert.notEqual(await tryConnect(other.address, port), 'connected', other.address);

  // a port in use
  const taken = await listen('127.0.0.1');
  t.after(
    () =>
      new Promise<void>((res) => {
        taken.close(() => {
          res();
        });
      }),
  );
  const takenPort = (taken.address() as { port: number }).port;
  const clash = new PrometheusExporter({ port: takenPort, collect: () => m });
  await assert.rejects(clash.start(), (e: unknown) => {
    assert.ok(e instanceof MeshprobeError);
    assert.equal(e.code, 'MP_PORT_IN_USE');
    assert.equal(e.exitCode, 2);
    assert.equal(e.message, `--port ${takenPort} is already in use on 127.0.0.1: choose another --port`);
    return true;
  });
  await clash.close(); // nothing to close: fine
  // an address that is not this machine's (TEST-NET-1)
  await assert.rejects(
    new PrometheusExporter({ port: 0, host: '192.0.2.1', collect: () => m }).start(),
    (e: unknown) => {
      assert.ok(e instanceof MeshprobeError);
      assert.equal(e.code, 'MP_LISTEN_ADDRESS');
      assert.match(e.message, /^--listen 192\.0\.2\.1 is not an address of this machine/);
      assert.equal(e.exitCode, 2);
      return true;
    },
  );
  // EACCES (cannot happen as root): the mapping
  const denied = listenError(Object.assign(new Error('listen EACCES'), { code: 'EACCES' }), '127.0.0.1', 80);
  assert.ok(denied instanceof MeshprobeError);
  assert.equal(denied.code, 'MP_PORT_DENIED');
  assert.equal(denied.exitCode, 2);
  assert.match(denied.message, /^--port 80 .*choose a --port/);
  assert.throws(
    () => new PrometheusExporter({ port: 70000, collect: () => m }),
    (e: unknown) => e instanceof MeshprobeError && e.exitCode === 2,
  );

  // close() ends keep-alive connections too, promptly
  const agent = new Agent({ keepAlive: true });
  t.after(() => {
    agent.destroy();
  });
  assert.equal((await get(port, '/metrics', { agent })).status, 200);
  const t0 = Date.now();
  await exporter.close();
  assert.ok(Date.now() - t0 < 2000, `close took ${Date.now() - t0} ms`);
  assert.equal(await tryConnect('127.0.0.1', port), 'ECONNREFUSED');
  await exporter.close(); // twice: fine
});

test('50 concurrent scrapers cost one rendering; a rendering serves scrapes for renderEveryMs, then a new one', async (t) => {
  let collects = 0;
  const exporter = new PrometheusExporter({
    port: 0,
    collect: () => {
      collects++;
      return metricSet({ counters: [{ name: 'requests', help: 'Requests', labels: {}, value: collects }] });
    },
    renderEveryMs: 500,
  });
  await exporter.start();
  t.after(() => exporter.close());
  const { port } = exporter.address();
  const bodies = await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      get(port, '/metrics', i % 2 ? { headers: { 'accept-encoding': 'gzip' } } : {}).then((r) => {
        assert.equal(r.status, 200);
        return (r.headers['content-encoding'] === 'gzip' ? gunzipSync(r.body) : r.body).toString();
      }),
    ),
  );
  assert.equal(collects, 1, 'one collection for all 50');
  assert.equal(new Set(bodies).size, 1, 'every scraper got the same text');
  assert.match(bodies[0], /^meshprobe_requests_total 1$/m);
  await new Promise((r) => setTimeout(r, 600));
  const later = await get(port, '/metrics');
  assert.match(later.body.toString(), /^meshprobe_requests_total 2$/m, 'after renderEveryMs, fresh figures');
  assert.deepEqual(exporter.stats(), { scrapes: 51, errors: 0, renders: 2 });
});
