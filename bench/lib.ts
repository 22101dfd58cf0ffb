// Shared pieces of the benchmarks: a private nginx on loopback, wrk, and the
// probe as a child process (the way users run it).
import { spawn, spawnSync } from 'node:child_process';
import { startProbe as startTestProbe } from '../test/helpers/probe.js';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { ConnectionReport } from '../src/report/connections.js';
import type { DropReport } from '../src/report/drops.js';
import type { LatencyReport } from '../src/report/latency.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface Nginx {
  port: number;
  stop(): Promise<void>;
}

/** nginx with one worker answering a small 200 from memory on 127.0.0.1:port. */
export async function startNginx(port: number, workers = 1): Promise<Nginx> {
  const dir = mkdtempSync(path.join(tmpdir(), 'meshprobe-nginx-'));
  writeFileSync(
    path.join(dir, 'nginx.conf'),
    `
worker_processes ${workers};
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  keepalive_requests 1000000;
  server { listen 127.0.0.1:${port}; location / { return 200 "ok\\n"; } }
}
`,
  );
  const proc = spawn('nginx', ['-c', path.join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    await sleep(50);
    const r = spawnSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${port}/`], {
      encoding: 'utf8',
    });
    if (r.stdout === '200') break;
    if (proc.exitCode !== null) throw new Error(`nginx exited: ${readFileSync(path.join(dir, 'error.log'), 'utf8')}`);
  }
  return {
    port,
    async stop() {
      if (proc.exitCode === null) {
        proc.kill('SIGQUIT');
        await new Promise((r) => proc.once('exit', r));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** wrk's requests/s and latency (µs) for one run. */
export function wrk(url: string, seconds: number, threads = 1, connections = 32): { rps: number; requests: number } {
  const r = spawnSync('wrk', ['-t', String(threads), '-c', String(connections), '-d', `${seconds}s`, url], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
  const rps = Number(/Requests\/sec:\s*([\d.]+)/.exec(r.stdout)?.[1]);
  const requests = Number(/(\d+) requests in/.exec(r.stdout)?.[1]);
  if (!Number.isFinite(rps)) throw new Error(`cannot parse wrk output: ${r.stdout}`);
  return { rps, requests };
}

/** The report each probe command writes. */
export interface Reports {
  'latency-probe': LatencyReport;
  'connection-tracker': ConnectionReport;
  'packet-drop-probe': DropReport;
}
export type ProbeName = keyof Reports;

/** A probe command attached and measuring (test/helpers/probe.ts); stop() returns its report. */
export async function startProbe<N extends ProbeName>(
  name: N,
  args: string[],
  /** wrap: a command line the probe runs under (test/helpers/probe.ts), e.g. one that enters a cgroup */
  opts: { wrap?: string[] } = {},
): Promise<{ pid: number; stop(): Promise<Reports[N]> }> {
  const run = startTestProbe(name, ['--quiet', ...args], opts);
  await run.ready;
  return {
    pid: run.pid,
    async stop() {
      const exit = await run.stop('SIGINT');
      if (exit.code !== 0 || !exit.report) throw new Error(`${name} exited ${String(exit.code)}: ${exit.stderr}`);
      return reportOf(name, exit.report);
    },
  };
}

/** The parsed JSON report, once it says it is `name`'s: the rest is that probe's report type. */
function reportOf<N extends ProbeName>(name: N, report: unknown): Reports[N] {
  if (typeof report !== 'object' || report === null || !('probe' in report) || report.probe !== name)
    throw new Error(`${name} wrote a report that is not its own: ${JSON.stringify(report).slice(0, 200)}`);
  return report as Reports[N];
}

/** Runs fn with kernel.bpf_stats_enabled=1, restoring the previous value. */
export async function withBpfStats<T>(fn: () => Promise<T>): Promise<T> {
  const file = '/proc/sys/kernel/bpf_stats_enabled';
  const before = readFileSync(file, 'utf8').trim();
  writeFileSync(file, '1');
  try {
    return await fn();
  } finally {
    writeFileSync(file, before);
  }
}

export function freePort(): number {
  return 20000 + (process.pid % 20000);
}

/**
 * The machine is a shared VM whose speed drifts by 10-15 % over seconds:
 * many short rounds, alternating which half goes first, and the median of
 * the per-round ratios beside the ratio of the sums.
 */
export async function alternateRounds(
  rounds: number,
  without: () => number | Promise<number>,
  withProbe: () => Promise<number>,
) {
  const w: number[] = [];
  const wo: number[] = [];
  for (let i = 0; i < rounds; i++) {
    if (i % 2 === 0) {
      wo.push(await without());
      w.push(await withProbe());
    } else {
      w.push(await withProbe());
      wo.push(await without());
    }
  }
  const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
  const ratios = w.map((x, i) => x / wo[i]).sort((a, b) => a - b);
  return {
    without: wo,
    withProbe: w,
    ratio: sum(w) / sum(wo),
    median: (ratios[(rounds - 1) >> 1] + ratios[rounds >> 1]) / 2,
  };
}

/** The /proc/<pid>/fdinfo texts of a process's open files (files closed meanwhile left out). */
export function fdinfos(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${String(pid)}/fdinfo`)) {
    try {
      out.push(readFileSync(`/proc/${String(pid)}/fdinfo/${fd}`, 'utf8'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // closed since the listing
      throw e;
    }
  }
  return out;
}
