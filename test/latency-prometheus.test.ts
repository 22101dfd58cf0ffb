// latency-probe --format prometheus against real traffic, as root on the real
// kernel: /metrics while measuring (promtool, exact counts against the
// client's own count, naming, loopback only), a real Prometheus server
// scraping it (histogram_quantile against the probe's own final p99, within
// the exposition bucket that holds it), and --port already taken (exit 2,
// one line, nothing loaded).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runClient, startTestServer, type ClientOptions, type RunningServer } from './helpers/workload.js';
import { loadedPrograms, needsRoot, runCli, startProbe, tempDir, type ProbeRun } from './helpers/probe.js';
import { PROMTOOL_BIN, startPrometheus } from './helpers/prometheus-server.js';
import { freePort } from './helpers/servers.js';
import { DEFAULT_LE_SECONDS, parseBuckets } from '../src/export/prometheus.js';
import type { LatencyReportRead } from './helpers/report-types.js';

// cumulative 45/85/100: p99 falls inside the 5 ms cluster, not on an edge
const TRAFFIC = { sleeps: [0, 1000, 5000], weights: [45, 40, 15], concurrency: 4 } satisfies Partial<ClientOptions>;
const COUNT = 'meshprobe_request_duration_seconds_count';

// ---------------------------------------------------------------- helpers

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples and TYPEs of a text exposition (labels unescaped). */
function parseText(text: string): { types: Map<string, string>; samples: Sample[] } {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ')) continue;
    const ty = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (ty) {
      types.set(ty[1], ty[2]);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparsable exposition line ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/gy;
    // m.at(2): the optional labels group, undefined when the sample has none
    for (let l; (l = re.exec(m.at(2) ?? ''));)
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return { types, samples };
}

function value(samples: Sample[], name: string, labels: Record<string, string>): number | undefined {
  const hit = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(hit.length <= 1, `${name}${JSON.stringify(labels)}: ${hit.length} series`);
  return hit[0]?.value;
}

async function scrape(port: number): Promise<{ text: string; contentType: string | null }> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) });
  assert.equal(r.status, 200);
  return { text: await r.text(), contentType: r.headers.get('content-type') };
}

/** The exposition bucket (lo, hi] whose bound holds `seconds`: the first finite bound ≥ it, else +Inf. */
function bucketOf(seconds: number, bounds: readonly number[]): [number, number] {
  const j = bounds.findIndex((b) => seconds <= b);
  if (j < 0) return [bounds[bounds.length - 1], Infinity];
  return [j === 0 ? 0 : bounds[j - 1], bounds[j]];
}

/** Addresses of TCP sockets listening on `port` (from /proc/net/tcp and tcp6). */
function listeners(port: number): string[] {
  const out: string[] = [];
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let lines: string[];
    try {
      lines = readFileSync(f, 'utf8').split('\n').slice(1);
    } catch {
      continue;
    }
    for (const l of lines) {
      const cols = l.trim().split(/\s+/);
      if (cols.length < 4 || cols[3] !== '0A') continue; // 0A: LISTEN
      const [hexAddr, hexPort] = cols[1].split(':');
      if (parseInt(hexPort, 16) !== port) continue;
      if (hexAddr.length === 8) {
        const b = Buffer.from(hexAddr, 'hex').reverse(); // little-endian u32
        out.push([...b].join('.'));
      } else {
        out.push(`v6:${hexAddr}`);
      }
    }
  }
  return out;
}

/** 'connected', 'timeout', or the error code of the attempt */
function tryConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host, port, timeout: 2000 });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('timeout', () => {
      s.destroy();
      resolve('timeout');
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      resolve(e.code ?? e.message);
    });
  });
}

/**
 * IDs of the "latency*" programs loaded now. The tests compare IDs rather than
 * expect none at all (programsAfterExit), so that a probe another test run
 * has loaded on the same host cannot make them fail.
 */
