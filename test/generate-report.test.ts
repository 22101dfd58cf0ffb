// generate-report without a browser: the page built from the sample reports
// (test/fixtures/report, written by the probes on a test VM) has every chart
// with the series its inputs hold, the figures are right (CDF against the
// report's own percentiles, counts kept by re-binning, overhead parts adding
// up), user text is escaped, nothing is loaded from the network, and the
// command line checks its inputs (one line, exit 2) and writes atomically.
// The browser test is generate-report-chromium.test.ts.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../src/paths.js';
import { buildReport } from '../src/html/report.js';
import { loadInput, type InputKind } from '../src/html/inputs.js';
import type { ReportInputs } from '../src/html/section.js';
import { esc, html } from '../src/html/html.js';
import { bucketsMs, cdfFromBuckets, rebinLog, totalOf } from '../src/html/distribution.js';
import { linearScale, logScale, tailScale } from '../src/html/scale.js';
import { fmtMs } from '../src/html/format.js';
import { overheadRows, parts } from '../src/html/sections/overhead.js';
import type { AnalysisReport } from '../src/analyze/types.js';
import type { BucketList } from '../src/histogram.js';
import type { PercentileName } from '../src/report/views.js';
import { chart, chartsOf, type ChartEl } from './helpers/chromium.js';

