// Measurement truth against a real network delay: in one Debian cloud kernel under qemu (bookworm,
// 6.1, by default; NETEM_SUITES=bullseye,bookworm,trixie picks others: 5.10 and 6.12 pass the same
// checks. The default stays one kernel: a kernel's run took 1.6 min on a quiet 2-core host, 2-4 min
// on a busy one, the mesh split 20-60 s of it; a second kernel in `npm test` would add more than the
// CI's time allows), two network namespaces joined by a veth pair with `netem delay D` on each end
// (a round trip of 2·D), an mpload server that sleeps 2 ms per request in one and an mpload client
// in the other, both timing themselves (test/guest/netem-run.ts). NETEM_DELAYS_MS=5,1 (each way:
// 10 and 2 ms round trips) by default.
// Checked, per imposed round trip:
//   - latency-probe's network view p50 (the kernel's windowed minimum RTT) and connection-tracker's
//     set-up time p50, client side and server side, between the imposed round trip and the
//     client's own timing of connect() (p90, +10 %);
//   - client view = server view + round trip: the probe's client mean - server mean at least the
//     imposed round trip, at most mpload's own client - server; the server view against the
//     server's own timing;
//   - TLS 1.3 handshakes (Node in both namespaces), both sides: at least one round trip, at most
//     Node's own slowest handshake;
//   - the mesh split (latency-probe --proxy-comm haproxy) of client -> haproxy -> [the delayed veth]
//     -> haproxy -> server sleeping 3 ms: the imposed round trip lands in kernel_processing_ms (at
//     least the imposed round trip, at most what the client waited beyond the server's own time),
//     not in application_ms (between the server's own timing and haproxy inbound's wait for it)
//     nor in mesh_processing_ms (each proxy's time within what haproxy's own timers and the
//     client's own leave around it); total_ms against the client's own timing.
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
import type { OverheadAnalysis, ServiceOverhead } from '../src/report/overhead.js';
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
/** requests through the sidecar chain per delay, and the server's sleep in each (netem-run.ts MESH_*) */
const MESH_REQUESTS = 100;
const MESH_SLEEP_US = 3000;

/** haproxy's own log over the requests it answered 200 (netem-run.ts haproxyOwn): means in ms */
interface HaproxyOwn {
  pid: number;
  requests: number;
  ta_ms: number;
  tr_ms: number;
  /** Ta - Tr: the time inside it, in its whole-ms ticks */
  inside_ms: number;
}

/** A service whose time the analysis split: every part a number */
type SplitService = ServiceOverhead &
  Record<'total_ms' | 'application_ms' | 'kernel_processing_ms' | 'mesh_processing_ms', number>;

