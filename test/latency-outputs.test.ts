// latency-probe's outputs and controls against real traffic: the JSON stream
// (intervals add up to the run; a reader that goes away ends the probe
// cleanly; a stream that cannot be written ends it with exit 1 and the report
// saved), sampling (fixed N decided in the kernel; auto keeps loss at zero),
// the live line on a terminal, and bad output options.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import path from 'node:path';
import { runClient, startTestServer } from './helpers/workload.js';
import {
  cliPath,
  near,
  needsRoot,
  programsAfterExit,
  runCli,
  spawnGroup,
  startProbe,
  tempDir,
} from './helpers/probe.js';
import { repoRoot } from './helpers/workload.js';
import type { LatencyReportRead, LatencyStreamLine } from './helpers/report-types.js';

// latencies against the server's own timing: 3 %, at least 50 µs (as test/latency-accuracy.test.ts)
const REL = 0.03;
const ABS_MS = 0.05;

test('--format json-stream: a line per interval, flushed as it ends; the intervals add up to the run', async (t) => {
  if (!needsRoot(t)) return;
  // every concurrent sleeper may busy-wait its last 150 µs: the sleeps are exact
  const s = await startTestServer(t, { maxSpinners: 2 });
  const probe = startProbe<LatencyReportRead>(
    'latency-probe',
    ['--filter', `port=${s.port}`, '--format', 'json-stream', '--aggregate-interval', '500ms'],
    { output: '/dev/stdout' },
  );
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  const c1 = await runClient({ addr: s.addr, port: s.port, requests: 400, concurrency: 2, sleeps: [1000] });
  await sleep(1300);
  // lines are there while the probe still runs: written and flushed at each interval
  const early = (await waitForLines(probe, 2)).map((l) => JSON.parse(l) as LatencyStreamLine);
  assert.ok(early.every((o) => o.type === 'interval'));
  const c2 = await runClient({ addr: s.addr, port: s.port, requests: 300, concurrency: 2, sleeps: [5000] });
  await sleep(200);
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  const lines = exit.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as LatencyStreamLine);
  const intervals = lines.filter((o) => o.type === 'interval');
  const summary = lines[lines.length - 1];
  assert.equal(summary.type, 'summary');
  assert.equal(lines.filter((o) => o.type === 'summary').length, 1);
  assert.ok(intervals.length >= 4, `${intervals.length} intervals`);
  // contiguous spans with start and end, numbered
  intervals.forEach((o, i) => {
    assert.equal(o.seq, i);
    assert.ok(Date.parse(o.end) > Date.parse(o.start));
    if (i > 0) assert.equal(o.start, intervals[i - 1].end);
    for (const k of [
      'client',
      'server',
      'network',
      'percentiles',
      'latency_histogram',
      'services',
      'loss',
      'sampling',
    ]) {
      assert.ok(k in o.metrics, `interval has metrics.${k}`);
    }
  });
  const sum = (v: 'client' | 'server') => intervals.reduce((a, o) => a + o.metrics[v].total_requests, 0);
  assert.equal(sum('client'), c1.requests + c2.requests);
  assert.equal(sum('server'), c1.requests + c2.requests);
  assert.equal(summary.metrics.client.total_requests, c1.requests + c2.requests);
  // each burst lands in the intervals it ran in: a 1 ms interval and a 5 ms one, as the server timed them
  const own = (await s.stop()).by_sleep;
  const busy = intervals.filter((o) => o.metrics.server.total_requests > 0);
  const p50s = busy.map((o) => o.metrics.server.percentiles.p50);
  for (const sleepUs of ['1000', '5000']) {
    const ms = own[sleepUs].p50 / 1000;
    assert.ok(
      p50s.some((p) => near(p, ms, REL, ABS_MS)),
      `an interval of the ${sleepUs} µs burst: p50 near ${ms} ms in ${p50s.join(', ')}`,
    );
  }
  assert.equal(summary.exports?.json_stream?.lines, intervals.length);
});

async function waitForLines(probe: { stdoutSoFar(): string }, n: number): Promise<string[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const lines = probe.stdoutSoFar().trim().split('\n').filter(Boolean);
    if (lines.length >= n) return lines;
    if (Date.now() > deadline) throw new Error(`only ${lines.length} lines after 5 s`);
    await sleep(100);
  }
}

