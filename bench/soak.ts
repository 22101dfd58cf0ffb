// The node agent left running: keep-alive load plus connection churn for SOAK_MINUTES (default 60),
// one latency-probe serving /metrics scraped every 15 s, another writing InfluxDB 1.x every 10 s.
// Every 10 s it samples both probes' RSS. At the end it compares what the probes counted (the
// last scrape, the sum of the InfluxDB points, each JSON report) with the load generator's own
// counts, and prints one line per figure and a JSON summary.
//   node dist/bench/soak.js                      # 60 minutes
//   SOAK_MINUTES=5 node dist/bench/soak.js       # what test/soak.test.ts runs in CI
// Targets: RSS flat within 5 % after the warm-up, 0 records lost, counts exact.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { startProbe, type ProbeRun } from '../test/helpers/probe.js';
import { freePort, startInfluxdb1, type AfterHook } from '../test/helpers/servers.js';
import { runClient, startTestServer, type ClientResult } from '../test/helpers/workload.js';
import type { LatencyReport } from '../src/report/latency.js';

export interface SoakOptions {
  minutes: number;
  /** keep-alive requests per second, over `connections` connections */
  rate: number;
  connections: number;
  /** new connections per second, one request each */
  churnRate: number;
  /** seconds of warm-up left out of the RSS comparison */
  warmupS: number;
}

export interface RssSeries {
  /** seconds since start, RSS in MB */
  samples: [number, number][];
  /** after the warm-up */
  minMb: number;
  maxMb: number;
  /** (max - min) / min after the warm-up */
  spread: number;
}

export interface SoakResult {
  options: SoakOptions;
  sent: { keepalive: number; churn: number; total: number; connections: number };
  prometheus: { scrapes: number; scrapeMsMax: number; clientCount: number; report: LatencyReport };
  influx: { pointsSum: number; report: LatencyReport };
  rss: { prometheus: RssSeries; influx: RssSeries };
  lost: { prometheus: number; influx: number };
}

function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

function series(samples: [number, number][], warmupS: number): RssSeries {
  const after = samples.filter(([t]) => t >= warmupS).map(([, mb]) => mb);
  if (after.length === 0) throw new Error(`no RSS sample after the ${warmupS} s warm-up`);
  const minMb = Math.min(...after);
  const maxMb = Math.max(...after);
  return { samples, minMb, maxMb, spread: (maxMb - minMb) / minMb };
}

