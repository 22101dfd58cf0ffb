// --format msgpack against --format json-stream (issue 15): a synthetic 10-minute latency-probe
// run with 500 services (60 intervals of 10 s, then the summary), its objects made by the report's
// own builders (latencyIntervalReport over LatencyFigures: percentiles, histograms, bucket lists,
// one row per service and role), written both ways. Prints each file's size, the read time of
// each through src/input.ts (readReportInput + parseReportText: what analyze-latency and
// generate-report do) and the ratios; gzip -6 of each for reference; then how much of the run is
// histogram bucket lists (which the msgpack file writes compactly, src/export/msgpack.ts) and the
// main thread's GC pauses during the reads. Both reads must give the same report and intervals.
// The targets of the issue: >= 4x smaller, >= 4x faster to read.
//
// Each read is timed in a fresh Node process (this file with --read FILE), like the command that
// reads the file: the writer's own objects (~1 GB of heap for this run) are not alive during it.
// Rounds alternate json-stream and msgpack; the best of BENCH_ROUNDS (default 3) is kept.
// BENCH_IN_PROCESS=1 times the reads in this process instead, after writing, with those objects
// alive (the first version of this bench; GC-heavy readers pay more for them).
//   node dist/bench/record-format.js      (BENCH_SERVICES=500 BENCH_MINUTES=10)
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { histogramOf, type HistogramSnapshot } from '../src/histogram.js';
import { encodeRecords } from '../src/export/msgpack.js';
import { parseReportText, readReportInput } from '../src/input.js';
import { LATENCY_STATS } from '../src/probes/latency.js';
import { latencyIntervalReport, type LatencyFigures, type ServiceFigure } from '../src/report/latency.js';
import { COUNTER_NAMES } from '../src/wasm.js';

const SERVICES = Number(process.env.BENCH_SERVICES ?? 500);
const MINUTES = Number(process.env.BENCH_MINUTES ?? 10);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const IN_PROCESS = process.env.BENCH_IN_PROCESS === '1';
const INTERVAL_S = 10;

/** A small seeded generator (mulberry32): the same run every time. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(15);
/** log-normal latency in ns around `medianMs` */
const latencyNs = (medianMs: number, sigma: number) => {
  const g = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  return Math.round(medianMs * 1e6 * Math.exp(sigma * g));
};

/** An interval's histogram of a service: `n` requests from its latency distribution (sampled once, scaled). */
function scaled(shape: HistogramSnapshot, n: number): HistogramSnapshot {
  const f = n / shape.count;
  const buckets: [number, number][] = [];
  for (const [i, c] of shape.buckets) {
    const k = Math.round(c * f * (0.8 + 0.4 * rand()));
    if (k > 0) buckets.push([i, k]);
  }
  const count = buckets.reduce((a, [, c]) => a + c, 0);
  return {
    count,
    sum_ns: Math.round((shape.sum_ns / shape.count) * count),
    min_ns: shape.min_ns,
    max_ns: shape.max_ns,
    buckets,
  };
}

const merge = (hs: HistogramSnapshot[]) => {
  const m = new Map<number, number>();
  for (const h of hs) for (const [i, c] of h.buckets) m.set(i, (m.get(i) ?? 0) + c);
  const buckets = [...m.entries()].sort((a, b) => a[0] - b[0]);
  return {
    count: hs.reduce((a, h) => a + h.count, 0),
    sum_ns: hs.reduce((a, h) => a + h.sum_ns, 0),
    min_ns: Math.min(...hs.map((h) => h.min_ns)),
    max_ns: Math.max(...hs.map((h) => h.max_ns)),
    buckets,
  };
};

interface Svc {
  base: Omit<ServiceFigure, 'requests' | 'hist'>;
  shape: HistogramSnapshot;
  rate: number;
}

function services(): Svc[] {
  return Array.from({ length: SERVICES }, (_, i) => {
    const server = i % 2 === 1;
    const port = 8000 + Math.floor(i / 2);
    const pod = {
      namespace: `ns${String(i % 7)}`,
      pod: `svc${String(Math.floor(i / 2))}-5d9c7-abcde`,
      container: 'app',
      podUid: `uid-${String(i)}`,
    };
    const median = 0.2 + rand() * 20;
    return {
      base: {
        key: String(1_000_000_000_000 + i),
        name: `${pod.namespace}/${pod.pod}:${String(port)}`,
        role: server ? 'server' : 'client',
        port,
        ...(server ? {} : { peer: `10.0.${String(i % 250)}.${String(1 + (i % 200))}:${String(port)}` }),
        k8s: pod,
      },
      shape: histogramOf(Array.from({ length: 4000 }, () => latencyNs(median, 0.3 + rand() * 0.6))),
      rate: 5 + Math.floor(rand() * 200), // requests/s
    };
  });
}

