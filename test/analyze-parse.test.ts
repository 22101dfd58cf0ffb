// The readers behind analyze-latency: Prometheus text and OpenMetrics
// (escapes, timestamps, exemplars, # EOF, quoted names, errors naming the
// line), Prometheus API JSON (vector, matrix with counter resets, the forms a
// saved file may take), the mesh's service identity, and the eBPF report (a
// report, a json-stream, renaming by --services).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ExpositionError, parseExposition, parseSampleLine } from '../src/analyze/promtext.js';
import { ApiFormatError, counterIncrease, parseApiResult } from '../src/analyze/promapi.js';
import { meshHistograms, readMeshText, serviceOf, MeshInputError } from '../src/analyze/mesh.js';
import { readProbeReport } from '../src/analyze/ebpf.js';
import { MeshprobeError } from '../src/errors.js';
import { parseServices } from '../src/filter/services.js';

test('text format: names, labels, escapes, timestamps, comments', () => {
  const e = parseExposition(
    [
      '# HELP x_total A \\ help with \\n escapes',
      '# TYPE x_total counter',
      'x_total{a="b",c="quote \\" back \\\\ nl \\n other \\t"} 1.5e+03 1700000000000',
      'x_total{a="c",} 2',
      '  x_total { a = "d" , b="e" }\t3',
      'y NaN',
      'z +Inf',
      'w{empty=""} -Inf',
      '# a plain comment',
      '',
      'x_total{a="crlf"} 4\r',
    ].join('\n'),
  );
  assert.equal(e.format, 'text');
  assert.equal(e.types.get('x_total'), 'counter');
  const [s1, s2, s3, s4, s5, s6, s7] = e.samples;
  assert.deepEqual(s1.labels, { a: 'b', c: 'quote " back \\ nl \n other \\t' });
  assert.equal(s1.value, 1500);
  assert.equal(s1.timestamp, 1700000000000);
  assert.equal(s1.line, 3);
  assert.deepEqual(s2.labels, { a: 'c' });
  assert.deepEqual([s3.labels, s3.value], [{ a: 'd', b: 'e' }, 3]);
  assert.ok(Number.isNaN(s4.value));
  assert.equal(s5.value, Infinity);
  assert.deepEqual(s6.labels, {}, 'an empty label value is dropped, as Prometheus stores it');
  assert.equal(s6.value, -Infinity);
  assert.deepEqual([s7.labels, s7.value, s7.line], [{ a: 'crlf' }, 4, 11]);
});

test('OpenMetrics: # EOF, UNIT, exemplars, float timestamps, quoted UTF-8 names', () => {
  const e = parseExposition(
    [
      '# TYPE h histogram',
      '# UNIT h seconds',
      'h_bucket{le="1.0"} 3 # {trace_id="abc"} 0.5 1700000000.123',
      'h_bucket{le="+Inf"} 4 1700000000.5 # {trace_id="def"} 7',
      '{"my.metric", "label.with.dots"="v"} 9',
      '# EOF',
      'h_bucket{le="1.0"} 5',
      '# EOF',
    ].join('\n'),
  );
  assert.equal(e.format, 'openmetrics');
  assert.equal(e.eofs, 2, 'two scrapes concatenated are both read');
  assert.equal(e.samples.length, 4);
  assert.deepEqual([e.samples[0].value, e.samples[0].timestamp], [3, undefined]);
  assert.deepEqual([e.samples[1].value, e.samples[1].timestamp], [4, 1700000000.5]);
  assert.deepEqual([e.samples[2].name, e.samples[2].labels], ['my.metric', { 'label.with.dots': 'v' }]);
});

