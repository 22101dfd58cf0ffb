// The analyze-latency command as a user runs it: the table, --json (the
// AnalysisReport contract), --output, a json-stream input, --service-map and
// --services; and every bad input as one line on stderr with exit code 2 and
// no stack trace (missing or unreadable files, an unparsable line named by
// number, no histogram, nothing to compare, bad options, a Prometheus that is
// unreachable, answers an error or is not Prometheus). Needs no root.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AnalysisReport } from '../src/analyze/types.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'dist', 'src', 'cli', 'analyze-latency.js');
const F = join(ROOT, 'test', 'fixtures', 'analyze');
const PROBE = join(F, 'latency-probe.json');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the command without blocking this process (a test's own HTTP server must keep answering). */
export function runAnalyze(args: string[], timeoutMs = 30_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function tmp(t: TestContext): string {
  const d = mkdtempSync(join(tmpdir(), 'meshprobe-analyze-'));
  t.after(() => {
    rmSync(d, { recursive: true, force: true });
  });
  return d;
}

/** One line on stderr, exit 2, no stack trace, matching `re`. */
function usage(r: CliResult, re: RegExp): void {
  assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  assert.match(lines[0], /^analyze-latency: /);
  assert.match(lines[0], re);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  assert.equal(r.stdout, '');
}

async function serve(
  t: TestContext,
  handler: (path: string) => { status: number; type: string; body: string },
): Promise<string> {
  const srv: Server = createServer((req, res) => {
    const { status, type, body } = handler(req.url ?? '/');
    res.writeHead(status, { 'content-type': type });
    res.end(body);
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
  return `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
}

test('the table: per service, kernel view beside the mesh, differences, bucket bounds, causes, notes', async () => {
  const r = await runAnalyze([
    '--ebpf-probe',
    PROBE,
    '--istio-metrics',
    join(F, 'istio-envoy.txt'),
    '--cilium-metrics',
    join(F, 'hubble.txt'),
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  const out = r.stdout;
  assert.match(out, /^reviews {2}\(probe: reviews server, reviews client\)$/m);
  assert.match(out, /^ {2}kernel server view +1000 +0\.700 +4\.014 +17\.170 +1\.878$/m);
  // the mesh row: quantile and the bucket it was interpolated in (hand-worked in analyze-fixtures.test.ts)
  assert.match(out, /^ {2}istio destination +104 +0\.700 \(0\.5,1\] +6\.333 \(5,10\] +74\.000 \(50,100\] +3\.447$/m);
  assert.match(out, /^ {2}cilium server +110 +3\.056 \(0,5\] +8\.750 \(5,10\] +36\.250 \(25,50\] +4\.111$/m);
  assert.match(out, /^ {2}mesh - kernel +0\.000 +\+2\.319 +\+56\.830 +\+1\.569$/m);
  assert.match(out, /^ {2}kernel in mesh buckets /m);
  assert.match(out, /^ {4}p50: .*at least 0\.3 ms more than the kernel/m);
  assert.match(out, /^ {4}istio buckets \(ms\): 0\.5 1 5 10 25 .* 3600000 \+Inf$/m);
  assert.match(out, /^ {4}cilium buckets \(ms\): 5 10 25 50 100 250 500 1000 2500 5000 10000 \+Inf$/m);
  assert.match(out, /^ratings {2}\(probe: ratings server\)$/m);
  assert.match(out, /^probe overhead analysis \(means\): total_ms 2\.7781, .* mesh_processing_ms 0\.83$/m);
  assert.match(
    out,
    /^notes:\n {2}- no mesh figures for the probe services details \(server\), python3:9080 \(server\)/m,
  );
});

test('--json writes the AnalysisReport; --output writes it to a file and keeps the table on stdout', async (t) => {
  const r = await runAnalyze(['--ebpf-probe', PROBE, '--istio-metrics', join(F, 'istio-openmetrics.txt'), '--json']);
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as AnalysisReport;
  assert.equal(rep.tool, 'analyze-latency');
  assert.equal(rep.report_version, 1);
  assert.ok(!Number.isNaN(Date.parse(rep.generated_at)));
  assert.deepEqual(rep.inputs, { ebpf_probe: PROBE, istio_metrics: join(F, 'istio-openmetrics.txt') });
  assert.deepEqual(
    rep.services.map((s) => s.service),
    ['details', 'ratings', 'reviews'],
  );
  const det = rep.services[0];
  assert.deepEqual(
    det.mesh.map((m) => [m.source, m.reporter, m.metric, m.requests, m.p50_ms, m.p90_ms, m.p99_ms, m.mean_ms]),
    [['istio', 'destination', 'istio_request_duration_milliseconds', 100, 7, 82, 1000, 123.455]],
  );
  assert.deepEqual(det.mesh[0].bucket_bounds_ms, [1, 10, 100, 1000, 10000, 100000, 1000000]);
  assert.deepEqual(
    det.ebpf.map((e) => [e.view, e.probe_service, e.requests]),
    [['server', 'details', 300]],
  );
  assert.deepEqual(
    det.differences.map((d) => d.quantile),
    ['p50', 'p90', 'p99', 'mean'],
  );
  for (const d of rep.services.flatMap((s) => s.differences)) {
    assert.equal(typeof d.likely_cause, 'string');
    assert.ok(d.likely_cause.length > 20);
    if (d.ebpf_ms !== null && d.mesh_ms !== null)
      assert.ok(d.diff_ms !== null && Math.abs(d.diff_ms - (d.mesh_ms - d.ebpf_ms)) < 1e-12);
  }
  assert.equal(rep.overhead_analysis?.mesh_processing_ms, 0.83);
  assert.ok(Array.isArray(rep.notes));

  const dir = tmp(t);
  const out = join(dir, 'analysis.json');
  const r2 = await runAnalyze([
    '--ebpf-probe',
    PROBE,
    '--istio-metrics',
    join(F, 'istio-openmetrics.txt'),
    '--output',
    out,
  ]);
  assert.equal(r2.code, 0, r2.stderr);
  assert.match(r2.stdout, /^details {2}\(probe: details server\)$/m);
  const written = JSON.parse(readFileSync(out, 'utf8')) as AnalysisReport;
  assert.deepEqual(
    written.services.map((s) => s.service),
    rep.services.map((s) => s.service),
  );
  const r3 = await runAnalyze([
    '--ebpf-probe',
    PROBE,
    '--istio-metrics',
    join(F, 'istio-openmetrics.txt'),
    '--output',
    out,
    '--json',
  ]);
  assert.equal(r3.code, 0);
  assert.equal(r3.stdout, '');
  assert.match(r3.stderr, /the report is in/);
});

test('a json-stream input, --service-map, --services, API JSON files (vector and matrix)', async (t) => {
  const dir = tmp(t);
  // the parts of the real report this test reads (it is written back whole)
  const real = JSON.parse(readFileSync(join(F, 'latency-probe-real.json'), 'utf8')) as {
    timestamp: string;
    metrics: { services: { role: string; percentiles: { p50: number } }[] };
  };
  const stream = join(dir, 'stream.ndjson');
  writeFileSync(
    stream,
    [
      JSON.stringify({
        type: 'interval',
        seq: 0,
        start: real.timestamp,
        end: real.timestamp,
        duration_seconds: 10,
        metrics: { services: [] },
      }),
      JSON.stringify({ type: 'summary', ...real }),
      '',
    ].join('\n'),
  );
  // the real probe named its service mpload:36935: no mesh service is called that
  const none = await runAnalyze(['--ebpf-probe', stream, '--istio-metrics', join(F, 'istio-vector.json')]);
  usage(
    none,
    /nothing to compare: no probe service matches a mesh service \(probe: mpload:36935; mesh: reviews\).*--service-map mpload:36935=reviews/,
  );
  const r = await runAnalyze([
    '--ebpf-probe',
    stream,
    '--istio-metrics',
    join(F, 'istio-vector.json'),
    '--service-map',
    'mpload:36935=reviews',
    '--json',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as AnalysisReport;
  assert.deepEqual(
    rep.services.map((s) => s.service),
    ['reviews'],
  );
  const d = rep.services[0].differences.find((x) => x.quantile === 'p50');
  assert.ok(d, 'a p50 difference');
  assert.equal(d.probe_service, 'mpload:36935');
  const realServer = real.metrics.services.find((s) => s.role === 'server');
  assert.ok(realServer, 'the real report has a server service');
  assert.equal(d.ebpf_ms, realServer.percentiles.p50);
  assert.equal(d.mesh_ms, 0.75);
  assert.ok(rep.notes.some((n) => /a json-stream; its summary line 2 is used/.test(n)));
  // --services names the probe's comm:port service by its port
  const services = join(dir, 'services.txt');
  writeFileSync(services, 'reviews port=36935\n');
  const r2 = await runAnalyze([
    '--ebpf-probe',
    join(F, 'latency-probe-real.json'),
    '--istio-metrics',
    join(F, 'istio-matrix.json'),
    '--services',
    services,
    '--json',
  ]);
  assert.equal(r2.code, 0, r2.stderr);
  const rep2 = JSON.parse(r2.stdout) as AnalysisReport;
  const m = rep2.services[0].mesh[0];
  // hand-worked in analyze-fixtures.test.ts: 0.76, 8.4 (5 + 5 * (68.4 - 65) / 5, 8.400000000000006 in floats), 23.1
  assert.equal(m.requests, 76);
  for (const [a, b] of [
    [m.p50_ms, 0.76],
    [m.p90_ms, 8.4],
    [m.p99_ms, 23.1],
  ] as [number, number][])
    assert.ok(Math.abs(a - b) < 1e-9, `${a} != ${b}`);
  assert.ok(rep2.notes.some((n) => /range query \(matrix\)/.test(n)));
});

test('bad input: one line, exit 2, no stack trace', async (t) => {
  const dir = tmp(t);
  const badText = join(dir, 'bad.txt');
  writeFileSync(
    badText,
    '# TYPE istio_request_duration_milliseconds histogram\nistio_request_duration_milliseconds_bucket{le="1"} 3\nistio_request_duration_milliseconds_bucket{le="+Inf" 4\n',
  );
  const noHist = join(dir, 'nohist.txt');
  writeFileSync(noHist, '# TYPE up gauge\nup 1\n');
  const badJson = join(dir, 'bad.json');
  writeFileSync(badJson, '{\n  "metrics": {\n    "services": [\n  }\n');
  const unreadable = join(dir, 'unreadable.txt');
  writeFileSync(unreadable, 'x 1\n');
  chmodSync(unreadable, 0o000);
  const istio = join(F, 'istio-envoy.txt');
  const cases: [string[], RegExp][] = [
    [['--istio-metrics', istio], /--ebpf-probe FILE is required/],
    [
      ['--ebpf-probe', PROBE],
      /nothing to compare with: give --istio-metrics FILE, --cilium-metrics FILE or --prometheus-url URL/,
    ],
    [
      ['--ebpf-probe', join(dir, 'missing.json'), '--istio-metrics', istio],
      /--ebpf-probe .*missing\.json: no such file/,
    ],
    [['--ebpf-probe', PROBE, '--istio-metrics', join(dir, 'nope.txt')], /--istio-metrics .*nope\.txt: no such file/],
    [['--ebpf-probe', PROBE, '--istio-metrics', dir], /is a directory/],
    [['--ebpf-probe', PROBE, '--istio-metrics', badText], /bad\.txt line 3: expected , or \} in the label set/],
    [
      ['--ebpf-probe', PROBE, '--istio-metrics', noHist],
      /no istio_request_duration_milliseconds or istio_request_duration_seconds histogram .* in .*nohist\.txt/,
    ],
    [
      ['--ebpf-probe', PROBE, '--istio-metrics', join(F, 'hubble.txt')],
      /has hubble_http_request_duration_seconds, not .*: pass it with --cilium-metrics/,
    ],
    [['--ebpf-probe', badJson, '--istio-metrics', istio], /--ebpf-probe .*bad\.json line 4: not valid JSON/],
    [
      ['--ebpf-probe', join(F, 'istio-vector.json'), '--istio-metrics', istio],
      /has no "metrics": is it a latency-probe report\?/,
    ],
    [
      ['--ebpf-probe', PROBE, '--istio-metrics', istio, '--service-map', 'reviews'],
      /invalid --service-map "reviews": use PROBE_SERVICE=MESH_SERVICE/,
    ],
    [['--ebpf-probe', PROBE, '--istio-metrics', istio, '--range', '5m'], /--range is for --prometheus-url/],
    [['--ebpf-probe', PROBE, '--prometheus-url', 'http://127.0.0.1:1', '--range', 'soon'], /invalid --range "soon"/],
    [
      ['--ebpf-probe', PROBE, '--prometheus-url', 'http://127.0.0.1:1', '--time', 'yesterday'],
      /invalid --time "yesterday"/,
    ],
    [['--ebpf-probe', PROBE, '--prometheus-url', 'ftp://x'], /invalid --prometheus-url "ftp:\/\/x"/],
    [
      ['--ebpf-probe', PROBE, '--istio-metrics', istio, '--output', join(dir, 'no', 'such', 'dir.json')],
      /directory .* does not exist/,
    ],
    [['--ebpf-probe', PROBE, '--istio-metrics', istio, '--bogus'], /unknown option '--bogus'/],
  ];
  if (process.getuid?.() !== 0)
    cases.push([['--ebpf-probe', PROBE, '--istio-metrics', unreadable], /cannot read it \(permission denied\)/]);
  for (const [args, re] of cases) usage(await runAnalyze(args), re);
});

test('--prometheus-url: unreachable, an error status, not Prometheus, no samples: one line, exit 2', async (t) => {
  const { freePort } = await import('./helpers/servers.js');
  const closed = await freePort();
  usage(
    await runAnalyze(['--ebpf-probe', PROBE, '--prometheus-url', `http://127.0.0.1:${closed}`]),
    new RegExp(
      `cannot reach Prometheus at http://127\\.0\\.0\\.1:${closed} \\(ECONNREFUSED\\): check --prometheus-url`,
    ),
  );
  const err = await serve(t, () => ({
    status: 400,
    type: 'application/json',
    body: JSON.stringify({
      status: 'error',
      errorType: 'bad_data',
      error: 'invalid parameter "query": 1:2: parse error',
    }),
  }));
  usage(
    await runAnalyze(['--ebpf-probe', PROBE, '--prometheus-url', err]),
    /answered HTTP 400, bad_data: invalid parameter "query": 1:2: parse error \(query: sum by \(le, reporter, destination_service_name, .*\) \(increase\(istio_request_duration_milliseconds_bucket\[61s\]\)\)\)/,
  );
  const html = await serve(t, () => ({ status: 200, type: 'text/html', body: '<html>Grafana</html>' }));
  usage(
    await runAnalyze(['--ebpf-probe', PROBE, '--prometheus-url', html]),
    /answered HTTP 200 with something that is not a Prometheus API response .*is it Prometheus's base URL\?/,
  );
  const empty = await serve(t, () => ({
    status: 200,
    type: 'application/json',
    body: JSON.stringify({ status: 'success', data: { resultType: 'vector', result: [] } }),
  }));
  usage(
    await runAnalyze(['--ebpf-probe', PROBE, '--prometheus-url', empty, '--range', '30s', '--time', '1764139857']),
    /has no istio_request_duration_milliseconds or hubble_http_request_duration_seconds requests in the 30 s to 2025-11-26T06:50:57\.000Z/,
  );
  // the queries go to <base>/api/v1/query with the evaluation time; a path prefix is kept
  const seen: string[] = [];
  const rec = await serve(t, (path) => {
    seen.push(path);
    return {
      status: 200,
      type: 'application/json',
      body: JSON.stringify({ status: 'success', data: { resultType: 'vector', result: [] } }),
    };
  });
  await runAnalyze(['--ebpf-probe', PROBE, '--prometheus-url', `${rec}/prom/`, '--range', '2m']);
  assert.equal(seen.length, 6, 'buckets, sum and count of each source');
  for (const p of seen) {
    const u = new URL(p, 'http://x');
    assert.equal(u.pathname, '/prom/api/v1/query');
    // the default time is the end of the probe's run: 06:49:57.762 + 60.004 s
    assert.equal(u.searchParams.get('time'), String((Date.parse('2026-11-26T06:49:57.762Z') + 60004) / 1000));
    assert.match(u.searchParams.get('query') ?? '', /\[120s\]\)\)$/);
  }
});
