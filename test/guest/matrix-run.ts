// The kernel matrix's workload, run with the real command-line tools on
// one kernel: inside a qemu guest (test/helpers/guest.ts boots it) or
// directly on this host. It measures and prints one block per step
// (emitBlock: gzip+base64 between `=== BEGIN n-step ===` / `=== END n-step ===`,
// so that it survives a serial console) for test/kernel-matrix.test.ts to
// check: what each probe counted against what the workload itself counted,
// the hooks the probe chose, what it said it degraded, the BPF programs' run
// time (bpf_stats), and the probe's whole --log-level debug stderr (libbpf's
// and the verifier's log among it). It asserts nothing itself, so that every
// step runs and is reported even when an earlier one went wrong.
//
//   node dist/test/guest/matrix-run.js
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import { join } from 'node:path';
import type { ConnectionReport } from '../../src/report/connections.js';
import type { DropReport } from '../../src/report/drops.js';
import type { LatencyReport } from '../../src/report/latency.js';
import { runCli, startProbe, tempDir } from '../helpers/probe.js';
import { freePort } from '../helpers/servers.js';
import { mploadBinary, repoRoot, runClient, startServer } from '../helpers/workload.js';
import { emitBlock } from '../helpers/guest.js';

interface Program {
  name: string;
  run_count: number;
  ns_per_run: number | null;
}

let seq = 0;
let stepStarted = Date.now();
function emit(step: string, data: Record<string, unknown>): void {
  const now = Date.now();
  emitBlock(`${++seq}-${step}`, { step, ms: now - stepStarted, ...data });
  stepStarted = now;
}

/** Every probe runs with the debug log (a refused program's verifier log is in it); the host keeps it in a file. */
const DEBUG = ['--log-level', 'debug'];
const LOG_MAX = 2 << 20;
const tail = (s: string | undefined) =>
  s && s.length > LOG_MAX ? `[... ${s.length - LOG_MAX} bytes cut]\n${s.slice(-LOG_MAX)}` : s;
/** The lines a report reader wants from a debug log: errors, warnings and the verifier's verdicts, not libbpf's chatter. */
const keyLines = (s: string | undefined) =>
  (s ?? '')
    .split('\n')
    .filter((l) => !/^libbpf: |^\[meshprobe debug\]/.test(l) && l.trim())
    .slice(-20)
    .join('\n');

/** The BPF programs of any probe's report (none without a report). */
function programs(report: { pipeline?: { programs?: Program[] } } | undefined): Program[] {
  return (report?.pipeline?.programs ?? []).map((p) => ({
    name: p.name,
    run_count: p.run_count,
    ns_per_run: p.ns_per_run,
  }));
}

/** Each probe's JSON report. */
interface Reports {
  'latency-probe': LatencyReport;
  'connection-tracker': ConnectionReport;
  'packet-drop-probe': DropReport;
}

/** The probe around `traffic`: ready, traffic, 300 ms, SIGINT. Never throws: what went wrong is in the result. */
async function around<N extends keyof Reports>(
  name: N,
  args: string[],
  env: Record<string, string>,
  traffic: () => Promise<unknown>,
): Promise<{
  code: number | null;
  stderr: string;
  log: string | undefined;
  report: Reports[N] | undefined;
  error: string | undefined;
}> {
  const probe = startProbe<Reports[N]>(name, [...DEBUG, ...args], { env });
  try {
    await probe.ready;
  } catch (e) {
    const exit = await probe.stop('SIGKILL');
    return {
      code: exit.code,
      stderr: keyLines(exit.stderr),
      log: tail(exit.stderr),
      report: undefined,
      error: (e as Error).message.slice(0, 300),
    };
  }
  let trafficError: string | undefined;
  try {
    await traffic();
  } catch (e) {
    trafficError = (e as Error).message.slice(0, 500);
  }
  await new Promise((r) => setTimeout(r, 300));
  const exit = await probe.stop('SIGINT');
  return {
    code: exit.code,
    stderr: keyLines(exit.stderr),
    log: tail(exit.stderr),
    report: exit.report,
    error: trafficError,
  };
}

/** Connects `n` times to a port nobody listens on; the refusals the client itself saw. */
async function refusedConnects(port: number, n: number): Promise<number> {
  let refused = 0;
  for (let i = 0; i < n; i++) {
    await new Promise<void>((resolve) => {
      const c = net.connect(port, '127.0.0.1');
      c.on('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'ECONNREFUSED') refused++;
        resolve();
      });
      c.on('connect', () => {
        c.destroy();
        resolve();
      });
    });
  }
  return refused;
}