test('text format errors name the line and what is wrong', () => {
  const bad: [string, RegExp][] = [
    ['x{a="b"', /expected|unterminated/],
    ['x{a=b} 1', /quoted value/],
    ['x 1 2 3', /after the value/],
    ['x abc', /"abc" is not a number/],
    ['x', /space before the value/],
    ['x{a="1",a="2"} 1', /twice/],
    ['9x 1', /expected a name/],
    ['x{a="b"}1', /space before the value/],
    ['x 1 notatime', /timestamp/],
  ];
  for (const [line, re] of bad) {
    assert.throws(
      () => parseExposition(`# TYPE x counter\nx 1\n${line}\n`),
      (err: unknown) => {
        assert.ok(err instanceof ExpositionError, String(err));
        assert.equal(err.line, 3, line);
        assert.match(err.message, re, line);
        return true;
      },
    );
  }
  assert.throws(() => parseExposition('# TYPE x bogus\n'), /unknown metric type/);
  assert.equal(parseSampleLine('x{le="0.5"} 7').labels.le, '0.5');
});

test('API JSON: vector, matrix (increase with counter resets), data or result only', () => {
  const vec = {
    status: 'success',
    data: {
      resultType: 'vector',
      result: [{ metric: { __name__: 'm_bucket', le: '1', job: '' }, value: [1700000000.5, '3'] }],
    },
  };
  const v = parseApiResult(vec);
  assert.equal(v.resultType, 'vector');
  assert.deepEqual(v.samples[0].labels, { le: '1' });
  assert.equal(v.samples[0].name, 'm_bucket');
  assert.equal(v.time, 1700000000.5);
  assert.deepEqual(parseApiResult(vec.data).samples, v.samples);
  assert.deepEqual(parseApiResult(vec.data.result).samples, v.samples);

  // 10 -> 15 -> 3 (reset) -> 8: (15 - 10) + 8 = 13
  const mat = {
    resultType: 'matrix',
    result: [
      {
        metric: { le: '+Inf' },
        values: [
          [1, '10'],
          [2, '15'],
          [3, '3'],
          [4, '8'],
        ],
      },
      { metric: { le: '1' }, values: [[4, '2']] },
    ],
  };
  const m = parseApiResult(mat);
  assert.equal(m.resultType, 'matrix');
  assert.equal(m.samples[0].value, 13);
  assert.equal(m.resets, 1);
  assert.equal(m.samples[1].value, 0, 'one sample: no increase');
  assert.equal(m.singleSample, 1);
  assert.deepEqual(m.span, [1, 4]);
  // told from the entries when resultType is absent
  assert.equal(parseApiResult(mat.result).resultType, 'matrix');
  assert.deepEqual(counterIncrease([5, 7, 7, 1, 4, 0, 2]), { increase: 7 - 5 + 4 + 2, reset: true });
  assert.deepEqual(counterIncrease([1, 2, 3]), { increase: 2, reset: false });

  for (const [doc, re] of [
    [{ status: 'error', errorType: 'bad_data', error: 'parse error' }, /status "error": bad_data parse error/],
    [{ status: 'success', data: { resultType: 'scalar', result: [1, '2'] } }, /scalar/],
    [{ data: { result: 5 } }, /not an array/],
    [[{ metric: {}, value: [1, 'x'] }], /"x" is not a number/],
    [[{ metric: {}, histogram: [1, {}] }], /native histogram/],
    [{ foo: 1 }, /no "result"/],
  ] as [unknown, RegExp][]) {
    assert.throws(
      () => parseApiResult(doc),
      (e: unknown) => e instanceof ApiFormatError && re.test(e.message),
      JSON.stringify(doc),
    );
  }
});

test('service identity from Istio and Hubble labels', () => {
  assert.deepEqual(
    serviceOf('istio', {
      destination_service_name: 'reviews',
      destination_service_namespace: 'bookinfo',
      destination_workload: 'reviews-v2',
      destination_service: 'reviews.bookinfo.svc.cluster.local',
      destination_canonical_service: 'reviews',
      destination_app: 'reviews',
    }),
    {
      name: 'reviews',
      namespace: 'bookinfo',
      aliases: [
        'reviews',
        'reviews-v2',
        'reviews-v2.bookinfo',
        'reviews.bookinfo',
        'reviews.bookinfo.svc.cluster.local',
      ],
    },
  );
  // "unknown" is no name; the FQDN is used when nothing else is there
  assert.deepEqual(
    serviceOf('istio', { destination_service_name: 'unknown', destination_service: 'ext.payments.svc.cluster.local' })
      .name,
    'ext',
  );
  assert.deepEqual(serviceOf('istio', { destination_service_name: 'unknown' }), {
    name: null,
    namespace: null,
    aliases: [],
  });
  assert.deepEqual(
    serviceOf('cilium', { destination: 'bookinfo/reviews-v1-5d7c9b8f6-x2x9z', method: 'GET' }).namespace,
    'bookinfo',
  );
  assert.equal(
    serviceOf('cilium', { destination_workload: 'reviews-v1', destination_namespace: 'bookinfo' }).name,
    'reviews-v1',
  );
  assert.equal(serviceOf('cilium', { method: 'GET', reporter: 'server' }).name, null);
});

