// overhead_analysis on a real mesh-like topology, each part in its own network
// namespace as pods would be:
//
//   [pod A] mpload client -> haproxy "outbound" (127.0.0.1:15001)
//             -> veth ->
//   [pod B] haproxy "inbound" (10.200.X.2:15006) -> mpload server (127.0.0.1:8080), sleeping a known time
//
// Ground truths: the client times every request itself (total), the server
// times its own processing of every request and sleeps what the test asked
// (application), and haproxy logs its own timers (mesh: Ta - Tr per proxy,
// the time a request spends inside it, in whole ms). haproxy's clock ticks
// once per event-loop pass, so a proxy that forwards within one pass logs
// 0 ms: that run checks mesh against 0 within 100 µs; a second run makes
// each sidecar hold every request 2 ms (a Lua action), where haproxy's timers
// and the client's own increase both give the truth.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createVethPair, ipBin } from './helpers/netns.js';
import { spawnSync } from 'node:child_process';
import { near, needsRoot, reportDuring } from './helpers/probe.js';
import { runClient, startTestServer, type ClientResult, type ServerSummary } from './helpers/workload.js';
import { haproxyMissing, startSidecar, type Sidecar } from './helpers/haproxy.js';
import type { LatencyReportRead } from './helpers/report-types.js';
import type { OverheadAnalysis, ServiceOverhead } from '../src/report/overhead.js';

// the sleeps cover a whole millisecond in eighths, so that haproxy's whole-ms
// timers are unbiased on average (their truncation falls anywhere in a ms)
const SLEEPS = [2000, 2125, 2250, 2375, 2500, 2625, 2750, 2875];
const REQUESTS = 1600;

/** A service whose time the analysis split: every part a number */
type SplitService = ServiceOverhead &
  Record<'total_ms' | 'application_ms' | 'kernel_processing_ms' | 'mesh_processing_ms', number>;

function isSplit(s: ServiceOverhead): s is SplitService {
  return (
    s.total_ms !== null && s.application_ms !== null && s.kernel_processing_ms !== null && s.mesh_processing_ms !== null
  );
}

interface Run {
  overhead: OverheadAnalysis;
  service: SplitService;
  client: ClientResult;
  server: ServerSummary;
  outbound: Sidecar;
  inbound: Sidecar;
  /** haproxy's own mean Ta - Tr (ms), summed over both sidecars */
  haproxyMesh: number;
  /** the sleeps the server was asked for, mean (ms) */
  knownSleep: number;
}

function needsHaproxy(t: TestContext): boolean {
  const missing = haproxyMissing();
  if (!missing) return true;
  if (process.env.CI === 'true') throw new Error(missing);
  t.skip(missing);
  return false;
}

/**
 * capture: as Istio does, the client connects to the server pod's address and
 * iptables redirects it to the sidecars (OUTPUT in pod A, except the proxy's
 * own user, PREROUTING in pod B), so the two ends of a captured connection do
 * not have the same addresses.
 */
