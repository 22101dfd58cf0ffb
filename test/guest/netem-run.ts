// The netem workload (test/kernel-netem.test.ts), run inside a qemu guest
// (test/helpers/guest.ts): two network namespaces joined by a veth pair, each
// end with `tc qdisc add dev <end> root netem delay <D>ms`, so every round trip
// between them takes 2·D more than the link itself. An mpload server in one
// namespace sleeps a known time per request; an mpload client in the other
// times itself. Per delay it runs latency-probe around one long connection
// (the client, server and network views), then connection-tracker around
// fresh connections and Node TLS handshakes between the namespaces (set-up
// and handshake times), then latency-probe around a sidecar chain whose one
// hop between pods is the delayed veth (the mesh split):
//
//   [nsA] mpload client -> haproxy outbound (127.0.0.1:15001)
//           -> veth with netem ->
//   [nsB] haproxy inbound (<addrB>:15006) -> mpload server (127.0.0.1:8080), sleeping a known time
//
// It prints one block per step (emitBlock) and asserts nothing itself: the
// host checks the figures against the imposed delay.
//
//   node dist/test/guest/netem-run.js <delay-ms-each-way>...
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import type { ConnectionReport } from '../../src/report/connections.js';
import type { LatencyReportRead } from '../helpers/report-types.js';
import { emitBlock } from '../helpers/guest.js';
import { createVethPair, ipBin, type VethPair } from '../helpers/netns.js';
import { startSidecar, type HaproxyLogLine } from '../helpers/haproxy.js';
import { startProbe, tempDir } from '../helpers/probe.js';
import { mploadBinary, repoRoot, runClient, startServer } from '../helpers/workload.js';

/** What the server sleeps per request (µs). */
const SLEEP_US = 2000;
/** Requests on one long connection (latency-probe), fresh connections (connection-tracker), TLS handshakes. */
const PERSISTENT = 100;
const FRESH = 20;
const TLS_HANDSHAKES = 5;
/** The mesh run: requests through the sidecar chain, one at a time, and what the server sleeps in each (µs). */
const MESH_REQUESTS = 100;
const MESH_SLEEP_US = 3000;

let seq = 0;
let stepStarted = Date.now();
function emit(step: string, data: Record<string, unknown>): void {
  const now = Date.now();
  emitBlock(`${++seq}-${step}`, { step, ms: now - stepStarted, ...data });
  stepStarted = now;
}

function sh(args: string[]): { code: number | null; out: string } {
  const r = spawnSync(args[0], args.slice(1), { encoding: 'utf8' });
  return { code: r.status, out: `${r.error?.message ?? ''}${r.stdout}${r.stderr}`.trim() };
}

/** Each probe's JSON report. */
interface Reports {
  'latency-probe': LatencyReportRead;
  'connection-tracker': ConnectionReport;
}

/** The probe around `traffic`: ready, traffic, 300 ms, SIGINT. Never throws: what went wrong is in the result. */
async function around<N extends keyof Reports>(
  name: N,
  args: string[],
  traffic: () => Promise<void>,
): Promise<{ code: number | null; stderr: string; report?: Reports[N]; error?: string }> {
  const probe = startProbe<Reports[N]>(name, args);
  try {
    await probe.ready;
  } catch (e) {
    const exit = await probe.stop('SIGKILL');
    return { code: exit.code, stderr: exit.stderr.slice(-3000), error: (e as Error).message.slice(0, 500) };
  }
  let error: string | undefined;
  try {
    await traffic();
  } catch (e) {
    error = (e as Error).message.slice(0, 800);
  }
  await new Promise((r) => setTimeout(r, 300));
  const exit = await probe.stop('SIGINT');
  return { code: exit.code, stderr: exit.code === 0 ? '' : exit.stderr.slice(-3000), report: exit.report, error };
}

