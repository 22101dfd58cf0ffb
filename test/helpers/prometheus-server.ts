// A real Prometheus server (/usr/bin/prometheus, Debian package; scripts/
// setup.sh installs it) scraping given targets, for exporter tests. It runs
// on a free loopback port with its own config and TSDB in a temporary
// directory; it is ended by its PID (never by name) when the test ends or,
// failing that, when this process exits, and the directory is removed.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { onProcessExit } from './netns.js';
import { freePort } from './servers.js';

export const PROMETHEUS_BIN = '/usr/bin/prometheus';
export const PROMTOOL_BIN = '/usr/bin/promtool';

export interface PromSample {
  metric: Record<string, string>;
  /** [unix seconds, value as Prometheus prints it] */
  value: [number, string];
}

export interface PrometheusServer {
  url: string;
  port: number;
  pid: number;
  dir: string;
  /** GET /api/v1/query; the vector's samples (a scalar comes back as one sample without labels) */
  query(expr: string, time?: Date | number): Promise<PromSample[]>;
  /** Polls query(expr) until ok(result) (default: non-empty), or throws after timeoutMs with the last result. */
  waitFor(expr: string, ok?: (r: PromSample[]) => boolean, timeoutMs?: number): Promise<PromSample[]>;
  /** The server's log so far (stderr). */
  log(): string;
  /** SIGTERM by PID, SIGKILL after 5 s, then removes the directory. Safe to call twice. */
  stop(): Promise<void>;
}

export interface PrometheusOptions {
  /** host:port of each target */
  targets: string[];
  job?: string;
  /** default "1s" */
  scrapeInterval?: string;
  metricsPath?: string;
}

/** Why Prometheus cannot run here, or undefined when it can. */
export function prometheusMissing(): string | undefined {
  for (const b of [PROMETHEUS_BIN, PROMTOOL_BIN]) {
    if (!existsSync(b)) return `${b} is missing: run scripts/setup.sh (Debian package prometheus)`;
  }
  return undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts Prometheus (retrying on a port taken in between) and waits until /-/ready. */
export async function startPrometheus(t: TestContext | undefined, opts: PrometheusOptions): Promise<PrometheusServer> {
  const missing = prometheusMissing();
  if (missing) throw new Error(missing);
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const server = await startOnce(opts);
      t?.after(() => server.stop());
      return server;
    } catch (err) {
      lastErr = err;
      if (!/address already in use/i.test(String(err))) break;
    }
  }
  throw lastErr;
}

async function startOnce(opts: PrometheusOptions): Promise<PrometheusServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'meshprobe-prom-'));
  const interval = opts.scrapeInterval ?? '1s';
  // YAML: every string quoted as JSON (a subset of YAML)
  writeFileSync(
    join(dir, 'prometheus.yml'),
    [
      'global:',
      `  scrape_interval: ${interval}`,
      `  scrape_timeout: ${interval}`,
      `  evaluation_interval: ${interval}`,
      'scrape_configs:',
      `  - job_name: ${JSON.stringify(opts.job ?? 'meshprobe')}`,
      `    metrics_path: ${JSON.stringify(opts.metricsPath ?? '/metrics')}`,
      '    static_configs:',
      `      - targets: [${opts.targets.map((x) => JSON.stringify(x)).join(', ')}]`,
      '',
    ].join('\n'),
  );
  const child = spawn(
    PROMETHEUS_BIN,
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=info',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => {
    stderr += d;
    if (stderr.length > 200_000) stderr = stderr.slice(-100_000);
  });
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      resolve();
    });
  });
  const pid = child.pid;
  if (pid === undefined) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`cannot start ${PROMETHEUS_BIN}`);
  }
  const unregister = onProcessExit(() => {
    if (!exited) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      // the directory of a process that may still be writing: wait for it briefly
      spawnSync('sh', [
        '-c',
        `for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 ${pid} 2>/dev/null || exit 0; sleep 0.1; done`,
      ]);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      if (!exited) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          /* gone */
        }
        const timer = setTimeout(() => {
          try {
            if (!exited) process.kill(pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }, 5000);
        await exitPromise;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
      unregister();
    })());

  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(
        `prometheus exited (${String(exited.code ?? exited.signal)}) before it was ready:\n${stderr.slice(-4000)}`,
      );
    }
    try {
      const r = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1000) });
      await r.arrayBuffer();
      if (r.status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`prometheus not ready after 20 s:\n${stderr.slice(-4000)}`);
    }
    await sleep(100);
  }

  async function query(expr: string, time?: Date | number): Promise<PromSample[]> {
    const params = new URLSearchParams({ query: expr });
    if (time !== undefined) params.set('time', String((time instanceof Date ? time.getTime() : time) / 1000));
    const r = await fetch(`${url}/api/v1/query?${params}`, { signal: AbortSignal.timeout(10_000) });
    const body = (await r.json()) as {
      status: string;
      error?: string;
      errorType?: string;
      data?: { resultType: string; result: unknown };
    };
    if (body.status !== 'success' || !body.data) {
      throw new Error(`prometheus query ${expr}: ${body.errorType ?? r.status}: ${body.error ?? 'no data'}`);
    }
    const { resultType, result } = body.data;
    if (resultType === 'vector') {
      return (result as { metric: Record<string, string>; value: [number, string] }[]).map((s) => ({
        metric: s.metric,
        value: s.value,
      }));
    }
    if (resultType === 'scalar') return [{ metric: {}, value: result as [number, string] }];
    throw new Error(`prometheus query ${expr}: unexpected result type ${resultType}`);
  }

  async function waitFor(
    expr: string,
    ok: (r: PromSample[]) => boolean = (r) => r.length > 0,
    timeoutMs = 15_000,
  ): Promise<PromSample[]> {
    const end = Date.now() + timeoutMs;
    let last: PromSample[];
    for (;;) {
      last = await query(expr);
      if (ok(last)) return last;
      if (exited) throw new Error(`prometheus exited while waiting for ${expr}:\n${stderr.slice(-4000)}`);
      if (Date.now() > end) {
        throw new Error(
          `prometheus: ${expr} not as expected after ${timeoutMs} ms; last result ${JSON.stringify(last)}`,
        );
      }
      await sleep(200);
    }
  }

  return { url, port, pid, dir, query, waitFor, log: () => stderr, stop };
}