test('json-stream into a pipe whose reader goes away: the probe ends cleanly, exit 0, no stack trace, nothing attached', async (t) => {
  if (!needsRoot(t)) return;
  const s = await startTestServer(t);
  const cmd =
    `"${process.execPath}" "${cliPath('latency-probe')}" --filter port=${s.port} --format json-stream --output /dev/stdout ` +
    `--aggregate-interval 200ms --duration 30 | head -n 1; echo "probe=\${PIPESTATUS[0]}" >&2`;
  const sh = spawnGroup(t, 'bash', ['-c', cmd]);
  let out = '',
    err = '';
  sh.stdout.on('data', (b: Buffer) => {
    out += b.toString();
  });
  sh.stderr.on('data', (b: Buffer) => {
    err += b.toString();
  });
  const traffic = runClient({ addr: s.addr, port: s.port, requests: 200, concurrency: 1, sleeps: [2000] });
  const t0 = Date.now();
  const code = await new Promise<number | null>((r) => {
    sh.on('close', r);
  });
  await traffic;
  assert.equal(code, 0);
  assert.ok(Date.now() - t0 < 10_000, 'ended long before --duration');
  assert.equal((JSON.parse(out.trim()) as LatencyStreamLine).type, 'interval');
  assert.match(err, /probe=0/, err);
  assert.doesNotMatch(err, /\n\s+at |Error:|EPIPE/, err);
  assert.match(err, /stopping: the reader closed the stream/);
  assert.deepEqual(await programsAfterExit('latency'), []);
});

test('json-stream to a disk that fills during the run (ENOSPC): exit 1, one line naming the error and the saved report', async (t) => {
  if (!needsRoot(t)) return;
  const s = await startTestServer(t);
  // a 20 MB tmpfs: enough for the start-up check, then filled while the probe measures
  const mnt = path.join(tempDir(), 'small');
  mkdirSync(mnt);
  assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=20m', 'tmpfs', mnt]).status, 0, 'a 20 MB tmpfs');
  t.after(() => spawnSync('umount', ['-l', mnt]));
  const output = path.join(mnt, 'stream.ndjson');
  const probe = startProbe<LatencyReportRead>(
    'latency-probe',
    ['--filter', `port=${s.port}`, '--format', 'json-stream', '--aggregate-interval', '3s'],
    { output },
  );
  t.after(() => probe.stop('SIGKILL'));
  const saved = path.join(tmpdir(), `meshprobe-report-${probe.pid}.json`);
  t.after(() => {
    rmSync(saved, { force: true });
  });
  await probe.ready;
  spawnSync('dd', ['if=/dev/zero', `of=${path.join(mnt, 'fill')}`, 'bs=1M', 'count=64'], { stdio: 'ignore' });
  // done long before the first line is due
  const c = await runClient({ addr: s.addr, port: s.port, requests: 300, concurrency: 2, sleeps: [1000] });
  const t0 = Date.now();
  const exit = await probe.exited;
  assert.ok(Date.now() - t0 < 10_000, 'it stopped by itself at the first line');
  assert.equal(exit.code, 1, exit.stderr);
  const errors = exit.stderr.split('\n').filter((l) => /ENOSPC/.test(l));
  assert.deepEqual(
    errors,
    [`latency-probe: cannot write the stream (ENOSPC) to ${output}; the report was saved to ${saved}`],
    exit.stderr,
  );
  assert.doesNotMatch(exit.stderr, /\n\s+at |Error:/, exit.stderr);
  assert.ok(existsSync(saved), `${saved} exists`);
  const report = JSON.parse(readFileSync(saved, 'utf8')) as LatencyReportRead;
  assert.equal(report.metrics.client.total_requests, c.requests);
  assert.equal(report.metrics.server.total_requests, c.requests);
  assert.equal(report.metrics.total_requests_estimated, c.requests);
  assert.deepEqual(report.exports?.json_stream, { lines: 0, closed: 'cannot write the stream (ENOSPC)' });
  assert.deepEqual(await programsAfterExit('latency'), []);
});

