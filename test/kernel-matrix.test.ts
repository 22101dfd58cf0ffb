// The kernel matrix: the real command-line tools (Node, the addon, the Wasm
// workers, the BPF objects of this one build) on Debian's 5.10 (bullseye),
// 6.1 (bookworm) and 6.12 (trixie) cloud kernels under qemu, and on this
// host's kernel. test/guest/matrix-run.ts runs the workloads there and
// reports; here each kernel's figures are held to the workload's own counts,
// exactly, and the hooks and degradations to what that kernel has. Each
// kernel's results go to build/kernel-matrix/<release>.json (the source of
// docs/kernels.md's table and per-hook costs). Emulation distorts time:
// nothing here asserts a duration.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { debianKernel } from './helpers/kernels.js';
import { runGuest } from './helpers/guest.js';
import { needsRoot, tempDir } from './helpers/probe.js';
import { repoRoot } from './helpers/workload.js';

type Step = Record<string, any> & { step: string };

const DRIVER = join(repoRoot, 'dist', 'test', 'guest', 'matrix-run.js');
const OUT = join(repoRoot, 'build', 'kernel-matrix');

function parse(console: string): Step[] {
  return [...console.matchAll(/^MPRESULT (\{.*\})\s*$/gm)].map((m) => JSON.parse(m[1]) as Step);
}

/** A self-signed certificate made here, for the guests (they have no openssl). */
function pems(): string {
  const dir = tempDir();
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'k'), '-out', join(dir, 'c'), '-days', '2', '-subj', '/CN=localhost'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.stringify({ key: spawnSync('cat', [join(dir, 'k')], { encoding: 'utf8' }).stdout, cert: spawnSync('cat', [join(dir, 'c')], { encoding: 'utf8' }).stdout });
}

interface Expect {
  release: RegExp;
  /** the hook latency-probe picks for reads and writes by itself */
  sendHook: string;
  /** kinds of read/write hook this kernel has (the others must be refused with exit 4) */
  paths: { raw_tracepoint?: string; fentry?: string; kprobe?: string };
  atomics: boolean;
  dropReasons: boolean;
  /** bpf_cast_to_kern_ctx (6.3+): packets of a service per network namespace */
  kfuncNetns: boolean;
  rxSk: boolean;
}

const KERNELS: Record<'bullseye' | 'bookworm' | 'trixie', Expect> = {
  bullseye: {
    release: /^5\.10\./, sendHook: 'fexit:tcp_sendmsg (by prototype)',
    paths: { fentry: 'fexit:tcp_sendmsg (by prototype)', kprobe: 'kprobe:tcp_sendmsg' },
    atomics: false, dropReasons: false, kfuncNetns: false, rxSk: false,
  },
  bookworm: {
    release: /^6\.1\./, sendHook: 'fexit:tcp_sendmsg',
    paths: { fentry: 'fexit:tcp_sendmsg', kprobe: 'kprobe:tcp_sendmsg' },
    atomics: true, dropReasons: true, kfuncNetns: false, rxSk: false,
  },
  trixie: {
    release: /^6\.12\./, sendHook: 'raw_tracepoint:sock_send_length',
    paths: { raw_tracepoint: 'raw_tracepoint:sock_send_length', fentry: 'fexit:tcp_sendmsg', kprobe: 'kprobe:tcp_sendmsg' },
    atomics: true, dropReasons: true, kfuncNetns: true, rxSk: true,
  },
};

/** This host (PLATFORM.md): socket tracepoints, no kprobes, fentry refused. */
const HOST: Expect = {
  release: /./, sendHook: 'raw_tracepoint:sock_send_length',
  paths: { raw_tracepoint: 'raw_tracepoint:sock_send_length' },
  atomics: true, dropReasons: true, kfuncNetns: true, rxSk: true,
};