/** A Node process in a network namespace (`ip netns exec`), its stdout. */
function nodeIn(ns: string, script: string, env: Record<string, string>) {
  const child = spawn(ipBin(), ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', r));
  return { child, output: () => out, exited };
}

const TLS_SERVER = `
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
const p = JSON.parse(readFileSync(process.env.PEMS, 'utf8'));
const s = tls.createServer(p, (c) => c.end('ok'));
s.listen(Number(process.env.PORT), process.env.ADDR, () => console.log('READY'));
process.on('SIGTERM', () => s.close(() => process.exit(0)));
`;

const TLS_CLIENT = `
import tls from 'node:tls';
let done = 0;
const ms = [];
for (let i = 0; i < Number(process.env.N); i++) {
  await new Promise((resolve) => {
    let t0 = 0;
    const c = tls.connect({ port: Number(process.env.PORT), host: process.env.ADDR, rejectUnauthorized: false }, () => {
      done++;
      ms.push(performance.now() - t0);
    });
    c.on('connect', () => (t0 = performance.now()));
    c.on('data', () => undefined);
    c.on('end', resolve);
    c.on('error', (e) => { console.error(e.message); resolve(); });
  });
}
console.log(JSON.stringify({ done, handshake_ms: ms }));
`;

/** TLS handshakes from nsA to a Node TLS server in nsB; the client's own time from TCP connected to TLS secure. */
async function tlsHandshakes(pair: VethPair, port: number, pems: string): Promise<{ done: number; ms: number[] }> {
  const server = nodeIn(pair.nsB, TLS_SERVER, { PEMS: pems, PORT: String(port), ADDR: pair.addrB4 });
  try {
    const deadline = Date.now() + 60_000;
    while (!server.output().includes('READY')) {
      if (Date.now() > deadline || server.child.exitCode !== null)
        throw new Error(`TLS server did not listen: ${server.output()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const client = nodeIn(pair.nsA, TLS_CLIENT, { N: String(TLS_HANDSHAKES), PORT: String(port), ADDR: pair.addrB4 });
    const code = await client.exited;
    const line = client
      .output()
      .split('\n')
      .find((l) => l.startsWith('{'));
    if (code !== 0 || !line) throw new Error(`TLS client exit ${String(code)}: ${client.output()}`);
    const r = JSON.parse(line) as { done: number; handshake_ms: number[] };
    return { done: r.done, ms: r.handshake_ms };
  } finally {
    if (server.child.pid !== undefined && server.child.exitCode === null) server.child.kill('SIGTERM');
    await server.exited;
  }
}

/** haproxy's own timers over the requests it answered 200: how many, and their means (ms). */
function haproxyOwn(lines: HaproxyLogLine[]): { requests: number; ta_ms: number; tr_ms: number; inside_ms: number } {
  const ok = lines.filter((l) => l.status === 200);
  const mean = (f: (l: HaproxyLogLine) => number) => ok.reduce((a, l) => a + f(l), 0) / ok.length;
  return {
    requests: ok.length,
    ta_ms: mean((l) => l.Ta),
    tr_ms: mean((l) => l.Tr),
    inside_ms: mean((l) => l.Ta - l.Tr),
  };
}

/**
 * The mesh split with the delayed hop between the sidecars (test/mesh-overhead.test.ts's topology in
 * the two namespaces of `pair`, whose veth has netem on both ends): HTTP/1.1 keep-alive on every hop,
 * haproxy reusing its one upstream connection, so every request crosses the delayed veth once each way.
 */
async function meshCase(pair: VethPair, delayMs: number): Promise<void> {
  const cleanups: (() => unknown)[] = [];
  const hooks = {
    after(fn: () => unknown): void {
      cleanups.push(fn);
    },
  };
  try {
    const server = await startServer({ addr: '127.0.0.1', port: 8080, netns: pair.nsB, http: true, spinUs: 0 });
    hooks.after(() => server.stop().catch(() => undefined));
    const inbound = await startSidecar(hooks, {
      netns: pair.nsB,
      name: 'inbound',
      bind: `${pair.addrB4}:15006`,
      server: '127.0.0.1:8080',
    });
    const outbound = await startSidecar(hooks, {
      netns: pair.nsA,
      name: 'outbound',
      bind: '127.0.0.1:15001',
      server: `${pair.addrB4}:15006`,
    });
    let client: Awaited<ReturnType<typeof runClient>> | undefined;
    const lat = await around(
      'latency-probe',
      ['--filter', `netns=${pair.nsA},${pair.nsB}`, '--proxy-comm', 'haproxy'],
      async () => {
        client = await runClient({
          addr: '127.0.0.1',
          port: 15001,
          netns: pair.nsA,
          http: true,
          requests: MESH_REQUESTS,
          sleeps: [MESH_SLEEP_US],
          bin: mploadBinary,
        });
      },
    );
    let serverSelf: { requests: number; mean_us: number; p50_us: number } | string;
    try {
      const sum = await server.stop();
      serverSelf = { requests: sum.requests, mean_us: sum.processing_us.mean, p50_us: sum.processing_us.p50 };
    } catch (e) {
      serverSelf = (e as Error).message.slice(0, 500);
    }
    emit('mesh', {
      delay_ms: delayMs,
      code: lat.code,
      error: lat.error,
      stderr: lat.stderr,
      sleep_us: MESH_SLEEP_US,
      client_self: client
        ? { requests: client.requests, mean_us: client.latency_us.mean, p50_us: client.latency_us.p50 }
        : null,
      server_self: serverSelf,
      haproxy: {
        outbound: { pid: outbound.pid, ...haproxyOwn(outbound.lines()) },
        inbound: { pid: inbound.pid, ...haproxyOwn(inbound.lines()) },
      },
      mesh_overhead: lat.report?.metrics.overhead_analysis ?? null,
    });
  } finally {
    for (const fn of cleanups.reverse()) await fn();
  }
}

async function runCase(delayMs: number, pems: string): Promise<void> {
  const pair = createVethPair();
  try {
    const qdisc = [pair.ifA, pair.ifB].map((dev, i) => {
      const ns = i === 0 ? pair.nsA : pair.nsB;
      return sh([
        ipBin(),
        'netns',
        'exec',
        ns,
        'tc',
        'qdisc',
        'add',
        'dev',
        dev,
        'root',
        'netem',
        'delay',
        `${delayMs}ms`,
      ]);
    });
    const shown = sh([ipBin(), 'netns', 'exec', pair.nsA, 'tc', 'qdisc', 'show', 'dev', pair.ifA]).out;
    emit('netem', { delay_ms: delayMs, qdisc: qdisc.map((q) => q.code), errors: qdisc.map((q) => q.out), shown });

    let server = await startServer({ addr: pair.addrB4, netns: pair.nsB, spinUs: 0 });
    try {
      let client: Awaited<ReturnType<typeof runClient>> | undefined;
      const lat = await around('latency-probe', ['--filter', `port=${server.port}`], async () => {
        client = await runClient({
          addr: pair.addrB4,
          port: server.port,
          netns: pair.nsA,
          requests: PERSISTENT,
          sleeps: [SLEEP_US],
          bin: mploadBinary,
        });
      });
      // the server's own timing of its sleeps (mpload: request read -> just before the write), then a fresh
      // server for the connections, so that this one's summary holds the long connection's requests only
      let serverSelf: { requests: number; mean_us: number; p50_us: number } | string;
      try {
        const sum = await server.stop();
        serverSelf = { requests: sum.requests, mean_us: sum.processing_us.mean, p50_us: sum.processing_us.p50 };
      } catch (e) {
        serverSelf = (e as Error).message.slice(0, 500);
      }
      server = await startServer({ addr: pair.addrB4, netns: pair.nsB, spinUs: 0 });
      const m = lat.report?.metrics;
      emit('latency', {
        delay_ms: delayMs,
        code: lat.code,
        error: lat.error,
        stderr: lat.stderr,
        client_self: client
          ? { requests: client.requests, mean_us: client.latency_us.mean, p50_us: client.latency_us.p50 }
          : null,
        server_self: serverSelf,
        client: m
          ? { requests: m.client.total_requests, mean_ms: m.client.mean_ms, p50: m.client.percentiles.p50 }
          : null,
        server: m
          ? { requests: m.server.total_requests, mean_ms: m.server.mean_ms, p50: m.server.percentiles.p50 }
          : null,
        network: m
          ? { count: m.network.total_requests, p50: m.network.percentiles.p50, mean_ms: m.network.mean_ms }
          : null,
        network_srtt: m
          ? {
              count: m.network_srtt.total_requests,
              p50: m.network_srtt.percentiles.p50,
              mean_ms: m.network_srtt.mean_ms,
            }
          : null,
        connections: (m?.connections ?? []).map((c) => ({
          role: c.role,
          requests: c.requests,
          min_rtt_ms: c.min_rtt_ms,
          srtt_ms: c.srtt_ms,
        })),
        overhead: m?.overhead_analysis,
      });

      const tlsPort = server.port + 1;
      let fresh: Awaited<ReturnType<typeof runClient>> | undefined;
      let tlsSeen: { done: number; ms: number[] } | undefined;
      let tlsError: string | undefined;
      const conn = await around('connection-tracker', ['--filter', `port=${server.port},${tlsPort}`], async () => {
        fresh = await runClient({
          addr: pair.addrB4,
          port: server.port,
          netns: pair.nsA,
          requests: FRESH,
          newConn: true,
          sleeps: [0],
          bin: mploadBinary,
        });
        try {
          tlsSeen = await tlsHandshakes(pair, tlsPort, pems);
        } catch (e) {
          tlsError = (e as Error).message.slice(0, 800);
        }
      });
      const c = conn.report?.connections;
      emit('connections', {
        delay_ms: delayMs,
        code: conn.code,
        error: conn.error,
        stderr: conn.stderr,
        client_connect_us: fresh?.connect_us ?? null,
        fresh_requests: fresh?.requests ?? null,
        opened: c?.opened_by_side ?? null,
        setup: c?.setup_ms_by_side ?? null,
        tls_error: tlsError,
        tls_self: tlsSeen ?? null,
        tls_handshakes: c?.tls_handshakes ?? null,
        tls: c?.tls_handshake_ms_by_side ?? null,
      });
    } finally {
      await server.stop().catch(() => undefined);
    }
    await meshCase(pair, delayMs);
  } finally {
    pair.cleanup();
  }
}

async function main(): Promise<void> {
  const delays = process.argv.slice(2).map(Number);
  emit('kernel', { release: os.release(), delays });
  // iproute2 keeps named namespaces in /var/run/netns; the initramfs has /run only
  if (!existsSync('/var/run')) {
    mkdirSync('/var', { recursive: true });
    symlinkSync('/run', '/var/run');
  }
  const m = spawnSync('/bin/modload', ['veth', 'sch_netem'], { encoding: 'utf8' });
  const loaded = readFileSync('/proc/modules', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ')[0]);
  emit('modules', { code: m.status, stderr: m.stderr, loaded });
  const pems = join(tempDir(), 'pems.json');
  writeFileSync(pems, readFileSync(process.env.NETEM_TLS_PEMS ?? '/netem-tls.json'));
  for (const d of delays) {
    try {
      await runCase(d, pems);
    } catch (e) {
      emit('case-error', { delay_ms: d, error: (e as Error).stack ?? String(e) });
    }
  }
  emit('done', { cwd: repoRoot });
}

await main();
