// Real exporter peers for tests, started from the Debian packages (see
// scripts/setup.sh): each on free loopback ports, with its data in a fresh
// temp dir, ended by the PID we started (SIGTERM, then SIGKILL) from the
// test's after() hook or, whatever happens, at process exit. No shell; no
// root needed.
//
// Sections: common plumbing, then one starter per server:
//   startVictoriaMetrics()  /usr/bin/victoria-metrics
//   startInfluxdb1()        /usr/bin/influxd (1.x)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onProcessExit } from './netns.js';

// ------------------------------------------------------------ common plumbing

/** What node:test's TestContext / SuiteContext offers for cleanup (t.after). */
export interface AfterHook {
  after(fn: () => unknown): void;
}

export interface ServerProcess {
  /** http://127.0.0.1:PORT */
  url: string;
  port: number;
  pid: number;
  /** the temp dir holding its data (removed by stop()) */
  dir: string;
  /** SIGTERM by PID, SIGKILL after timeoutMs; removes the temp dir unless keepData. Safe to call twice. */
  stop(opts?: { timeoutMs?: number; keepData?: boolean }): Promise<void>;
  /** SIGSTOP / SIGCONT by PID: a server that accepts connections but never answers */
  pause(): void;
  resume(): void;
  /** stderr and stdout so far (for failure messages) */
  output(): string;
}

/** A port that was free on 127.0.0.1 a moment ago (the kernel's choice). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => {
        if (port) resolve(port);
        else reject(new Error('no port'));
      });
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** GET url; true on a 2xx answer within timeoutMs. */
async function answers(url: string, timeoutMs = 1000): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}

interface SpawnSpec {
  name: string;
  bin: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  port: number;
  dir: string;
  /** path polled until it answers 2xx */
  readyPath: string;
  readyTimeoutMs: number;
  /** also remove the temp dir at exit / stop (false when the caller owns it) */
  ownsDir: boolean;
}

/** Spawns, tracks for exit cleanup, waits until readyPath answers. */
async function spawnServer(spec: SpawnSpec, t?: AfterHook): Promise<ServerProcess> {
  if (!existsSync(spec.bin)) {
    throw new Error(`${spec.bin} is missing: run scripts/setup.sh (Debian package ${spec.name})`);
  }
  const child = spawn(spec.bin, spec.args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: spec.env ?? process.env,
  });
  let out = '';
  const keep = (d: string) => {
    out += d;
    if (out.length > 64_000) out = out.slice(-32_000);
  };
  child.stdout.setEncoding('utf8').on('data', keep);
  child.stderr.setEncoding('utf8').on('data', keep);
  let exited = false as boolean; // set by the child's events, read after awaits
  const exitP = new Promise<void>((resolve) => {
    child.on('error', (e) => {
      keep(`\nspawn error: ${e.message}`);
      exited = true;
      resolve();
    });
    child.on('exit', () => {
      exited = true;
      resolve();
    });
  });
  const removeDir = () => {
    if (spec.ownsDir) rmSync(spec.dir, { recursive: true, force: true });
  };
  const unregister = onProcessExit(() => {
    if (!exited && child.pid) {
      try {
        process.kill(child.pid, 'SIGCONT');
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    removeDir();
  });

  let stopping: Promise<void> | undefined;
  const stop = (opts: { timeoutMs?: number; keepData?: boolean } = {}): Promise<void> => {
    stopping ??= (async () => {
      if (!exited && child.pid) {
        try {
          process.kill(child.pid, 'SIGCONT'); // a paused server cannot handle SIGTERM
          process.kill(child.pid, 'SIGTERM');
        } catch {
          /* gone */
        }
        const timer = setTimeout(() => {
          if (!exited && child.pid) {
            try {
              process.kill(child.pid, 'SIGKILL');
            } catch {
              /* gone */
            }
          }
        }, opts.timeoutMs ?? 5000);
        await exitP;
        clearTimeout(timer);
      }
      unregister();
      if (!opts.keepData) removeDir();
    })();
    return stopping;
  };

  const url = `http://127.0.0.1:${spec.port}`;
  const deadline = Date.now() + spec.readyTimeoutMs;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`${spec.name} exited before it was ready: ${out.trim().slice(-2000)}`);
    }
    if (await answers(url + spec.readyPath, 500)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `${spec.name} did not answer ${spec.readyPath} within ${spec.readyTimeoutMs} ms: ${out.trim().slice(-2000)}`,
      );
    }
    await sleep(50);
  }
  assert.ok(child.pid !== undefined, `${spec.name} answers but has no PID`);
  const pid = child.pid;
  t?.after(() => stop());
  return {
    url,
    port: spec.port,
    pid,
    dir: spec.dir,
    stop,
    pause: () => {
      if (!exited) process.kill(pid, 'SIGSTOP');
    },
    resume: () => {
      if (!exited) process.kill(pid, 'SIGCONT');
    },
    output: () => out,
  };
}