function check(name: string, steps: Step[], console: string, e: Expect): void {
  const at = (s: string) => steps.filter((x) => x.step === s);
  const one = (s: string) => {
    const x = at(s);
    assert.equal(x.length, 1, `${name}: no '${s}' result; the console ended with:\n${console.slice(-3000)}`);
    return x[0];
  };
  const kernel = one('kernel');
  assert.match(kernel.release, e.release);
  mkdirSync(OUT, { recursive: true });
  writeFileSync(join(OUT, `${kernel.release}.json`), JSON.stringify({ name, release: kernel.release, steps }, null, 2));

  // --check loads each probe and says what it will use
  for (const c of at('check')) {
    assert.equal(c.code, 0, `${name} ${c.probe} --check: ${c.stdout}\n${c.stderr}`);
    assert.match(c.stdout, new RegExp(`${c.probe}: ready`));
    assert.match(c.stdout, new RegExp(`BPF atomics: ${e.atomics ? 'yes' : 'no'}`));
  }
  assert.equal(at('check').length, 3);
  const latCheck = at('check').find((c) => c.probe === 'latency-probe')!;
  assert.ok(latCheck.stdout.includes(`hook socket send: ${e.sendHook} (loaded: the kernel verified it)`), latCheck.stdout);

  // latency-probe: every exchange, both sides, on one long connection and on fresh ones
  const lat = at('latency');
  const def = lat.find((l) => l.path === 'default')!;
  assert.equal(def.code, 0, `${name} latency-probe: ${def.stderr}`);
  assert.equal(def.error, undefined);
  assert.equal(def.expected, 140);
  assert.equal(def.client, def.expected, `${name}: client view`);
  assert.equal(def.server, def.expected, `${name}: server view`);
  assert.equal(def.hooks['socket send'], e.sendHook);
  assert.equal(def.discarded, 0);
  for (const kind of ['raw_tracepoint', 'fentry', 'kprobe'] as const) {
    const r = lat.find((l) => l.path === kind)!;
    const hook = e.paths[kind];
    if (!hook) {
      assert.equal(r.code, 4, `${name}: ${kind} is not on this kernel, the probe must say so and exit 4: ${r.stderr}`);
      assert.match(r.stderr, /offers no hook for socket send/);
      continue;
    }
    assert.equal(r.code, 0, `${name} ${kind}: ${r.stderr}`);
    assert.equal(r.hooks['socket send'], hook, `${name}: forced ${kind}`);
    assert.equal(r.expected, 74);
    assert.equal(r.client, 74, `${name} ${kind}: client view`);
    assert.equal(r.server, 74, `${name} ${kind}: server view`);
    if (kind === 'kprobe') assert.equal(r.kretprobe_missed, 0, `${name}: kretprobe returns missed`);
    else assert.equal(r.kretprobe_missed, null);
  }

  // connection-tracker: opened, refused and TLS, against what the clients saw
  const conn = one('connections');
  assert.equal(conn.code, 0, `${name} connection-tracker: ${conn.stderr}`);
  assert.deepEqual(conn.expected, { opened: 20, refused: 5, tls: 3 });
  assert.deepEqual(conn.opened, { client: 23, server: 23 }, `${name}: 20 mpload + 3 TLS connections`);
  assert.equal(conn.refused, 5);
  assert.equal(conn.failed_total, 5);
  assert.deepEqual(conn.tls_handshakes, { client: 3, server: 3 }, `${name}: TLS handshakes from the records`);
  assert.equal(conn.hooks['tls records'], 'cgroup_skb:ingress+egress');
  assert.ok(!conn.degraded.some((d: string) => d.startsWith('tls records')), conn.degraded.join('; '));

  // packet-drop-probe: UDP to a closed port, every datagram, at the UDP layer
  const drops = one('drops');
  assert.equal(drops.code, 0, `${name} packet-drop-probe: ${drops.stderr}`);
  assert.equal(drops.expected, 50);
  assert.equal(drops.total, 50);
  assert.deepEqual(drops.by_layer, { udp: 50 });
  assert.deepEqual(drops.by_reason, e.dropReasons ? { NO_SOCKET: 50 } : { unknown: 50 });
  assert.equal(drops.hooks['service packets'], e.kfuncNetns ? 'cgroup_skb:ingress+egress' : 'cgroup_skb:ingress+egress (by port)');
  const said = (re: RegExp) => drops.degraded.some((d: string) => re.test(d));
  assert.equal(said(/no reason before 5\.17/), !e.dropReasons, drops.degraded.join('; '));
  assert.equal(said(/by local port alone/), !e.kfuncNetns, drops.degraded.join('; '));
  assert.equal(said(/no rx_sk/), !e.rxSk, drops.degraded.join('; '));

  const demo = one('demo');
  assert.equal(demo.code, 0, `${name} demo:\n${demo.output}`);
  assert.ok(demo.requests > 0, demo.output);

  assert.deepEqual(one('cleanup').kprobe_events, [], `${name}: kretprobe events left in tracefs`);
  one('done');
}

for (const [suite, e] of Object.entries(KERNELS) as [keyof typeof KERNELS, Expect][]) {
  test(`kernel matrix: Debian ${suite}, every probe with the real CLI under qemu`, (t) => {
    if (!needsRoot(t)) return;
    const kernel = debianKernel(suite);
    const out = runGuest(kernel, `node ${DRIVER}\n`, { 'matrix-tls.json': pems() });
    const steps = parse(out);
    assert.ok(/VM-DONE/.test(out), `the guest did not run to the end:\n${out.slice(-4000)}`);
    check(suite, steps, out, e);
  });
}

test('kernel matrix: this host\'s kernel, the same workloads', (t) => {
  if (!needsRoot(t)) return;
  const r = spawnSync(process.execPath, [DRIVER], { cwd: repoRoot, encoding: 'utf8', timeout: 600_000 });
  assert.equal(r.status, 0, r.stderr);
  check('host', parse(r.stdout), r.stdout + r.stderr, HOST);
});
