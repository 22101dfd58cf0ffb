// The kernel matrix: the real command-line tools (Node, the addon, the Wasm
// workers, the BPF objects of this one build) on Debian's 5.10 (bullseye),
// 6.1 (bookworm) and 6.12 (trixie) cloud kernels under qemu, and on this
// host's kernel. test/guest/matrix-run.ts runs the workloads there and
// reports; here each kernel's figures are held to the workload's own counts,
// exactly, and the hooks and degradations to what that kernel has. Every
// check of a kernel is made and reported, not only the first that fails.
//
// Left in build/kernel-matrix/ (the source of the README's kernel table):
//   <release>.json         every check (passed or not), per probe run the hooks, what the
//                          report says is degraded, and per BPF program run_count and
//                          ns_per_run (bpf_stats, turned on by the driver), and the raw steps
//   <release>-<probe>.log  that probe run's whole --log-level debug stderr (libbpf's log, and
//                          a refused program's verifier log)
//   <release>-console.log  the guest's serial console
// Emulation distorts time: nothing here asserts a duration.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { release } from 'node:os';
import { debianKernel, type Suite } from './helpers/kernels.js';
import { parseBlocks, runGuest } from './helpers/guest.js';
import { needsRoot, tempDir } from './helpers/probe.js';
import { repoRoot } from './helpers/workload.js';

/**
 * One result block of test/guest/matrix-run.ts (its emit() calls), parsed from JSON: each step has the
 * fields it reports, the rest are absent (JSON has no undefined).
 */
interface Step {
  step: string;
  ms?: number;
  /** kernel */
  release?: string;
  /** check */
  probe?: string;
  stdout?: string;
  /** modules */
  want?: string[];
  loaded?: string[];
  /** every probe run (and check, modules, demo) */
  code?: number | null;
  stderr?: string;
  log?: string;
  error?: string;
  /** what the workload itself counted: a count, or connection-tracker's { opened, refused, tls } */
  expected?: unknown;
  hooks?: Record<string, string>;
  degraded?: string[];
  programs?: ProgramStat[];
  /** latency */
  path?: string;
  client?: number;
  server?: number;
  kretprobe_missed?: number | null;
  discarded?: number;
  /** connections */
  opened?: { client: number; server: number };
  refused?: number;
  failed_total?: number;
  tls_handshakes?: { client: number; server: number };
  tls_ms?: { client?: { p50: number } | null; server?: { p50: number } | null };
  /** drops, iptables */
  total?: number;
  by_layer?: Record<string, number>;
  by_reason?: Record<string, number>;
  by_protocol?: Record<string, number>;
  unavailable?: string;
  modules?: string;
  iptables?: string;
  /** demo */
  requests?: number;
  output?: string;
  /** cleanup */
  kprobe_events?: string[];
  note?: string;
}

const DRIVER = join(repoRoot, 'dist', 'test', 'guest', 'matrix-run.js');
const OUT = join(repoRoot, 'build', 'kernel-matrix');
/** the modules the guest loads (matrix-run.ts: veth and sch_netem for later, iptables for the DROP rule) */
const MODULES = ['veth', 'sch_netem', 'ip_tables', 'iptable_filter', 'xt_tcpudp'];

/** A self-signed certificate made here, for the guests (they have no openssl). */
function pems(): string {
  const dir = tempDir();
  const r = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      join(dir, 'k'),
      '-out',
      join(dir, 'c'),
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  return JSON.stringify({ key: readFileSync(join(dir, 'k'), 'utf8'), cert: readFileSync(join(dir, 'c'), 'utf8') });
}

interface Expect {
  release: RegExp;
  /** the hook latency-probe picks for reads and writes by itself */
  sendHook: string;
  /** kinds of read/write hook this kernel has (the others must be refused with exit 4) */
  paths: { raw_tracepoint?: string; fentry?: string; kprobe?: string };
  atomics: boolean;
  dropReasons: boolean;
  /** bpf_cast_to_kern_ctx (6.2+): packets of a service per network namespace */
  kfuncNetns: boolean;
  rxSk: boolean;
  /** kernel modules come in the initramfs and are loaded (guests only) */
  modules: boolean;
}

