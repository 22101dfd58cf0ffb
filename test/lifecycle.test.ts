// A probe left running must stop in order whatever ends it: a second and a third SIGTERM while it
// stops still get the report written; and it never outlives the command the user started, run
// through npx (npm → sh → node) or a shell wrapper, when only that command's PID is signalled
// (a supervisor's SIGTERM, or its SIGKILL).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { needsRoot, programsAfterExit, startProbe, tempDir } from './helpers/probe.js';
import { onProcessExit } from './helpers/netns.js';
import { processes } from './helpers/proc.js';
import { repoRoot } from './helpers/workload.js';
import type { LatencyReport } from '../src/report/latency.js';

/** Whether `pid` is still running (not a zombie). */
function alive(pid: number): boolean {
  return processes().some((p) => p.pid === pid && p.state !== 'Z' && p.state !== 'X');
}

/** Every descendant of `pid`, now. */
function descendants(pid: number): number[] {
  const all = processes();
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of all.filter((x) => x.ppid === p)) {
      out.push(c.pid);
      walk(c.pid);
    }
  };
  walk(pid);
  return out;
}

/** The node process running the probe's command line among `pids`. */
function probeNode(pids: number[]): number | undefined {
  return pids.find((p) => {
    try {
      const argv = readFileSync(`/proc/${String(p)}/cmdline`, 'utf8').split('\0');
      // node .../bin/latency-probe.js, or npx's link to it: node .../.bin/latency-probe
      return /(^|\/)node$/.test(argv[0]) && argv.some((a) => /(^|\/)latency-probe(\.js)?$/.test(a));
    } catch {
      return false;
    }
  });
}

/** Starts `argv` as the user's command, in a process group of its own, as a terminal or supervisor would. */
function startCommand(
  t: { after(fn: () => unknown): void },
  argv: string[],
): { proc: ChildProcess; stderr: () => string } {
  const [file, ...args] = argv;
  const proc = spawn(file, args, { cwd: repoRoot, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (b: Buffer) => {
    err += b.toString();
  });
  // whatever is left of the group at the end (a failed assertion), by the group's PID
  const kill = () => {
    const pid = proc.pid;
    if (pid === undefined) return;
    for (const p of processes().filter((x) => x.pgrp === pid)) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  };
  const unregister = onProcessExit(kill);
  t.after(() => {
    kill();
    unregister();
  });
  return { proc, stderr: () => err };
}

async function until(what: string, cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(50);
  }
}