const zeros = <K extends string>(names: readonly K[]) =>
  Object.fromEntries(names.map((n) => [n, 0])) as Record<K, number>;

function figures(svcs: Svc[]): LatencyFigures {
  const rows: ServiceFigure[] = svcs.map((s) => {
    const hist = scaled(s.shape, s.rate * INTERVAL_S);
    return { ...s.base, requests: hist.count, hist };
  });
  const view = (role: string) => merge(rows.filter((r) => r.role === role).map((r) => r.hist));
  const client = view('client');
  const server = view('server');
  const kernel = zeros(LATENCY_STATS);
  kernel.measured_client = client.count;
  kernel.measured_server = server.count;
  return {
    client,
    server,
    network: scaled(client, Math.max(1, Math.round(client.count / 10))),
    services: rows,
    kernel,
    counters: zeros(COUNTER_NAMES),
  };
}

function run(): { lines: object[] } {
  const svcs = services();
  const t0 = Date.parse('2026-11-26T06:00:00Z');
  const lines: object[] = [];
  const n = (MINUTES * 60) / INTERVAL_S;
  const sampling = { mode: 'fixed' as const, rate: 1 };
  const all: LatencyFigures[] = [];
  for (let seq = 0; seq < n; seq++) {
    const f = figures(svcs);
    all.push(f);
    const span = {
      start: new Date(t0 + seq * INTERVAL_S * 1000),
      end: new Date(t0 + (seq + 1) * INTERVAL_S * 1000),
      seq,
    };
    lines.push(latencyIntervalReport(f, span, sampling));
  }
  // the summary: the whole run's figures as one span (the real one, buildLatencyReport, adds the
  // run's settings, hooks and programs: a few KB more, the same kind of content)
  const whole: LatencyFigures = {
    ...all[0],
    client: merge(all.map((f) => f.client)),
    server: merge(all.map((f) => f.server)),
    network: merge(all.map((f) => f.network)),
    services: svcs.map((s, i) => {
      const hist = merge(all.map((f) => f.services[i].hist));
      return { ...s.base, requests: hist.count, hist };
    }),
  };
  const summary = latencyIntervalReport(
    whole,
    { start: new Date(t0), end: new Date(t0 + n * INTERVAL_S * 1000), seq: n },
    sampling,
  );
  lines.push({ ...summary, type: 'summary' });
  return { lines };
}

/** One read of `file` as analyze-latency does it: ms, main-thread GC pauses, the intervals, and a digest. */
interface ReadResult {
  ms: number;
  gcMs: number;
  intervals: number;
  /** sha256 of the JSON text of the report and of the first and last interval (keys in order) */
  digest: string;
}

async function readOnce(file: string): Promise<ReadResult> {
  let gcMs = 0;
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcMs += e.duration;
  });
  obs.observe({ entryTypes: ['gc'] });
  const t = process.hrtime.bigint();
  const parsed = parseReportText(readReportInput(file, '--ebpf-probe'), (p) => new Error(`unreadable: ${p.kind}`));
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  await new Promise((resolve) => setTimeout(resolve, 20)); // the GC entries are delivered asynchronously
  obs.disconnect();
  const digest = createHash('sha256')
    .update(JSON.stringify([parsed.report, parsed.intervals[0], parsed.intervals.at(-1)]))
    .digest('hex');
  return { ms, gcMs, intervals: parsed.intervals.length, digest };
}

/** One read of `file` in a fresh process (this file with --read). */
function readInChild(file: string): ReadResult {
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--read', file], {
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  if (r.status !== 0) throw new Error(`reading ${file} in a child failed (${String(r.status)}): ${r.stderr}`);
  return JSON.parse(r.stdout) as ReadResult;
}