const KERNELS: Record<Suite, Expect> = {
  bullseye: {
    release: /^5\.10\./,
    sendHook: 'fexit:tcp_sendmsg (by prototype)',
    paths: { fentry: 'fexit:tcp_sendmsg (by prototype)', kprobe: 'kprobe:tcp_sendmsg' },
    atomics: false,
    dropReasons: false,
    kfuncNetns: false,
    rxSk: false,
    modules: true,
  },
  bookworm: {
    release: /^6\.1\./,
    sendHook: 'fexit:tcp_sendmsg',
    paths: { fentry: 'fexit:tcp_sendmsg', kprobe: 'kprobe:tcp_sendmsg' },
    atomics: true,
    dropReasons: true,
    kfuncNetns: false,
    rxSk: false,
    modules: true,
  },
  trixie: {
    release: /^6\.12\./,
    sendHook: 'raw_tracepoint:sock_send_length',
    paths: {
      raw_tracepoint: 'raw_tracepoint:sock_send_length',
      fentry: 'fexit:tcp_sendmsg',
      kprobe: 'kprobe:tcp_sendmsg',
    },
    atomics: true,
    dropReasons: true,
    kfuncNetns: true,
    rxSk: true,
    modules: true,
  },
};

/** This host (PLATFORM.md): socket tracepoints, no kprobes, fentry refused. */
const HOST: Expect = {
  release: /./,
  sendHook: 'raw_tracepoint:sock_send_length',
  paths: { raw_tracepoint: 'raw_tracepoint:sock_send_length' },
  atomics: true,
  dropReasons: true,
  kfuncNetns: true,
  rxSk: true,
  modules: false,
};

/** Checks that all run and are all reported: each one is recorded, passed or failed. */
class Checks {
  readonly all: { check: string; ok: boolean; detail?: string }[] = [];
  constructor(private readonly kernel: string) {}
  /** Records the check; true (and `cond` narrowed to its truthy part) when it passed. */
  ok<T>(check: string, cond: T, detail?: string): cond is Exclude<T, null | undefined | false | 0 | ''> {
    this.all.push({ check, ok: !!cond, detail: cond ? undefined : detail });
    return !!cond;
  }
  eq(check: string, actual: unknown, expected: unknown, detail?: string): boolean {
    let ok = true;
    try {
      assert.deepStrictEqual(actual, expected);
    } catch {
      ok = false;
    }
    return this.ok(
      check,
      ok,
      `got ${JSON.stringify(actual)}, want ${JSON.stringify(expected)}${detail ? `\n      ${detail.trim().split('\n').slice(-12).join('\n      ')}` : ''}`,
    );
  }
  failed() {
    return this.all.filter((c) => !c.ok);
  }
  verdict(): void {
    const failed = this.failed();
    if (failed.length)
      assert.fail(
        `${this.kernel}: ${failed.length} of ${this.all.length} checks failed:\n${failed.map((f) => `  ✗ ${f.check}: ${String(f.detail)}`).join('\n')}`,
      );
  }
}

interface ProgramStat {
  name: string;
  run_count: number;
  ns_per_run: number | null;
}

interface ProbeRow {
  /** absent: the run reported none */
  code?: number | null;
  hooks?: Record<string, string>;
  degraded?: string[];
  programs?: ProgramStat[];
}

interface Row {
  name: string;
  release: string;
  wallMs: number;
  attempts?: number;
  checks: { passed: number; failed: string[] };
  probes: Record<string, ProbeRow>;
  notes: string[];
}
const rows: Row[] = [];