/** An InfluxDB that answers the start-up checks, then never answers a write: the probe's stop waits for it. */
async function hangingInflux(t: { after(fn: () => unknown): void }): Promise<string> {
  const hung: ServerResponse[] = [];
  const srv = createServer((req, res) => {
    let body = '';
    req.on('data', (b: Buffer) => (body += b.toString()));
    req.on('end', () => {
      if (req.url === '/ping' || body === '') {
        res.writeHead(204).end();
      } else {
        hung.push(res); // never answered
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => {
    for (const r of hung) r.destroy();
    srv.closeAllConnections();
    srv.close();
  });
  const a = srv.address();
  assert.ok(a && typeof a === 'object');
  return `http://127.0.0.1:${String(a.port)}`;
}

test('a second and a third SIGTERM while stopping: the report is still written, exit 0; the third stops the wait', async (t) => {
  if (!needsRoot(t)) return;
  const url = await hangingInflux(t);
  for (const signals of [2, 3]) {
    const probe = startProbe<LatencyReport>('latency-probe', [
      ...['--filter', 'port=1', '--format', 'influx', '--url', url, '--db', 'x', '--aggregate-interval', '300ms'],
    ]);
    t.after(() => probe.stop('SIGKILL'));
    await probe.ready;
    await sleep(700); // a write is pending, never answered
    const t0 = Date.now();
    for (let i = 0; i < signals; i++) {
      process.kill(probe.pid, 'SIGTERM'); // apart: a signal that is still pending takes in the next one
      await sleep(300);
    }
    const exit = await probe.exited;
    const stopMs = Date.now() - t0;
    const what = `${String(signals)} signals`;
    assert.equal(exit.code, 0, `${what}: ${exit.stderr}`);
    assert.ok(exit.report, `${what}: the report is written`);
    assert.match(exit.stderr, /SIGTERM again: stopping, the report is being written/);
    const influx = exit.report.exports?.influx as { points_dropped: number } | undefined;
    assert.ok(influx && influx.points_dropped > 0, `${what}: the unanswered points are counted dropped`);
    if (signals === 3) {
      assert.match(exit.stderr, /SIGTERM a third time: not waiting for the outputs/);
      assert.ok(stopMs < 3000, `the third signal ended the 5 s wait: stopped in ${String(stopMs)} ms`);
    } else {
      assert.ok(stopMs >= 4000, `two signals: the outputs' 5 s are waited for (${String(stopMs)} ms)`);
    }
    assert.deepEqual(await programsAfterExit('latency'), []);
  }
});

for (const [name, argv, signal] of [
  ['npx latency-probe, SIGTERM to npm only', ['npx', '--no-install', 'latency-probe'], 'SIGTERM'],
  ['npx latency-probe, SIGKILL to npm only', ['npx', '--no-install', 'latency-probe'], 'SIGKILL'],
  [
    'a shell wrapper, SIGTERM to the shell only',
    ['sh', '-c', 'node bin/latency-probe.js "$@"; echo done', 'sh'],
    'SIGTERM',
  ],
  [
    'a shell wrapper, SIGKILL to the shell only',
    ['sh', '-c', 'node bin/latency-probe.js "$@"; echo done', 'sh'],
    'SIGKILL',
  ],
] as const) {
  test(`${name}: the probe stops with it, writes its report, leaves nothing attached`, async (t) => {
    if (!needsRoot(t)) return;
    const output = join(tempDir(), 'report.json');
    const cmd = startCommand(t, [...argv, '--filter', 'port=1', '--output', output]);
    const top = cmd.proc.pid;
    assert.ok(top !== undefined, 'started');
    await until('the probe measures', () => cmd.stderr().includes('measuring'), 60_000);
    const node = probeNode(descendants(top));
    assert.ok(node !== undefined, `the probe's node process among ${JSON.stringify(descendants(top))}`);
    process.kill(top, signal); // the command's own PID only, not its group
    await until('the probe exits', () => !alive(node), 15_000);
    assert.ok(existsSync(output), 'the report is written');
    const report = JSON.parse(readFileSync(output, 'utf8')) as LatencyReport;
    assert.equal(report.probe, 'latency-probe');
    assert.deepEqual(await programsAfterExit('latency'), []);
  });
}

test('a disk that fills during the run, --output and the temporary directory on it: the summary on stderr, both paths named, exit 1, no empty file left', async (t) => {
  if (!needsRoot(t)) return;
  const dir = tempDir();
  const mnt = join(dir, 'small');
  mkdirSync(mnt);
  assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=20m', 'tmpfs', mnt]).status, 0, 'a 20 MB tmpfs');
  t.after(() => spawnSync('umount', ['-l', mnt]));
  const output = join(mnt, 'report.json');
  const probe = startProbe<LatencyReport>('latency-probe', ['--filter', 'port=1'], {
    output,
    env: { TMPDIR: mnt },
  });
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready; // the start-up check saw 20 MB free
  // fill it while the probe measures
  spawnSync('dd', ['if=/dev/zero', `of=${join(mnt, 'fill')}`, 'bs=1M', 'count=64'], { stdio: 'ignore' });
  const exit = await probe.stop('SIGTERM');
  assert.equal(exit.code, 1, exit.stderr);
  assert.match(exit.stderr, /^latency-probe: \d+ requests in /m, 'the summary line');
  assert.match(
    exit.stderr,
    new RegExp(
      `cannot write the report to ${output} \\(ENOSPC\\) nor to ${mnt}/meshprobe-report-\\d+\\.json \\(ENOSPC\\)`,
    ),
  );
  assert.deepEqual(
    readdirSync(mnt).filter((f) => f !== 'fill'),
    [],
    'no empty or partial file left',
  );
  assert.deepEqual(await programsAfterExit('latency'), []);
});