/** The value of `name{labels}` in a Prometheus text exposition. */
function promValue(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  if (!line) throw new Error(`no ${name}{${labels}} in the scrape`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** Lost records as the report counts them (metrics.loss: the kernel's, the pipeline's, the tables'). */
function lostOf(r: LatencyReport): number {
  const loss: Record<string, number> = r.metrics.loss;
  return Object.values(loss).reduce((a, b) => a + b, 0);
}

export async function soak(
  t: AfterHook,
  o: SoakOptions,
  say: (line: string) => void = console.log,
): Promise<SoakResult> {
  const server = await startTestServer(t, { maxSpinners: 2 });
  const ifx = await startInfluxdb1(t);
  await ifx.createDatabase('soak');
  const port = await freePort();
  const filter = ['--filter', `port=${server.port}`];
  const prom: ProbeRun<LatencyReport> = startProbe<LatencyReport>('latency-probe', [
    ...filter,
    '--format',
    'prometheus',
    '--port',
    String(port),
  ]);
  const influx: ProbeRun<LatencyReport> = startProbe<LatencyReport>('latency-probe', [
    ...filter,
    '--format',
    'influx',
    '--url',
    ifx.url,
    '--db',
    'soak',
    '--aggregate-interval',
    '10s',
  ]);
  t.after(async () => {
    await prom.stop('SIGKILL');
    await influx.stop('SIGKILL');
  });
  await Promise.all([prom.ready, influx.ready]);
  const seconds = o.minutes * 60;
  say(
    `soak: ${o.minutes} min, ${o.rate} req/s keep-alive on ${o.connections} connections + ${o.churnRate} new connections/s`,
  );

  const t0 = Date.now();
  const since = () => (Date.now() - t0) / 1000;
  const rss = { prometheus: [] as [number, number][], influx: [] as [number, number][] };
  let scrapes = 0;
  let scrapeMsMax = 0;
  const load = { running: true };
  const sampler = (async () => {
    let nextScrape = 0;
    while (load.running) {
      rss.prometheus.push([since(), rssMb(prom.pid)]);
      rss.influx.push([since(), rssMb(influx.pid)]);
      if (since() >= nextScrape) {
        const s0 = performance.now();
        const res = await fetch(`http://127.0.0.1:${port}/metrics`);
        if (!res.ok) throw new Error(`scrape: HTTP ${res.status}`);
        await res.text();
        scrapeMsMax = Math.max(scrapeMsMax, performance.now() - s0);
        scrapes++;
        nextScrape += 15;
      }
      await sleep(Math.min(10_000, Math.max(1, seconds * 1000 - (Date.now() - t0))));
      if (since() >= seconds) break;
    }
  })();

  // awaited after the load: a failure meanwhile is kept for that await, not an unhandled rejection
  sampler.catch(() => undefined);
  const keepalive: Promise<ClientResult> = runClient({
    addr: server.addr,
    port: server.port,
    requests: o.rate * seconds,
    rate: o.rate,
    concurrency: o.connections,
    timeoutMs: (seconds + 120) * 1000,
  });
  const churn: Promise<ClientResult> = runClient({
    addr: server.addr,
    port: server.port,
    requests: o.churnRate * seconds,
    rate: o.churnRate,
    newConn: true,
    timeoutMs: (seconds + 120) * 1000,
  });
  const [ka, ch] = await Promise.all([keepalive, churn]);
  load.running = false;
  await sampler;
  await sleep(1500); // the last records reach the probes
  // the final scrape, after the load
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  const lastScrape = await res.text();
  scrapes++;
  const clientCount = promValue(lastScrape, 'meshprobe_requests_total', 'view="client"');

  const pe = await prom.stop('SIGTERM');
  const ie = await influx.stop('SIGTERM');
  if (pe.code !== 0 || !pe.report) throw new Error(`the prometheus probe exited ${String(pe.code)}: ${pe.stderr}`);
  if (ie.code !== 0 || !ie.report) throw new Error(`the influx probe exited ${String(ie.code)}: ${ie.stderr}`);
  const q = await ifx.query(`SELECT sum("count") FROM "meshprobe_request_duration" WHERE "view" = 'client'`, 'soak');
  const pointsSum = Number(q.results[0]?.series?.[0]?.values[0]?.[1] ?? 0);

  const result: SoakResult = {
    options: o,
    sent: {
      keepalive: ka.requests,
      churn: ch.requests,
      total: ka.requests + ch.requests,
      connections: ka.connections + ch.connections,
    },
    prometheus: { scrapes, scrapeMsMax, clientCount, report: pe.report },
    influx: { pointsSum, report: ie.report },
    rss: { prometheus: series(rss.prometheus, o.warmupS), influx: series(rss.influx, o.warmupS) },
    lost: { prometheus: lostOf(pe.report), influx: lostOf(ie.report) },
  };
  const r = result;
  say(
    `sent: ${r.sent.total} requests (${r.sent.keepalive} keep-alive, ${r.sent.churn} on ${ch.connections} new connections)`,
  );
  say(
    `counted: last scrape ${clientCount}, InfluxDB points ${pointsSum}, JSON reports ` +
      `${pe.report.metrics.client.total_requests} / ${ie.report.metrics.client.total_requests}`,
  );
  for (const [name, s] of Object.entries(r.rss)) {
    say(
      `RSS ${name}: ${s.minMb.toFixed(1)}-${s.maxMb.toFixed(1)} MB after ${o.warmupS} s (spread ${(s.spread * 100).toFixed(1)} %), ` +
        `first ${s.samples[0][1].toFixed(1)} MB`,
    );
  }
  say(
    `lost records: ${r.lost.prometheus} / ${r.lost.influx}; ${scrapes} scrapes, slowest ${scrapeMsMax.toFixed(1)} ms`,
  );
  const aged = pe.report.metrics.connections_aged;
  say(
    `connection ends aged out of the table (${aged.table_rows} rows): ${aged.connections}, ` +
      `not tracked: ${pe.report.metrics.loss.connections_not_tracked}`,
  );
  return result;
}

/** Did the run meet the targets? The failures, one line each; `rss: false` leaves RSS out. */
export function soakFailures(r: SoakResult, opts: { rss?: boolean } = {}): string[] {
  const out: string[] = [];
  const want = r.sent.total;
  if (r.prometheus.clientCount !== want) out.push(`last scrape counted ${r.prometheus.clientCount} of ${want}`);
  if (r.influx.pointsSum !== want) out.push(`InfluxDB points sum to ${r.influx.pointsSum} of ${want}`);
  for (const rep of [r.prometheus.report, r.influx.report]) {
    if (rep.metrics.client.total_requests !== want) {
      out.push(`a JSON report counted ${rep.metrics.client.total_requests} of ${want}`);
    }
  }
  for (const [name, s] of Object.entries(r.rss)) {
    if (opts.rss !== false && s.spread > 0.05)
      out.push(`RSS of the ${name} probe not flat: ${s.minMb.toFixed(1)}-${s.maxMb.toFixed(1)} MB`);
  }
  if (r.lost.prometheus !== 0 || r.lost.influx !== 0) out.push(`records lost: ${r.lost.prometheus} / ${r.lost.influx}`);
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const minutes = Number(process.env.SOAK_MINUTES ?? 60);
  const cleanups: (() => unknown)[] = [];
  const t: AfterHook = { after: (fn) => cleanups.push(fn) };
  try {
    const r = await soak(t, {
      minutes,
      rate: 2000,
      connections: 8,
      churnRate: 100,
      warmupS: Math.min(300, minutes * 12),
    });
    const failures = soakFailures(r);
    console.log(
      JSON.stringify({
        ...r,
        prometheus: { ...r.prometheus, report: undefined },
        influx: { ...r.influx, report: undefined },
      }),
    );
    for (const f of failures) console.log(`soak: target missed: ${f}`);
    process.exitCode = failures.length ? 1 : 0;
  } finally {
    for (const fn of cleanups.reverse()) await fn();
  }
}