/** Retries start() with a new free port when the chosen one was taken meanwhile. */
async function withFreshPort<T>(start: () => Promise<T>, tries = 3): Promise<T> {
  let last: unknown;
  for (let i = 0; i < tries; i++) {
    try {
      return await start();
    } catch (e) {
      last = e;
      if (!/address already in use|bind/i.test(String(e))) throw e;
    }
  }
  throw last;
}

// ------------------------------------------------------------ VictoriaMetrics

export const VICTORIA_METRICS_BIN = '/usr/bin/victoria-metrics';

export interface VictoriaMetrics extends ServerProcess {
  /** POST /internal/force_flush: makes just-written samples searchable */
  flush(): Promise<void>;
  /**
   * GET /api/v1/export for a series selector (after flush()): one entry per
   * series, timestamps in ms.
   */
  exportSeries(match: string): Promise<VmSeries[]>;
  /**
   * flush() and exportSeries() until ok(series) or timeoutMs (default 10 s),
   * then the last answer: samples written a moment ago may take a second or
   * two to become searchable, even after a flush.
   */
  exportWhen(match: string, ok: (series: VmSeries[]) => boolean, timeoutMs?: number): Promise<VmSeries[]>;
}

export interface VmSeries {
  metric: Record<string, string>;
  values: number[];
  timestamps: number[];
}

export interface VictoriaMetricsOptions {
  /** reuse a port (e.g. to bring a stopped server back); default: a free one */
  port?: number;
  /** reuse a data dir (with port, to restart the same server); default: a new temp dir */
  dataDir?: string;
  readyTimeoutMs?: number;
}

/**
 * victoria-metrics (1.79) on 127.0.0.1:PORT with its storage in a temp dir.
 * Accepts InfluxDB line protocol on /write and /api/v2/write (`m f=v` becomes
 * metric m_f, tags become labels). Fresh samples need flush() before they
 * show up in /api/v1/export; -search.latencyOffset=0 and
 * -search.disableCache make queries see them at once as well.
 */
export async function startVictoriaMetrics(t?: AfterHook, opts: VictoriaMetricsOptions = {}): Promise<VictoriaMetrics> {
  return withFreshPort(async () => {
    const port = opts.port ?? (await freePort());
    const dir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'mp-vm-'));
    const srv = await spawnServer(
      {
        name: 'victoria-metrics',
        bin: VICTORIA_METRICS_BIN,
        args: [
          `-httpListenAddr=127.0.0.1:${port}`,
          `-storageDataPath=${dir}`,
          '-retentionPeriod=100y',
          '-search.latencyOffset=0',
          '-search.disableCache',
          '-loggerLevel=ERROR',
          '-http.shutdownDelay=0s',
        ],
        port,
        dir,
        readyPath: '/health',
        readyTimeoutMs: opts.readyTimeoutMs ?? 15_000,
        ownsDir: opts.dataDir === undefined,
      },
      t,
    );
    const flush = async () => {
      const res = await fetch(`${srv.url}/internal/force_flush`, { signal: AbortSignal.timeout(5000) });
      await res.arrayBuffer();
      if (!res.ok) throw new Error(`victoria-metrics force_flush: HTTP ${res.status}`);
    };
    const exportSeries = async (match: string): Promise<VmSeries[]> => {
      const q = new URLSearchParams({ 'match[]': match });
      const res = await fetch(`${srv.url}/api/v1/export?${q}`, { signal: AbortSignal.timeout(5000) });
      const body = await res.text();
      if (!res.ok) throw new Error(`victoria-metrics export: HTTP ${res.status}: ${body}`);
      return body
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as VmSeries);
    };
    const exportWhen = async (
      match: string,
      ok: (series: VmSeries[]) => boolean,
      timeoutMs = 10_000,
    ): Promise<VmSeries[]> => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        await flush();
        const series = await exportSeries(match);
        if (ok(series) || Date.now() > deadline) return series;
        await sleep(200);
      }
    };
    return { ...srv, flush, exportSeries, exportWhen };
  });
}