async function meshRun(t: TestContext, delayMs: number, capture = false): Promise<Run> {
  const pair = createVethPair();
  t.after(() => {
    pair.cleanup();
  });
  const server = await startTestServer(t, {
    addr: '127.0.0.1',
    port: 8080,
    netns: pair.nsB,
    http: true,
    maxSpinners: 2,
  });
  const uid = capture ? 1337 : undefined;
  const inbound = await startSidecar(t, {
    netns: pair.nsB,
    name: 'inbound',
    bind: capture ? '0.0.0.0:15006' : `${pair.addrB4}:15006`,
    server: '127.0.0.1:8080',
    delayMs,
    uid,
  });
  const outbound = await startSidecar(t, {
    netns: pair.nsA,
    name: 'outbound',
    bind: '127.0.0.1:15001',
    server: `${pair.addrB4}:${capture ? 8080 : 15006}`,
    delayMs,
    uid,
  });
  if (capture) {
    // (the rules live in the namespaces, which cleanup deletes)
    for (const [ns, rule] of [
      [
        pair.nsA,
        [
          '-t',
          'nat',
          '-A',
          'OUTPUT',
          '-p',
          'tcp',
          '-d',
          pair.addrB4,
          '--dport',
          '8080',
          '-m',
          'owner',
          '!',
          '--uid-owner',
          '1337',
          '-j',
          'REDIRECT',
          '--to-ports',
          '15001',
        ],
      ],
      [
        pair.nsB,
        [
          '-t',
          'nat',
          '-A',
          'PREROUTING',
          '-i',
          pair.ifB,
          '-p',
          'tcp',
          '--dport',
          '8080',
          '-j',
          'REDIRECT',
          '--to-ports',
          '15006',
        ],
      ],
    ] as const) {
      const r = spawnSync(ipBin(), ['netns', 'exec', ns, 'iptables', ...rule], { encoding: 'utf8' });
      assert.equal(r.status, 0, `iptables ${rule.join(' ')}: ${r.stderr}`);
    }
  }
  const target = capture ? { addr: pair.addrB4, port: 8080 } : { addr: '127.0.0.1', port: 15001 };
  let client!: ClientResult;
  const report = await reportDuring<LatencyReportRead>(
    t,
    'latency-probe',
    ['--filter', `netns=${pair.nsA},${pair.nsB}`],
    async () => {
      client = await runClient({
        ...target,
        netns: pair.nsA,
        http: true,
        requests: REQUESTS,
        concurrency: 2,
        sleeps: SLEEPS,
      });
    },
  );
  const summary = await server.stop();
  const overhead = report.metrics.overhead_analysis;
  const service = overhead.by_service.find((s) => s.path.length === 2);
  assert.ok(service, `a service behind two proxies: ${JSON.stringify(overhead.by_service)}`);
  // null parts fail checkRun's comparisons anyway; here they fail by name
  assert.ok(isSplit(service), `every part of the time split: ${JSON.stringify(service)}`);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const haproxyMesh = [outbound, inbound]
    .map((p) => p.lines().filter((l) => l.status === 200))
    .map((ls) => {
      assert.equal(ls.length, REQUESTS, 'haproxy logged every request');
      return mean(ls.map((l) => l.Ta - l.Tr));
    })
    .reduce((a, b) => a + b, 0);
  const knownSleep =
    Object.entries(client.by_sleep).reduce((a, [sl, b]) => a + Number(sl) * b.count, 0) / client.requests / 1000;
  return { overhead, service, client, server: summary, outbound, inbound, haproxyMesh, knownSleep };
}