/** `n` TLS handshakes with Node's own TLS (OpenSSL built into node: the TLS records show them, not libssl uprobes). */
async function tlsHandshakes(port: number, n: number): Promise<number> {
  const dir = tempDir();
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  const made = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
    ],
    { encoding: 'utf8' },
  );
  let pems: { key: string; cert: string };
  if (made.status === 0) pems = { key: readFileSync(key, 'utf8'), cert: readFileSync(cert, 'utf8') };
  else
    pems = JSON.parse(readFileSync(process.env.MATRIX_TLS_PEMS ?? '/matrix-tls.json', 'utf8')) as {
      key: string;
      cert: string;
    };
  const server = tls.createServer(pems, (s) => s.end('ok'));
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  let done = 0;
  try {
    for (let i = 0; i < n; i++) {
      await new Promise<void>((resolve) => {
        const c = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }, () => {
          done++;
        });
        c.on('data', () => undefined);
        c.on('end', () => {
          resolve();
        });
        c.on('error', () => {
          resolve();
        });
      });
    }
  } finally {
    await new Promise((r) => server.close(r));
  }
  return done;
}

async function udpToClosedPort(port: number, n: number): Promise<number> {
  const s = dgram.createSocket('udp4');
  let sent = 0;
  for (let i = 0; i < n; i++) {
    await new Promise<void>((r) => {
      s.send(Buffer.from('meshprobe'), port, '127.0.0.1', (err) => {
        if (!err) sent++;
        r();
      });
    });
    await new Promise((r) => setTimeout(r, 2)); // ICMP port unreachable answers are rate-limited per destination, the drops are not
  }
  s.close();
  return sent;
}

/**
 * iptables here? In a guest, the kernel's ip_tables modules are loaded first (modload, from the
 * modules the test put in the initramfs); its userspace is the host's iptables-legacy.
 */
function iptablesSetup(): { version?: string; modules?: string; error?: string } {
  let modules: string | undefined;
  if (existsSync('/bin/modload')) {
    const m = spawnSync('/bin/modload', ['ip_tables', 'iptable_filter', 'xt_tcpudp'], { encoding: 'utf8' });
    modules = `modload exit ${String(m.status)}${m.stderr ? `: ${m.stderr.trim()}` : ''}`;
  }
  const v = spawnSync('iptables', ['-V'], { encoding: 'utf8' });
  if (v.error || v.status !== 0) return { modules, error: `no iptables: ${v.error?.message ?? v.stderr}` };
  const t = spawnSync('unshare', ['-n', 'iptables', '-S'], { encoding: 'utf8' });
  if (t.error || t.status !== 0)
    return { modules, error: `iptables -S in a new network namespace: ${t.error?.message ?? t.stderr.trim()}` };
  return { version: v.stdout.trim(), modules };
}