test('mesh histograms: grouped by reporter and service, summed over the other labels, by numeric le', () => {
  const text = [
    '# TYPE istio_request_duration_milliseconds histogram',
    'istio_request_duration_milliseconds_bucket{reporter="destination",destination_service_name="a",response_code="200",le="1"} 2',
    'istio_request_duration_milliseconds_bucket{reporter="destination",destination_service_name="a",response_code="200",le="+Inf"} 3',
    'istio_request_duration_milliseconds_bucket{reporter="destination",destination_service_name="a",response_code="500",le="1.0"} 1',
    'istio_request_duration_milliseconds_bucket{reporter="destination",destination_service_name="a",response_code="500",le="+Inf"} 1',
    'istio_request_duration_milliseconds_sum{reporter="destination",destination_service_name="a",response_code="200"} 2',
    'istio_request_duration_milliseconds_count{reporter="destination",destination_service_name="a",response_code="200"} 3',
    'istio_request_duration_milliseconds_bucket{reporter="source",destination_service_name="a",le="1"} 5',
    'istio_request_duration_milliseconds_bucket{reporter="source",destination_service_name="a",le="+Inf"} 5',
    'istio_request_duration_milliseconds_bucket{reporter="source",destination_service_name="a",le="bogus"} 5',
  ].join('\n');
  const set = readMeshText(text, 'istio', 'x.txt');
  const [dest, src] = set.histograms;
  assert.equal(dest.reporter, 'destination');
  assert.deepEqual(dest.buckets, [
    { le: 1, count: 3 },
    { le: Infinity, count: 4 },
  ]);
  assert.deepEqual([dest.sum, dest.count], [2, 3]);
  assert.equal(src.reporter, 'source');
  assert.equal(src.badLe, 1);
  assert.ok(set.notes.some((n) => /not a number and were left out/.test(n)));
  assert.equal(meshHistograms(parseExposition(text).samples, 'cilium').length, 0);
});

test('mesh input errors are one line naming the file and line', () => {
  const err = (text: string, source: 'istio' | 'cilium', re: RegExp) => {
    assert.throws(
      () => readMeshText(text, source, 'f.txt'),
      (e: unknown) => e instanceof MeshInputError && re.test(e.message) && !e.message.includes('\n'),
    );
  };
  err('# TYPE x counter\nx 1\nx{ 2\n', 'istio', /^f\.txt line 3: /);
  err('x_total 1\n', 'istio', /no istio_request_duration_milliseconds .* histogram .* in f\.txt/);
  err(
    'hubble_http_request_duration_seconds_bucket{le="1"} 1\n',
    'istio',
    /has hubble_http_request_duration_seconds, not .*: pass it with --cilium-metrics/,
  );
  err(
    '{"status":"success","data":{"resultType":"vector","result":[]}}',
    'istio',
    /no istio_request_duration_milliseconds/,
  );
  err('{"status": "success", "data": ', 'istio', /not valid JSON/);
  err('   \n', 'cilium', /empty/);
});

const report = (services: unknown[], extra: Record<string, unknown> = {}) => ({
  timestamp: '2026-01-01T00:00:00.000Z',
  duration_seconds: 10,
  probe: 'latency-probe',
  report_version: 1,
  metrics: {
    client: {
      total_requests: 4,
      percentiles: { p50: 1, p90: 2, p99: 3 },
      mean_ms: 1.5,
      buckets: [[1000000, 1015625, 4]],
    },
    server: {
      total_requests: 4,
      percentiles: { p50: 0.5, p90: 1, p99: 1.5 },
      mean_ms: 0.75,
      buckets: [[500000, 507812, 4]],
    },
    services,
    ...extra,
  },
});

