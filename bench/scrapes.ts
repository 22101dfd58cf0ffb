// What many scrapers cost: latency-probe --format prometheus under a steady load (mpload,
// BENCH_RATE requests/s, default 2000), with BENCH_SCRAPERS (default 50) clients scraping
// /metrics back to back for BENCH_SECONDS (default 30). Prints the scrape time (p50, max), the
// renders the exporter made, the probe's CPU (user+system, % of one core), its RSS before and
// after, and the records it lost; then the same load with one scraper every second, for the ratio.
//   node dist/bench/scrapes.js
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { startProbe } from '../test/helpers/probe.js';
import { freePort } from '../test/helpers/servers.js';
import { runClient, startTestServer, type RunningServer } from '../test/helpers/workload.js';
import type { LatencyReport } from '../src/report/latency.js';

const RATE = Number(process.env.BENCH_RATE ?? 2000);
const SCRAPERS = Number(process.env.BENCH_SCRAPERS ?? 50);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 30);
const TICKS = 100; // USER_HZ

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICKS; // utime, stime
}

function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${String(pid)}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${String(pid)}`);
  return Number(m[1]) / 1024;
}

interface Round {
  scrapers: number;
  scrapes: number;
  p50Ms: number;
  maxMs: number;
  renders: number;
  cpuPct: number;
  rssBefore: number;
  rssAfter: number;
  lost: number;
  counted: number;
  sent: number;
}

async function round(server: RunningServer, scrapers: number, pauseMs: number): Promise<Round> {
  const port = await freePort();
  const probe = startProbe<LatencyReport>('latency-probe', [
    ...['--filter', `port=${String(server.port)}`, '--format', 'prometheus', '--port', String(port)],
  ]);
  try {
    await probe.ready;
    await sleep(1000);
    const rssBefore = rssMb(probe.pid);
    const cpu0 = cpuSeconds(probe.pid);
    const t0 = Date.now();
    const times: number[] = [];
    const load = runClient({
      addr: server.addr,
      port: server.port,
      requests: RATE * SECONDS,
      rate: RATE,
      concurrency: 4,
    });
    load.catch(() => undefined); // awaited after the scrapers: kept for that await
    const deadline = t0 + SECONDS * 1000;
    const scraper = async () => {
      while (Date.now() < deadline) {
        const s0 = performance.now();
        const res = await fetch(`http://127.0.0.1:${String(port)}/metrics`);
        await res.text();
        times.push(performance.now() - s0);
        if (pauseMs) await sleep(pauseMs);
      }
    };
    await Promise.all(Array.from({ length: scrapers }, scraper));
    const sent = (await load).requests;
    const cpuPct = ((cpuSeconds(probe.pid) - cpu0) / ((Date.now() - t0) / 1000)) * 100;
    const rssAfter = rssMb(probe.pid);
    await sleep(500);
    const exit = await probe.stop('SIGTERM');
    if (exit.code !== 0 || !exit.report) throw new Error(`probe exited ${String(exit.code)}: ${exit.stderr}`);
    const r = exit.report;
    const prom = r.exports?.prometheus as { scrapes: number; renders: number } | undefined;
    times.sort((a, b) => a - b);
    return {
      scrapers,
      scrapes: times.length,
      p50Ms: times[Math.floor(times.length / 2)] ?? NaN,
      maxMs: times[times.length - 1] ?? NaN,
      renders: prom?.renders ?? NaN,
      cpuPct,
      rssBefore,
      rssAfter,
      lost: Object.values(r.metrics.loss).reduce((a, b) => a + b, 0),
      counted: r.metrics.client.total_requests,
      sent,
    };
  } finally {
    await probe.stop('SIGKILL');
  }
}

const cleanups: (() => unknown)[] = [];
try {
  const server = await startTestServer({ after: (fn) => cleanups.push(fn) });
  const one = await round(server, 1, 1000);
  const many = await round(server, SCRAPERS, 0);
  for (const r of [one, many]) {
    console.log(
      `${String(r.scrapers)} scraper(s): ${String(r.scrapes)} scrapes, p50 ${r.p50Ms.toFixed(2)} ms, max ${r.maxMs.toFixed(1)} ms, ` +
        `${String(r.renders)} renders; probe CPU ${r.cpuPct.toFixed(1)} % of a core, RSS ${r.rssBefore.toFixed(1)} -> ` +
        `${r.rssAfter.toFixed(1)} MB; counted ${String(r.counted)} of ${String(r.sent)}, lost ${String(r.lost)}`,
    );
  }
  console.log(
    `scrapes: ${String(SCRAPERS)} back-to-back scrapers against 1 per second: probe CPU ${many.cpuPct.toFixed(1)} % ` +
      `vs ${one.cpuPct.toFixed(1)} %, ${(many.scrapes / Math.max(1, many.renders)).toFixed(0)} scrapes per render`,
  );
} finally {
  for (const fn of cleanups.reverse()) await fn();
}
