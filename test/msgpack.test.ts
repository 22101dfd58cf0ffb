// --format msgpack (src/export/msgpack.ts) and its reader (src/input.ts): a recorded json-stream
// through the writer and back gives the same objects and the same NDJSON bytes; the compact
// bucket lists of version 2 (every shape the latency report emits, the fallback to plain arrays,
// damaged data) decode to the same triples; version 1 files still read; a file cut at any byte
// gives its complete records and the bytes cut; analyze-latency and generate-report give the
// same output for a json-stream and its msgpack twin; generate-report --to-ndjson converts; the
// probes refuse msgpack without --output or to a terminal. Needs no root (unit tier).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Packr } from 'msgpackr';
import {
  BUCKETS_EXT,
  MsgpackStream,
  RECORDS_HEADER,
  RECORDS_HEADER_V1,
  RECORD_OPTIONS,
  encodeRecords,
  packBucketList,
  unpackBucketList,
} from '../src/export/msgpack.js';
import {
  isRecordFile,
  parseReportText,
  readRecords,
  readReportInput,
  recordVersion,
  recordsToNdjson,
  type RecordedRun,
} from '../src/input.js';
import { checkBinaryOutput } from '../src/cli/options.js';
import { MeshprobeError } from '../src/errors.js';
import {
  bucketCount,
  bucketLower,
  bucketUpper,
  emptyHistogram,
  histogramOf,
  overflowIndex,
  toBucketList,
  type HistogramSnapshot,
} from '../src/histogram.js';
import { LATENCY_STATS } from '../src/probes/latency.js';
import { latencyIntervalReport, type LatencyFigures, type ServiceFigure } from '../src/report/latency.js';
import { viewSummary } from '../src/report/views.js';
import { COUNTER_NAMES } from '../src/wasm.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const STREAM = path.join(ROOT, 'test', 'fixtures', 'report', 'latency-stream.ndjson');
const REAL = path.join(ROOT, 'test', 'fixtures', 'analyze', 'latency-probe-real.json');
const ISTIO = path.join(ROOT, 'test', 'fixtures', 'analyze', 'istio-vector.json');
const cli = (name: string) => path.join(ROOT, 'dist', 'src', 'cli', `${name}.js`);

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'meshprobe-msgpack-test-'));
  dirs.push(d);
  return d;
}
process.on('exit', () => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function run(name: string, args: string[]) {
  const r = spawnSync(process.execPath, [cli(name), ...args], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const fail = (p: { kind: string }) => new Error(`unreadable: ${p.kind}`);
const linesOf = (text: string) =>
  text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as unknown);

/** The fixture written record by record by the probe's own writer (MsgpackStream), as a file. */
function twinOf(ndjson: string, dir: string, name = 'run.mpk'): string {
  const file = path.join(dir, name);
  const s = new MsgpackStream(file);
  for (const o of linesOf(ndjson)) assert.equal(s.write(o), true);
  s.close();
  assert.equal(s.closed, undefined);
  assert.equal(s.lines, linesOf(ndjson).length, 'lines counts the records');
  return file;
}

test('round trip: a recorded json-stream through the writer and the reader gives the same objects and bytes', () => {
  const text = readFileSync(STREAM, 'utf8');
  const file = twinOf(text, tmp());
  const bytes = readFileSync(file);
  assert.ok(isRecordFile(bytes), 'the file starts with the header');
  assert.deepEqual(bytes.subarray(0, RECORDS_HEADER.length), Buffer.from('\xb3meshprobe-records/2', 'latin1'));
  assert.equal(recordVersion(bytes), 2);
  assert.ok(bytes.length < Buffer.byteLength(text), `${bytes.length} bytes against ${Buffer.byteLength(text)}`);
  const run = readRecords(bytes);
  assert.equal(run.cutBytes, 0);
  assert.deepEqual(run.records, linesOf(text), 'every record equals its json-stream line, parsed');
  assert.equal(recordsToNdjson(run), text, 'back to NDJSON: the json-stream byte for byte');
  // what analyze-latency and generate-report get from each
  const fromText = parseReportText(text, fail);
  const fromRecords = parseReportText(readReportInput(file, '--ebpf-probe'), fail);
  assert.equal(fromText.format, 'json-stream');
  assert.equal(fromRecords.format, 'msgpack');
  assert.deepEqual(fromRecords.report, fromText.report);
  assert.deepEqual(fromRecords.intervals, fromText.intervals);
  assert.equal(fromRecords.summaryLine, fromText.summaryLine, 'the summary record has the summary line number');
  // the file is recognised by content, not by name
  const renamed = path.join(path.dirname(file), 'run.json');
  writeFileSync(renamed, bytes);
  assert.equal(typeof readReportInput(renamed, '--x'), 'object');
});

test('JSON semantics: Dates as ISO strings, undefined fields left out, NaN as null, key order kept', () => {
  const obj = { b: 1, a: new Date(0), u: undefined, n: Number.NaN, nested: [{ z: 1, y: [1.5, -0, 2 ** 40] }] };
  const run = readRecords(encodeRecords([obj, obj]));
  const expected: unknown = JSON.parse(JSON.stringify(obj));
  assert.deepEqual(run.records, [expected, expected]);
  assert.equal(JSON.stringify(run.records[1]), JSON.stringify(obj), 'the same key order');
  assert.throws(() => encodeRecords([undefined]), /a record must be a JSON value/);
  assert.throws(() => encodeRecords([{ big: 1n }]), TypeError, 'a bigint is refused, as by JSON');
});

/** Histograms of every shape a latency report's bucket lists take. */
function shapes(): Record<string, HistogramSnapshot> {
  const big = 2 ** 53 - 1;
  return {
    exact: histogramOf([0, 0, 1, 5, 64, 127, 127]), // 1-ns buckets from bucket 0
    spread: histogramOf(Array.from({ length: 3000 }, (_, i) => Math.round(2e5 * Math.exp((i % 300) / 60)))), // 0.2-29 ms
    overflow: histogramOf([2 ** 36 - 1, 2 ** 36, 1e11, 2 ** 62]), // the last bucket below 2^36 ns, then the overflow bucket
    single: histogramOf([1234567]),
    whole: {
      count: bucketCount() * 3,
      sum_ns: 0,
      min_ns: 0,
      max_ns: 2 ** 36,
      buckets: Array.from({ length: bucketCount() }, (_, i): [number, number] => [i, 3]),
    }, // every bucket
    huge: { count: big, sum_ns: big, min_ns: 1, max_ns: 1, buckets: [[1, big]] }, // the largest count JSON keeps exact
    empty: emptyHistogram(),
  };
}

const zeros = <K extends string>(names: readonly K[]) =>
  Object.fromEntries(names.map((n) => [n, 0])) as Record<K, number>;

/**
 * A latency-probe json-stream built by the report's own builders: 3 intervals and the summary, one
 * service per shape of `h` (client: spread, server: overflow, network: empty, srtt: exact).
 */
function latencyRun(h: Record<string, HistogramSnapshot> = shapes()): object[] {
  const services: ServiceFigure[] = Object.entries(h).map(([name, hist], i) => ({
    key: String(1_000_000_000_000 + i),
    name: `ns/${name}:${String(8000 + i)}`,
    role: i % 2 ? 'server' : 'client',
    port: 8000 + i,
    ...(i % 2 ? {} : { peer: `10.0.0.${String(i)}:${String(8000 + i)}` }),
    requests: hist.count,
    hist,
  }));
  const f: LatencyFigures = {
    client: h.spread,
    server: h.overflow,
    network: h.empty,
    srtt: h.exact,
    services,
    kernel: zeros(LATENCY_STATS),
    counters: zeros(COUNTER_NAMES),
  };
  const t0 = Date.parse('2026-11-26T06:00:00Z');
  const span = (seq: number, n = 1) => ({
    start: new Date(t0 + seq * 10_000),
    end: new Date(t0 + (seq + n) * 10_000),
    seq,
  });
  const sampling = { mode: 'fixed' as const, rate: 1 };
  return [
    ...[0, 1, 2].map((seq) => latencyIntervalReport(f, span(seq), sampling)),
    { ...latencyIntervalReport(f, span(0, 3), sampling), type: 'summary' },
  ];
}

/** The bytes a version 1 writer gave for `records`: every array as plain msgpack. */
function version1(records: readonly unknown[]): Buffer {
  const packr = new Packr({ ...RECORD_OPTIONS });
  return Buffer.concat([
    RECORDS_HEADER_V1,
    ...records.map((r) => Buffer.from(packr.pack(JSON.parse(JSON.stringify(r))))),
  ]);
}

test('compact bucket lists: every shape the latency report emits decodes to the same triples', () => {
  const h = shapes();
  for (const [name, hist] of Object.entries(h)) {
    const list = toBucketList(hist);
    if (name === 'empty') {
      assert.deepEqual(list, []);
      assert.equal(packBucketList(list), undefined, 'an empty list stays an empty array (one byte)');
      continue;
    }
    const data = packBucketList(list);
    assert.ok(data, `${name}: written compactly`);
    assert.deepEqual(unpackBucketList(data), list, name);
    assert.equal(JSON.stringify(unpackBucketList(data)), JSON.stringify(list), `${name}: the same JSON text`);
  }
  // the edges: bucket 0, the 1-ns buckets, the overflow bucket and its 2^64 upper bound, a count of 2^53 - 1
  const whole = toBucketList(h.whole);
  assert.deepEqual(whole[0], [0, 1, 3]);
  assert.deepEqual(whole[127], [127, 128, 3]);
  assert.deepEqual(whole[overflowIndex()], [2 ** 36, 2 ** 64, 3]);
  assert.deepEqual(toBucketList(h.overflow).slice(-2), [
    [bucketLower(overflowIndex() - 1), 2 ** 36, 1],
    [2 ** 36, 2 ** 64, 3],
  ]);
  assert.deepEqual(toBucketList(h.huge), [[1, 2, 2 ** 53 - 1]]);

  // an empty histogram's view: an empty array, written plain
  const emptyView = { network: viewSummary(emptyHistogram()) };
  assert.deepEqual(emptyView.network.buckets, []);
  assert.deepEqual(readRecords(encodeRecords([emptyView])).records, [JSON.parse(JSON.stringify(emptyView))]);
  // in the reports: every record decodes to its json-stream line, the NDJSON comes back byte for byte
  const lines = latencyRun();
  const text = lines.map((l) => JSON.stringify(l) + '\n').join('');
  assert.match(text, /"buckets":\[\]/, 'the empty histogram is in the run');
  assert.match(text, /,18446744073709552000,3\]/, 'so is the overflow bucket');
  const file = encodeRecords(lines);
  const run = readRecords(file);
  assert.equal(run.cutBytes, 0);
  assert.deepEqual(run.records, linesOf(text));
  assert.equal(recordsToNdjson(run), text);
  const v1 = version1(lines);
  assert.ok(file.length * 4 < v1.length, `version 2: ${String(file.length)} bytes, version 1: ${String(v1.length)}`);
  assert.ok(file.length * 4 < text.length, `${String(file.length)} bytes against ${String(text.length)} of NDJSON`);
});

test('compact bucket lists: a list that would not decode exactly is written as plain msgpack', () => {
  const valid = toBucketList(histogramOf([5, 300, 300, 70_000, 5e6]));
  assert.ok(packBucketList(valid));
  const plain: [string, unknown[]][] = [
    ['a bound that is not a bucket bound', [[1.5, 2, 1]]],
    ['an upper bound not of its bucket', [[128, 129, 1]]],
    ['the overflow bucket without its 2^64', [[bucketLower(overflowIndex()), 2 ** 63, 1]]],
    ['a count with a fraction', [[0, 1, 2.5]]],
    ['a negative count', [[0, 1, -1]]],
    ['a count JSON does not keep exact', [[0, 1, 2 ** 53]]],
    ['buckets out of order', [valid[1], valid[0]]],
    ['a bucket twice', [valid[0], valid[0]]],
    ['a pair, not a triple', [[0, 1]]],
    ['four numbers', [[0, 1, 1, 1]]],
    ['a string count', [[0, 1, '1']]],
    ['a string bound', [['0', 1, 1]]],
    ['a null bound', [[null, 1, 1]]],
    ['a triple, then something else', [...valid, 'x']],
    ['a bound above every bucket', [[2 ** 65, 2 ** 66, 1]]],
  ];
  for (const [why, list] of plain) {
    assert.equal(packBucketList(list), undefined, why);
    const obj = { service: why, buckets: list, nested: [{ buckets: list }, list] };
    const bytes = encodeRecords([obj]);
    const plainBytes = Buffer.concat([RECORDS_HEADER, Buffer.from(new Packr({ ...RECORD_OPTIONS }).pack(obj))]);
    assert.deepEqual(bytes, plainBytes, `${why}: plain msgpack, byte for byte`);
    assert.deepEqual(readRecords(bytes).records, [JSON.parse(JSON.stringify(obj))], why);
  }
  // -0 would come back as 0: not compact when given directly; through JSON (what the writer does) it is 0
  for (const list of [[[-0, 1, 1]], [[0, 1, -0]]]) {
    assert.equal(packBucketList(list), undefined);
    assert.ok(packBucketList(JSON.parse(JSON.stringify(list)) as unknown[]));
  }
  // a valid list next to plain ones, at any depth: each as it should be
  const mixed = { a: valid, b: [[1.5, 2, 1]], c: [{ d: valid, e: [] }], f: [valid, valid] };
  const bytes = encodeRecords([mixed]);
  assert.deepEqual(readRecords(bytes).records, [mixed]);
  assert.equal(JSON.stringify(readRecords(bytes).records[0]), JSON.stringify(mixed), 'the same key order');
  const compact = packBucketList(valid);
  assert.ok(compact);
  let found = 0;
  for (let at = bytes.indexOf(compact); at >= 0; at = bytes.indexOf(compact, at + 1)) found++;
  assert.equal(found, 4, 'the four valid lists are compact');
  assert.equal(BUCKETS_EXT, 0x68);
});

test('compact bucket lists: data no writer gives is refused, naming the record', () => {
  const valid = toBucketList(histogramOf([5, 300, 70_000]));
  const data = packBucketList(valid);
  assert.ok(data);
  // the layout (1985 buckets: two varint bytes), the number of buckets, then (gap, count) pairs
  assert.deepEqual([...data.subarray(0, 3)], [(bucketCount() % 128) | 0x80, bucketCount() >> 7, 3]);
  const bad: [string, number[], RegExp][] = [
    ['another layout', [100, 1, 0, 1], /refers to a histogram of 100 buckets; this meshprobe's has 1985/],
    ['a bucket past the last', [...data.subarray(0, 2), 1, 0xc1, 0x0f, 1], /names bucket 1985 of 1985/],
    ['cut inside a number', [...data.subarray(0, 2), 1, 0x80], /ends inside a number/],
    ['a bucket without its count', [...data.subarray(0, 2), 1, 3], /ends between a bucket and its count/],
    [
      'fewer buckets than said',
      [...data.subarray(0, 2), 2, 3, 1],
      /of 2 buckets in 5 bytes|ends before its last bucket/,
    ],
    ['bytes after the last bucket', [...data, 0], /1 bytes after its last bucket/],
    [
      'a count above 2^53',
      [...data.subarray(0, 2), 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x10],
      /above 2\^53/,
    ],
    ['empty', [], /is empty/],
  ];
  for (const [why, bytes, re] of bad) assert.throws(() => unpackBucketList(Uint8Array.from(bytes)), re, why);
  assert.equal(bucketUpper(5), 6);
  // in a file: the record's number and what is wrong
  const file = encodeRecords([{ a: 1 }, { b: valid }]);
  const at = file.indexOf(data);
  assert.ok(at > 0);
  file[at] = 100; // the layout
  assert.throws(
    () => readRecords(file, '--x f'),
    (e: unknown) =>
      e instanceof MeshprobeError &&
      /^--x f: record 2 \(byte \d+\) is not valid msgpack \(a bucket list refers to a histogram of 100 buckets/.test(
        e.message,
      ),
  );
});

test('version 1 files (plain bucket lists) still read, through the reader and the commands', () => {
  const d = tmp();
  const lines = latencyRun();
  const text = lines.map((l) => JSON.stringify(l) + '\n').join('');
  const v1 = version1(lines);
  assert.deepEqual(v1.subarray(0, RECORDS_HEADER_V1.length), Buffer.from('\xb3meshprobe-records/1', 'latin1'));
  assert.equal(RECORDS_HEADER_V1.length, RECORDS_HEADER.length);
  assert.ok(isRecordFile(v1));
  assert.equal(recordVersion(v1), 1);
  const rec = readRecords(v1);
  assert.equal(rec.cutBytes, 0);
  assert.deepEqual(rec.records, linesOf(text));
  const file = path.join(d, 'v1.mpk');
  writeFileSync(file, v1);
  const parsed = parseReportText(readReportInput(file, '--ebpf-probe'), fail);
  const fromText = parseReportText(text, fail);
  assert.equal(parsed.format, 'msgpack');
  assert.deepEqual(parsed.report, fromText.report);
  assert.deepEqual(parsed.intervals, fromText.intervals);
  const conv = run('generate-report', ['--to-ndjson', file]);
  assert.equal(conv.code, 0, conv.err);
  assert.equal(conv.out, text, 'converted like a version 2 file');
  // another version is not a record file
  const v3 = Buffer.from(v1);
  v3[RECORDS_HEADER.length - 1] = 0x33;
  assert.equal(recordVersion(v3), undefined);
  assert.throws(() => readRecords(v3), /not a meshprobe msgpack record file/);
});

test('a file with compact bucket lists cut at any byte: its complete records, and the bytes cut', () => {
  // the shapes but the largest (every bucket; 3000 values): each cut reads the file again
  const { exact, overflow, single, huge, empty } = shapes();
  const spread = histogramOf(Array.from({ length: 40 }, (_, i) => 2e5 * (1 + i)));
  const lines = latencyRun({ exact, overflow, single, huge, empty, spread }).slice(0, 3);
  const objs = linesOf(lines.map((l) => JSON.stringify(l) + '\n').join(''));
  const full = encodeRecords(objs);
  const ends = objs.map((_, i) => encodeRecords(objs.slice(0, i + 1)).length);
  for (let n = RECORDS_HEADER.length; n <= full.length; n++) {
    const run = readRecords(full.subarray(0, n));
    const complete = ends.filter((e) => e <= n).length;
    assert.equal(run.records.length, complete, `cut at ${String(n)}`);
    assert.deepEqual(run.records, objs.slice(0, complete), `cut at ${String(n)}`);
    assert.equal(
      run.cutBytes,
      n - (complete ? ends[complete - 1] : RECORDS_HEADER.length),
      `bytes cut at ${String(n)}`,
    );
  }
});

test('a file cut at any byte: its complete records, and how many bytes were cut; no crash', () => {
  const text = readFileSync(STREAM, 'utf8');
  const objs = linesOf(text);
  const full = encodeRecords(objs);
  // where each record ends: from the files of its first records
  const ends = objs.map((_, i) => encodeRecords(objs.slice(0, i + 1)).length);
  for (let n = RECORDS_HEADER.length; n < full.length; n++) {
    const run = readRecords(full.subarray(0, n));
    const complete = ends.filter((e) => e <= n).length;
    assert.equal(run.records.length, complete, `cut at ${n}`);
    assert.deepEqual(run.records, objs.slice(0, complete));
    assert.equal(run.cutBytes, n - (complete ? ends[complete - 1] : RECORDS_HEADER.length), `bytes cut at ${n}`);
  }
  // shorter than the header: not a record file
  assert.throws(() => readRecords(full.subarray(0, 10)), /not a meshprobe msgpack record file/);
  // a damaged record in the middle is an error naming it, not a cut
  const bad = Buffer.from(full);
  bad[ends[1]] = 0xd4; // fixext 1 of a type nobody defined
  assert.throws(
    () => readRecords(bad, '--x f'),
    (e: unknown) => e instanceof MeshprobeError && /^--x f: record 3 \(byte \d+\) is not valid msgpack/.test(e.message),
  );
  // damage that still decodes (msgpack has no checksum) gives records that are not objects: refused by the parser
  const garbled = Buffer.from(full);
  garbled[ends[1]] = 0x7e; // the number 126 where record 3 began
  assert.throws(
    () => parseReportText(readRecords(garbled), (p) => new Error(JSON.stringify(p))),
    /^Error: \{"kind":"not-object","line":3\}$/,
  );
});

test('a cut file through the commands: the cut is said on stderr; without its summary, the usual error', () => {
  const d = tmp();
  const text = readFileSync(STREAM, 'utf8');
  const full = readFileSync(twinOf(text, d));
  const cut = path.join(d, 'cut.mpk');
  writeFileSync(cut, full.subarray(0, full.length - 7));
  const conv = run('generate-report', ['--to-ndjson', cut]);
  assert.equal(conv.code, 0, conv.err);
  const lines = linesOf(text);
  assert.equal(conv.out, recordsToNdjson({ records: lines.slice(0, -1) } as RecordedRun), 'the complete records');
  assert.match(conv.err, /its last \d+ bytes are not a complete record .*read 5 complete records/);
  const cutBytes = Number(/its last (\d+) bytes/.exec(conv.err)?.[1]);
  assert.equal(cutBytes, full.length - 7 - encodeRecords(lines.slice(0, -1)).length);
  const page = run('generate-report', ['--include-ebpf-metrics', cut, '-o', path.join(d, 'x.html')]);
  assert.equal(page.code, 2);
  assert.match(
    page.err,
    /--include-ebpf-metrics .*cut\.mpk is a json-stream with 5 interval line\(s\) and no summary line/,
  );
});

test('analyze-latency: the same analysis from a json-stream and its msgpack twin', () => {
  const d = tmp();
  const real = JSON.parse(readFileSync(REAL, 'utf8')) as {
    timestamp: string;
    metrics: Record<'client' | 'server' | 'network', { buckets: unknown[] }>;
  };
  const ndjson = [
    JSON.stringify({ type: 'interval', seq: 0, start: real.timestamp, end: real.timestamp, duration_seconds: 10 }),
    JSON.stringify({ type: 'summary', ...real }),
    '',
  ].join('\n');
  const stream = path.join(d, 'run.ndjson');
  writeFileSync(stream, ndjson);
  const twin = twinOf(ndjson, d);
  // the real run's bucket lists are in the twin as compact lists
  const twinBytes = readFileSync(twin);
  for (const view of ['client', 'server', 'network'] as const) {
    const data = packBucketList(real.metrics[view].buckets);
    assert.ok(data && twinBytes.indexOf(data) > 0, `${view}: a compact list`);
  }
  const args = ['--istio-metrics', ISTIO, '--service-map', 'mpload:36935=reviews'];
  for (const extra of [[], ['--json']]) {
    const a = run('analyze-latency', ['--ebpf-probe', stream, ...args, ...extra]);
    const b = run('analyze-latency', ['--ebpf-probe', twin, ...args, ...extra]);
    assert.equal(a.code, 0, a.err);
    assert.equal(b.code, 0, b.err);
    assert.ok(a.out.length > 200, a.out);
    // the file's name and what it is (the note on the summary's line/record) are the only differences
    const same = (s: string, file: string) =>
      s
        .replaceAll(file, 'FILE')
        .replace('msgpack records; its summary record', 'a json-stream; its summary line')
        .replace(/"generated_at": ?"[^"]+"/, '"generated_at":"T"');
    assert.match(b.out, /msgpack records; its summary record 2 is used/);
    assert.equal(same(b.out, twin), same(a.out, stream));
    assert.equal(b.err, a.err);
  }
});

test('generate-report: the same page from a json-stream and its msgpack twin; --to-ndjson gives the stream back', () => {
  const d = tmp();
  const text = readFileSync(STREAM, 'utf8');
  const twin = twinOf(text, d);
  const page = (input: string) => {
    const out = path.join(d, `${path.basename(input)}.html`);
    const r = run('generate-report', ['--include-ebpf-metrics', input, '-o', out, '--title', 't']);
    assert.equal(r.code, 0, r.err);
    return readFileSync(out, 'utf8')
      .replaceAll(input, 'FILE')
      .replace(/ on [^<]+ from 1 input\./, ' on T from 1 input.');
  };
  const a = page(STREAM);
  const b = page(twin);
  assert.match(a, /json-stream, 5 intervals/);
  assert.match(b, /msgpack, 5 intervals/);
  assert.equal(b.replace('msgpack, 5 intervals', 'json-stream, 5 intervals'), a);
  // the converter: stdout by default, or --output
  const r = run('generate-report', ['--to-ndjson', twin]);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out, text);
  assert.match(r.err, /^generate-report: 6 records of .*run\.mpk as NDJSON to stdout\n$/);
  const out = path.join(d, 'back.ndjson');
  const r2 = run('generate-report', ['--to-ndjson', twin, '--output', out, '-q']);
  assert.equal(r2.code, 0, r2.err);
  assert.equal(r2.err, '');
  assert.equal(readFileSync(out, 'utf8'), text);
  // nothing to convert, or a page asked for too: one usage line
  const text2 = run('generate-report', ['--to-ndjson', STREAM]);
  assert.equal(text2.code, 2);
  assert.match(text2.err, /^generate-report: --to-ndjson .* is text \(JSON or NDJSON\) already/);
  const both = run('generate-report', ['--to-ndjson', twin, '--drops', STREAM]);
  assert.equal(both.code, 2);
  assert.match(both.err, /^generate-report: --to-ndjson converts one file and draws no page/);
  // a .mpk that is not a record file
  const junk = path.join(d, 'junk.mpk');
  writeFileSync(junk, Buffer.from([0x93, 1, 2, 3]));
  const j = run('generate-report', ['--include-ebpf-metrics', junk]);
  assert.equal(j.code, 2);
  assert.match(j.err, /is neither JSON nor a meshprobe msgpack record file/);
});

test('generate-report: a run with bucket lists of every shape draws the same page from its msgpack twin', () => {
  const d = tmp();
  const text = latencyRun()
    .map((l) => JSON.stringify(l) + '\n')
    .join('');
  const stream = path.join(d, 'shapes.ndjson');
  writeFileSync(stream, text);
  const twin = twinOf(text, d, 'shapes.mpk');
  assert.ok(readFileSync(twin).length * 4 < text.length, 'the bucket lists are compact');
  // the synthetic summary has no timestamp: the page shows when it was drawn
  const page = (input: string) => {
    const out = path.join(d, `${path.basename(input)}.html`);
    const r = run('generate-report', ['--include-ebpf-metrics', input, '-o', out, '--title', 't']);
    assert.equal(r.code, 0, r.err);
    return readFileSync(out, 'utf8')
      .replaceAll(input, 'FILE')
      .replace(/ on [^<]+ from 1 input\./, ' on T from 1 input.')
      .replaceAll(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC/g, 'T');
  };
  const a = page(stream);
  const b = page(twin);
  assert.match(b, /msgpack, 3 intervals/);
  assert.equal(b.replace('msgpack, 3 intervals', 'json-stream, 3 intervals'), a);
  const back = run('generate-report', ['--to-ndjson', twin, '-q']);
  assert.equal(back.code, 0, back.err);
  assert.equal(back.out, text, 'the json-stream, byte for byte');
});

test('--format msgpack: --output is required, and never a terminal', () => {
  for (const probe of ['latency-probe', 'connection-tracker', 'packet-drop-probe']) {
    const r = run(probe, ['--format', 'msgpack', '--duration', '1']);
    assert.equal(r.code, 2, `${probe}: ${r.err}`);
    assert.equal(
      r.err,
      `${probe}: --format msgpack needs --output: the file of binary records, e.g. --output run.mpk\n`,
    );
    const tty = run(probe, ['--format', 'msgpack', '--output', '/dev/tty', '--duration', '1']);
    assert.equal(tty.code, 2, `${probe}: ${tty.err}`);
    assert.match(tty.err, /^[a-z-]+: --format msgpack writes binary records, not to a terminal \(\/dev\/tty\)/);
    assert.equal(tty.err.split('\n').length, 2, 'one line');
  }
  assert.throws(() => {
    checkBinaryOutput('-', () => true);
  }, /not to a terminal \(-\)/);
  assert.throws(() => {
    checkBinaryOutput('/dev/pts/3', () => false);
  }, /not to a terminal/);
  for (const ok of ['-', '/dev/stdout', '/dev/fd/1']) checkBinaryOutput(ok, () => false); // a pipe or a file
  checkBinaryOutput('run.mpk', () => true);
});
