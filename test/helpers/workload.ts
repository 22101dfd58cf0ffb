// Helpers to drive test/tools/mpload (a ground-truth TCP client and a server
// that sleeps a known time) from tests. No shell is involved anywhere: every
// process is started with spawn(file, args).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ipBin, onProcessExit } from './netns.js';
import type { AfterHook } from './servers.js';

/** Repo root: this file is compiled to dist/test/helpers/workload.js. */
export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
export const mploadSource = join(repoRoot, 'test', 'tools', 'mpload.c');
export const mploadBinary = join(repoRoot, 'test', 'tools', 'bin', 'mpload');

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
}

export interface ServerSummary {
  requests: number;
  connections: number;
  max_active_connections: number;
  bad_requests: number;
  samples: number;
  /** processing time per request (µs): read of the request done -> just before write */
  processing_us: Percentiles & { p999: number; min: number; max: number; mean: number };
  /** keyed by requested sleep in µs */
  by_sleep: Record<string, Percentiles & { count: number; max: number }>;
  config: { spin_us: number; max_spinners: number };
}

export interface ClientResult {
  /** successful requests */
  requests: number;
  errors: number;
  connections: number;
  elapsed_s: number;
  rps: number;
  error_kinds: { connect: number; io: number; eof: number; timeout: number; mismatch: number };
  /** t0 just before write(request) -> t1 just after the read() with the first response bytes */
  latency_us: Percentiles & { p75: number; p95: number; p999: number; min: number; max: number; mean: number };
  /** keyed by requested sleep in µs, every sleep of the list present (count may be 0) */
  by_sleep: Record<string, Percentiles & { count: number; min: number; max: number; mean: number }>;
  /** only with newConn */
  connect_us?: Percentiles & { max: number };
  config: { requests: number; concurrency: number; new_conn: boolean; resp_len: number; rate: number; seed: number };
}

let built: Promise<string> | undefined;

/**
 * Compiles mpload into test/tools/bin (once per process; only when the binary
 * is missing or older than the source). Safe against concurrent test
 * processes: it compiles to a temporary name and renames. Returns the path.
 */
export function buildTools(): Promise<string> {
  built ??= (async () => {
    const srcM = statSync(mploadSource).mtimeMs;
    let binM = -1;
    try {
      binM = statSync(mploadBinary).mtimeMs;
    } catch {
      /* missing */
    }
    if (binM >= srcM) return mploadBinary;
    mkdirSync(join(repoRoot, 'test', 'tools', 'bin'), { recursive: true });
    const tmp = `${mploadBinary}.tmp.${process.pid}`;
    const { code, stderr } = await run(process.env.CC || 'cc', ['-O2', '-pthread', '-o', tmp, mploadSource]);
    if (code !== 0) {
      rmSync(tmp, { force: true });
      throw new Error(`compiling mpload failed (exit ${String(code)}):\n${stderr}`);
    }
    renameSync(tmp, mploadBinary);
    return mploadBinary;
  })();
  built.catch(() => {
    built = undefined; // allow a retry after fixing the cause
  });
  return built;
}

function run(file: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => {
      resolve({ code, stdout, stderr });
    });
  });
}

/** argv for running mpload with args, inside netns when given. */
function command(bin: string, args: string[], netns?: string): [string, string[]] {
  if (netns) return [ipBin(), ['netns', 'exec', netns, bin, ...args]];
  return [bin, args];
}

// Servers still running when the process exits (or dies of SIGINT/SIGTERM)
// are killed by PID, the one we started, so a failing test leaves nothing
// behind.
function trackServer(p: ChildProcess): void {
  const unregister = onProcessExit(() => {
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  });
  p.on('exit', unregister);
}

export interface ServerOptions {
  /** address to listen on: 127.0.0.1, ::1, 0.0.0.0, ::, or an address in netns */
  addr: string;
  /** 0 or omitted: ephemeral port */
  port?: number;
  /** network namespace to run in (via `ip netns exec`) */
  netns?: string;
  /** busy-wait the last N µs of each sleep (mpload default 150; 0 = pure clock_nanosleep) */
  spinUs?: number;
  /** at most this many requests busy-wait at once (mpload default 1) */
  maxSpinners?: number;
  /** the server stops by itself after this many seconds */
  durationS?: number;
  /** HTTP/1.1 framing (GET /mp/<sleep>/<len>/<seq>), so HTTP proxies can sit in between */
  http?: boolean;
  /** how long to wait for it to listen, default 10 s */
  readyTimeoutMs?: number;
}