const FIXTURES = path.join(REPO_ROOT, 'test', 'fixtures', 'report');
const fx = (name: string) => path.join(FIXTURES, name);
const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'generate-report.js');

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'meshprobe-report-test-'));
  dirs.push(d);
  return d;
}
process.on('exit', () => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

// The sample reports, as these tests read them and vary them (written by earlier probe versions:
// latency.json is report version 1, so not src/report's types; the variants below are deliberately partial).
const VIEWS = ['client', 'server', 'network'] as const;
type ViewName = (typeof VIEWS)[number];
const isView = (k: string): k is ViewName => (VIEWS as readonly string[]).includes(k);

/** metrics.client, .server and .network of a latency report. */
interface ViewFixture {
  total_requests: number;
  latency_histogram: Record<string, number>;
  percentiles: Partial<Record<PercentileName, number>>;
  mean_ms: number;
  min_ms: number;
  max_ms: number;
  buckets: BucketList;
}
interface LatencyFixture {
  timestamp: string;
  host: string;
  metrics: Record<ViewName, ViewFixture> & {
    services: { service: string; role: string; latency_histogram: Record<string, number> }[];
    connections: { comm: string }[];
    overhead_analysis: unknown;
  };
}
/** The by-side timings of connection-tracker's report: percentiles per side, null when none. */
type SideTimings = Record<'client' | 'server', Record<string, number> | null>;
interface ConnectionsFixture {
  timestamp: string;
  connections: Record<
    'setup_ms_by_side' | 'tls_handshake_ms_by_side' | 'tls_handshake_libssl_ms' | 'tls_after_connect_ms',
    SideTimings
  > & {
    /** a count per cause, and the total */
    failed: Record<string, number>;
    tls_versions: Record<string, number>;
    by_service: { opened: number; failed: number }[];
  };
}
interface DropsFixture {
  timestamp: string;
  drops: Record<string, unknown> & {
    by_reason: Record<string, number>;
    by_layer: Record<string, number>;
    by_service: { service: string }[];
  };
}

const fixture = (name: string): unknown => JSON.parse(readFileSync(fx(name), 'utf8'));
const latencyFixture = () => fixture('latency.json') as LatencyFixture;
const connectionsFixture = () => fixture('connections.json') as ConnectionsFixture;
const dropsFixture = () => fixture('drops.json') as DropsFixture;
const analysisFixture = () => fixture('analysis.json') as AnalysisReport;
const GEN = { version: 'test', at: '2026-11-26T10:00:00.000Z' };

/** Inputs from files, as the command line loads them. */
function load(files: Partial<Record<InputKind, string>>): ReportInputs {
  const out: ReportInputs = {};
  for (const [k, f] of Object.entries(files) as [InputKind, string][]) out[k] = loadInput(f, k);
  return out;
}

/** Inputs from objects (variants of the fixtures), written to a temp dir first. */
function loadObjects(objs: Partial<Record<InputKind, unknown>>): ReportInputs {
  const d = tmp();
  const files: Partial<Record<InputKind, string>> = {};
  for (const [k, v] of Object.entries(objs) as [InputKind, unknown][]) {
    const file = path.join(d, `${k}.json`);
    files[k] = file;
    writeFileSync(file, JSON.stringify(v));
  }
  return load(files);
}

const ALL = {
  latency: fx('latency.json'),
  connections: fx('connections.json'),
  drops: fx('drops.json'),
  compare: fx('analysis.json'),
};

/** The count of marks each series of a chart draws. */
const marks = (g: ChartEl['groups'][number]) =>
  g.bars + g.points + g.paths.filter((d) => /^M[\d.]+,[\d.]+L/.test(d)).length;

// ------------------------------------------------------------ the full page

describe('the page from all four inputs', () => {
  const page = buildReport(load(ALL), GEN);
  const lat = latencyFixture();
  const conns = connectionsFixture();
  const drops = dropsFixture();
  const analysis = analysisFixture();

  test('has every chart, each series drawn (series match the inputs)', () => {
    const expected = [
      'latency-cdf',
      'latency-histogram',
      'service-cdf',
      'service-histogram',
      'overhead-breakdown',
      'overhead-added',
      'connection-timing',
      'connection-lifecycle',
      'connection-failures',
      'tls-versions',
      'connection-setup-by-service',
      'connections-by-service',
      'drops-by-reason',
      'drops-by-layer',
      'drops-by-service',
      'compare',
    ];
    const names = new Set(chartsOf(page).map((c) => c.chart));
    for (const e of expected) assert.ok(names.has(e), `chart ${e} is on the page`);
    for (const c of chartsOf(page)) {
      assert.deepEqual(
        c.groups.map((g) => g.key),
        c.series,
        `${c.chart}: a <g class="series"> per data-series entry, in order`,
      );
      assert.ok(/^0 0 \d+(\.\d+)? \d+(\.\d+)?$/.test(c.attrs.viewBox), `${c.chart} has a viewBox`);
      assert.ok(c.attrs['aria-label'], `${c.chart} has a text alternative`);
      assert.match(c.body, /class="tick"/, `${c.chart} has axis ticks`);
      for (const g of c.groups) {
        // the one series allowed to be empty: the mesh part, with no sidecar in the sample
        if (c.chart.startsWith('overhead') && g.key === 'mesh') continue;
        assert.ok(marks(g) > 0, `${c.chart}: series ${g.key} draws something`);
      }
    }
  });

  test('latency: a CDF and a histogram panel per view, from the buckets', () => {
    const cdf = chart(page, 'latency-cdf');
    assert.deepEqual(cdf.series, ['client', 'server', 'network']);
    assert.equal(cdf.attrs['data-x-scale'], 'log', 'latencies spanning decades: log x axis');
    for (const g of cdf.groups) {
      assert.ok(isView(g.key), `${g.key}: a view`);
      const view = lat.metrics[g.key];
      assert.equal(g.paths.length, 1);
      // one vertex per bucket at most (flat runs merge), plus the start
      const vertices = (g.paths[0].match(/[ML]/g) ?? []).length;
      assert.ok(
        vertices > 20 && vertices <= view.buckets.length * 2 + 1,
        `${g.key}: ${vertices} vertices for ${view.buckets.length} buckets`,
      );
      assert.equal(g.points, 4, `${g.key}: p50, p90, p99, p99.9 marked`);
    }
    assert.match(cdf.body, />1 ms</, 'time ticks carry units');
    const hist = chart(page, 'latency-histogram');
    assert.deepEqual(hist.series, ['client', 'server', 'network']);
    for (const g of hist.groups) assert.ok(g.bars >= 5, `${g.key}: ${g.bars} bars`);
  });

  test('per service: CDF through the six percentiles, counts per range; the busiest first', () => {
    const svc = chart(page, 'service-cdf');
    assert.deepEqual(
      svc.series,
      lat.metrics.services.map((s) => `${s.service} (${s.role})`),
    );
    for (const g of svc.groups) assert.equal(g.points, 6, 'p50 p75 p90 p95 p99 p99.9');
    const hist = chart(page, 'service-histogram');
    // each service: a bar per non-empty range
    for (const [i, g] of hist.groups.entries()) {
      const nonEmpty = Object.values(lat.metrics.services[i].latency_histogram).filter((v) => v > 0).length;
      assert.equal(g.bars, nonEmpty, g.key);
    }
  });

  test('overhead: no sidecar in the sample: mesh drawn as 0 and said', () => {
    const oh = chart(page, 'overhead-breakdown');
    assert.equal(oh.attrs['data-mesh'], 'none');
    assert.deepEqual(oh.series, ['application', 'kernel', 'mesh']);
    assert.deepEqual(
      oh.groups.map((g) => g.bars),
      [1, 1, 0],
    );
    assert.match(oh.body, /no sidecar seen/);
    assert.match(page, /data-no-sidecar="true"/);
    const added = chart(page, 'overhead-added');
    assert.equal(added.groups[0].bars, 1, 'the kernel part on its own scale');
  });

  test('connections: a timing row per measure and side the report has; failures, TLS versions, services', () => {
    const c = conns.connections;
    const timing = chart(page, 'connection-timing');
    const rows = (
      ['setup_ms_by_side', 'tls_handshake_ms_by_side', 'tls_handshake_libssl_ms', 'tls_after_connect_ms'] as const
    ).flatMap((f) => (['client', 'server'] as const).filter((s) => c[f][s]).map((s) => `${f}:${s}`));
    assert.deepEqual(timing.series, rows);
    for (const g of timing.groups) {
      assert.equal(g.bars, 1, `${g.key}: the p50-p99 bar`);
      assert.equal(g.points, 4, `${g.key}: p50, p90, p99, p99.9 dots`);
    }
    const fail = chart(page, 'connection-failures');
    assert.deepEqual(
      fail.series,
      Object.entries(c.failed)
        .filter(([k, v]) => k !== 'total' && v > 0)
        .map(([k]) => k),
    );
    const tls = chart(page, 'tls-versions');
    assert.deepEqual(
      tls.series,
      Object.entries(c.tls_versions)
        .filter(([, v]) => v > 0)
        .map(([k]) => k),
    );
    const by = chart(page, 'connections-by-service');
    assert.equal(by.groups[0].bars, c.by_service.filter((s) => s.opened > 0).length, 'opened bars');
    assert.equal(by.groups[1].bars, c.by_service.filter((s) => s.failed > 0).length, 'failed bars');
  });

  test('drops: a bar per reason and layer, services split by reason', () => {
    const d = drops.drops;
    assert.deepEqual(chart(page, 'drops-by-reason').series, Object.keys(d.by_reason));
    const layer = chart(page, 'drops-by-layer');
    assert.deepEqual(layer.series, Object.keys(d.by_layer));
    assert.deepEqual(
      layer.groups.map((g) => g.bars),
      Object.keys(d.by_layer).map(() => 1),
    );
    const svc = chart(page, 'drops-by-service');
    assert.equal(
      svc.groups.reduce((a, g) => a + g.bars, 0),
      d.by_service.length,
    );
    assert.match(svc.body, /data-value="50"/);
  });

  test('compare: a chart per service, eBPF and mesh quantiles side by side', () => {
    const charts = chartsOf(page).filter((c) => c.chart === 'compare');
    assert.equal(charts.length, analysis.services.length);
    for (const [i, c] of charts.entries()) {
      const s = analysis.services[i];
      assert.equal(c.attrs['data-service'], s.service);
      // and a grey series per mesh view that analyze-latency recomputed from the kernel's requests
      const sims = new Set(
        s.differences.filter((d) => typeof d.mesh_from_ebpf_ms === 'number').map((d) => `${d.source} ${d.reporter}`),
      ).size;
      assert.equal(c.series.length, s.ebpf.length + s.mesh.length + sims);
      for (const g of c.groups) assert.ok(g.bars >= 1, `${s.service} ${g.key} drawn`);
    }
    assert.match(page, /Istio interpolates inside its 10-25 ms bucket/);
    assert.match(page, /Hubble exports no _sum for this metric\./);
  });

  test('summary, metadata, and no missing-input notes', () => {
    assert.match(page, /<table class="summary">/);
    for (const key of ['requests', 'latency-client', 'latency-server', 'drops', 'connections', 'tls', 'overhead'])
      assert.match(page, new RegExp(`data-key="${key}"`));
    assert.match(page, /3,200 client view, 3,200 server view/);
    assert.match(page, /<td>60 \(9\.87\/s\): NO_SOCKET 60<\/td>/);
    for (const s of [
      '6.18.44-fc-v669',
      '2026-11-26 06:49:57 UTC',
      '10.1 s',
      'latency-probe, report version 1',
      'connection-tracker, report version 2',
    ])
      assert.ok(page.includes(s), s);
    assert.doesNotMatch(page, /data-missing=/);
  });

  test('self-contained: no external resource, no remote reference at all', () => {
    assert.doesNotMatch(page, /\b(src|href|xlink:href)\s*=\s*"(?!#)/i, 'only in-page anchors');
    assert.doesNotMatch(page, /https?:\/\//i, 'no URL at all');
    assert.doesNotMatch(page, /@import|url\((?!#)/i);
    assert.doesNotMatch(page, /<(link|img|iframe|object|embed)\b/i);
    assert.equal((page.match(/<script\b/g) ?? []).length, 1, 'one inline script');
    assert.match(page, /<style>/);
  });
});

// ------------------------------------------------------------ figures

describe('figures', () => {
  const lat = latencyFixture();

  test('the CDF from buckets crosses each percentile where the report says (within a bucket)', () => {
    for (const v of VIEWS) {
      const view = lat.metrics[v];
      const b = bucketsMs(view.buckets, view.max_ms);
      assert.equal(totalOf(b), view.total_requests);
      const cdf = cdfFromBuckets(b);
      assert.equal(cdf[0].y, 0);
      assert.equal(cdf[cdf.length - 1].y, 1);
      for (let i = 1; i < cdf.length; i++) assert.ok(cdf[i].x >= cdf[i - 1].x && cdf[i].y >= cdf[i - 1].y, 'monotone');
      for (const [name, q] of [
        ['p50', 0.5],
        ['p90', 0.9],
        ['p99', 0.99],
      ] as const) {
        const reached = cdf.find((p) => p.y >= q);
        assert.ok(reached, `${v} ${name}: the CDF reaches ${q}`);
        const at = reached.x; // upper edge of the bucket holding the q-th request
        const want = view.percentiles[name];
        assert.ok(want !== undefined, `${v} ${name}: in the report`);
        assert.ok(
          at >= want && at <= want * 1.02 + 1e-4,
          `${v} ${name}: CDF reaches ${q} at ${at} ms, report says ${want} ms`,
        );
      }
    }
  });

  test('re-binning keeps every request', () => {
    const view = lat.metrics.client;
    const bins = rebinLog(bucketsMs(view.buckets, view.max_ms), 10);
    assert.equal(
      bins.reduce((a, b) => a + b.count, 0),
      view.total_requests,
    );
    for (const b of bins) assert.ok(Math.abs(Math.log10(b.hi / b.lo) - 0.1) < 1e-9, 'ten bins per decade');
  });

  test('scales: nice linear ticks without -0, log ticks within the domain, tail scale', () => {
    const s = linearScale(0, 47, [0, 100]);
    assert.deepEqual(s.ticks, [0, 10, 20, 30, 40, 50]);
    assert.ok(s.ticks.every((t) => !Object.is(t, -0)));
    const l = logScale(0.0127, 21.4, [0, 300]);
    assert.deepEqual(l.domain, [0.01, 30]);
    assert.ok(l.ticks.includes(1) && l.ticks.includes(0.01));
    assert.equal(l(1), l(1)); // pure
    assert.ok(Math.abs(l(0.01) - 0) < 1e-9 && Math.abs(l(30) - 300) < 1e-9);
    const t = tailScale([100, 0], 3);
    assert.ok(t(0.5) > t(0.9) && t(0.9) > t(0.99) && t(0.99) > t(0.999), 'higher percentiles higher up');
    assert.ok(Math.abs(t(0.9) - t(0.99) - (t(0.99) - t(0.999))) < 1e-9, 'each nine equally spaced');
  });

  test('times read with their unit', () => {
    assert.equal(fmtMs(0.0127), '12.7 µs');
    assert.equal(fmtMs(1.0281), '1.03 ms');
    assert.equal(fmtMs(2500), '2.5 s');
    assert.equal(fmtMs(null), '–');
  });
});

// ------------------------------------------------------------ overhead variants

/** An overhead_analysis as src/report/overhead.ts writes it, with two sidecars. */
function meshOverhead() {
  return {
    requests: 1000,
    total_ms: 3.2,
    application_ms: 2.0,
    kernel_processing_ms: 0.4,
    mesh_processing_ms: 0.8,
    proxy_comms: ['envoy', 'haproxy', 'linkerd2-proxy'],
    proxies: [
      {
        comm: 'envoy',
        pid: 101,
        netns: 4026532001,
        requests: 1000,
        upstream_requests: 1000,
        downstream_ms: 2.9,
        upstream_ms: 2.5,
        processing_ms: 0.4,
      },
      {
        comm: 'envoy',
        pid: 202,
        netns: 4026532002,
        requests: 1000,
        upstream_requests: 1000,
        downstream_ms: 2.4,
        upstream_ms: 2.0,
        processing_ms: 0.4,
      },
    ],
    by_service: [
      {
        service: 'api:8080',
        requests: 700,
        total_ms: 3.5,
        application_ms: 2.2,
        kernel_processing_ms: 0.5,
        mesh_processing_ms: 0.8,
        path: ['101:envoy', '202:envoy'],
        clients_seen: true,
      },
      {
        service: 'db:5432',
        requests: 300,
        total_ms: 2.5,
        application_ms: 1.5,
        kernel_processing_ms: null,
        mesh_processing_ms: null,
        path: ['101:envoy'],
        clients_seen: true,
      },
      {
        service: 'cache:6379',
        requests: 50,
        total_ms: 0.3,
        application_ms: 0.25,
        kernel_processing_ms: 0.05,
        mesh_processing_ms: 0,
        path: [],
        clients_seen: false,
      },
    ],
    requests_unpaired: 12,
    network_srtt_ms: 0.05,
    method: 'means over the measured connections',
  };
}

describe('overhead breakdown', () => {
  test('with sidecars: stacked parts per service add up to the total', () => {
    const lat = latencyFixture();
    lat.metrics.overhead_analysis = meshOverhead();
    const page = buildReport(loadObjects({ latency: lat }), GEN);
    const oh = chart(page, 'overhead-breakdown');
    assert.equal(oh.attrs['data-mesh'], 'seen');
    assert.equal(oh.attrs['data-rows'], '4');
    assert.ok(oh.series.includes('mesh') && oh.series.includes('other'), String(oh.series));
    const mesh = oh.groups.find((g) => g.key === 'mesh');
    assert.ok(mesh, 'a mesh series');
    assert.equal(mesh.bars, 2, 'all requests and api:8080 have a mesh part; cache has none (drawn as 0), db unknown');
    // db:5432: mesh and kernel unknown: the rest of its total is "not attributed"
    const rows = overheadRows(meshOverhead());
    assert.deepEqual(parts(rows[2]), [1.5, null, null, 1, null]);
    for (const r of rows) {
      const p = parts(r).reduce<number>((a, v) => a + (v ?? 0), 0);
      assert.ok(r.total !== null && Math.abs(p - r.total) < 1e-9, `${r.label}: parts ${p} = total ${String(r.total)}`);
    }
    assert.match(page, /101:envoy → 202:envoy/);
    assert.match(page, /cache:6379 \(server side only\)/);
    assert.match(page, /12 client requests went to servers not on this host/);
    assert.match(page, /Sidecar proxies seen/);
    assert.doesNotMatch(page, /data-no-sidecar/);
  });

  test('no server view: the total is drawn whole, not split', () => {
    const lat = latencyFixture();
    lat.metrics.overhead_analysis = {
      total_ms: 4.2,
      application_ms: null,
      kernel_processing_ms: null,
      mesh_processing_ms: null,
      network_srtt_ms: null,
      method: 'x',
    };
    const page = buildReport(loadObjects({ latency: lat }), GEN);
    const oh = chart(page, 'overhead-breakdown');
    assert.equal(oh.groups.find((g) => g.key === 'unsplit')?.bars, 1);
    assert.match(page, /No server view/);
    assert.ok(!chartsOf(page).some((c) => c.chart === 'overhead-added'));
  });

  test("analyze-latency's copy is used when no latency report is given", () => {
    const page = buildReport(load({ compare: ALL.compare }), GEN);
    assert.equal(chart(page, 'overhead-breakdown').groups[0].bars, 1);
  });
});

// ------------------------------------------------------------ escaping

test('user text is escaped everywhere: a service named <script>alert(1)</script>', () => {
  const evil = '<script>alert(1)</script>';
  const lat = latencyFixture();
  lat.metrics.services[0].service = evil;
  lat.metrics.connections[0].comm = evil;
  lat.host = `"><img src=x onerror=alert(2)>`;
  const drops = dropsFixture();
  drops.drops.by_service[0].service = evil;
  drops.drops.by_reason = { [evil]: 60 };
  const analysis = analysisFixture();
  analysis.services[0].service = evil;
  analysis.notes.push(evil);
  const oa = meshOverhead();
  oa.by_service[0].service = evil;
  lat.metrics.overhead_analysis = oa;
  const page = buildReport(loadObjects({ latency: lat, drops, compare: analysis }), GEN);
  assert.equal((page.match(/<script\b/g) ?? []).length, 1, "only the page's own script");
  assert.ok(!page.includes('<img'), 'no element from a host name');
  assert.ok(page.includes('&lt;script&gt;alert(1)&lt;/script&gt;'), 'the name is shown, as text');
  // attributes too: data-series and data-service carry the escaped name
  const svc = chart(page, 'service-cdf');
  assert.equal(svc.series[0], `${evil} (server)`);
  assert.ok(chartsOf(page).some((c) => c.chart === 'compare' && c.attrs['data-service'] === evil));
  assert.equal(esc(`a&b"c'<`), 'a&amp;b&quot;c&#39;&lt;');
  assert.equal(html`<b>${evil}</b>`.text, '<b>&lt;script&gt;alert(1)&lt;/script&gt;</b>');
});

// ------------------------------------------------------------ other inputs

describe('inputs', () => {
  test('json-stream: the summary line is the report; intervals give time series', () => {
    const inputs = load({ latency: fx('latency-stream.ndjson') });
    const latency = inputs.latency;
    assert.ok(latency, 'the latency input');
    assert.equal(latency.format, 'json-stream');
    assert.equal(latency.intervals.length, 5);
    assert.equal(latency.report.type, undefined);
    const page = buildReport(inputs, GEN);
    const ts = chart(page, 'latency-timeseries');
    assert.deepEqual(ts.series, ['p50', 'p99', 'p999']);
    for (const g of ts.groups) assert.equal(g.points, 5);
    const rate = chart(page, 'request-rate');
    assert.deepEqual(rate.series, ['client', 'server']);
    assert.match(page, /json-stream, 5 intervals/);
    // the same charts as the JSON report otherwise
    assert.deepEqual(chart(page, 'latency-cdf').series, ['client', 'server', 'network']);
  });

  test('json-stream of packet-drop-probe and connection-tracker: their rates over time', () => {
    const d = tmp();
    const stream = (
      name: string,
      probe: string,
      rep: { timestamp: string },
      interval: (i: number) => Record<string, unknown>,
    ) => {
      const t0 = Date.parse(rep.timestamp);
      const lines = [0, 1, 2, 3].map((i) => ({
        type: 'interval',
        probe,
        seq: i,
        start: new Date(t0 + i * 1000).toISOString(),
        end: new Date(t0 + (i + 1) * 1000).toISOString(),
        duration_seconds: 1,
        ...interval(i),
      }));
      writeFileSync(
        path.join(d, name),
        [...lines, { type: 'summary', ...rep }].map((l) => JSON.stringify(l)).join('\n') + '\n',
      );
      return path.join(d, name);
    };
    const drops = stream('drops.ndjson', 'packet-drop-probe', dropsFixture(), (i) => ({
      drops: { total: [0, 50, 10, 0][i] },
    }));
    const conns = stream('conns.ndjson', 'connection-tracker', connectionsFixture(), (i) => ({
      connections: { opened: [100, 300, 400, 68][i], failed: { total: [0, 20, 0, 0][i] } },
    }));
    const page = buildReport(load({ drops, connections: conns }), GEN);
    const dr = chart(page, 'drops-timeseries');
    assert.deepEqual(dr.series, ['drops']);
    assert.equal(dr.groups[0].points, 4);
    const cn = chart(page, 'connections-timeseries');
    assert.deepEqual(cn.series, ['opened', 'failed']);
    assert.match(cn.body, /failed connects per second: 20 at 1\.5 s/);
  });

  test('only drops: the other inputs are named as missing, with how to get them', () => {
    const page = buildReport(load({ drops: ALL.drops }), GEN);
    for (const k of ['latency', 'connections', 'compare']) assert.match(page, new RegExp(`data-missing="${k}"`));
    assert.doesNotMatch(page, /data-missing="drops"/);
    assert.match(page, /sudo npx latency-probe --duration 60 --output results\/ebpf-latency\.json/);
    assert.ok(!chartsOf(page).some((c) => c.chart.startsWith('latency') || c.chart.startsWith('overhead')));
    assert.doesNotMatch(page, /id="latency"/);
  });

  test('only connections: its latency figures are drawn, and said to be borrowed', () => {
    const page = buildReport(load({ connections: ALL.connections }), GEN);
    assert.deepEqual(chart(page, 'latency-cdf').series, ['client', 'server', 'network']);
    assert.match(page, /these are the latency figures of the connection-tracker report/);
    assert.match(page, /data-missing="latency"/);
  });

  test('a report with nothing measured: charts say so, nothing breaks', () => {
    const lat = latencyFixture();
    for (const v of VIEWS)
      lat.metrics[v] = {
        total_requests: 0,
        latency_histogram: {},
        percentiles: {},
        mean_ms: 0,
        min_ms: 0,
        max_ms: 0,
        buckets: [],
      };
    lat.metrics.services = [];
    lat.metrics.connections = [];
    lat.metrics.overhead_analysis = {
      total_ms: null,
      application_ms: null,
      kernel_processing_ms: null,
      mesh_processing_ms: null,
      network_srtt_ms: null,
      method: 'x',
    };
    const drops = dropsFixture();
    drops.drops = {
      total: 0,
      rate_per_s: 0,
      by_reason: {},
      by_layer: {},
      by_service: [],
      top_flows: [],
      top_functions: [],
    };
    const page = buildReport(loadObjects({ latency: lat, drops }), GEN);
    assert.match(page, /data-chart-empty="latency-cdf"/);
    assert.match(page, /data-chart-empty="overhead-breakdown"/);
    assert.match(page, /data-no-drops="true"/);
    assert.equal(chartsOf(page).length, 0);
  });

  test('a latency report of the original shape (no probe field, no buckets) is drawn from its percentiles', () => {
    const old = {
      timestamp: '2025-10-02T14:30:00Z',
      duration_seconds: 60,
      metrics: {
        total_requests: 150000,
        latency_histogram: {
          '0-1ms': 120000,
          '1-5ms': 25000,
          '5-10ms': 4000,
          '10-50ms': 900,
          '50-100ms': 90,
          '100ms+': 10,
        },
        percentiles: { p50: 0.8, p95: 3.2, p99: 8.5, p999: 45.2 },
        client: {
          total_requests: 150000,
          percentiles: { p50: 0.8, p95: 3.2, p99: 8.5, p999: 45.2 },
          latency_histogram: {
            '0-1ms': 120000,
            '1-5ms': 25000,
            '5-10ms': 4000,
            '10-50ms': 900,
            '50-100ms': 90,
            '100ms+': 10,
          },
        },
        overhead_analysis: {
          kernel_processing_ms: 0.12,
          mesh_processing_ms: 0.35,
          application_ms: 0.45,
          total_ms: 0.92,
        },
      },
    };
    const page = buildReport(loadObjects({ latency: old }), GEN);
    const cdf = chart(page, 'latency-cdf');
    assert.deepEqual(cdf.series, ['client']);
    assert.match(cdf.body, /stroke-dasharray/, 'percentiles only: dashed');
    assert.equal(chart(page, 'latency-histogram').groups[0].bars, 6, 'the six ranges');
    assert.equal(chart(page, 'overhead-breakdown').groups.find((g) => g.key === 'mesh')?.bars, 1);
  });
});

// ------------------------------------------------------------ command line

function run(args: string[], opts: { cwd?: string } = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd: opts.cwd ?? REPO_ROOT,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** One line on stderr, naming the command, with no stack trace (commander may add its "Did you mean" line). */
function oneLine(err: string): string {
  const lines = err
    .trim()
    .split('\n')
    .filter((l) => l.trim() && !/^\(Did you mean .*\?\)$/.test(l));
  assert.equal(lines.length, 1, `one line: ${err}`);
  assert.match(lines[0], /^generate-report: /);
  assert.doesNotMatch(err, /\n\s+at |Error:/);
  return lines[0];
}

describe('command line', () => {
  test('writes the page atomically and says where', () => {
    const d = tmp();
    const out = path.join(d, 'report.html');
    writeFileSync(out, 'old');
    const r = run([
      '--include-ebpf-metrics',
      ALL.latency,
      '--connections',
      ALL.connections,
      '--drops',
      ALL.drops,
      '--compare',
      ALL.compare,
      '--output',
      out,
    ]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /^generate-report: wrote .*report\.html \(\d+ KB, \d+ charts\)\n$/);
    const page = readFileSync(out, 'utf8');
    assert.match(page, /^<!DOCTYPE html>/);
    assert.ok(chartsOf(page).length >= 16);
    assert.deepEqual(readdirSync(d), ['report.html'], 'no temporary file left');
  });

  test('--output - writes to stdout; --title', () => {
    const r = run(['--drops', ALL.drops, '--output', '-', '--title', 'drops <today>', '-q']);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.err, '');
    assert.match(r.out, /<title>drops &lt;today&gt;<\/title>/);
    assert.equal(chart(r.out, 'drops-by-layer').series.length, 2);
  });

  const usage: [string, string[], RegExp][] = [
    ['no input', [], /give at least one input: --include-ebpf-metrics/],
    [
      'a missing file',
      ['--include-ebpf-metrics', '/nonexistent/ebpf-latency.json'],
      /--include-ebpf-metrics \/nonexistent\/ebpf-latency\.json: no such file; give the report latency-probe wrote/,
    ],
    [
      'a drops report as latency',
      ['--include-ebpf-metrics', fx('drops.json')],
      /is a packet-drop-probe report, not a latency-probe report; give it with --drops/,
    ],
    [
      'a latency report as drops',
      ['--drops', fx('latency.json')],
      /is a latency-probe report, not a packet-drop-probe report; give it with --include-ebpf-metrics/,
    ],
    [
      'a probe report as --compare',
      ['--compare', fx('connections.json')],
      /is a connection-tracker report, not a analyze-latency --json report; give it with --connections/,
    ],
    ['a directory', ['--connections', FIXTURES], /is a directory/],
    ['an unknown option', ['--drop', 'x'], /unknown option '--drop'/],
  ];
  for (const [what, args, re] of usage) {
    test(`usage error, exit 2, one line: ${what}`, () => {
      const r = run(args);
      assert.equal(r.code, 2, r.err);
      assert.match(oneLine(r.err), re);
    });
  }

  test('usage errors from file contents: not JSON, not a report, empty, a stream cut before its summary', () => {
    const d = tmp();
    const write = (name: string, text: string) => {
      writeFileSync(path.join(d, name), text);
      return path.join(d, name);
    };
    const cases: [string, RegExp][] = [
      [write('bad.json', '{"probe": "latency-probe", '), /is not JSON \(.*\): give the JSON report of latency-probe/],
      [write('arr.json', '[1, 2]'), /is JSON but not an object: not a meshprobe report/],
      [write('other.json', '{"hello": 1}'), /is not a meshprobe report, not a latency-probe report/],
      [write('empty.json', '\n'), /is empty/],
      [
        write('cut.ndjson', readFileSync(fx('latency-stream.ndjson'), 'utf8').split('\n').slice(0, 3).join('\n')),
        /json-stream with 3 interval line\(s\) and no summary line/,
      ],
    ];
    for (const [file, re] of cases) {
      const r = run(['--include-ebpf-metrics', file, '--output', path.join(d, 'x.html')]);
      assert.equal(r.code, 2, `${file}: ${r.err}`);
      assert.match(oneLine(r.err), re);
    }
    assert.ok(!readdirSync(d).includes('x.html'), 'nothing written');
  });

  test('an output that cannot be written: exit 2 before reading anything', () => {
    const r = run(['--drops', ALL.drops, '--output', '/nonexistent-dir/report.html']);
    assert.equal(r.code, 2);
    assert.match(oneLine(r.err), /directory \/nonexistent-dir does not exist/);
    if (process.getuid?.() !== 0) {
      const d = tmp();
      mkdirSync(path.join(d, 'ro'));
      chmodSync(path.join(d, 'ro'), 0o500);
      const ro = run(['--drops', ALL.drops, '--output', path.join(d, 'ro', 'r.html')]);
      assert.equal(ro.code, 2);
    }
  });
});
