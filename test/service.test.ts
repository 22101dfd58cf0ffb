// The systemd unit (deploy/systemd/meshprobe@.service) runs each probe as a user that is not
// root, with only the capabilities its AmbientCapabilities= names. This test runs the three
// probes exactly so (setpriv: user nobody, those capabilities ambient and bounding, no new
// privileges) and checks that each measures what a ground truth it controls did, and that
// the unit file itself is one systemd accepts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { createSocket } from 'node:dgram';
import { join } from 'node:path';
import { needsRoot, programsAfterExit, startProbe, tempDir, type ProbeRun } from './helpers/probe.js';
import { freePort } from './helpers/servers.js';
import { repoRoot, runClient, startTestServer } from './helpers/workload.js';
import type { LatencyReport } from '../src/report/latency.js';
import type { ConnectionReport } from '../src/report/connections.js';
import type { DropReport } from '../src/report/drops.js';

const UNIT = join(repoRoot, 'deploy', 'systemd', 'meshprobe@.service');

/** The unit's capabilities, from its AmbientCapabilities= line: ['CAP_BPF', ...]. */
function unitCapabilities(): string[] {
  const line = /^AmbientCapabilities=(.+)$/m.exec(readFileSync(UNIT, 'utf8'));
  assert.ok(line, `${UNIT} has an AmbientCapabilities= line`);
  const caps = line[1].trim().split(/\s+/);
  const bounding = /^CapabilityBoundingSet=(.+)$/m.exec(readFileSync(UNIT, 'utf8'));
  assert.ok(bounding, 'and a CapabilityBoundingSet=');
  assert.deepEqual(bounding[1].trim().split(/\s+/).sort(), [...caps].sort(), 'the same set in both');
  return caps;
}

