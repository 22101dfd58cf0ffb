// latency-probe --format msgpack on real loopback traffic (root, BPF): the file's records have the
// shape of a json-stream run's lines (the same keys), the intervals are contiguous and count the
// requests sent, the bucket lists are written compactly (version 2); a probe killed mid-run leaves
// a file whose complete records read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { needsRoot, startProbe, tempDir } from './helpers/probe.js';
import { runClient, startTestServer } from './helpers/workload.js';
import { readRecords, recordVersion } from '../src/input.js';
import { packBucketList } from '../src/export/msgpack.js';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The keys of an object and of the objects below it (not inside arrays: services vary), as paths. */
function shape(o: Obj, at = ''): string[] {
  return Object.entries(o).flatMap(([k, v]) => [`${at}${k}`, ...(isObj(v) ? shape(v, `${at}${k}.`) : [])]);
}

interface Line extends Obj {
  type: 'interval' | 'summary';
  seq: number;
  start: string;
  end: string;
  metrics: {
    client: { total_requests: number; buckets: unknown[] };
    server: { total_requests: number; buckets: unknown[] };
  };
}

const REQUESTS = 300;

/** A 3 s run with 1 s intervals and REQUESTS requests on a fresh server; its records or lines. */
async function recordedRun(t: Parameters<typeof needsRoot>[0], format: 'msgpack' | 'json-stream'): Promise<Line[]> {
  const s = await startTestServer(t);
  const output = path.join(tempDir(), format === 'msgpack' ? 'run.mpk' : 'run.ndjson');
  const probe = startProbe(
    'latency-probe',
    ['--filter', `port=${s.port}`, '--format', format, '--duration', '3', '--aggregate-interval', '1s'],
    { output },
  );
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  await runClient({ addr: s.addr, port: s.port, requests: REQUESTS, concurrency: 2, sleeps: [500] });
  const exit = await probe.exited;
  assert.equal(exit.code, 0, exit.stderr);
  if (format === 'json-stream') {
    return readFileSync(output, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Line);
  }
  const bytes = readFileSync(output);
  assert.equal(recordVersion(bytes), 2, 'the current version of the format');
  const run = readRecords(bytes);
  assert.equal(run.cutBytes, 0);
  const records = run.records as Line[];
  // the summary's bucket lists of the real run are in the file as compact lists
  const summary = records[records.length - 1];
  for (const view of ['client', 'server'] as const) {
    assert.ok(summary.metrics[view].buckets.length > 0, `${view}: buckets`);
    const data = packBucketList(summary.metrics[view].buckets);
    assert.ok(data && bytes.indexOf(data) > 0, `${view}: a compact bucket list`);
  }
  return records;
}

function checkRun(lines: Line[], what: string): void {
  const intervals = lines.filter((l) => l.type === 'interval');
  assert.equal(lines.length, intervals.length + 1, `${what}: intervals, then one summary`);
  assert.equal(lines[lines.length - 1].type, 'summary');
  assert.ok(intervals.length >= 3, `${what}: ${String(intervals.length)} intervals`);
  intervals.forEach((o, i) => {
    assert.equal(o.seq, i);
    if (i > 0)
      assert.equal(o.start, intervals[i - 1].end, `${what}: interval ${String(i)} starts where the last ended`);
  });
  const summary = lines[lines.length - 1];
  for (const view of ['client', 'server'] as const) {
    assert.equal(summary.metrics[view].total_requests, REQUESTS, `${what}: ${view} requests in the summary`);
    const sum = intervals.reduce((a, o) => a + o.metrics[view].total_requests, 0);
    assert.equal(sum, REQUESTS, `${what}: the ${view} requests of the intervals add up`);
  }
}

test('latency-probe --format msgpack: the records of a json-stream run, contiguous, counting the traffic', async (t) => {
  if (!needsRoot(t)) return;
  const mpk = await recordedRun(t, 'msgpack');
  const ndjson = await recordedRun(t, 'json-stream');
  checkRun(mpk, 'msgpack');
  checkRun(ndjson, 'json-stream');
  // the same keys in every interval (the first ones of each run; the last may be short) and in the summary,
  // but for the accounting of the output itself
  const keys = (o: Line) => shape(o).filter((k) => !/^exports\.(msgpack|json_stream)/.test(k));
  assert.deepEqual(keys(mpk[0]), keys(ndjson[0]));
  assert.deepEqual(keys(mpk[mpk.length - 1]), keys(ndjson[ndjson.length - 1]));
  const exports = (o: Line) => o.exports as Obj;
  assert.deepEqual(exports(mpk[mpk.length - 1]).msgpack, { records: mpk.length - 1 });
  assert.deepEqual(exports(ndjson[ndjson.length - 1]).json_stream, { lines: ndjson.length - 1 });
});

test('latency-probe --format msgpack killed mid-run (SIGKILL): the complete records read', async (t) => {
  if (!needsRoot(t)) return;
  const s = await startTestServer(t);
  const output = path.join(tempDir(), 'killed.mpk');
  const probe = startProbe(
    'latency-probe',
    ['--filter', `port=${s.port}`, '--format', 'msgpack', '--aggregate-interval', '300ms'],
    { output },
  );
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  await runClient({ addr: s.addr, port: s.port, requests: 200, concurrency: 2, sleeps: [500] });
  await sleep(1000);
  const exit = await probe.stop('SIGKILL');
  assert.equal(exit.signal, 'SIGKILL');
  const run = readRecords(readFileSync(output));
  const records = run.records as Line[];
  assert.ok(records.length >= 3, `${String(records.length)} records`);
  assert.ok(
    records.every((r) => r.type === 'interval'),
    'intervals only: no summary',
  );
  const sum = records.reduce((a, o) => a + o.metrics.client.total_requests, 0);
  assert.equal(sum, 200, 'the requests, all in the intervals written before the kill');
});