function latencyIds(): Set<number> {
  const r = spawnSync('bpftool', ['-j', 'prog', 'list'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bpftool prog list failed: ${r.stderr}`);
  return new Set(
    (JSON.parse(r.stdout) as { id: number; name?: string }[])
      .filter((p) => p.name?.startsWith('latency'))
      .map((p) => p.id),
  );
}

/** Waits (up to 5 s: the kernel frees a program after an RCU grace period) until none of `ids` is loaded; returns those still loaded. */
async function stillLoaded(ids: Iterable<number>): Promise<number[]> {
  const want = [...ids];
  let left = want.filter((id) => latencyIds().has(id));
  for (let i = 0; i < 50 && left.length > 0; i++) {
    await sleep(100);
    const now = latencyIds();
    left = want.filter((id) => now.has(id));
  }
  return left;
}

async function setup(
  t: TestContext,
  probeArgs: string[],
): Promise<{ server: RunningServer; probe: ProbeRun<LatencyReportRead>; port: number; ours: number[] }> {
  // every concurrent sleeper may busy-wait its last 150 µs, so sleeps are exact
  const server = await startTestServer(t, { maxSpinners: TRAFFIC.concurrency });
  const port = await freePort();
  const before = latencyIds();
  const probe = startProbe<LatencyReportRead>('latency-probe', [
    '--format',
    'prometheus',
    '--port',
    String(port),
    '--filter',
    `port=${server.port}`,
    ...probeArgs,
  ]);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  const ours = [...latencyIds()].filter((id) => !before.has(id));
  assert.ok(ours.length >= 3, `the probe's programs are loaded: ${ours.join(',')}`);
  return { server, probe, port, ours };
}

// ---------------------------------------------------------------- tests

test('/metrics while measuring: promtool-clean, exact counts per view, loopback only', async (t) => {
  if (!needsRoot(t)) return;
  const { server, probe, port, ours } = await setup(t, []);
  assert.match(probe.stderr(), new RegExp(`metrics at http://127\\.0\\.0\\.1:${port}/metrics`));

  const client = await runClient({ addr: '127.0.0.1', port: server.port, requests: 3000, ...TRAFFIC });
  assert.equal(client.requests, 3000);
  // records reach the figures asynchronously, and each server-side last exchange ends with its connection
  let text: string;
  let contentType: string | null;
  let samples: Sample[];
  let types: Map<string, string>;
  const deadline = Date.now() + 10_000;
  for (;;) {
    ({ text, contentType } = await scrape(port));
    ({ samples, types } = parseText(text));
    const c = value(samples, COUNT, { view: 'client' }) ?? 0;
    const s = value(samples, COUNT, { view: 'server' }) ?? 0;
    if ((c >= client.requests && s >= client.requests) || Date.now() > deadline) break;
    await sleep(100);
  }
  assert.equal(contentType, 'text/plain; version=0.0.4; charset=utf-8');

  const pt = spawnSync(PROMTOOL_BIN, ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 20_000 });
  if (pt.error) throw pt.error;
  assert.equal(pt.status, 0, `promtool check metrics: ${pt.stdout}${pt.stderr}\n---\n${text}`);
  assert.equal((pt.stdout + pt.stderr).trim(), '', 'promtool: no lint problems');

  assert.equal(
    value(samples, COUNT, { view: 'client' }),
    client.requests,
    "client-view _count = the client's own count",
  );
  assert.equal(
    value(samples, COUNT, { view: 'server' }),
    client.requests,
    "server-view _count = the client's own count",
  );
  assert.equal(
    value(samples, 'meshprobe_request_duration_seconds_bucket', { view: 'client', le: '+Inf' }),
    client.requests,
  );
  assert.equal(value(samples, 'meshprobe_requests_total', { view: 'client' }), client.requests);
  assert.equal(value(samples, 'meshprobe_requests_total', { view: 'server' }), client.requests);
  // the default bounds, exactly, then +Inf
  const les = samples
    .filter((s) => s.name === 'meshprobe_request_duration_seconds_bucket' && s.labels.view === 'client')
    .map((s) => s.labels.le);
  assert.deepEqual(les.slice(0, -1).map(Number), DEFAULT_LE_SECONDS);
  assert.equal(les[les.length - 1], '+Inf');

  assert.equal(types.get('meshprobe_request_duration_seconds'), 'histogram');
  const counters = [...types].filter(([, k]) => k === 'counter').map(([n]) => n);
  assert.ok(counters.length >= 5, `counters: ${counters.join(',')}`);
  for (const n of counters) assert.match(n, /^meshprobe_[a-z0-9_]+_total$/, `counter ${n} ends in _total`);
  for (const s of samples) {
    const fam = [...types.keys()].find(
      (f) => s.name === f || (types.get(f) === 'histogram' && /^(.*)_(bucket|sum|count)$/.exec(s.name)?.[1] === f),
    );
    assert.ok(fam, `sample ${s.name} belongs to a family with a TYPE`);
    if (types.get(fam) === 'counter') assert.match(s.name, /_total$/);
  }
  assert.equal(types.get('meshprobe_build_info'), 'gauge');
  const info = samples.filter((s) => s.name === 'meshprobe_build_info');
  assert.equal(info.length, 1);
  assert.equal(info[0].value, 1);
  assert.equal(info[0].labels.probe, 'latency-probe');
  assert.ok(info[0].labels.version && info[0].labels.host && info[0].labels.nodejs, JSON.stringify(info[0].labels));

  // loopback only: one listening socket on the port, bound to 127.0.0.1, and other addresses refuse
  assert.deepEqual(listeners(port), ['127.0.0.1']);
  const others = Object.values(networkInterfaces())
    .flat()
    .filter((a): a is NetworkInterfaceInfo => a !== undefined && !a.internal && a.family === 'IPv4')
    .map((a) => a.address);
  for (const addr of others)
    assert.equal(await tryConnect(addr, port), 'ECONNREFUSED', `/metrics reachable on ${addr}`);
  t.diagnostic(
    `client p99 ${client.latency_us.p99} µs; counts client/server ${client.requests}; checked not reachable on ${others.join(', ') || '(no other IPv4 address)'}`,
  );

  await server.stop();
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(exit.report, `no report: ${exit.stderr}`);
  assert.equal(exit.report.metrics.client.total_requests, client.requests);
  assert.ok((exit.report.exports?.prometheus?.scrapes ?? 0) >= 1, JSON.stringify(exit.report.exports));
  assert.deepEqual(await stillLoaded(ours), [], "the probe's programs are gone after it exits");
});

test('a real Prometheus scraping during traffic: histogram_quantile(0.99) agrees with the report p99 within a bucket', async (t) => {
  if (!needsRoot(t)) return;
  const BUCKETS = '0.0005,0.001,0.002,0.003,0.004,0.0045,0.0065,0.008,0.01,0.025,0.1';
  const bounds = parseBuckets(BUCKETS);
  const { server, probe, port, ours } = await setup(t, ['--buckets', BUCKETS]);
  const prom = await startPrometheus(t, { targets: [`127.0.0.1:${port}`], scrapeInterval: '1s' });
  await prom.waitFor('up{job="meshprobe"} == 1');

  const started = Date.now();
  const client = await runClient({ addr: '127.0.0.1', port: server.port, requests: 8000, ...TRAFFIC });
  const trafficS = (Date.now() - started) / 1000;
  const N = client.requests;
  assert.equal(N, 8000);

  // a scrape after the last request is in: both views at the client's count
  const reached = (r: { value: [number, string] }[]) => r.length === 1 && Number(r[0].value[1]) >= N;
  await prom.waitFor(`${COUNT}{view="client"}`, reached, 15_000);
  await prom.waitFor(`${COUNT}{view="server"}`, reached, 15_000);
  const at = Date.now();
  const q = async (expr: string) => {
    const r = await prom.query(expr, at);
    assert.equal(r.length, 1, `${expr}: ${JSON.stringify(r)}`);
    return Number(r[0].value[1]);
  };
  assert.equal(await q(`${COUNT}{view="client"}`), N);
  assert.equal(await q(`${COUNT}{view="server"}`), N);
  const promP99 = {
    client: await q('histogram_quantile(0.99, sum by (le) (meshprobe_request_duration_seconds_bucket{view="client"}))'),
    server: await q('histogram_quantile(0.99, sum by (le) (meshprobe_request_duration_seconds_bucket{view="server"}))'),
  };
  const svc = await prom.query(`meshprobe_service_request_duration_seconds_count{role="server"}`, at);

  // Prometheus scraped while the traffic ran: some stored sample lies strictly between 0 and N
  const params = new URLSearchParams({ query: `${COUNT}{view="client"}[5m]`, time: String(at / 1000) });
  const raw = (await (await fetch(`${prom.url}/api/v1/query?${params}`)).json()) as {
    data: { result: { values: [number, string][] }[] };
  };
  const stored = raw.data.result[0].values.map(([, v]) => Number(v));
  assert.ok(
    stored.some((v) => v > 0 && v < N),
    `a scrape during the traffic (${trafficS} s): ${stored.join(',')}`,
  );

  await server.stop();
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  const m = exit.report?.metrics;
  assert.ok(m, `no report: ${exit.stderr}`);
  // the final report covers the requests of Prometheus' last scrape, no more
  assert.equal(m.client.total_requests, N);
  assert.equal(m.server.total_requests, N);
  for (const l of Object.values(m.loss)) assert.equal(l, 0, JSON.stringify(m.loss));

  const lines: string[] = [];
  for (const view of ['client', 'server'] as const) {
    const ourP99 = m[view].percentiles.p99 / 1000; // ms -> s
    const [lo, hi] = bucketOf(ourP99, bounds);
    const theirs = promP99[view];
    lines.push(
      `${view}: report p99 ${(ourP99 * 1e3).toFixed(4)} ms, Prometheus ${(theirs * 1e3).toFixed(4)} ms, bucket (${lo * 1e3}, ${hi * 1e3}] ms`,
    );
    assert.ok(Number.isFinite(hi), `${view} p99 ${ourP99} s beyond the last bound`);
    assert.ok(
      Math.abs(theirs - ourP99) <= hi - lo,
      `${view}: Prometheus p99 ${theirs} s vs ourP99 ${ourP99} s: more than the bucket width ${hi - lo} s`,
    );
    // histogram_quantile interpolates inside the bucket holding the 0.99 rank, the one our p99 falls in
    assert.ok(theirs >= lo && theirs <= hi, `${view}: Prometheus p99 ${theirs} s outside (${lo}, ${hi}]`);
  }

  const serverSvc = svc.filter((s) => Number(s.value[1]) === m.server.total_requests);
  assert.equal(
    serverSvc.length,
    1,
    `a role="server" service series with count ${m.server.total_requests}: ${JSON.stringify(svc)}`,
  );
  assert.equal(serverSvc[0].metric.service, `mpload:${server.port}`);
  lines.push(
    `service ${serverSvc[0].metric.service} role=server count ${serverSvc[0].value[1]}; traffic ${trafficS} s, ${stored.length} scrapes stored`,
  );
  for (const l of lines) t.diagnostic(l);
  assert.deepEqual(await stillLoaded(ours), [], "the probe's programs are gone after it exits");
});

test('--port already in use: exit 2, one line naming --port, nothing loaded', async (t) => {
  if (!needsRoot(t)) return;
  const before = latencyIds();
  if (before.size) t.diagnostic(`latency programs of another run loaded: ${loadedPrograms('latency').join(',')}`);
  const blocker: Server = createServer();
  await new Promise<void>((res, rej) => {
    blocker.once('error', rej);
    blocker.listen(0, '127.0.0.1', () => {
      res();
    });
  });
  t.after(
    () =>
      new Promise<void>((res) => {
        blocker.close(() => {
          res();
        });
      }),
  );
  const port = (blocker.address() as { port: number }).port;
  const output = join(tempDir(), 'report.json');

  const r = runCli('latency-probe', [
    '--format',
    'prometheus',
    '--port',
    String(port),
    '--output',
    output,
    '--filter',
    'port=1',
  ]);
  assert.equal(r.code, 2, `exit code: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n').filter(Boolean);
  assert.equal(lines.length, 1, `one line on stderr: ${JSON.stringify(r.stderr)}`);
  assert.match(lines[0], new RegExp(`--port ${port}\\b`));
  assert.match(lines[0], /already in use/);
  assert.equal(existsSync(output), false, 'no report written');
  // the port is bound before anything is loaded; whatever it might have loaded is freed once it exited
  let added = [...latencyIds()].filter((id) => !before.has(id));
  for (let i = 0; i < 50 && added.length > 0; i++) {
    await sleep(100);
    added = [...latencyIds()].filter((id) => !before.has(id));
  }
  assert.deepEqual(added, [], 'no BPF programs left loaded');
});