function check(
  name: string,
  release: string,
  steps: Step[],
  consoleText: string,
  e: Expect,
  run: { wallMs: number; attempts?: number; builtinModules?: string[] },
): void {
  const c = new Checks(name);
  mkdirSync(OUT, { recursive: true });
  const record = () => {
    const row: Row = {
      name,
      release,
      wallMs: run.wallMs,
      attempts: run.attempts,
      checks: {
        passed: c.all.filter((x) => x.ok).length,
        failed: c.failed().map((f) => `${f.check}: ${String(f.detail)}`),
      },
      probes: {},
      notes: [],
    };
    rows.push(row);
    return row;
  };
  if (steps.length === 0) {
    c.ok('the driver reported', false, `no result at all; the output ended with:\n${consoleText.slice(-2500)}`);
    writeFileSync(join(OUT, `${release}.json`), JSON.stringify({ ...record(), allChecks: c.all, steps }, null, 2));
    c.verdict();
  }
  const at = (s: string) => steps.filter((x) => x.step === s);
  const one = (s: string): Step | undefined => {
    const x = at(s);
    c.ok(
      `a '${s}' result`,
      x.length === 1,
      `${x.length} '${s}' results (the driver stopped early? see ${release}-console.log)`,
    );
    return x[0];
  };
  const reported = one('kernel')?.release;
  c.ok('kernel release', e.release.test(reported ?? ''), `${String(reported)} !~ ${String(e.release)}`);

  // each probe run's debug log in a file of its own, out of the JSON
  for (const s of steps) {
    if (typeof s.log !== 'string') continue;
    const probe =
      s.step === 'check'
        ? `${String(s.probe)}-check`
        : s.step === 'latency'
          ? `latency-probe-${String(s.path)}`
          : s.step === 'connections'
            ? 'connection-tracker'
            : s.step === 'drops'
              ? 'packet-drop-probe'
              : s.step === 'iptables'
                ? 'packet-drop-probe-iptables'
                : s.step;
    writeFileSync(join(OUT, `${release}-${probe}.log`), s.log);
    s.log = `${release}-${probe}.log`;
  }

  if (e.modules) {
    const m = one('modules');
    for (const mod of MODULES) {
      if (run.builtinModules?.includes(mod)) continue;
      c.ok(
        `module ${mod} loaded (modload, with its dependencies)`,
        m?.loaded?.includes(mod),
        `modload exit ${String(m?.code)}: ${String(m?.stderr)}; loaded: ${String(m?.loaded?.join(' '))}`,
      );
    }
  }

  // --check loads each probe and says what it will use
  for (const probe of ['latency-probe', 'connection-tracker', 'packet-drop-probe']) {
    const r = at('check').find((x) => x.probe === probe);
    if (!c.ok(`${probe} --check ran`, r, 'no result')) continue;
    // a check step always has its stdout (runCli's, a string); String() only spells that out
    const stdout = String(r.stdout);
    c.eq(`${probe} --check exit`, r.code, 0, `${stdout}\n${String(r.stderr)}`);
    c.ok(`${probe} --check: ready`, new RegExp(`${probe}: ready`).test(stdout), stdout);
    c.ok(
      `${probe} --check: BPF atomics ${e.atomics ? 'yes' : 'no'}`,
      stdout.includes(`BPF atomics: ${e.atomics ? 'yes' : 'no'}`),
      stdout,
    );
    if (probe === 'latency-probe') {
      c.ok(
        'latency-probe --check: socket send hook',
        stdout.includes(`hook socket send: ${e.sendHook} (loaded: the kernel verified it)`),
        stdout,
      );
    }
  }

  // latency-probe: every exchange, both sides, on one long connection and on fresh ones
  const lat = at('latency');
  const def = lat.find((l) => l.path === 'default');
  if (c.ok('latency-probe (default hooks) ran', def, 'no result')) {
    const d = def;
    const why = `${d.error ?? ''}\n${d.stderr ?? ''}`;
    c.eq('latency-probe (default hooks) exit', d.code, 0, why);
    c.eq(
      'latency-probe (default hooks) workload: 100 persistent + 40 fresh-connection requests',
      d.expected,
      140,
      d.error,
    );
    c.eq('latency-probe (default hooks) client requests', d.client, d.expected);
    c.eq('latency-probe (default hooks) server requests', d.server, d.expected);
    c.eq('latency-probe (default hooks) socket send hook', d.hooks?.['socket send'], e.sendHook);
    c.eq('latency-probe (default hooks) exchanges discarded', d.discarded, 0);
  }
  for (const kind of ['raw_tracepoint', 'fentry', 'kprobe'] as const) {
    const r = lat.find((l) => l.path === kind);
    const hook = e.paths[kind];
    const label = `latency-probe forced to ${kind}`;
    if (!c.ok(`${label} ran`, r, 'no result')) continue;
    const why = `${r.error ?? ''}\n${r.stderr ?? ''}`;
    if (!hook) {
      c.eq(`${label}: not on this kernel, exit 4`, r.code, 4, why);
      c.ok(`${label}: says no hook for socket send`, /offers no hook for socket send/.test(why), why);
      continue;
    }
    c.eq(`${label} exit`, r.code, 0, why);
    c.eq(`${label} socket send hook`, r.hooks?.['socket send'], hook);
    c.eq(`${label} workload: 50 persistent + 24 fresh-connection requests`, r.expected, 74, r.error);
    c.eq(`${label} client requests`, r.client, r.expected);
    c.eq(`${label} server requests`, r.server, r.expected);
    if (kind === 'kprobe') c.eq(`${label} kretprobe returns missed`, r.kretprobe_missed, 0);
    else c.eq(`${label} kretprobe_missed`, r.kretprobe_missed, null);
  }

  // connection-tracker: opened, refused and TLS, against what the clients saw
  const conn = one('connections');
  if (conn) {
    const why = `${conn.error ?? ''}\n${conn.stderr ?? ''}`;
    c.eq('connection-tracker exit', conn.code, 0, why);
    c.eq(
      'connection-tracker workload (20 mpload connections, 5 refused, 3 TLS)',
      conn.expected,
      { opened: 20, refused: 5, tls: 3 },
      conn.error,
    );
    c.eq('connection-tracker opened (20 mpload + 3 TLS)', conn.opened, { client: 23, server: 23 });
    c.eq('connection-tracker refused', conn.refused, 5);
    c.eq('connection-tracker failed total', conn.failed_total, 5);
    c.eq('connection-tracker TLS handshakes (from the records)', conn.tls_handshakes, { client: 3, server: 3 });
    c.ok(
      'connection-tracker TLS handshake time measured',
      (conn.tls_ms?.client?.p50 ?? 0) > 0 && (conn.tls_ms?.server?.p50 ?? 0) > 0,
      JSON.stringify(conn.tls_ms),
    );
    c.eq('connection-tracker tls records hook', conn.hooks?.['tls records'], 'cgroup_skb:ingress+egress');
    c.ok(
      'connection-tracker: tls records not degraded',
      !(conn.degraded ?? []).some((d: string) => d.startsWith('tls records')),
      (conn.degraded ?? []).join('; '),
    );
  }

  // packet-drop-probe: UDP to a closed port, every datagram, at the UDP layer
  const drops = one('drops');
  if (drops) {
    const why = `${drops.error ?? ''}\n${drops.stderr ?? ''}`;
    c.eq('packet-drop-probe exit', drops.code, 0, why);
    c.eq('packet-drop-probe workload: UDP datagrams sent to a closed port', drops.expected, 50);
    c.eq('packet-drop-probe total', drops.total, 50);
    c.eq('packet-drop-probe by layer', drops.by_layer, { udp: 50 });
    c.eq('packet-drop-probe by reason', drops.by_reason, e.dropReasons ? { NO_SOCKET: 50 } : { unknown: 50 });
    c.eq('packet-drop-probe packet drops hook', drops.hooks?.['packet drops'], 'tp_btf:kfree_skb');
    c.eq(
      'packet-drop-probe service packets hook',
      drops.hooks?.['service packets'],
      e.kfuncNetns ? 'cgroup_skb:ingress+egress' : 'cgroup_skb:ingress+egress (by port)',
    );
    const said = (re: RegExp) => (drops.degraded ?? []).some((d: string) => re.test(d));
    const deg = (drops.degraded ?? []).join('; ');
    c.eq('packet-drop-probe says "no reason before 5.17"', said(/no reason before 5\.17/), !e.dropReasons, deg);
    c.eq('packet-drop-probe says "by local port alone"', said(/by local port alone/), !e.kfuncNetns, deg);
    c.eq('packet-drop-probe says "no rx_sk"', said(/no rx_sk/), !e.rxSk, deg);
  }

  // packet-drop-probe: an iptables DROP rule (iptables-legacy from this host, the kernel's ip_tables modules)
  const ipt = one('iptables');
  if (ipt) {
    if (c.ok('iptables available', !ipt.unavailable, `${String(ipt.unavailable)} (${ipt.modules ?? ''})`)) {
      const why = `${ipt.error ?? ''}\n${ipt.stderr ?? ''}`;
      c.eq('packet-drop-probe (iptables DROP) exit', ipt.code, 0, why);
      c.eq('packet-drop-probe (iptables DROP) workload: datagrams sent', ipt.expected, 50, ipt.error);
      c.eq('packet-drop-probe (iptables DROP) total', ipt.total, 50);
      c.eq('packet-drop-probe (iptables DROP) by layer', ipt.by_layer, { netfilter: 50 });
      c.eq(
        'packet-drop-probe (iptables DROP, tp_btf forbidden) packet drops hook',
        ipt.hooks?.['packet drops'],
        'tracepoint:skb/kfree_skb',
      );
      c.eq(
        'packet-drop-probe (iptables DROP) by reason',
        ipt.by_reason,
        e.dropReasons ? { NETFILTER_DROP: 50 } : { unknown: 50 },
      );
    }
  }

  const demo = one('demo');
  if (demo) {
    c.eq('demo exit', demo.code, 0, demo.output);
    c.ok('demo measured requests', (demo.requests ?? 0) > 0, demo.output);
  }
  c.eq('no kretprobe events left in tracefs', one('cleanup')?.kprobe_events, []);
  one('done');

  // the row: hooks, degradations and program costs per probe run
  const probes: Row['probes'] = {};
  const notes: string[] = [];
  for (const s of steps) {
    if (!['latency', 'connections', 'drops', 'iptables'].includes(s.step) || s.unavailable) continue;
    const key =
      s.step === 'latency'
        ? `latency-probe (${String(s.path)})`
        : s.step === 'connections'
          ? 'connection-tracker'
          : s.step === 'drops'
            ? 'packet-drop-probe'
            : 'packet-drop-probe (iptables)';
    probes[key] = { code: s.code, hooks: s.hooks, degraded: s.degraded, programs: s.programs };
    const idle = (s.programs ?? []).filter((p: ProgramStat) => !p.run_count).map((p: ProgramStat) => p.name);
    if (s.code === 0 && idle.length)
      notes.push(`${key}: run_count 0 (attached but never ran, or bpf_stats off): ${idle.join(', ')}`);
  }
  const row = record();
  row.probes = probes;
  row.notes = notes;
  writeFileSync(join(OUT, `${release}.json`), JSON.stringify({ ...row, allChecks: c.all, steps }, null, 2));
  c.verdict();
}

