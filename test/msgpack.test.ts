// --format msgpack (src/export/msgpack.ts) and its reader (src/input.ts): a recorded json-stream
// through the writer and back gives the same objects and the same NDJSON bytes; a file cut at any
// byte gives its complete records and the bytes cut; analyze-latency and generate-report give the
// same output for a json-stream and its msgpack twin; generate-report --to-ndjson converts; the
// probes refuse msgpack without --output or to a terminal. Needs no root (unit tier).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MsgpackStream, RECORDS_HEADER, encodeRecords } from '../src/export/msgpack.js';
import {
  isRecordFile,
  parseReportText,
  readRecords,
  readReportInput,
  recordsToNdjson,
  type RecordedRun,
} from '../src/input.js';
import { checkBinaryOutput } from '../src/cli/options.js';
import { MeshprobeError } from '../src/errors.js';

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
  assert.deepEqual(bytes.subarray(0, RECORDS_HEADER.length), Buffer.from('\xb3meshprobe-records/1', 'latin1'));
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
  const real = JSON.parse(readFileSync(REAL, 'utf8')) as { timestamp: string };
  const ndjson = [
    JSON.stringify({ type: 'interval', seq: 0, start: real.timestamp, end: real.timestamp, duration_seconds: 10 }),
    JSON.stringify({ type: 'summary', ...real }),
    '',
  ].join('\n');
  const stream = path.join(d, 'run.ndjson');
  writeFileSync(stream, ndjson);
  const twin = twinOf(ndjson, d);
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
