// latency-probe as a command: programs visible while it runs and gone after
// it exits (by --duration, SIGINT or SIGTERM), the preflight, and one clear
// line with a non-zero exit for each kind of bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadedPrograms, needsRoot, programsAfterExit, runCli, startProbe, tempDir } from './helpers/probe.js';
import { buildTools, runClient, startServer } from './helpers/workload.js';
import type { LatencyReport } from '../src/report/latency.js';

const oneLine = (s: string) => s.trim().split('\n').filter(Boolean);

test('programs carry "latency" in their names while running, and none stay after SIGTERM', async (t) => {
  if (!needsRoot(t)) return;
  assert.deepEqual(loadedPrograms('latency'), [], 'no latency programs before the test');
  const probe = startProbe<LatencyReport>('latency-probe', ['--filter', 'port=1']);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  const names = loadedPrograms('latency').sort();
  // the three hooks, and the batch flush program (loaded, run by user space, never attached)
  assert.deepEqual(names, ['latency_flush', 'latency_recv', 'latency_send', 'latency_state']);
  const exit = await probe.stop('SIGTERM');
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(exit.report, 'SIGTERM still writes the report');
  assert.deepEqual(await programsAfterExit('latency'), []);
});

test('--duration ends the run by itself, writes the report, leaves nothing attached', async (t) => {
  if (!needsRoot(t)) return;
  await buildTools();
  const server = await startServer({ addr: '127.0.0.1' });
  const probe = startProbe<LatencyReport>('latency-probe', ['--duration', '3s', '--filter', `port=${server.port}`]);
  t.after(() => probe.stop('SIGKILL'));
  try {
    await probe.ready;
    const client = await runClient({ addr: '127.0.0.1', port: server.port, requests: 200, sleeps: [0] });
    const exit = await probe.exited;
    assert.equal(exit.code, 0, exit.stderr);
    assert.ok(exit.report, 'a report');
    assert.equal(exit.report.metrics.client.total_requests, client.requests);
    assert.ok(
      exit.report.duration_seconds >= 2.9 && exit.report.duration_seconds < 4,
      `duration ${exit.report.duration_seconds}`,
    );
    assert.match(exit.stderr, /report: /);
    assert.deepEqual(await programsAfterExit('latency'), []);
  } finally {
    await server.stop().catch(() => undefined);
  }
});

test('SIGKILL cannot leave programs attached either (links die with the process)', async (t) => {
  if (!needsRoot(t)) return;
  const probe = startProbe<LatencyReport>('latency-probe', ['--filter', 'port=1']);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  assert.equal(loadedPrograms('latency').length, 4);
  await probe.stop('SIGKILL');
  assert.deepEqual(await programsAfterExit('latency'), []);
});

test('--check prints the kernel, BTF, capabilities, mounts and the hook of each slot', (t) => {
  if (!needsRoot(t)) return;
  const r = runCli('latency-probe', ['--check']);
  assert.equal(r.code, 0, r.stderr);
  for (const re of [
    /^kernel: /m,
    /^BTF: yes/m,
    /^BPF atomics: yes \(latency\.bpf\.o\)$/m,
    /CAP_BPF yes/,
    /^tracefs: \//m,
    /^bpffs: /m,
    /hook socket send: raw_tracepoint:sock_send_length/,
    /hook socket receive: raw_tracepoint:sock_recv_length/,
    /hook tcp state: tracepoint:sock\/inet_sock_set_state/,
    /fexit:tcp_sendmsg: /,
    /kprobe:tcp_sendmsg: /,
    /ready$/m,
  ]) {
    assert.match(r.stdout, re);
  }
});

test('--log-level debug logs the attach decisions', async (t) => {
  if (!needsRoot(t)) return;
  const probe = startProbe<LatencyReport>('latency-probe', ['--log-level', 'debug', '--filter', 'port=1']);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0);
  assert.match(exit.stderr, /hook socket send: using raw_tracepoint:sock_send_length/);
  assert.match(exit.stderr, /attached latency_send/);
  assert.match(exit.stderr, /worker \d reads CPUs/);
  assert.match(exit.stderr, /pipeline totals \{"workers":\d+,"batches":\d+/);
});

