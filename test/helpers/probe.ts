// Runs a probe command (dist/src/cli/<name>.js) as a child process the way a
// user would, waits until it is attached, stops it with a signal or lets
// --duration end it, and returns its exit status, stderr and JSON report.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { onProcessExit } from './netns.js';
import { processes } from './proc.js';
import type { AfterHook } from './servers.js';
import { repoRoot } from './workload.js';

export function cliPath(name: string): string {
  return join(repoRoot, 'dist', 'src', 'cli', `${name}.js`);
}

/** Skips a test that needs root and BPF outside CI; under CI=true that is a failure instead. */
export function needsRoot(t: TestContext): boolean {
  if (process.getuid?.() === 0) return true;
  if (process.env.CI === 'true') throw new Error('this test needs root and BPF, and CI must run it');
  t.skip('needs root (BPF)');
  return false;
}

export interface ProbeRun<R = unknown> {
  proc: ChildProcess;
  pid: number;
  output: string;
  /** resolves once the probe says it is measuring */
  ready: Promise<void>;
  stderr(): string;
  /** what it wrote to stdout so far */
  stdoutSoFar(): string;
  /** sends `signal` (default SIGINT) and waits for the exit */
  stop(signal?: NodeJS.Signals): Promise<ProbeExit<R>>;
  exited: Promise<ProbeExit<R>>;
}

export interface ProbeExit<R = unknown> {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  stdout: string;
  /** the JSON report, parsed; its shape is the caller's to name (LatencyReport, ...) */
  report?: R;
}

const dirs: string[] = [];
const running = new Set<ChildProcess>();
process.on('exit', () => {
  // a failed assertion must not leave a probe attached: end ours by PID
  for (const p of running) {
    if (p.pid !== undefined && p.exitCode === null && p.signalCode === null) process.kill(p.pid, 'SIGKILL');
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A spawned child's PID; none means the spawn failed (its 'error' event says why). */
function pidOf(p: ChildProcess, what: string): number {
  assert.ok(p.pid !== undefined, `${what}: spawn failed, no PID`);
  return p.pid;
}

export function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'meshprobe-test-'));
  dirs.push(d);
  return d;
}

export function startProbe<R = unknown>(
  name: string,
  args: string[],
  /** wrap: a command line the probe runs under (e.g. setpriv ... --), its first word the program */
  opts: { output?: string; env?: NodeJS.ProcessEnv; wrap?: string[] } = {},
): ProbeRun<R> {
  const output = opts.output ?? join(tempDir(), 'report.json');
  const argv = [process.execPath, cliPath(name), '--output', output, ...args];
  const [file, ...rest] = [...(opts.wrap ?? []), ...argv];
  const proc = spawn(file, rest, {
    cwd: repoRoot,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const pid = pidOf(proc, name);
  running.add(proc);
  proc.on('exit', () => running.delete(proc));
  let err = '';
  let out = '';
  let readyResolve!: () => void;
  let readyReject!: (e: Error) => void;
  const ready = new Promise<void>((res, rej) => {
    readyResolve = res;
    readyReject = rej;
  });
  proc.stderr.on('data', (b: Buffer) => {
    err += b.toString();
    if (/measuring/.test(err)) readyResolve();
  });
  proc.stdout.on('data', (b: Buffer) => {
    out += b.toString();
  });
  const exited = new Promise<ProbeExit<R>>((resolve) => {
    proc.on('exit', (code, signal) => {
      // stdio may still hold data; give the streams a tick
      setImmediate(() => {
        let report: R | undefined;
        try {
          report = JSON.parse(readFileSync(output, 'utf8')) as R;
        } catch {
          report = undefined;
        }
        readyReject(
          new Error(`probe exited before it was ready (code ${String(code)}, signal ${String(signal)}): ${err.trim()}`),
        );
        resolve({ code, signal, stderr: err, stdout: out, report });
      });
    });
  });
  const timer = setTimeout(() => {
    readyReject(new Error(`probe not ready after 30 s: ${err}`));
  }, 30_000);
  ready
    .finally(() => {
      clearTimeout(timer);
    })
    .catch(() => undefined);
  return {
    proc,
    pid,
    output,
    ready,
    exited,
    stderr: () => err,
    stdoutSoFar: () => out,
    stop(signal: NodeJS.Signals = 'SIGINT') {
      if (proc.exitCode === null && proc.signalCode === null) process.kill(pid, signal);
      return exited;
    },
  };
}

/** Every process below pid (children, grandchildren, ...), from /proc. */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const p of processes()) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p.pid]);
  const out: number[] = [];
  const queue = [pid];
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    for (const c of children.get(next) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/**
 * Spawns a command that runs a probe below it (a shell pipeline, script(1))
 * in a process group of its own. When the test ends, or failing that this
 * process, the group and every process below the command are killed by PID
 * (script(1) puts its child in a session of its own, out of the group), so
 * that no probe stays attached whatever the test did.
 */
export function spawnGroup(t: AfterHook, file: string, args: string[]): ChildProcessWithoutNullStreams {
  const child = spawn(file, args, { cwd: repoRoot, stdio: 'pipe', detached: true });
  const pid = pidOf(child, file);
  const kill = () => {
    // the group id stays taken while a member lives; the tree is walked only while pid is still ours
    const running = child.exitCode === null && child.signalCode === null;
    for (const target of [-pid, ...(running ? descendants(pid) : [])]) {
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  };
  const unregister = onProcessExit(kill);
  t.after(() => {
    kill();
    unregister();
  });
  return child;
}

/** Runs a command to completion (for the bad-input tests). */
export function runCli(
  name: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; uid?: number; gid?: number } = {},
) {
  const r = spawnSync(process.execPath, [cliPath(name), ...args], {
    cwd: repoRoot,
    env: { ...process.env, ...opts.env },
    encoding: 'utf8',
    timeout: 60_000,
    uid: opts.uid,
    gid: opts.gid,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Our BPF programs currently loaded in the kernel (by bpftool), names only. */
export function loadedPrograms(prefix: string): string[] {
  const r = spawnSync('bpftool', ['-j', 'prog', 'list'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bpftool prog list failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { name?: string }[]).map((p) => p.name ?? '').filter((n) => n.startsWith(prefix));
}

/** |a - b| <= max(rel * b, abs) */
export function near(a: number, b: number, rel: number, abs: number): boolean {
  return Math.abs(a - b) <= Math.max(rel * Math.abs(b), abs);
}

/**
 * Waits until none of our programs with this prefix is loaded: the kernel frees a program once
 * its last fd and link are gone, after an RCU grace period. Returns what is still loaded after 5 s.
 */
export async function programsAfterExit(prefix: string): Promise<string[]> {
  let left = loadedPrograms(prefix);
  for (let i = 0; i < 50 && left.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    left = loadedPrograms(prefix);
  }
  return left;
}

/** Runs probe `name` with `args` around `traffic` (ready first, 200 ms after), SIGINT; asserts exit 0; the report. */
export async function reportDuring<R = unknown>(
  t: { after(fn: () => unknown): void },
  name: string,
  args: string[],
  traffic: () => Promise<unknown>,
): Promise<R> {
  const probe = startProbe<R>(name, args);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  await traffic();
  await new Promise((r) => setTimeout(r, 200));
  const exit = await probe.stop('SIGINT');
  if (exit.code !== 0) throw new Error(`${name} exited ${String(exit.code)}: ${exit.stderr}`);
  if (exit.report === undefined) throw new Error(`${name} wrote no readable report to ${probe.output}`);
  return exit.report;
}