for (const [suite, e] of Object.entries(KERNELS) as [Suite, Expect][]) {
  test(`kernel matrix: Debian ${suite}, every probe with the real CLI under qemu`, { timeout: 16 * 60_000 }, (t) => {
    if (!needsRoot(t)) return;
    const kernel = debianKernel(suite);
    const run = runGuest(kernel, `node ${DRIVER}\n`, {
      files: { 'matrix-tls.json': pems() },
      modules: MODULES,
      timeoutMs: 15 * 60_000,
    });
    mkdirSync(OUT, { recursive: true });
    writeFileSync(join(OUT, `${kernel.release}-console.log`), run.console);
    const blocks = parseBlocks(run.console);
    const steps = blocks.filter((b) => b.data).map((b) => b.data as Step);
    const bad = blocks.filter((b) => b.error);
    assert.ok(
      run.reachedInit,
      `${kernel.release}: the kernel never ran /init in ${run.attempts} boots; console:\n${run.console.slice(-4000)}`,
    );
    assert.ok(
      !run.timedOut,
      `${kernel.release}: the guest was killed after 15 min; console:\n${run.console.slice(-4000)}`,
    );
    assert.deepEqual(bad, [], `${kernel.release}: unreadable result blocks`);
    check(suite, kernel.release, steps, run.console, e, {
      wallMs: run.ms,
      attempts: run.attempts,
      builtinModules: run.builtinModules,
    });
    assert.equal(
      run.scriptExit,
      0,
      `${kernel.release}: the driver exited ${String(run.scriptExit)}; console:\n${run.console.slice(-4000)}`,
    );
  });
}