/** `n` UDP datagrams to 127.0.0.1:port in a new network namespace whose INPUT chain drops them. */
async function iptablesDrops(port: number, n: number): Promise<{ sent: number; how: string }> {
  const sender = join(tempDir(), 'send.mjs');
  writeFileSync(
    sender,
    `import dgram from 'node:dgram';
const s = dgram.createSocket('udp4');
let sent = 0;
for (let i = 0; i < ${n}; i++) await new Promise((r) => s.send(Buffer.from('meshprobe'), ${port}, '127.0.0.1', (e) => { if (!e) sent++; r(); }));
s.close();
console.log('SENT ' + sent);
`,
  );
  const script = `set -e; ip link set lo up; iptables -A INPUT -p udp --dport ${port} -j DROP; ${process.execPath} ${sender}`;
  const child = spawn('unshare', ['-n', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (b: Buffer) => {
    out += b.toString();
  });
  child.stderr.on('data', (b: Buffer) => {
    out += b.toString();
  });
  const code = await new Promise<number | null>((r) =>
    child.on('exit', (c) => {
      r(c);
    }),
  );
  return {
    sent: Number(/SENT (\d+)/.exec(out)?.[1] ?? 0),
    how: `unshare -n sh -c '${script}': exit ${String(code)}: ${out.trim().slice(-500)}`,
  };
}

/** Forced hook choices: MESHPROBE_DISABLE_HOOKS leaves one kind for reads and writes. */
const PATHS: Record<string, string> = {
  raw_tracepoint: 'fentry,kprobe',
  fentry: 'raw_tracepoint,kprobe',
  kprobe: 'raw_tracepoint,fentry',
};

async function main(): Promise<void> {
  const statsFile = '/proc/sys/kernel/bpf_stats_enabled';
  let statsBefore: string | undefined;
  try {
    statsBefore = readFileSync(statsFile, 'utf8').trim();
    writeFileSync(statsFile, '1');
  } catch (e) {
    emit('bpf_stats', { error: (e as Error).message });
  }
  emit('kernel', { release: os.release() });
  // in a guest: the kernel modules the test put in the initramfs, loaded with what they depend on
  if (existsSync('/bin/modload')) {
    const want = ['veth', 'sch_netem', 'ip_tables', 'iptable_filter', 'xt_tcpudp'];
    const m = spawnSync('/bin/modload', want, { encoding: 'utf8' });
    let loaded: string[] = [];
    try {
      loaded = readFileSync('/proc/modules', 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(' ')[0]);
    } catch {
      /* none */
    }
    emit('modules', { want, code: m.status, stderr: m.stderr, loaded });
  }
  try {
    for (const p of ['latency-probe', 'connection-tracker', 'packet-drop-probe']) {
      const r = runCli(p, ['--check', ...DEBUG]);
      emit('check', { probe: p, code: r.code, stdout: r.stdout, stderr: keyLines(r.stderr), log: tail(r.stderr) });
    }

    const server = await startServer({ addr: '127.0.0.1', spinUs: 0 });
    try {
      const filter = ['--filter', `port=${server.port}`];
      // the default choice: one connection carrying 100 requests, then 40 on fresh connections, 8 at a time
      {
        const counted = { client: 0 };
        const r = await around('latency-probe', filter, {}, async () => {
          counted.client += (
            await runClient({ addr: '127.0.0.1', port: server.port, requests: 100, bin: mploadBinary })
          ).requests;
          counted.client += (
            await runClient({
              addr: '127.0.0.1',
              port: server.port,
              requests: 40,
              concurrency: 8,
              newConn: true,
              bin: mploadBinary,
            })
          ).requests;
        });
        emit('latency', {
          path: 'default',
          code: r.code,
          error: r.error,
          stderr: r.code === 0 ? undefined : r.stderr,
          log: r.log,
          expected: counted.client,
          client: r.report?.metrics.client.total_requests,
          server: r.report?.metrics.server.total_requests,
          hooks: r.report?.pipeline.hooks,
          degraded: r.report?.pipeline.degraded,
          kretprobe_missed: r.report?.pipeline.kretprobe_missed,
          discarded: r.report?.metrics.loss.exchanges_discarded,
          programs: programs(r.report),
        });
      }
      for (const [kind, disable] of Object.entries(PATHS)) {
        const counted = { client: 0 };
        const r = await around('latency-probe', filter, { MESHPROBE_DISABLE_HOOKS: disable }, async () => {
          counted.client += (
            await runClient({ addr: '127.0.0.1', port: server.port, requests: 50, bin: mploadBinary })
          ).requests;
          counted.client += (
            await runClient({
              addr: '127.0.0.1',
              port: server.port,
              requests: 24,
              concurrency: 8,
              newConn: true,
              bin: mploadBinary,
            })
          ).requests;
        });
        emit('latency', {
          path: kind,
          code: r.code,
          error: r.error,
          stderr: r.code === 0 ? undefined : r.stderr,
          log: r.log,
          expected: counted.client,
          client: r.report?.metrics.client.total_requests,
          server: r.report?.metrics.server.total_requests,
          hooks: r.report?.pipeline.hooks,
          degraded: r.report?.pipeline.degraded,
          kretprobe_missed: r.report?.pipeline.kretprobe_missed,
          discarded: r.report?.metrics.loss.exchanges_discarded,
          programs: programs(r.report),
        });
      }

      // connection-tracker: fresh connections, refused connects, TLS handshakes (the three ports are the filter)
      {
        const closed = await freePort();
        const tlsPort = await freePort();
        const seen = { opened: 0, refused: 0, tls: 0 };
        const r = await around(
          'connection-tracker',
          ['--filter', `port=${server.port},${closed},${tlsPort}`],
          {},
          async () => {
            seen.opened += (
              await runClient({
                addr: '127.0.0.1',
                port: server.port,
                requests: 20,
                concurrency: 2,
                newConn: true,
                bin: mploadBinary,
              })
            ).requests;
            seen.refused += await refusedConnects(closed, 5);
            seen.tls += await tlsHandshakes(tlsPort, 3);
          },
        );
        const c = r.report?.connections;
        // a count per cause of FAILURE_CAUSES and the total (the report's type spells out only `total`)
        const failed: Record<string, number> | undefined = c?.failed;
        emit('connections', {
          code: r.code,
          error: r.error,
          stderr: r.code === 0 ? undefined : r.stderr,
          log: r.log,
          expected: seen,
          opened: c?.opened_by_side,
          refused: failed?.refused,
          failed_total: failed?.total,
          tls_handshakes: c?.tls_handshakes,
          tls_ms: c?.tls_handshake_ms_by_side,
          hooks: r.report?.pipeline.hooks,
          degraded: r.report?.pipeline.degraded,
          programs: programs(r.report),
        });
      }
    } finally {
      await server.stop().catch(() => undefined);
    }

    // packet-drop-probe: UDP datagrams to a port nobody listens on
    {
      const closed = await freePort();
      let sent = 0;
      const r = await around('packet-drop-probe', ['--filter', `port=${closed}`], {}, async () => {
        sent = await udpToClosedPort(closed, 50);
      });
      const d = r.report?.drops;
      emit('drops', {
        code: r.code,
        error: r.error,
        stderr: r.code === 0 ? undefined : r.stderr,
        log: r.log,
        expected: sent,
        total: d?.total,
        by_layer: d?.by_layer,
        by_reason: d?.by_reason,
        by_protocol: d?.by_protocol,
        hooks: r.report?.pipeline.hooks,
        degraded: r.report?.pipeline.degraded,
        programs: programs(r.report),
      });
    }

    // packet-drop-probe: an iptables DROP rule on a UDP port, in a network namespace of its own
    // (unshare -n: on the host nothing outside it sees the rule; it goes with the namespace).
    // This run takes the classic tracepoint (tp_btf forbidden), so that both ways of hooking
    // kfree_skb are proven on every kernel: the UDP run above takes the one chosen by default.
    {
      const port = await freePort();
      const setup = iptablesSetup();
      if (setup.error) emit('iptables', { unavailable: setup.error, modules: setup.modules });
      else {
        let sent = 0;
        let how = '';
        const tracepointOnly = { MESHPROBE_DISABLE_HOOKS: 'tp_btf' };
        const r = await around('packet-drop-probe', ['--filter', `port=${port}`], tracepointOnly, async () => {
          ({ sent, how } = await iptablesDrops(port, 50));
        });
        const d = r.report?.drops;
        emit('iptables', {
          code: r.code,
          error: r.error ?? (sent === 50 ? undefined : how),
          stderr: r.code === 0 ? undefined : r.stderr,
          log: r.log,
          expected: sent,
          iptables: setup.version,
          modules: setup.modules,
          total: d?.total,
          by_layer: d?.by_layer,
          by_reason: d?.by_reason,
          by_protocol: d?.by_protocol,
          hooks: r.report?.pipeline.hooks,
          degraded: r.report?.pipeline.degraded,
          programs: programs(r.report),
        });
      }
    }

    // npm run demo's program (setup.sh aside): its own workload, the probe, the comparison
    {
      const out = join(tempDir(), 'demo.json');
      const demo = spawn(process.execPath, [join(repoRoot, 'dist', 'src', 'demo.js')], {
        cwd: repoRoot,
        env: { ...process.env, DEMO_OUTPUT: out },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let text = '';
      demo.stdout.on('data', (b: Buffer) => {
        text += b.toString();
      });
      demo.stderr.on('data', (b: Buffer) => {
        text += b.toString();
      });
      const code = await new Promise<number | null>((r) =>
        demo.on('exit', (c) => {
          r(c);
        }),
      );
      let requests: number | undefined;
      try {
        // the demo writes latency-probe's report
        requests = (JSON.parse(readFileSync(out, 'utf8')) as LatencyReport).metrics.client.total_requests;
      } catch {
        /* none written */
      }
      emit('demo', { code, requests, output: text.slice(-1500) });
    }

    // nothing of ours left behind: kretprobe events in tracefs
    try {
      const events = readFileSync('/sys/kernel/tracing/kprobe_events', 'utf8');
      emit('cleanup', { kprobe_events: events.split('\n').filter((l) => l.includes('meshprobe/')) });
    } catch (e) {
      emit('cleanup', { kprobe_events: [], note: (e as Error).message });
    }
  } finally {
    if (statsBefore !== undefined) writeFileSync(statsFile, statsBefore);
  }
  emit('done', {});
}

await main();