test('tracefs and bpffs not mounted: the probe mounts them itself', (t) => {
  if (!needsRoot(t)) return;
  // in a private mount namespace, so the host's mounts are untouched
  const r = spawnSync(
    'unshare',
    [
      '-m',
      '--propagation',
      'private',
      'sh',
      '-c',
      `umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; umount /sys/fs/bpf 2>/dev/null; ` +
        `grep -cE ' (tracefs|bpf) ' /proc/mounts; exec "${process.execPath}" "${join(process.cwd(), 'dist/src/cli/latency-probe.js')}" --check`,
    ],
    { encoding: 'utf8', cwd: process.cwd() },
  );
  assert.match(r.stdout, /^0$/m, 'tracefs and bpffs were unmounted in the namespace');
  assert.match(r.stdout, /^tracefs: \/sys\/kernel\/tracing$/m);
  assert.match(r.stdout, /^bpffs: mounted at \/sys\/fs\/bpf$/m);
  assert.equal(r.status, 0, r.stderr);
});

test('bad input: one line, non-zero exit, nothing attached', () => {
  const cases: [string[], number, RegExp][] = [
    [['--bogus'], 2, /unknown option '--bogus'/],
    [['--duration', 'soon'], 2, /invalid --duration "soon"/],
    [['--duration', '0'], 2, /greater than zero/],
    [['--format', 'xml'], 2, /unknown --format "xml"/],
    [['--filter', 'port=http'], 2, /invalid --filter "port=http"/],
    [['--workers', '0'], 2, /invalid --workers/],
    [['--ring-pages', '3'], 2, /power of two/],
    [['--ring-pages', '2'], 2, /at least 4/],
    [['--output', '/nonexistent-dir/x.json', '--duration', '1'], 2, /directory \/nonexistent-dir does not exist/],
  ];
  for (const [args, code, re] of cases) {
    const r = runCli('latency-probe', args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(oneLine(r.stderr).length, 1, `one line for ${args.join(' ')}: ${r.stderr}`);
  }
  if (process.getuid?.() === 0) {
    const dir = tempDir();
    const ro = join(dir, 'ro');
    mkdirSync(ro);
    chmodSync(ro, 0o500);
    // root ignores mode bits: check with an unprivileged user
    chmodSync(dir, 0o755);
    const r = runCli('latency-probe', ['--output', join(ro, 'x.json'), '--duration', '1'], { uid: 65534, gid: 65534 });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /not writable/);
    assert.deepEqual(loadedPrograms('latency'), []);
  }
});

test('without privileges: says to use sudo, exit 3', (t) => {
  if (!needsRoot(t)) return; // needs root to become someone else
  const dir = tempDir();
  chmodSync(dir, 0o777);
  const r = runCli('latency-probe', ['--duration', '1', '--output', join(dir, 'r.json')], { uid: 65534, gid: 65534 });
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /needs root, or CAP_BPF and CAP_PERFMON: run it with sudo/);
  assert.equal(oneLine(r.stderr).length, 1);
});

test('a kernel without BTF: clear message, exit 4', (t) => {
  if (!needsRoot(t)) return;
  const r = runCli('latency-probe', ['--duration', '1', '--output', join(tempDir(), 'r.json')], {
    env: { MESHPROBE_VMLINUX_BTF: '/nonexistent/vmlinux' },
  });
  assert.equal(r.code, 4, r.stderr);
  assert.match(r.stderr, /no BTF .*CONFIG_DEBUG_INFO_BTF=y/);
});

test('a kernel without the socket tracepoints: falls back to fexit, then kprobes, and says why none works here', (t) => {
  if (!needsRoot(t)) return;
  const r = runCli('latency-probe', ['--duration', '1', '--output', join(tempDir(), 'r.json')], {
    env: { MESHPROBE_DISABLE_HOOKS: 'raw_tracepoint' },
  });
  assert.equal(r.code, 4, r.stderr);
  // on this kernel fentry is refused (EPERM) and kprobes are compiled out
  assert.match(
    r.stderr,
    /no hook for socket send \(raw_tracepoint:sock_send_length: disabled.*; fexit:tcp_sendmsg: fentry refused: .*; kprobe:tcp_sendmsg: kprobes unavailable/,
  );
  assert.equal(oneLine(r.stderr).length, 1);
  assert.deepEqual(loadedPrograms('latency'), []);
});