test("kernel matrix: this host's kernel, the same workloads", { timeout: 11 * 60_000 }, (t) => {
  if (!needsRoot(t)) return;
  const started = Date.now();
  const r = spawnSync(process.execPath, [DRIVER], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 600_000,
    maxBuffer: 256 << 20,
  });
  const steps = parseBlocks(r.stdout)
    .filter((b) => b.data)
    .map((b) => b.data as Step);
  check('host', release(), steps, r.stdout + r.stderr, HOST, { wallMs: Date.now() - started });
  assert.equal(r.status, 0, r.stderr);
});

/** One line per kernel: what ran and how it went; then the hooks and what their programs cost. */
after(() => {
  if (rows.length === 0) return;
  const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));
  const w = Math.max(...rows.map((r) => r.release.length)) + 1;
  const lines = [
    '',
    'kernel matrix (build/kernel-matrix/<release>.json):',
    `${pad('', 9)}${pad('kernel', w)} ${pad('wall', 6)} ${pad('checks', 8)} ${pad('latency send hook', 34)} failed`,
  ];
  for (const r of rows) {
    // a row has the runs that reported: this one may be missing
    const latencyDefault = r.probes['latency-probe (default)'] as ProbeRow | undefined;
    const send = latencyDefault?.hooks?.['socket send'] ?? '-';
    lines.push(
      `${pad(r.name, 9)}${pad(r.release, w)} ${pad(`${Math.round(r.wallMs / 1000)}s`, 6)} ${pad(`${r.checks.passed}/${r.checks.passed + r.checks.failed.length}`, 8)} ${pad(send, 34)} ${r.checks.failed.map((f) => f.split(':')[0]).join('; ') || '-'}`,
    );
  }
  lines.push('', 'ns per run (bpf_stats) of each program, by probe run:');
  for (const r of rows) {
    for (const [probe, p] of Object.entries(r.probes)) {
      const progs = (p.programs ?? [])
        .filter((x) => x.run_count > 0)
        .map((x) => `${x.name} ${x.ns_per_run === null ? '?' : Math.round(x.ns_per_run)}`)
        .join(', ');
      lines.push(
        `  ${pad(r.release, w)} ${pad(probe, 30)} ${progs || `(no program ran${p.code !== 0 ? `; exit ${String(p.code)}` : ''})`}`,
      );
    }
    for (const n of r.notes) lines.push(`  ${pad(r.release, w)} note: ${n}`);
  }
  console.log(lines.join('\n'));
});
