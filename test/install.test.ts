// Installing like a system tool: the packed tarball, installed with `npm install -g`, puts the
// five commands on PATH and carries everything a run needs (BPF objects, addon, Wasm); and
// `npx latency-probe` run before the build says how to build instead of leaving npx's cache
// without the commands (it links the checked-in bin/ files, which exist before any build).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { needsRoot, tempDir } from './helpers/probe.js';
import { repoRoot, runClient, startTestServer } from './helpers/workload.js';
import type { LatencyReport } from '../src/report/latency.js';

const COMMANDS = ['latency-probe', 'connection-tracker', 'packet-drop-probe', 'analyze-latency', 'generate-report'];

function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 180_000, ...opts, env: { ...process.env, ...opts.env } });
  if (r.error) throw r.error;
  return r;
}

test('npx before the build: a one-line "not built" and exit 1; after it, the same npx cache runs the command', () => {
  const dir = tempDir();
  const project = join(dir, 'meshprobe');
  mkdirSync(project);
  copyFileSync(join(repoRoot, 'package.json'), join(project, 'package.json'));
  cpSync(join(repoRoot, 'bin'), join(project, 'bin'), { recursive: true });
  // npx's own cache, so that what an earlier run left there cannot decide this one
  const env = { npm_config_cache: join(dir, 'npm-cache'), npm_config_update_notifier: 'false' };
  const before = run('npx', ['--no-install', 'latency-probe', '--help'], { cwd: project, env });
  assert.equal(before.status, 1, before.stdout + before.stderr);
  const lines = before.stderr.trim().split('\n');
  assert.equal(lines.length, 1, before.stderr);
  assert.match(lines[0], /^latency-probe: meshprobe is not built in .*: run npm run build there/);
  // the build (here: this checkout's) appears; nothing else is done to npx's cache
  symlinkSync(join(repoRoot, 'dist'), join(project, 'dist'));
  const after = run('npx', ['--no-install', 'latency-probe', '--help'], { cwd: project, env });
  assert.equal(after.status, 0, after.stderr);
  assert.match(after.stdout, /Usage: latency-probe/);
});

test('npm pack + npm install -g: the five commands on PATH, and a real run from the installed copy', async (t) => {
  if (!needsRoot(t)) return;
  const dir = tempDir();
  // the build is current (the test run built it); pack what `files` lists, without re-running prepack
  const pack = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: repoRoot });
  assert.equal(pack.status, 0, pack.stderr);
  const [info] = JSON.parse(pack.stdout) as { filename: string; files: { path: string }[] }[];
  const packed = new Set(info.files.map((f) => f.path));
  for (const f of [
    'bin/latency-probe.js',
    'dist/src/cli/latency-probe.js',
    'build/bpf/latency.bpf.o',
    'build/bpf/drops.bpf.o',
    'build/meshprobe.wasm',
    'native/build/Release/meshprobe_native.node',
    'deploy/systemd/meshprobe@.service',
  ]) {
    assert.ok(packed.has(f), `the tarball holds ${f}`);
  }
  assert.ok(![...packed].some((f) => f.startsWith('test/') || f.startsWith('dist/test/')), 'no tests in the tarball');

  const prefix = join(dir, 'prefix');
  const install = run(
    'npm',
    ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(dir, info.filename)],
    { cwd: dir },
  );
  assert.equal(install.status, 0, install.stderr);
  const binDir = join(prefix, 'bin');
  for (const c of COMMANDS) {
    assert.ok(existsSync(join(binDir, c)), `${c} installed in ${binDir}`);
    const help = run(c, ['--help'], { env: { PATH: `${binDir}:${process.env.PATH ?? ''}` } });
    assert.equal(help.status, 0, `${c} --help: ${help.stderr}`);
  }

  // the installed copy measures, with its own addon, objects and Wasm (not this checkout's)
  const server = await startTestServer(t);
  const output = join(dir, 'report.json');
  const proc = spawn(join(binDir, 'latency-probe'), ['--filter', `port=${server.port}`, '--output', output], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const pid = proc.pid;
  assert.ok(pid !== undefined, 'started');
  t.after(() => {
    if (proc.exitCode === null && proc.signalCode === null) process.kill(pid, 'SIGKILL');
  });
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => {
    proc.on('exit', (code) => {
      resolve(code);
    });
  });
  await new Promise<void>((resolve, reject) => {
    proc.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
      if (stderr.includes('measuring')) resolve();
    });
    void exited.then(() => {
      reject(new Error(`exited before measuring: ${stderr}`));
    });
  });
  const installed = join(prefix, 'lib', 'node_modules', 'meshprobe');
  assert.match(
    readFileSync(`/proc/${pid}/maps`, 'utf8'),
    new RegExp(`${installed}/native/build/Release/meshprobe_native.node`),
  );
  const client = await runClient({ addr: '127.0.0.1', port: server.port, requests: 100 });
  await new Promise((r) => setTimeout(r, 300));
  process.kill(pid, 'SIGTERM');
  assert.equal(await exited, 0, stderr);
  const report = JSON.parse(readFileSync(output, 'utf8')) as LatencyReport;
  assert.equal(report.metrics.client.total_requests, client.requests);
});
