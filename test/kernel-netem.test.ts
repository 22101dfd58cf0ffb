// Measurement truth against a real network delay: in one Debian cloud kernel under qemu (bookworm,
// 6.1, by default; NETEM_SUITES=bullseye,bookworm,trixie picks others), two network namespaces
// joined by a veth pair with `netem delay D` on each end (a round trip of 2·D), an mpload server
// that sleeps 2 ms per request in one and an mpload client in the other, both timing themselves
// (test/guest/netem-run.ts). NETEM_DELAYS_MS=5,1 (each way: 10 and 2 ms round trips) by default.
// Checked, per imposed round trip:
//   - latency-probe's network view p50 (the kernel's windowed minimum RTT) and connection-tracker's
//     set-up time p50, client side and server side, between the imposed round trip and the
//     client's own timing of connect() (p90, +10 %);
//   - client view = server view + round trip: the probe's client mean - server mean at least the
//     imposed round trip, at most mpload's own client - server; the server view against the
//     server's own timing;
//   - TLS 1.3 handshakes (Node in both namespaces), both sides: at least one round trip, at most
//     Node's own slowest handshake.
// Emulation distorts time (the kernel matrix asserts no duration for that reason). Here the imposed
// delay dominates CPU noise, so the imposed round trip is a hard floor, but TCG also makes the
// guest's own stack slow: a round trip in the guest is the imposed one plus 0.5-4 ms (the SYN
// handshake more than data), measured and printed (docs/latency-probe.md). The issue's "within 10 %
// of the imposed round trip" would hold on hardware, not here; the upper bounds are the
// applications' own timings in the same guest instead, which contain that stack time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { debianKernel, type Suite } from './helpers/kernels.js';
import { parseBlocks, runGuest } from './helpers/guest.js';
import { needsRoot, tempDir } from './helpers/probe.js';
import { repoRoot } from './helpers/workload.js';

const DRIVER = join(repoRoot, 'dist', 'test', 'guest', 'netem-run.js');
const OUT = join(repoRoot, 'build', 'kernel-netem');
const SUITES = (process.env.NETEM_SUITES ?? 'bookworm').split(',') as Suite[];
const DELAYS = (process.env.NETEM_DELAYS_MS ?? '5,1').split(',').map(Number);
/** TLS handshakes per delay (netem-run.ts TLS_HANDSHAKES) */
const TLS_HANDSHAKES = 5;

interface Pcts {
  p50: number;
  p90?: number;
}
interface Step {
  step: string;
  ms: number;
  delay_ms?: number;
  release?: string;
  code?: number | null;
  error?: string;
  stderr?: string;
  loaded?: string[];
  qdisc?: (number | null)[];
  errors?: string[];
  shown?: string;
  server_self?: { requests: number; mean_us: number; p50_us: number } | string;
  client_self?: { requests: number; mean_us: number; p50_us: number } | null;
  client?: { requests: number; mean_ms: number | null; p50: number } | null;
  server?: { requests: number; mean_ms: number | null; p50: number } | null;
  network?: { count: number; p50: number; mean_ms: number | null } | null;
  network_srtt?: { count: number; p50: number; mean_ms: number | null } | null;
  connections?: { role: string; requests: number; min_rtt_ms: number; srtt_ms: number }[];
  overhead?: { network_ms?: number | null; network_srtt_ms?: number | null; kernel_processing_ms?: number | null };
  client_connect_us?: Pcts | null;
  fresh_requests?: number | null;
  opened?: { client: number; server: number } | null;
  setup?: { client: Pcts | null; server: Pcts | null } | null;
  tls_error?: string;
  tls_self?: { done: number; ms: number[] } | null;
  tls_handshakes?: { client: number; server: number } | null;
  tls?: { client: Pcts | null; server: Pcts | null } | null;
}

/** A self-signed certificate made here, for the guest (it has no openssl). */
function pems(): string {
  const dir = tempDir();
  const r = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'k'), '-out', join(dir, 'c')].concat([
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
    ]),
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  return JSON.stringify({ key: readFileSync(join(dir, 'k'), 'utf8'), cert: readFileSync(join(dir, 'c'), 'utf8') });
}

const round = (x: number | null | undefined) => (typeof x === 'number' ? Math.round(x * 1000) / 1000 : x);