// ------------------------------------------------------------ InfluxDB 1.x

export const INFLUXD_BIN = '/usr/bin/influxd';

export interface Influxdb1 extends ServerProcess {
  /** POST /query?q=...; throws on an HTTP error or a statement error */
  query(q: string, db?: string): Promise<InfluxQueryResult>;
  createDatabase(name: string): Promise<void>;
}

export interface InfluxSeries {
  name: string;
  tags?: Record<string, string>;
  columns: string[];
  values: unknown[][];
}
export interface InfluxQueryResult {
  results: { statement_id: number; series?: InfluxSeries[]; error?: string }[];
}

/** The first series of a result's first statement; fails the test when it has none. */
export function firstSeries(r: InfluxQueryResult): InfluxSeries {
  const s = r.results[0].series?.[0];
  assert.ok(s, `no series in ${JSON.stringify(r)}`);
  return s;
}

/**
 * influxd 1.x with a generated config: meta/data/wal in a temp dir, HTTP on
 * 127.0.0.1:PORT, RPC (backup/restore) on 127.0.0.1:PORT2, no reporting,
 * no _internal monitor database.
 */
export async function startInfluxdb1(t?: AfterHook, opts: { readyTimeoutMs?: number } = {}): Promise<Influxdb1> {
  return withFreshPort(async () => {
    const port = await freePort();
    let rpcPort = await freePort();
    while (rpcPort === port) rpcPort = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'mp-influxdb1-'));
    const conf = join(dir, 'influxdb.conf');
    writeFileSync(
      conf,
      [
        'reporting-disabled = true',
        `bind-address = "127.0.0.1:${rpcPort}"`,
        '[meta]',
        `  dir = "${join(dir, 'meta')}"`,
        '  logging-enabled = false',
        '[data]',
        `  dir = "${join(dir, 'data')}"`,
        `  wal-dir = "${join(dir, 'wal')}"`,
        '  wal-fsync-delay = "0s"',
        '  query-log-enabled = false',
        '[monitor]',
        '  store-enabled = false',
        '[subscriber]',
        '  enabled = false',
        '[continuous_queries]',
        '  enabled = false',
        '[retention]',
        '  enabled = false',
        '[http]',
        '  enabled = true',
        `  bind-address = "127.0.0.1:${port}"`,
        '  auth-enabled = false',
        '  log-enabled = false',
        '  pprof-enabled = false',
        '  unix-socket-enabled = false',
        '[logging]',
        '  level = "warn"',
        '  suppress-logo = true',
        '',
      ].join('\n'),
    );
    const srv = await spawnServer(
      {
        name: 'influxdb',
        bin: INFLUXD_BIN,
        args: ['-config', conf],
        env: { ...process.env, HOME: dir },
        port,
        dir,
        readyPath: '/ping',
        readyTimeoutMs: opts.readyTimeoutMs ?? 15_000,
        ownsDir: true,
      },
      t,
    );
    const query = async (q: string, db?: string): Promise<InfluxQueryResult> => {
      const params = new URLSearchParams({ q, epoch: 'ns' });
      if (db) params.set('db', db);
      const res = await fetch(`${srv.url}/query`, {
        method: 'POST',
        body: params,
        signal: AbortSignal.timeout(5000),
      });
      const body = await res.text();
      if (!res.ok) throw new Error(`influxdb query ${JSON.stringify(q)}: HTTP ${res.status}: ${body}`);
      const r = JSON.parse(body) as InfluxQueryResult;
      const err = r.results.find((x) => x.error)?.error;
      if (err) throw new Error(`influxdb query ${JSON.stringify(q)}: ${err}`);
      return r;
    };
    const createDatabase = async (name: string) => {
      await query(`CREATE DATABASE "${name.replace(/["\\]/g, '\\$&')}"`);
    };
    return { ...srv, query, createDatabase };
  });
}