export interface RunningServer {
  addr: string;
  port: number;
  /** PID of the mpload server process (`ip netns exec` execs, so the same in a netns) */
  pid: number;
  /** SIGTERM to that PID, wait for it to exit, and parse its JSON summary */
  stop(timeoutMs?: number): Promise<ServerSummary>;
  /** resolves when the process exits, whoever stopped it */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const bin = await buildTools();
  const dir = mkdtempSync(join(tmpdir(), 'mpload-'));
  const readyFile = join(dir, 'ready');
  const args = ['server', '--listen', opts.addr, '--port', String(opts.port ?? 0), '--ready-file', readyFile];
  if (opts.spinUs !== undefined) args.push('--spin-us', String(opts.spinUs));
  if (opts.maxSpinners !== undefined) args.push('--max-spinners', String(opts.maxSpinners));
  if (opts.durationS !== undefined) args.push('--duration', String(opts.durationS));
  if (opts.http) args.push('--http');
  const [file, argv] = command(bin, args, opts.netns);
  const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  trackServer(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>(
    (resolve) => {
      child.on('error', (e) => {
        stderr += `\nspawn error: ${e.message}`;
      });
      child.on('close', (code, signal) => {
        resolve({ code, signal, stdout, stderr });
      });
    },
  );

  let exitedEarly = false as boolean; // set when `exited` settles, read after awaits
  void exited.then(() => (exitedEarly = true));
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 10_000);
  let port: number;
  try {
    for (;;) {
      try {
        const txt = readFileSync(readyFile, 'utf8').trim();
        if (txt) {
          port = Number(txt);
          break;
        }
      } catch {
        /* not yet */
      }
      if (exitedEarly) {
        const r = await exited;
        throw new Error(
          `mpload server exited before listening (code ${String(r.code)}, signal ${String(r.signal)}): ${r.stderr.trim()}`,
        );
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`mpload server did not listen within ${opts.readyTimeoutMs ?? 10_000} ms: ${stderr.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (!child.pid) throw new Error('mpload server has no pid');
  const pid = child.pid;

  let stopping: Promise<ServerSummary> | undefined;
  return {
    addr: opts.addr,
    port,
    pid,
    exited,
    stop(timeoutMs = 10_000): Promise<ServerSummary> {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) process.kill(pid, 'SIGTERM');
        const timer = setTimeout(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        }, timeoutMs);
        const r = await exited;
        clearTimeout(timer);
        if (r.code !== 0) {
          throw new Error(
            `mpload server exited with code ${String(r.code)} signal ${String(r.signal)}: ${r.stderr.trim()}`,
          );
        }
        try {
          return JSON.parse(r.stdout) as ServerSummary;
        } catch {
          throw new Error(`mpload server printed no JSON summary: ${JSON.stringify(r.stdout)} ${r.stderr.trim()}`);
        }
      })();
      return stopping;
    },
  };
}

/**
 * startServer() for a test: on 127.0.0.1 unless told otherwise, stopped when
 * the test ends (t.after). Give maxSpinners the client's concurrency when the
 * test compares latencies with the sleeps: every concurrent sleeper may then
 * busy-wait its last 150 µs, and the sleeps are exact on a busy machine too.
 */
export async function startTestServer(t: AfterHook, opts: Partial<ServerOptions> = {}): Promise<RunningServer> {
  await buildTools();
  const s = await startServer({ ...opts, addr: opts.addr ?? '127.0.0.1' });
  t.after(() => s.stop().catch(() => undefined));
  return s;
}

export interface ClientOptions {
  addr: string;
  port: number;
  requests: number;
  /** threads, each with its own connection (default 1) */
  concurrency?: number;
  /** sleeps in µs the server is asked for (default [0]) */
  sleeps?: number[];
  /** weights of sleeps (default all equal) */
  weights?: number[];
  /** a new connection per request (connect, one request, close) */
  newConn?: boolean;
  /** HTTP/1.1 framing: the server must run with http too */
  http?: boolean;
  /** response size in bytes, >= 16 (default 64) */
  respLen?: number;
  /** open-loop pacing in requests/s across all threads (default closed loop) */
  rate?: number;
  /** PRNG seed for the sleep of each request (default 42) */
  seed?: number;
  /** per-socket I/O timeout (default 10000 ms) */
  ioTimeoutMs?: number;
  /** write every latency (ns), one per line, in request order */
  samplesFile?: string;
  /** run inside this network namespace */
  netns?: string;
  /** the mpload binary to run, e.g. a copy under another name (its comm) */
  bin?: string;
  /** resolve even when some requests failed (default: reject, with .result) */
  allowErrors?: boolean;
  /** kill the client after this long (default 300 s) */
  timeoutMs?: number;
}

export class ClientError extends Error {
  constructor(
    message: string,
    readonly result?: ClientResult,
    readonly stderr?: string,
  ) {
    super(message);
  }
}

export async function runClient(opts: ClientOptions): Promise<ClientResult> {
  const bin = opts.bin ?? (await buildTools());
  const args = [
    'client',
    '--connect',
    opts.addr,
    '--port',
    String(opts.port),
    '--requests',
    String(opts.requests),
    '--concurrency',
    String(opts.concurrency ?? 1),
  ];
  if (opts.sleeps) args.push('--sleeps', opts.sleeps.join(','));
  if (opts.weights) args.push('--weights', opts.weights.join(','));
  if (opts.newConn) args.push('--new-conn');
  if (opts.http) args.push('--http');
  if (opts.respLen !== undefined) args.push('--resp-len', String(opts.respLen));
  if (opts.rate !== undefined) args.push('--rate', String(opts.rate));
  if (opts.seed !== undefined) args.push('--seed', String(opts.seed));
  if (opts.ioTimeoutMs !== undefined) args.push('--timeout-ms', String(opts.ioTimeoutMs));
  if (opts.samplesFile) args.push('--samples', opts.samplesFile);
  const [file, argv] = command(bin, args, opts.netns);

  const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timeoutMs = opts.timeoutMs ?? 300_000;
  let timedOut = false as boolean; // set by the timer, read after the await
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
    (resolve, reject) => {
      child.on('error', reject);
      child.on('close', (c, s) => {
        resolve({ code: c, signal: s });
      });
    },
  ).finally(() => {
    clearTimeout(timer);
  });

  if (timedOut) throw new ClientError(`mpload client killed after ${timeoutMs} ms`, undefined, stderr);
  if (code !== 0 && code !== 1) {
    throw new ClientError(
      `mpload client failed (code ${String(code)}, signal ${String(signal)}): ${stderr.trim()}`,
      undefined,
      stderr,
    );
  }
  let result: ClientResult;
  try {
    result = JSON.parse(stdout) as ClientResult;
  } catch {
    throw new ClientError(
      `mpload client printed no JSON: ${JSON.stringify(stdout)} ${stderr.trim()}`,
      undefined,
      stderr,
    );
  }
  if (result.errors > 0 && !opts.allowErrors) {
    throw new ClientError(
      `mpload client: ${result.errors} of ${opts.requests} requests failed ${JSON.stringify(result.error_kinds)}`,
      result,
      stderr,
    );
  }
  return result;
}

/** Reads a --samples file: latencies in ns, in request order. */
export function readSamples(file: string): number[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map(Number);
}

/**
 * The sleep (µs) mpload's client picks for request i (0-based), exactly as the
 * C code does: splitmix64 output i for the seed, modulo the weight sum.
 * Use it to predict by_sleep counts for a seed.
 */
export function plannedSleeps(requests: number, sleeps: number[], weights?: number[], seed = 42): number[] {
  const w = (weights ?? sleeps.map(() => 1)).map(BigInt);
  const total = w.reduce((a, b) => a + b, 0n);
  const M = (1n << 64n) - 1n;
  const out: number[] = [];
  for (let i = 0n; i < BigInt(requests); i++) {
    let z = (BigInt(seed) + (i + 1n) * 0x9e3779b97f4a7c15n) & M;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
    z ^= z >> 31n;
    let r = z % total;
    let b = 0;
    while (r >= w[b]) r -= w[b++];
    out.push(sleeps[b]);
  }
  return out;
}

/** Counts of plannedSleeps by sleep, keyed like by_sleep. */
export function plannedCounts(
  requests: number,
  sleeps: number[],
  weights?: number[],
  seed = 42,
): Record<string, number> {
  const counts: Record<string, number> = Object.fromEntries(sleeps.map((s) => [String(s), 0]));
  for (const s of plannedSleeps(requests, sleeps, weights, seed)) counts[String(s)]++;
  return counts;
}

/** true when the process runs as root (netns tests need it). */
export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}