for (const suite of SUITES) {
  test(
    `netem: imposed round trips under latency-probe and connection-tracker (Debian ${suite}, qemu)`,
    { timeout: 10 * 60_000 },
    (t) => {
      if (!needsRoot(t)) return;
      const kernel = debianKernel(suite);
      const run = runGuest(kernel, `node ${DRIVER} ${DELAYS.join(' ')}\n`, {
        files: { 'netem-tls.json': pems() },
        modules: ['veth', 'sch_netem'],
        binaries: ['/usr/sbin/ip', '/usr/sbin/tc'],
        timeoutMs: 8 * 60_000,
      });
      mkdirSync(OUT, { recursive: true });
      writeFileSync(join(OUT, `${kernel.release}-console.log`), run.console);
      t.diagnostic(`${kernel.release}: guest wall ${Math.round(run.ms / 1000)} s, ${run.attempts} boot(s)`);
      assert.ok(run.reachedInit, `${kernel.release}: never ran /init; console:\n${run.console.slice(-4000)}`);
      assert.ok(!run.timedOut, `${kernel.release}: killed after 8 min; console:\n${run.console.slice(-4000)}`);
      const blocks = parseBlocks(run.console);
      assert.deepEqual(
        blocks.filter((b) => b.error),
        [],
        'unreadable result blocks',
      );
      const steps = blocks.map((b) => b.data as Step);
      writeFileSync(join(OUT, `${kernel.release}.json`), JSON.stringify(steps, null, 2));
      const errors = steps.filter((s) => s.step === 'case-error');
      assert.deepEqual(errors, [], 'a case of the driver threw');

      const failed: string[] = [];
      const check = (what: string, ok: boolean, detail: string) => {
        t.diagnostic(`${ok ? 'ok ' : 'NOT'} ${what}: ${detail}`);
        if (!ok) failed.push(`${what}: ${detail}`);
      };
      for (const d of DELAYS) {
        const rtt = 2 * d;
        const of = (s: string) => steps.find((x) => x.step === s && x.delay_ms === d);
        const netem = of('netem');
        check(`${rtt} ms: netem on both ends`, netem?.qdisc?.every((c) => c === 0) === true, JSON.stringify(netem));
        const lat = of('latency');
        assert.ok(lat, `no latency result for ${String(d)} ms`);
        check(
          `${rtt} ms: latency-probe exit 0`,
          lat.code === 0,
          `${String(lat.code)} ${lat.error ?? ''} ${lat.stderr ?? ''}`,
        );
        const self = typeof lat.server_self === 'object' ? lat.server_self : undefined;
        check(`${rtt} ms: mpload server summary`, !!self, JSON.stringify(lat.server_self));
        // The round trip as this guest's kernels make it: the imposed delay plus the stack's own time, which
        // TCG makes ~1-4 ms (measured: docs/latency-probe.md; the SYN handshake more than data). So the
        // bracket is the imposed round trip below (netem never delivers early; 2 % for the histogram's
        // buckets) and, above, the client's own timing of connect() (mpload, clock_gettime around it: one
        // SYN round trip plus the call), its p90 (the long connection's handshake, which bounds its minimum
        // RTT, is one sample of that distribution) +10 % (the tolerance).
        const conn = of('connections');
        assert.ok(conn, `no connections result for ${String(d)} ms`);
        const connectMs = (conn.client_connect_us?.p90 ?? NaN) / 1000;
        const lo = 0.98 * rtt;
        const hi = 1.1 * connectMs;
        const inside = (x: number | null | undefined) => typeof x === 'number' && x >= lo && x <= hi;
        const range = `[${String(round(lo))}, ${String(round(hi))}] ms (imposed RTT ${rtt} ms; mpload connect() p90 ${String(round(connectMs))} ms)`;
        const cl = lat.client?.mean_ms;
        const sv = lat.server?.mean_ms;
        const probeDiff = typeof cl === 'number' && typeof sv === 'number' ? cl - sv : null;
        const selfDiff = lat.client_self && self ? (lat.client_self.mean_us - self.mean_us) / 1000 : null;
        t.diagnostic(
          `${rtt} ms RTT: network p50 ${String(lat.network?.p50)} ms (n ${String(lat.network?.count)}), ` +
            `srtt p50 ${String(lat.network_srtt?.p50)} ms; client mean ${String(round(cl))} ms, server mean ${String(round(sv))} ms, ` +
            `client - server ${String(round(probeDiff))} ms; mpload's own: client ${String(round((lat.client_self?.mean_us ?? NaN) / 1000))} ms, ` +
            `server ${String(round((self?.mean_us ?? NaN) / 1000))} ms, client - server ${String(round(selfDiff))} ms; ` +
            `connections ${JSON.stringify(lat.connections)}; overhead_analysis network_ms ${String(lat.overhead?.network_ms)}, ` +
            `network_srtt_ms ${String(lat.overhead?.network_srtt_ms)}, kernel_processing_ms ${String(lat.overhead?.kernel_processing_ms)}`,
        );
        check(
          `${rtt} ms: requests seen on both sides`,
          lat.client?.requests === lat.client_self?.requests && lat.server?.requests === lat.client_self?.requests,
          `client ${String(lat.client?.requests)}, server ${String(lat.server?.requests)}, mpload ${String(lat.client_self?.requests)}`,
        );
        // the bound (10 % of the imposed round trip) holds on hardware, not under TCG: what is over it
        t.diagnostic(
          `${rtt} ms RTT: over the imposed round trip under TCG: network p50 +${String(round((lat.network?.p50 ?? NaN) - rtt))} ms, ` +
            `set-up p50 client +${String(round((conn.setup?.client?.p50 ?? NaN) - rtt))} ms, server +${String(round((conn.setup?.server?.p50 ?? NaN) - rtt))} ms`,
        );
        check(`${rtt} ms: network view p50 in ${range}`, inside(lat.network?.p50), `${String(lat.network?.p50)} ms`);
        check(
          `${rtt} ms: overhead_analysis.network_ms is the network view p50`,
          lat.overhead?.network_ms === lat.network?.p50,
          `${String(lat.overhead?.network_ms)} vs ${String(lat.network?.p50)}`,
        );
        // the server view against the server's own timing (mpload: request read -> just before the write);
        // the probe's span also holds the write() that sends the response through veth and netem (0.4-0.5 ms
        // under TCG, measured), so: no less than 98 % of mpload's, no more than 10 % + 1 ms over it
        const selfServer = (self?.mean_us ?? NaN) / 1000;
        check(
          `${rtt} ms: server view mean ≈ mpload server's own mean (+ the write)`,
          typeof sv === 'number' && sv >= 0.98 * selfServer && sv <= 1.1 * selfServer + 1,
          `${String(round(sv))} vs ${String(round(selfServer))} ms`,
        );
        // client = server + round trip: the probe's client - server is at least the imposed round trip, and at
        // most mpload's own client - server (the applications' timings hold the probe's spans, plus the calls)
        check(
          `${rtt} ms: imposed RTT ≤ client mean - server mean ≤ mpload's own client - server`,
          probeDiff !== null && selfDiff !== null && probeDiff >= lo && probeDiff <= 1.02 * selfDiff,
          `${String(round(probeDiff))} ms; mpload's ${String(round(selfDiff))} ms`,
        );

        check(
          `${rtt} ms: connection-tracker exit 0`,
          conn.code === 0,
          `${String(conn.code)} ${conn.error ?? ''} ${conn.stderr ?? ''}`,
        );
        t.diagnostic(
          `${rtt} ms RTT: set-up p50 client ${String(conn.setup?.client?.p50)} ms, server ${String(conn.setup?.server?.p50)} ms ` +
            `(mpload connect() p50 ${String(round((conn.client_connect_us?.p50 ?? NaN) / 1000))} ms; opened ${JSON.stringify(conn.opened)}); ` +
            `TLS p50 client ${String(conn.tls?.client?.p50)} ms, server ${String(conn.tls?.server?.p50)} ms ` +
            `(${JSON.stringify(conn.tls_handshakes)}), Node's own ${JSON.stringify(conn.tls_self?.ms.map(round))} ${conn.tls_error ?? ''}`,
        );
        check(
          `${rtt} ms: client set-up p50 in ${range}`,
          inside(conn.setup?.client?.p50),
          `${String(conn.setup?.client?.p50)} ms`,
        );
        check(
          `${rtt} ms: server set-up p50 in ${range}`,
          inside(conn.setup?.server?.p50),
          `${String(conn.setup?.server?.p50)} ms`,
        );
        // TLS 1.3 (Node both ends): one round trip plus the crypto, which under TCG is tens of ms, so the
        // bounds are the round trip below and Node's own slowest handshake (TCP connected -> secure) above
        const tlsSelf = conn.tls_self?.ms ?? [];
        check(
          `${rtt} ms: TLS handshakes, Node's and the probe's`,
          tlsSelf.length === TLS_HANDSHAKES &&
            conn.tls_handshakes?.client === TLS_HANDSHAKES &&
            conn.tls_handshakes.server === TLS_HANDSHAKES,
          `Node ${tlsSelf.length}, probe ${JSON.stringify(conn.tls_handshakes)} ${conn.tls_error ?? ''}`,
        );
        for (const side of ['client', 'server'] as const) {
          const p50 = conn.tls?.[side]?.p50;
          check(
            `${rtt} ms: TLS handshake p50 (${side}) between the RTT and Node's slowest handshake`,
            typeof p50 === 'number' && p50 >= lo && p50 <= 1.1 * Math.max(...tlsSelf),
            `${String(p50)} ms, Node's own ${JSON.stringify(tlsSelf.map(round))}`,
          );
        }
      }
      assert.deepEqual(failed, [], `${kernel.release}: ${failed.length} checks failed`);
      assert.equal(run.scriptExit, 0, `the driver exited ${String(run.scriptExit)}`);
    },
  );
}