function isSplit(s: ServiceOverhead): s is SplitService {
  return (
    s.total_ms !== null && s.application_ms !== null && s.kernel_processing_ms !== null && s.mesh_processing_ms !== null
  );
}

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
  sleep_us?: number;
  haproxy?: { outbound: HaproxyOwn; inbound: HaproxyOwn };
  mesh_overhead?: OverheadAnalysis | null;
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
        // haproxy for the sidecars, ss for startSidecar's wait until it listens
        binaries: ['/usr/sbin/ip', '/usr/sbin/tc', '/usr/sbin/haproxy', '/usr/bin/ss'],
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

      // The mesh split with the delayed hop between the two sidecars.
      const splits = new Map<number, SplitService>();
      for (const d of DELAYS) {
        const rtt = 2 * d;
        const mesh = steps.find((x) => x.step === 'mesh' && x.delay_ms === d);
        assert.ok(mesh, `no mesh result for ${String(d)} ms`);
        check(
          `${rtt} ms mesh: latency-probe exit 0`,
          mesh.code === 0,
          `${String(mesh.code)} ${mesh.error ?? ''} ${mesh.stderr ?? ''}`,
        );
        const oa = mesh.mesh_overhead;
        const own = mesh.haproxy;
        const cself = mesh.client_self;
        const sself = typeof mesh.server_self === 'object' ? mesh.server_self : undefined;
        const service = oa?.by_service.find((x) => x.path.length === 2);
        const show = JSON.stringify({
          service,
          proxies: oa?.proxies,
          haproxy: own,
          client_self: cself,
          server_self: mesh.server_self,
        });
        if (!oa || !own || !cself || !sself || !service || !isSplit(service)) {
          check(`${rtt} ms mesh: a service split behind two proxies, the applications' own timings`, false, show);
          continue;
        }
        splits.set(d, service);
        const clientOwn = cself.mean_us / 1000;
        const serverOwn = sself.mean_us / 1000;
        const sleep = MESH_SLEEP_US / 1000;
        const ownInside = own.outbound.inside_ms + own.inbound.inside_ms;
        t.diagnostic(
          `${rtt} ms RTT mesh split: total ${String(round(service.total_ms))} ms (client's own ${String(round(clientOwn))}), ` +
            `application ${String(round(service.application_ms))} ms (server's own ${String(round(serverOwn))}, sleep ${sleep}), ` +
            `mesh ${String(round(service.mesh_processing_ms))} ms (haproxy's own Ta - Tr ${String(round(own.outbound.inside_ms))} + ${String(round(own.inbound.inside_ms))}), ` +
            `kernel ${String(round(service.kernel_processing_ms))} ms (imposed RTT ${rtt}; client's own - server's own ${String(round(clientOwn - serverOwn))}); ` +
            `proxies ${JSON.stringify(oa.proxies.map((p) => ({ pid: p.pid, req: p.requests, up: p.upstream_requests, down_ms: round(p.downstream_ms), up_ms: round(p.upstream_ms), in_ms: round(p.processing_ms) })))}; ` +
            `haproxy Tr outbound ${String(round(own.outbound.tr_ms))} ms, Ta inbound ${String(round(own.inbound.ta_ms))} ms; network_ms ${String(oa.network_ms)}`,
        );
        // the path, in order, and every request accounted for by the client, each proxy (its own log and the
        // probe, both directions) and the server
        check(
          `${rtt} ms mesh: path outbound -> inbound haproxy, every request at every hop`,
          JSON.stringify(service.path) ===
            JSON.stringify([`${own.outbound.pid}:haproxy`, `${own.inbound.pid}:haproxy`]) &&
            service.requests === MESH_REQUESTS &&
            cself.requests === MESH_REQUESTS &&
            sself.requests === MESH_REQUESTS &&
            own.outbound.requests === MESH_REQUESTS &&
            own.inbound.requests === MESH_REQUESTS &&
            oa.proxies.length === 2 &&
            oa.proxies.every((p) => p.requests === MESH_REQUESTS && p.upstream_requests === MESH_REQUESTS),
          show,
        );
        // the parts add up
        check(
          `${rtt} ms mesh: kernel + mesh + application = total`,
          Math.abs(
            service.kernel_processing_ms + service.mesh_processing_ms + service.application_ms - service.total_ms,
          ) < 0.001,
          `${String(service.kernel_processing_ms)} + ${String(service.mesh_processing_ms)} + ${String(service.application_ms)} vs ${String(service.total_ms)}`,
        );
        // kernel and network: the imposed round trip (the one delayed hop, crossed once each way per request)
        // is a floor; above, what the client waited beyond the server's own time (the sidecars' time and every
        // hop's, as the applications timed them; 2 % as for client - server above)
        const outside = clientOwn - serverOwn;
        check(
          `${rtt} ms mesh: imposed RTT ≤ kernel_processing_ms ≤ client's own - server's own`,
          service.kernel_processing_ms >= 0.98 * rtt && service.kernel_processing_ms <= 1.02 * outside,
          `${String(round(service.kernel_processing_ms))} ms in [${String(round(0.98 * rtt))}, ${String(round(1.02 * outside))}]`,
        );
        // application: the server's processing. The sleep it was asked for and its own timing (read done -> just
        // before the write; the probe's span adds the write) are floors. Above: the time haproxy inbound waited for
        // the server (its own Tr, request sent -> response headers received, +1 ms for its whole-ms clock), which
        // lies between the request's and the response's crossings of the delayed veth: no room for the imposed
        // round trip. (The server's own + 10 % + 1 ms, the bound of the server view above, does not hold here:
        // the write wakes haproxy, and under TCG the server's write returns 0.6-4 ms later, measured.)
        const proxyOf = (pid: number) => oa.proxies.find((p) => p.pid === pid)?.processing_ms;
        check(
          `${rtt} ms mesh: sleep, server's own ≤ application_ms ≤ haproxy inbound's own Tr + 1 ms`,
          service.application_ms >= Math.max(sleep, 0.98 * serverOwn) &&
            service.application_ms <= own.inbound.tr_ms + 1,
          `${String(round(service.application_ms))} ms; server's own ${String(round(serverOwn))} ms, sleep ${sleep} ms, ` +
            `haproxy inbound's Tr ${String(round(own.inbound.tr_ms))} ms`,
        );
        // mesh: the time inside each proxy = its server view downstream - its client view upstream, so what it
        // waits for upstream is not in it. Bounded, per proxy, by the ground truths around it (means of per-request
        // containments; haproxy's timers in whole ms, ±1 ms each):
        //   outbound: at most the client's own wait minus the outbound's own Tr (its wait upstream, which holds
        //     the delayed hop), + 1 ms;
        //   inbound: at most the outbound's own Tr minus the imposed round trip minus the inbound's own Tr, + 2 ms.
        // (haproxy's own Ta - Tr, 0.2-2.4 ms a proxy here, is no bound: the kernel sees the proxy from the return of
        // its read to the return of its write, under TCG 1.5-10 ms a proxy with wake-ups haproxy's clock cannot see.)
        const outIn = proxyOf(own.outbound.pid);
        const inIn = proxyOf(own.inbound.pid);
        const outMax = clientOwn - own.outbound.tr_ms + 1;
        const inMax = own.outbound.tr_ms - 0.98 * rtt - own.inbound.tr_ms + 2;
        check(
          `${rtt} ms mesh: outbound's time in (0, client's own - its own Tr + 1 ms], inbound's in (0, outbound's Tr - RTT - its own Tr + 2 ms]`,
          typeof outIn === 'number' &&
            typeof inIn === 'number' &&
            outIn > 0 &&
            inIn > 0 &&
            outIn <= outMax &&
            inIn <= inMax &&
            Math.abs(outIn + inIn - service.mesh_processing_ms) < 0.001,
          `outbound ${String(round(outIn))} ≤ ${String(round(outMax))} ms, inbound ${String(round(inIn))} ≤ ${String(round(inMax))} ms, ` +
            `mesh ${String(round(service.mesh_processing_ms))} ms; haproxy's own Ta - Tr ${String(round(ownInside))} ms`,
        );
        // total: what the client observes, against the client's own timing (which holds the probe's span plus
        // the calls around it), the round trip and the sleep a floor
        check(
          `${rtt} ms mesh: imposed RTT + sleep ≤ total_ms ≤ the client's own mean`,
          service.total_ms >= 0.98 * rtt + sleep && service.total_ms <= 1.02 * clientOwn,
          `${String(round(service.total_ms))} ms vs the client's own ${String(round(clientOwn))} ms`,
        );
      }
      // across the delays, printed only: what the larger round trip added, part by part. Under TCG each part moves
      // by several ms from run to run with the host's load (the total by tens), more than the 8 ms between the two
      // round trips: no bound on the difference would be honest.
      if (DELAYS.length >= 2) {
        const hiD = Math.max(...DELAYS);
        const loD = Math.min(...DELAYS);
        const hi = splits.get(hiD);
        const lo2 = splits.get(loD);
        if (hi && lo2)
          t.diagnostic(
            `mesh: ${2 * (hiD - loD)} ms more round trip: kernel ${String(round(hi.kernel_processing_ms - lo2.kernel_processing_ms))} ms, ` +
              `mesh ${String(round(hi.mesh_processing_ms - lo2.mesh_processing_ms))} ms, ` +
              `application ${String(round(hi.application_ms - lo2.application_ms))} ms, total ${String(round(hi.total_ms - lo2.total_ms))} ms`,
          );
      }
      assert.deepEqual(failed, [], `${kernel.release}: ${failed.length} checks failed`);
      assert.equal(run.scriptExit, 0, `the driver exited ${String(run.scriptExit)}`);
    },
  );
}