test('--sample-rate 10: about 1 in 10 requests measured, in the kernel; counts seen and estimated reported', async (t) => {
  if (!needsRoot(t)) return;
  const s = await startTestServer(t);
  const probe = startProbe<LatencyReportRead>('latency-probe', ['--filter', `port=${s.port}`, '--sample-rate', '10']);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  const N = 6000;
  const c = await runClient({ addr: s.addr, port: s.port, requests: N, concurrency: 4 });
  await sleep(150);
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(exit.report, `no report: ${exit.stderr}`);
  const m = exit.report.metrics;
  // binomial(6000, 0.1): mean 600, sd 23; 5 sd either side
  for (const v of ['client', 'server'] as const) {
    assert.ok(Math.abs(m[v].total_requests - N / 10) < 5 * 23.3, `${v}: ${m[v].total_requests} measured of ${N}`);
  }
  // the kernel saw every exchange, on both sides: the estimate rests on it
  assert.equal(m.sampling.exchanges_seen, 2 * c.requests);
  assert.equal(m.sampling.requests_measured, m.client.total_requests + m.server.total_requests);
  assert.equal(m.sampling.rate, 10);
  assert.equal(m.sampling.mode, 'fixed');
  // the kernel counts what it does not measure: the view's estimate is exact
  assert.equal(m.total_requests_estimated, N);
  const svc = m.services.find((x) => x.role === 'server');
  assert.ok(svc, 'a server-side service');
  assert.ok(Math.abs(svc.requests_estimated - N) < N * 0.2, `service estimate ${svc.requests_estimated}`);
  // fewer records: the records the kernel sent fell by about 10
  assert.ok(exit.report.pipeline.records_emitted < (2 * N) / 5, `records ${exit.report.pipeline.records_emitted}`);
  assert.match(exit.stderr, /sampled 1 in 10/);
});

test('--sample-rate auto: the rate rises under load, each change reported, zero loss, estimate near the truth', async (t) => {
  if (!needsRoot(t)) return;
  const s = await startTestServer(t);
  // a budget far below the load, so that the controller must act
  const probe = startProbe<LatencyReportRead>('latency-probe', [
    '--filter',
    `port=${s.port}`,
    '--sample-rate',
    'auto',
    '--max-event-rate',
    '500',
  ]);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  const c = await runClient({ addr: s.addr, port: s.port, requests: 30000, concurrency: 4, rate: 6000 });
  await sleep(150);
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(exit.report, `no report: ${exit.stderr}`);
  const m = exit.report.metrics;
  assert.equal(m.sampling.mode, 'auto');
  assert.ok(m.sampling.changes !== undefined && m.sampling.changes.length >= 1, 'changes reported');
  assert.ok(m.sampling.rate > 1, `rate ${m.sampling.rate}`);
  for (const ch of m.sampling.changes) assert.ok(ch.to !== ch.from && ch.reason.length > 0);
  assert.match(exit.stderr, /sample rate 1 -> \d+/);
  assert.equal(m.events.lost, 0);
  assert.equal(m.sampling.exchanges_seen, 2 * c.requests);
  assert.equal(m.total_requests_estimated, c.requests);
});

test('--sample-rate auto in the stream: each interval holds the changes made in it, none repeated or missed', async (t) => {
  if (!needsRoot(t)) return;
  const s = await startTestServer(t);
  const probe = startProbe<LatencyReportRead>('latency-probe', [
    '--filter',
    `port=${s.port}`,
    '--sample-rate',
    'auto',
    '--max-event-rate',
    '500',
    '--format',
    'json-stream',
    '--aggregate-interval',
    '500ms',
    '--output',
    '/dev/stdout',
  ]);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  // up under load, then down by halving after 5 calm seconds
  await runClient({ addr: s.addr, port: s.port, requests: 12000, concurrency: 4, rate: 4000 });
  await sleep(6500);
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  const lines = exit.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as LatencyStreamLine);
  const summary = lines[lines.length - 1];
  assert.equal(summary.type, 'summary');
  const intervals = lines.filter((o) => o.type === 'interval');
  const all = summary.metrics.sampling;
  assert.equal(all.mode, 'auto');
  assert.ok(all.change_count !== undefined && all.change_count >= 2, `up and down: ${JSON.stringify(all.changes)}`);
  assert.ok(
    all.changes !== undefined && all.changes.some((c) => c.to > c.from) && all.changes.some((c) => c.to < c.from),
    JSON.stringify(all.changes),
  );
  const perInterval = intervals.map((o) => {
    const changes = o.metrics.sampling.changes;
    assert.ok(changes, `interval ${o.seq} has sampling.changes`);
    return changes;
  });
  assert.equal(
    perInterval.reduce((a, c) => a + c.length, 0),
    all.change_count,
    JSON.stringify(perInterval),
  );
  assert.deepEqual(perInterval.flat(), all.changes, 'every change once, in order, in the interval it was made in');
  // change_count is the total so far: it never goes down, and ends at the summary's
  const counts = intervals.map((o) => o.metrics.sampling.change_count);
  assert.ok(
    counts.every((n, i) => {
      const prev = counts[i - 1];
      return i === 0 || (n !== undefined && prev !== undefined && n >= prev);
    }),
    counts.join(' '),
  );
  assert.equal(counts[counts.length - 1], all.change_count);
});

