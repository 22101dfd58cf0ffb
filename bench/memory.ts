// A node agent's memory at the defaults: each probe's resident memory (VmRSS, and its peak VmHWM)
// and the locked kernel memory of its BPF maps (the `memlock` of every map fd it holds, as
// `bpftool map show` gives it), idle and then under load: keep-alive requests on many connections
// plus new connections (one request each), so that connection rows are taken and given back.
//   node dist/bench/memory.js
//   BENCH_MEMORY_PROBES=latency-probe BENCH_MEMORY_SECONDS=20 BENCH_MEMORY_CONNECTIONS=1000 node dist/bench/memory.js
// Targets (issue 16): latency-probe at the defaults, RSS <= 80 MB and maps <= 4 MB.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fdinfos } from './lib.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { startProbe, type ProbeRun } from '../test/helpers/probe.js';
import type { AfterHook } from '../test/helpers/servers.js';
import { runClient, startTestServer } from '../test/helpers/workload.js';

const PROBES = (process.env.BENCH_MEMORY_PROBES ?? 'latency-probe,connection-tracker,packet-drop-probe').split(',');
const SECONDS = Number(process.env.BENCH_MEMORY_SECONDS ?? 30);
const CONNECTIONS = Number(process.env.BENCH_MEMORY_CONNECTIONS ?? 1000);
const RATE = Number(process.env.BENCH_MEMORY_RATE ?? 5000);
const CHURN = Number(process.env.BENCH_MEMORY_CHURN ?? 200);
const MB = 1024 * 1024;

function status(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${String(pid)}/status`, 'utf8'));
  if (!m) throw new Error(`no ${field} for pid ${String(pid)}`);
  return (Number(m[1]) * 1024) / MB;
}

/** Locked kernel memory of the BPF maps a process holds, each map once: total and the largest. */
function mapMemory(pid: number): { total: number; maps: Map<string, number> } {
  const seen = new Set<string>();
  const maps = new Map<string, number>();
  let total = 0;
  for (const info of fdinfos(pid)) {
    const id = /^map_id:\s*(\d+)$/m.exec(info)?.[1];
    const memlock = /^memlock:\s*(\d+)$/m.exec(info)?.[1];
    if (id === undefined || memlock === undefined || seen.has(id)) continue;
    seen.add(id);
    const bytes = Number(memlock);
    total += bytes;
    const name = bpftoolName(id);
    maps.set(name, (maps.get(name) ?? 0) + bytes);
  }
  return { total: total / MB, maps };
}

/** Map names by id (fdinfo has none), from bpftool. */
let mapNames = new Map<string, string>();
function bpftoolName(id: string): string {
  return mapNames.get(id) ?? `map ${id}`;
}
function loadMapNames(): void {
  const r = spawnSync('bpftool', ['-j', 'map', 'show'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bpftool map show failed: ${r.stderr}`);
  const list = JSON.parse(r.stdout) as { id: number; name?: string }[];
  mapNames = new Map(list.map((m) => [String(m.id), m.name ?? `map ${String(m.id)}`]));
}

interface Row {
  probe: string;
  idleRss: number;
  loadRss: number;
  peakRss: number;
  maps: number;
  largest: string;
  requests: number;
}

async function measure(t: AfterHook, probe: string): Promise<Row> {
  const server = await startTestServer(t, { maxSpinners: 2 });
  const run: ProbeRun = startProbe(probe, ['--quiet']);
  t.after(async () => {
    await run.stop('SIGKILL');
  });
  await run.ready;
  await sleep(3000);
  loadMapNames();
  const idleRss = status(run.pid, 'VmRSS');
  const mem = mapMemory(run.pid);
  const largest = [...mem.maps.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 3)
    .map(([n, b]) => `${n} ${(b / MB).toFixed(2)}`)
    .join(', ');
  const keepalive = runClient({
    addr: server.addr,
    port: server.port,
    requests: RATE * SECONDS,
    rate: RATE,
    concurrency: CONNECTIONS,
    timeoutMs: (SECONDS + 120) * 1000,
  });
  const churn = runClient({
    addr: server.addr,
    port: server.port,
    requests: CHURN * SECONDS,
    rate: CHURN,
    concurrency: 4,
    newConn: true,
    timeoutMs: (SECONDS + 120) * 1000,
  });
  const [k, c] = await Promise.all([keepalive, churn]);
  const loadRss = status(run.pid, 'VmRSS');
  const peakRss = status(run.pid, 'VmHWM');
  const exit = await run.stop('SIGINT');
  if (exit.code !== 0) throw new Error(`${probe} exited ${String(exit.code)}: ${exit.stderr}`);
  await server.stop();
  return { probe, idleRss, loadRss, peakRss, maps: mem.total, largest, requests: k.requests + c.requests };
}

const cleanups: (() => unknown)[] = [];
const t: AfterHook = { after: (fn) => cleanups.push(fn) };
const rows: Row[] = [];
try {
  for (const p of PROBES) rows.push(await measure(t, p));
} finally {
  for (const fn of cleanups.reverse()) await fn();
}
console.log(
  `memory at the defaults: idle 3 s, then ${String(SECONDS)} s of ${String(RATE)} req/s on ${String(CONNECTIONS)} keep-alive connections + ${String(CHURN)} new connections/s`,
);
console.log(
  '| probe | RSS idle (MB) | RSS after load (MB) | peak RSS (MB) | BPF maps (MB, memlock) | largest maps (MB) |',
);
console.log('|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(
    `| ${r.probe} | ${r.idleRss.toFixed(1)} | ${r.loadRss.toFixed(1)} | ${r.peakRss.toFixed(1)} | ${r.maps.toFixed(2)} | ${r.largest} |`,
  );
}
console.log(JSON.stringify({ bench: 'memory', rows }));