test("eBPF report: services, views, a single service of a role gets its view's raw buckets, overhead copied", () => {
  const r = readProbeReport(
    JSON.stringify(
      report(
        [
          { service: 'api:8080', role: 'server', port: 8080, requests: 4, percentiles: { p50: 0.5 }, mean_ms: 0.75 },
          {
            service: 'api:8080',
            role: 'client',
            port: 8080,
            peer: '10.0.0.1:8080',
            requests: 3,
            percentiles: { p50: 1 },
            mean_ms: 1.5,
          },
        ],
        { overhead_analysis: { total_ms: 1, mesh_processing_ms: 0.2, by_service: [] } },
      ),
    ),
    'r.json',
  );
  assert.equal(r.services.length, 2);
  assert.deepEqual(
    r.services[0].buckets,
    [[500000, 507812, 4]],
    "the only server service, with all the view's requests",
  );
  assert.equal(
    r.services[1].buckets,
    undefined,
    "the client service has 3 of the view's 4 requests: not its histogram",
  );
  assert.deepEqual(r.overhead, { total_ms: 1, mesh_processing_ms: 0.2, by_service: [] });
  assert.equal(r.durationS, 10);
  assert.equal(r.startedAt?.toISOString(), '2026-01-01T00:00:00.000Z');
});

test('eBPF report: a json-stream is read from its last summary line', () => {
  const full = report([{ service: 's', role: 'server', requests: 4, percentiles: { p50: 0.5 }, mean_ms: 0.75 }]);
  const lines = [
    JSON.stringify({ type: 'interval', seq: 0, metrics: { services: [] } }),
    JSON.stringify({ type: 'summary', ...full }),
    '',
  ].join('\n');
  const r = readProbeReport(lines, 's.ndjson');
  assert.equal(r.streamLine, 2);
  assert.equal(r.services[0].service, 's');
  // a stream cut before its summary
  assert.throws(
    () => readProbeReport(lines.split('\n')[0] + '\n' + lines.split('\n')[0] + '\n{"type":"interv', 'cut.ndjson'),
    (e: unknown) =>
      e instanceof MeshprobeError && e.exitCode === 2 && /without its \{"type":"summary"\} line/.test(e.message),
  );
});

test('eBPF report errors: one line, exit 2, the line of a JSON error', () => {
  const bad: [string, RegExp][] = [
    ['', /is empty/],
    ['{\n  "metrics": {\n    "services": [1,]\n  }\n}\n', /line 3: not valid JSON/],
    ['[1, 2]', /not a latency-probe report/],
    ['{"probe": "x"}', /no "metrics"/],
    ['{"metrics": {"services": [{"service": "a"}]}}', /lacks a service name or a client\/server role/],
  ];
  for (const [text, re] of bad) {
    assert.throws(
      () => readProbeReport(text, 'r.json'),
      (e: unknown) =>
        e instanceof MeshprobeError && e.exitCode === 2 && re.test(e.message) && !e.message.includes('\n'),
      text,
    );
  }
});

test('eBPF report: --services renames comm:port services by port (and comm when listed)', () => {
  const defs = parseServices('reviews port=9080 comm=java\nratings port=9081\nbilling cgroup=/x\n');
  const r = readProbeReport(
    JSON.stringify(
      report([
        { service: 'java:9080', role: 'server', port: 9080, requests: 1 },
        { service: 'node:9080', role: 'server', port: 9080, requests: 1 },
        { service: '10.0.0.9:9081', role: 'client', port: 9081, requests: 1 },
        { service: 'reviews', role: 'client', port: 9080, requests: 1 },
      ]),
    ),
    'r.json',
    defs,
  );
  assert.deepEqual(
    r.services.map((s) => s.name),
    ['reviews', 'node:9080', 'ratings', 'reviews'],
  );
});