test('on a terminal: a live line with elapsed and remaining time, requests, p50, p99 and loss', async (t) => {
  if (!needsRoot(t)) return;
  // every concurrent sleeper may busy-wait its last 150 µs: the sleeps are exact
  const s = await startTestServer(t, { maxSpinners: 2 });
  const out = path.join(tempDir(), 'r.json');
  // script(1) gives the probe a pseudo-terminal
  const cmd = `"${process.execPath}" "${cliPath('latency-probe')}" --filter port=${s.port} --duration 4 --output ${out}`;
  const sc = spawnGroup(t, 'script', ['-qfec', cmd, '/dev/null']);
  let tty = '';
  sc.stdout.on('data', (b: Buffer) => {
    tty += b.toString();
  });
  await sleep(1200);
  await runClient({ addr: s.addr, port: s.port, requests: 2000, concurrency: 2, rate: 1000, sleeps: [1000] });
  const code = await new Promise<number | null>((r) => {
    sc.on('close', r);
  });
  assert.equal(code, 0, tty);
  const frames = tty
    .split('\r')
    .map((l) => l.replaceAll('\x1b[K', '').trim())
    .filter((l) => /elapsed/.test(l));
  assert.ok(frames.length >= 3, `${frames.length} redraws: ${JSON.stringify(tty.slice(0, 400))}`);
  assert.ok(
    frames.some((f) => /0:0\d elapsed, 0:0\d left/.test(f)),
    frames.join('\n'),
  );
  // p50 near the 1 ms sleep, printed at 0.1 µs resolution: 0.98, 1, 1.0213; p99 at or above it (a busy
  // machine's tail in one second can be a few ms, and the accuracy tests check percentiles)
  const busy = frames.find((f) => {
    const m = /p50 (0\.9\d*|1(?:\.\d+)?) ms p99 (\d+(?:\.\d+)?) ms/.exec(f);
    return m !== null && Number(m[2]) >= Number(m[1]) && Number(m[2]) < 20;
  });
  assert.ok(busy, `a frame during traffic shows p50 near 1 ms and p99: ${frames.join('\n')}`);
  assert.match(busy, /[\d,]+ requests \(\d+\/s\)/);
  assert.match(busy, /lost 0/);

  // in a pipe: no live line
  const piped = spawnSync(
    process.execPath,
    [cliPath('latency-probe'), '--filter', `port=${s.port}`, '--duration', '1.5', '--output', out],
    { cwd: repoRoot, encoding: 'utf8' },
  );
  assert.equal(piped.status, 0, piped.stderr);
  assert.doesNotMatch(piped.stderr, /elapsed/);
});

test('bad output options: one line naming the fix, exit 2, nothing loaded', async (t) => {
  if (!needsRoot(t)) return;
  for (const [args, re] of [
    [['--format', 'xml'], /unknown --format "xml": use one of json, json-stream, msgpack, influx, prometheus/],
    [['--format', 'influx'], /--format influx needs --url/],
    [
      ['--format', 'influx', '--url', 'http://127.0.0.1:1', '--db', 'x'],
      /cannot reach InfluxDB at http:\/\/127\.0\.0\.1:1/,
    ],
    [['--format', 'influx', '--url', 'http://127.0.0.1:1'], /--db|--bucket/],
    [['--db', 'x'], /--db is for --format influx/],
    [['--aggregate-interval', 'soon'], /invalid --aggregate-interval "soon"/],
    [['--sample-rate', '0'], /--sample-rate/],
    [['--sample-rate', 'sometimes'], /--sample-rate/],
    [['--format', 'prometheus', '--port', '99999'], /--port/],
    [['--format', 'prometheus', '--buckets', '0.1,0.01'], /--buckets/],
    [['--format', 'json', '--port', '9999'], /--port is for --format prometheus \(the format is json\)/],
    [['--format', 'json-stream', '--buckets', '0.1'], /--buckets is for --format prometheus/],
    [['--max-event-rate', '1000'], /--max-event-rate is for --sample-rate auto/],
    [['--sample-rate', '10', '--max-event-rate', '1000'], /--max-event-rate is for --sample-rate auto/],
    [['--aggregate-interval', '2h'], /--aggregate-interval 2h is out of range: use 100ms to 1h/],
    [['--aggregate-interval', '50ms'], /--aggregate-interval 50ms is out of range: use 100ms to 1h/],
  ] as const) {
    const r = runCli('latency-probe', ['--duration', '1', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line for ${args.join(' ')}: ${r.stderr}`);
  }
  assert.deepEqual(await programsAfterExit('latency'), []);
});