/** Best of ROUNDS for each file, rounds alternating between the files. */
async function readTimes(files: readonly string[]): Promise<ReadResult[]> {
  const best: (ReadResult | undefined)[] = files.map(() => undefined);
  for (let r = 0; r < ROUNDS; r++) {
    for (const [i, f] of files.entries()) {
      const one = IN_PROCESS ? await readOnce(f) : readInChild(f);
      const b = best[i];
      if (b) assert.equal(one.digest, b.digest, `${f}: every read gives the same`);
      if (!b || one.ms < b.ms) best[i] = one;
    }
  }
  return best.map((b) => {
    assert.ok(b);
    return b;
  });
}

/** The bucket lists of `lines` (arrays of [lower, upper, count]): how many, their triples, their JSON bytes. */
function bucketLists(lines: readonly object[]): { lists: number; triples: number; bytes: number } {
  const out = { lists: 0, triples: 0, bytes: 0 };
  const walk = (v: unknown, key: string): void => {
    if (Array.isArray(v)) {
      if (key === 'buckets') {
        out.lists++;
        out.triples += v.length;
        out.bytes += JSON.stringify(v).length;
      } else for (const x of v) walk(x, '');
    } else if (typeof v === 'object' && v !== null) for (const [k, x] of Object.entries(v)) walk(x, k);
  };
  for (const l of lines) walk(l, '');
  return out;
}

const mb = (b: number) => `${(b / 1048576).toFixed(2)} MB`;

async function main(): Promise<void> {
  let { lines } = run();
  const dir = mkdtempSync(path.join(tmpdir(), 'meshprobe-records-'));
  try {
    const ndjson = Buffer.from(lines.map((l) => JSON.stringify(l) + '\n').join(''));
    const t0 = process.hrtime.bigint();
    const mpk = encodeRecords(lines);
    const encodeMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const fJson = path.join(dir, 'run.ndjson');
    const fMpk = path.join(dir, 'run.mpk');
    writeFileSync(fJson, ndjson);
    writeFileSync(fMpk, mpk);
    const records = lines.length;
    const bl = bucketLists(lines);
    if (!IN_PROCESS) lines = []; // the writer's objects: garbage from here on
    const [a, b] = await readTimes([fJson, fMpk]);
    assert.equal(a.intervals, records - 1);
    assert.equal(b.intervals, a.intervals, 'both files hold the same intervals');
    assert.equal(b.digest, a.digest, 'both files give the same report and intervals, keys in the same order');
    const gz = (buf: Buffer) => gzipSync(buf, { level: 6 }).length;
    const zJson = gz(ndjson);
    const zMpk = gz(mpk);
    console.log(
      `record format: ${String(MINUTES)} min, ${String(SERVICES)} services, ${String(a.intervals)} intervals + summary; ` +
        `json-stream ${mb(ndjson.length)}, msgpack ${mb(mpk.length)}: ${(ndjson.length / mpk.length).toFixed(2)}x smaller; ` +
        `read (best of ${String(ROUNDS)}, ${IN_PROCESS ? 'in the writing process' : 'each in a fresh process'}) ` +
        `json-stream ${a.ms.toFixed(0)} ms, msgpack ${b.ms.toFixed(0)} ms: ${(a.ms / b.ms).toFixed(2)}x faster; ` +
        `gzip -6: json-stream ${mb(zJson)}, msgpack ${mb(zMpk)} (${(zJson / zMpk).toFixed(2)}x; msgpack gzipped is ${(ndjson.length / zMpk).toFixed(1)}x smaller than json-stream)`,
    );
    console.log(
      `bucket lists: ${String(bl.lists)} lists, ${(bl.triples / 1e6).toFixed(2)} M triples, ` +
        `${((100 * bl.bytes) / ndjson.length).toFixed(1)} % of the json-stream's bytes; ` +
        `GC pauses in those reads: json-stream ${a.gcMs.toFixed(0)} ms, msgpack ${b.gcMs.toFixed(0)} ms; ` +
        `msgpack written in ${encodeMs.toFixed(0)} ms (${(encodeMs / records).toFixed(0)} ms a record)`,
    );
    const met = ndjson.length / mpk.length >= 4 && a.ms / b.ms >= 4;
    console.log(`target (>= 4x smaller and >= 4x faster to read): ${met ? 'met' : 'NOT met'}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--read') {
  const file = process.argv[3];
  assert.ok(file, 'usage: record-format.js --read FILE');
  console.log(JSON.stringify(await readOnce(file)));
} else {
  await main();
}