/** setpriv's command line for: user nobody, exactly `caps`, no new privileges. */
function asServiceUser(caps: string[]): string[] {
  const set = caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`).join(',');
  return [
    'setpriv',
    '--reuid=nobody',
    '--regid=nogroup',
    '--clear-groups',
    '--no-new-privs',
    `--inh-caps=-all,${set}`,
    `--ambient-caps=-all,${set}`,
    `--bounding-set=-all,${set}`,
    '--',
  ];
}

/** A report directory the service user may write to (the unit's StateDirectory=). */
function stateDir(): string {
  const d = tempDir();
  chmodSync(d, 0o777);
  return join(d, 'report.json');
}

/** Waits until the probe measures; the warnings it gave, one per line. */
async function measuring<R>(probe: ProbeRun<R>): Promise<string[]> {
  await probe.ready.catch((e: unknown) => {
    throw new Error(`as the service user: ${e instanceof Error ? e.message : String(e)}`);
  });
  return probe
    .stderr()
    .split('\n')
    .filter((l) => l.includes('warn'));
}

test('the unit names the capabilities; systemd-analyze accepts the unit', (t) => {
  const caps = unitCapabilities();
  assert.deepEqual([...caps].sort(), [
    'CAP_BPF',
    'CAP_DAC_READ_SEARCH',
    'CAP_NET_ADMIN',
    'CAP_PERFMON',
    'CAP_SYSLOG',
    'CAP_SYS_PTRACE',
  ]);
  assert.doesNotMatch(readFileSync(UNIT, 'utf8'), /^User=root/m);
  const sa = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  if (sa.error) {
    if (process.env.CI === 'true') throw new Error('systemd-analyze is missing (Debian package systemd)');
    t.skip('no systemd-analyze');
    return;
  }
  // verify an instance, with ExecStart= pointing at this build's command (the unit says /usr/local/bin)
  const dir = tempDir();
  const unit = join(dir, 'meshprobe@latency-probe.service');
  writeFileSync(unit, readFileSync(UNIT, 'utf8').replace('/usr/local/bin/%i', join(repoRoot, 'bin', '%i.js')));
  const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
  assert.equal(r.status, 0, `systemd-analyze verify: ${r.stdout}${r.stderr}`);
  assert.equal(r.stderr.trim(), '', 'no warning');
});

test('latency-probe as the service user: every request, client and server side', async (t) => {
  if (!needsRoot(t)) return;
  const server = await startTestServer(t);
  const probe = startProbe<LatencyReport>('latency-probe', ['--filter', `port=${server.port}`], {
    output: stateDir(),
    wrap: asServiceUser(unitCapabilities()),
  });
  t.after(() => probe.stop('SIGKILL'));
  assert.deepEqual(await measuring(probe), [], 'nothing given up for lack of privilege');
  const client = await runClient({ addr: '127.0.0.1', port: server.port, requests: 300, concurrency: 4 });
  await new Promise((r) => setTimeout(r, 300));
  const exit = await probe.stop('SIGTERM');
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(exit.report, 'a report, written by the service user');
  assert.equal(exit.report.metrics.client.total_requests, client.requests, 'client view');
  assert.equal(exit.report.metrics.server.total_requests, client.requests, 'server view');
  assert.deepEqual(await programsAfterExit('latency'), []);
});

test('connection-tracker as the service user: every connection, both sides', async (t) => {
  if (!needsRoot(t)) return;
  const server = await startTestServer(t);
  const probe = startProbe<ConnectionReport>('connection-tracker', ['--filter', `port=${server.port}`], {
    output: stateDir(),
    wrap: asServiceUser(unitCapabilities()),
  });
  t.after(() => probe.stop('SIGKILL'));
  // the one figure the unit's set does not give (see the unit): libssl's handshake time, by uprobe
  const warnings = await measuring(probe);
  assert.equal(warnings.length, 1, warnings.join('\n'));
  assert.match(warnings[0], /libssl handshakes not measured: .*Permission denied/);
  const client = await runClient({ addr: '127.0.0.1', port: server.port, requests: 50, newConn: true });
  await new Promise((r) => setTimeout(r, 300));
  const exit = await probe.stop('SIGTERM');
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(exit.report);
  assert.equal(client.requests, 50);
  assert.equal(exit.report.connections.opened_by_side.client, 50, 'client connects');
  assert.equal(exit.report.connections.opened_by_side.server, 50, 'server accepts');
  assert.ok(
    exit.report.pipeline.degraded.some((d) => /libssl/.test(d)),
    `the report says what is missing: ${JSON.stringify(exit.report.pipeline.degraded)}`,
  );
  assert.deepEqual(await programsAfterExit('latency'), []);
});

test('packet-drop-probe as the service user: every UDP datagram to a closed port', async (t) => {
  if (!needsRoot(t)) return;
  const port = await freePort();
  const probe = startProbe<DropReport>('packet-drop-probe', ['--filter', `port=${port}`], {
    output: stateDir(),
    wrap: asServiceUser(unitCapabilities()),
  });
  t.after(() => probe.stop('SIGKILL'));
  assert.deepEqual(await measuring(probe), [], 'nothing given up for lack of privilege');
  const sock = createSocket('udp4');
  for (let i = 0; i < 100; i++) {
    await new Promise<void>((resolve, reject) => {
      sock.send(Buffer.from('x'), port, '127.0.0.1', (e) => {
        if (e) reject(e);
        else resolve();
      });
    });
    await new Promise((r) => setTimeout(r, 1));
  }
  sock.close();
  await new Promise((r) => setTimeout(r, 300));
  const exit = await probe.stop('SIGTERM');
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(exit.report);
  assert.equal(exit.report.drops.by_reason.NO_SOCKET, 100, JSON.stringify(exit.report.drops.by_reason));
  assert.equal(exit.report.pipeline.kallsyms_restricted, false, 'kernel symbols readable (CAP_SYSLOG)');
  assert.match(exit.report.drops.top_functions[0]?.function ?? '', /udp/, 'the function that dropped, named');
  assert.deepEqual(await programsAfterExit('drops'), []);
});

test("the service user reads a root process's socket and namespace links (CAP_SYS_PTRACE), as the probes do", (t) => {
  if (!needsRoot(t)) return;
  const sleeper = spawn('sleep', ['30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const pid = sleeper.pid;
  assert.ok(pid !== undefined);
  t.after(() => {
    if (sleeper.exitCode === null && sleeper.signalCode === null) process.kill(pid, 'SIGKILL');
  });
  const read = (caps: string[]) =>
    spawnSync(
      asServiceUser(caps)[0],
      [...asServiceUser(caps).slice(1), 'readlink', `/proc/${String(pid)}/fd/1`, `/proc/${String(pid)}/ns/net`],
      {
        encoding: 'utf8',
      },
    );
  const withUnit = read(unitCapabilities());
  assert.equal(withUnit.status, 0, withUnit.stderr);
  assert.match(withUnit.stdout, /^(pipe|socket):\[\d+\]\nnet:\[\d+\]\n$/);
  const without = read(unitCapabilities().filter((c) => c !== 'CAP_SYS_PTRACE'));
  assert.notEqual(without.status, 0, 'without CAP_SYS_PTRACE the links are refused: the capability is needed');
});