function checkRun(r: Run, label: string): void {
  const s = r.service;
  const show = JSON.stringify({
    ...s,
    client_mean_ms: r.client.latency_us.mean / 1000,
    server_mean_ms: r.server.processing_us.mean / 1000,
    haproxy_mesh_ms: r.haproxyMesh,
    proxies: r.overhead.proxies,
  });
  console.log(`# ${label}: ${show}`);
  assert.equal(r.client.errors, 0);
  // the path, in order, and every request accounted for at each proxy
  assert.deepEqual(s.path, [`${r.outbound.pid}:haproxy`, `${r.inbound.pid}:haproxy`], show);
  assert.equal(s.requests, REQUESTS, show);
  for (const p of r.overhead.proxies) {
    assert.equal(p.requests, REQUESTS, show);
    assert.equal(p.upstream_requests, REQUESTS, show);
  }
  // total: what the client observes, against its own timing
  assert.ok(
    near(s.total_ms, r.client.latency_us.mean / 1000, 0.03, 0.05),
    `total ${s.total_ms} ms vs the client's own ${r.client.latency_us.mean / 1000} ms; ${show}`,
  );
  // application: the server's processing, against its own timing and the sleeps it was asked for
  assert.ok(
    near(s.application_ms, r.server.processing_us.mean / 1000, 0.03, 0.05),
    `application ${s.application_ms} ms vs the server's own ${r.server.processing_us.mean / 1000} ms`,
  );
  assert.ok(
    near(s.application_ms, r.knownSleep, 0.03, 0.05),
    `application ${s.application_ms} ms vs the known sleep ${r.knownSleep} ms`,
  );
  // mesh: the proxies' time, against haproxy's own timers. They tick in whole ms: a proxy that logs
  // 0 for every request took under 1 ms each time, which is all they can say then.
  if (r.haproxyMesh === 0) {
    assert.ok(
      s.mesh_processing_ms < s.path.length,
      `mesh ${s.mesh_processing_ms} ms where haproxy's timers say under 1 ms per proxy; ${show}`,
    );
  } else {
    assert.ok(
      near(s.mesh_processing_ms, r.haproxyMesh, 0.15, 0.1),
      `mesh ${s.mesh_processing_ms} ms vs haproxy's own Ta - Tr ${r.haproxyMesh} ms; ${show}`,
    );
  }
  // and against the client's and the server's own timing: the sidecars are part of what the client
  // waits beyond the server's processing, never more
  const outside = r.client.latency_us.mean / 1000 - r.server.processing_us.mean / 1000;
  assert.ok(
    s.mesh_processing_ms < outside,
    `mesh ${s.mesh_processing_ms} ms vs ${outside} ms the client waited beyond the server's own time; ${show}`,
  );
  assert.ok(s.mesh_processing_ms > 0, 'a proxy takes some time');
  // the parts add up, and the kernel's share is real time
  assert.ok(s.kernel_processing_ms > 0, show);
  assert.ok(Math.abs(s.kernel_processing_ms + s.mesh_processing_ms + s.application_ms - s.total_ms) < 0.001, show);
  // filtered to the two pods: the overall figures are this service's
  assert.equal(r.overhead.requests, REQUESTS);
  const overallMesh = r.overhead.mesh_processing_ms;
  assert.ok(overallMesh !== null, 'overall mesh_processing_ms');
  assert.ok(Math.abs(overallMesh - s.mesh_processing_ms) < 0.001);
}

test(
  'overhead_analysis splits client -> sidecar -> veth -> sidecar -> server into kernel, mesh and application time',
  { timeout: 240_000 },
  async (t) => {
    if (!needsRoot(t) || !needsHaproxy(t)) return;
    const plain = await meshRun(t, 0);
    checkRun(plain, 'plain sidecars');
    // haproxy's own timers cannot see a proxy that forwards within one loop pass
    assert.equal(plain.haproxyMesh, 0, 'haproxy logged 0 ms in itself for every request');

    const slow = await meshRun(t, 2);
    checkRun(slow, 'sidecars holding each request 2 ms');
    // the time the test put into the sidecars is a floor of their processing
    assert.ok(
      slow.service.mesh_processing_ms >= 4,
      `mesh ${slow.service.mesh_processing_ms} ms with 2 x 2 ms of Lua sleeps`,
    );
    // what the slow sidecars added, as the client and the server timed it themselves
    const addedByClient =
      (slow.client.latency_us.mean - plain.client.latency_us.mean) / 1000 -
      (slow.server.processing_us.mean - plain.server.processing_us.mean) / 1000;
    const addedByProbe = slow.service.mesh_processing_ms - plain.service.mesh_processing_ms;
    assert.ok(
      near(addedByProbe, addedByClient, 0.15, 0.1),
      `mesh grew ${addedByProbe} ms; the client's own total grew ${addedByClient} ms beyond the server's`,
    );
  },
);

test(
  'overhead_analysis pairs connections that iptables redirected to the sidecars, as Istio captures traffic',
  { timeout: 120_000 },
  async (t) => {
    if (!needsRoot(t) || !needsHaproxy(t)) return;
    const r = await meshRun(t, 0, true);
    checkRun(r, 'sidecars behind iptables REDIRECT');
    assert.equal(r.overhead.requests_unpaired, 0);
  },
);
