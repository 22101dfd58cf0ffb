// Pod identity end to end on a fake Kubernetes node (test/helpers/fake-node.ts:
// kubepods cgroups under the real cgroup2 mount, the kubelet's log directories
// in a temp dir, MESHPROBE_PODS_DIR / MESHPROBE_CONTAINERS_DIR pointing at
// them), with real servers and clients moved into the pods' containers before
// they make a connection:
//
//   pods shop/web-5d9c7-abcde (container web) and shop/api-7f8d9-fghij
//   (containers api and istio-proxy); web's client calls api's server, a host
//   client calls web's server.
//
// - systemd driver, --format prometheus: exact counts per pod on /metrics with
//   namespace/pod/container labels, the JSON report's services and connections
//   carry the k8s field; the web pod is deleted mid-run and its series leave
//   /metrics after --pod-grace-period.
// - cgroupfs driver (docker), --format influx to VictoriaMetrics: the same
//   counts with namespace/pod/container tags.
// - a mesh: web's client -> api's istio-proxy container (haproxy) -> api's
//   server: overhead_analysis splits the time by pod and sidecar, the sidecar
//   recognised by its container name (--proxy-comm does not name haproxy).
//
// Needs root (BPF, cgroups); makes loopback traffic only.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import path from 'node:path';
import { cgroup2Root } from '../src/filter/resolve.js';
import type { K8sField, PodStats } from '../src/k8s/names.js';
import type { ProxyFigure, ServiceOverhead } from '../src/report/overhead.js';
import { createFakeNode, type FakeContainer, type FakeNode, type FakePod } from './helpers/fake-node.js';
import { needsRoot, spawnGroup, startProbe, tempDir } from './helpers/probe.js';
import { buildTools, runClient, startTestServer, type ClientOptions, type RunningServer } from './helpers/workload.js';
import { freePort, startVictoriaMetrics, type VmSeries } from './helpers/servers.js';
import { haproxyMissing } from './helpers/haproxy.js';
import type { ConnectionEntry, LatencyReportRead, ServiceEntry } from './helpers/report-types.js';

const WEB = { namespace: 'shop', name: 'web-5d9c7-abcde', containers: ['web'] };
const API = { namespace: 'shop', name: 'api-7f8d9-fghij', containers: ['api', 'istio-proxy'] };
const WEB_SVC = 'shop/web-5d9c7-abcde';
const API_SVC = 'shop/api-7f8d9-fghij';
const N_API = 300; // web -> api
const N_WEB = 200; // host -> web

type Report = LatencyReportRead & { k8s?: PodStats };
type Svc = ServiceEntry & { k8s?: K8sField };
type Conn = ConnectionEntry & { k8s?: K8sField };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

function needsCgroups(t: TestContext): boolean {
  if (!needsRoot(t)) return false;
  if (cgroup2Root() !== undefined) return true;
  if (process.env.CI === 'true') throw new Error('this test needs a cgroup2 mount, and CI must run it');
  t.skip('needs a cgroup2 mount');
  return false;
}

function fakeNode(t: TestContext, driver: 'systemd' | 'cgroupfs', runtime?: 'docker'): FakeNode {
  const node = createFakeNode({ driver, ...(runtime ? { runtime } : {}) });
  t.after(() => {
    node.cleanup();
  });
  return node;
}

const podEnv = (node: FakeNode) => ({ MESHPROBE_PODS_DIR: node.podsDir, MESHPROBE_CONTAINERS_DIR: node.containersDir });

/** A test server (mpload) moved into a container before any connection reaches it. */
async function podServer(
  t: TestContext,
  node: FakeNode,
  into: FakeContainer,
  opts: { http?: boolean } = {},
): Promise<RunningServer> {
  const s = await startTestServer(t, { addr: '127.0.0.1', maxSpinners: 2, ...opts });
  node.moveInto(s.pid, into);
  return s;
}

/**
 * runClient() in a container: mpload runs under a wrapper that writes its PID and waits until it is in the
 * container's cgroup, which the test puts it in; only then is mpload exec'd (same PID), so its first
 * connection is the pod's.
 */
async function podClient(node: FakeNode, into: FakeContainer, opts: ClientOptions) {
  const bin = await buildTools();
  const dir = tempDir();
  const pidFile = path.join(dir, 'pid');
  const wrapper = path.join(dir, 'in-pod');
  writeFileSync(
    wrapper,
    [
      '#!/bin/sh',
      `echo $$ > ${pidFile}.tmp && mv ${pidFile}.tmp ${pidFile}`,
      `while ! grep -q ${into.id} /proc/$$/cgroup; do sleep 0.01; done`,
      `exec ${bin} "$@"`,
      '',
    ].join('\n'),
  );
  chmodSync(wrapper, 0o755);
  const running = runClient({ ...opts, bin: wrapper });
  for (let i = 0; !existsSync(pidFile); i++) {
    if (i > 500) throw new Error('the client wrapper did not start');
    await sleep(10);
  }
  node.moveInto(Number(readFileSync(pidFile, 'utf8').trim()), into);
  return running;
}

async function scrape(port: number): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${String(port)}/metrics`, { signal: AbortSignal.timeout(5000) });
  assert.equal(r.status, 200);
  return r.text();
}

/** The value of one sample line of /metrics (exact labels, sorted as rendered), or undefined. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const l = Object.entries(labels)
    .sort((a, b) => (a[0] < b[0] ? -1 : 1))
    .map(([k, v]) => `${k}="${v}"`)
    .join(',');
  const line = text.split('\n').find((x) => x.startsWith(`${name}{${l}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

const podOf = (p: FakePod, container: string): K8sField => ({ namespace: p.namespace, pod: p.name, container });

/** The report's services and connections, checked for one run of web -> api and host -> web. */
function checkReport(rep: Report, web: FakePod, api: FakePod, apiPort: number, webPort: number): void {
  const services = rep.metrics.services as Svc[];
  const svc = (name: string, role: string) => {
    const s = services.filter((x) => x.service === name && x.role === role);
    assert.equal(s.length, 1, `${name} ${role}: ${JSON.stringify(services.map((x) => [x.service, x.role]))}`);
    return s[0];
  };
  for (const role of ['server', 'client']) {
    const a = svc(`${API_SVC}:${String(apiPort)}`, role);
    assert.equal(a.requests, N_API, `api ${role} requests`);
    assert.deepEqual(a.k8s, podOf(api, 'api'), `api ${role}: the server pod's names`);
    const w = svc(`${WEB_SVC}:${String(webPort)}`, role);
    assert.equal(w.requests, N_WEB, `web ${role} requests`);
    assert.deepEqual(w.k8s, podOf(web, 'web'));
  }
  const conns = rep.metrics.connections as Conn[];
  const rows = (pred: (c: Conn) => boolean) => conns.filter(pred);
  const port = (e: string) => Number(e.slice(e.lastIndexOf(':') + 1));
  const webClients = rows((c) => c.role === 'client' && port(c.remote) === apiPort);
  assert.equal(sum(webClients.map((c) => c.requests)), N_API, "web's client connections");
  for (const c of webClients) assert.deepEqual(c.k8s, podOf(web, 'web'));
  const apiServers = rows((c) => c.role === 'server' && port(c.local) === apiPort);
  assert.equal(sum(apiServers.map((c) => c.requests)), N_API);
  for (const c of apiServers) assert.deepEqual(c.k8s, podOf(api, 'api'));
  const hostClients = rows((c) => c.role === 'client' && port(c.remote) === webPort);
  assert.equal(sum(hostClients.map((c) => c.requests)), N_WEB);
  for (const c of hostClients) assert.equal(c.k8s, undefined, 'a host process has no k8s field');
  const webServers = rows((c) => c.role === 'server' && port(c.local) === webPort);
  assert.equal(sum(webServers.map((c) => c.requests)), N_WEB);
  for (const c of webServers) assert.deepEqual(c.k8s, podOf(web, 'web'));
  assert.ok(rep.k8s, 'the report has its k8s section');
  assert.equal(rep.k8s.pods_seen, 2);
  assert.equal(rep.k8s.pods_over_label_limit, 0);
}

test('systemd driver, Prometheus: exact counts per pod, labelled; a deleted pod leaves /metrics', async (t) => {
  if (!needsCgroups(t)) return;
  const node = fakeNode(t, 'systemd');
  const web = node.addPod(WEB);
  const api = node.addPod(API);
  const apiSrv = await podServer(t, node, api.container('api'));
  const webSrv = await podServer(t, node, web.container('web'));
  const metricsPort = await freePort();
  const probe = startProbe<Report>(
    'latency-probe',
    [
      '--filter',
      `port=${String(apiSrv.port)},${String(webSrv.port)}`,
      '--format',
      'prometheus',
      '--port',
      String(metricsPort),
      '--pod-grace-period',
      '1s',
    ],
    { env: podEnv(node) },
  );
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  await Promise.all([
    podClient(node, web.container('web'), { addr: '127.0.0.1', port: apiSrv.port, requests: N_API, concurrency: 2 }),
    runClient({ addr: '127.0.0.1', port: webSrv.port, requests: N_WEB }),
  ]);
  await sleep(1200); // the decoder's last records, and a fresh rendering
  const name = 'meshprobe_service_request_duration_seconds_count';
  const text = await scrape(metricsPort);
  for (const role of ['server', 'client']) {
    assert.equal(
      sample(text, name, {
        service: `${API_SVC}:${String(apiSrv.port)}`,
        role,
        namespace: 'shop',
        pod: api.name,
        container: 'api',
      }),
      N_API,
      `api ${role} on /metrics:\n${text
        .split('\n')
        .filter((l) => l.startsWith(name))
        .join('\n')}`,
    );
    assert.equal(
      sample(text, name, {
        service: `${WEB_SVC}:${String(webSrv.port)}`,
        role,
        namespace: 'shop',
        pod: web.name,
        container: 'web',
      }),
      N_WEB,
      `web ${role}`,
    );
  }
  assert.doesNotMatch(text, /(namespace|pod|container)=""/);
  assert.match(text, /^meshprobe_k8s_pods_over_label_limit_total 0$/m);

  // the web pod goes: its series stay for the grace period (1 s), then leave /metrics
  node.deletePod(web);
  let after = '';
  for (let i = 0; i < 40; i++) {
    await sleep(250);
    after = await scrape(metricsPort);
    if (!after.includes(web.name)) break;
  }
  assert.doesNotMatch(after, new RegExp(web.name), 'the deleted pod expired from /metrics');
  assert.equal(
    sample(after, name, {
      service: `${API_SVC}:${String(apiSrv.port)}`,
      role: 'server',
      namespace: 'shop',
      pod: api.name,
      container: 'api',
    }),
    N_API,
    'the other pod stays',
  );

  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(exit.report, exit.stderr);
  checkReport(exit.report, web, api, apiSrv.port, webSrv.port); // the final report still names the deleted pod
  assert.equal(exit.report.k8s?.pods_expired, 1);
});

test('cgroupfs driver (docker), InfluxDB line protocol: namespace, pod and container tags with exact counts', async (t) => {
  if (!needsCgroups(t)) return;
  const vm = await startVictoriaMetrics(t);
  const node = fakeNode(t, 'cgroupfs', 'docker');
  const web = node.addPod(WEB);
  const api = node.addPod(API);
  const apiSrv = await podServer(t, node, api.container('api'));
  const webSrv = await podServer(t, node, web.container('web'));
  const probe = startProbe<Report>(
    'latency-probe',
    [
      '--filter',
      `port=${String(apiSrv.port)},${String(webSrv.port)}`,
      '--format',
      'influx',
      '--url',
      vm.url,
      '--org',
      'meshprobe',
      '--bucket',
      'test',
      '--token',
      'unused-by-vm',
      '--aggregate-interval',
      '500ms',
    ],
    { env: podEnv(node) },
  );
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  await Promise.all([
    podClient(node, web.container('web'), { addr: '127.0.0.1', port: apiSrv.port, requests: N_API, concurrency: 2 }),
    runClient({ addr: '127.0.0.1', port: webSrv.port, requests: N_WEB }),
  ]);
  await sleep(700);
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(exit.report, exit.stderr);
  checkReport(exit.report, web, api, apiSrv.port, webSrv.port);
  assert.equal(exit.report.exports?.influx?.points_dropped, 0);

  const total = (xs: VmSeries[], pod: string, role: string) =>
    sum(xs.filter((x) => x.metric.pod === pod && x.metric.role === role).flatMap((x) => x.values));
  const series = await vm.exportWhen(
    'meshprobe_service_request_duration_count',
    (xs) =>
      total(xs, api.name, 'server') >= N_API &&
      total(xs, api.name, 'client') >= N_API &&
      total(xs, web.name, 'server') >= N_WEB &&
      total(xs, web.name, 'client') >= N_WEB,
  );
  for (const [pod, container, svc, port, n] of [
    [api, 'api', API_SVC, apiSrv.port, N_API],
    [web, 'web', WEB_SVC, webSrv.port, N_WEB],
  ] as const) {
    for (const role of ['server', 'client']) {
      const mine = series.filter((x) => x.metric.pod === pod.name && x.metric.role === role);
      assert.equal(mine.length, 1, JSON.stringify(series.map((x) => x.metric)));
      const m = mine[0].metric;
      assert.deepEqual(
        [m.namespace, m.pod, m.container, m.service],
        ['shop', pod.name, container, `${svc}:${String(port)}`],
      );
      assert.equal(sum(mine[0].values), n, `${pod.name} ${role}: the intervals add up`);
    }
  }
  assert.ok(
    series.every((x) => x.metric.namespace === 'shop'),
    'every service series of this run is a pod',
  );
});

test('mesh: web -> api/istio-proxy (haproxy) -> api: the time split by pod and sidecar, the sidecar by its container', async (t) => {
  if (!needsCgroups(t)) return;
  const missing = haproxyMissing();
  if (missing) {
    if (process.env.CI === 'true') throw new Error(missing);
    t.skip(missing);
    return;
  }
  const node = fakeNode(t, 'systemd');
  const web = node.addPod(WEB);
  const api = node.addPod(API);
  const apiSrv = await podServer(t, node, api.container('api'), { http: true });
  const proxyPort = await freePort();
  const dir = tempDir();
  const cfg = path.join(dir, 'haproxy.cfg');
  writeFileSync(
    cfg,
    [
      'global',
      '  nbthread 1',
      'defaults',
      '  mode http',
      '  timeout connect 5s',
      '  timeout client 60s',
      '  timeout server 60s',
      'frontend inbound',
      `  bind 127.0.0.1:${String(proxyPort)}`,
      '  default_backend app',
      'backend app',
      '  http-reuse always',
      `  server app 127.0.0.1:${String(apiSrv.port)}`,
      '',
    ].join('\n'),
  );
  const haproxy = spawnGroup(t, 'haproxy', ['-db', '-f', cfg]);
  let out = '';
  haproxy.stderr.on('data', (d: Buffer) => (out += d.toString()));
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(proxyPort, '127.0.0.1');
      s.on('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => {
        resolve(false);
      });
    });
    if (up) break;
    if (haproxy.exitCode !== null || i > 100) throw new Error(`haproxy does not listen: ${out}`);
    await sleep(50);
  }
  assert.ok(haproxy.pid !== undefined);
  node.moveInto(haproxy.pid, api.container('istio-proxy'));

  const probe = startProbe<Report>(
    'latency-probe',
    // haproxy is a proxy by default (--proxy-comm envoy,haproxy,linkerd2-proxy): here only its container says so
    ['--filter', `port=${String(proxyPort)},${String(apiSrv.port)}`, '--proxy-comm', 'envoy'],
    { env: podEnv(node) },
  );
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  const N = 400;
  const c = await podClient(node, web.container('web'), {
    addr: '127.0.0.1',
    port: proxyPort,
    requests: N,
    http: true,
    sleeps: [1000],
  });
  assert.equal(c.errors, 0);
  await sleep(300);
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  const rep = exit.report;
  assert.ok(rep, exit.stderr);
  const services = rep.metrics.services as Svc[];
  const named = (svc: string, role: string) => services.find((x) => x.service === svc && x.role === role);
  const sidecarSvc = named(`${API_SVC}:${String(proxyPort)}`, 'server');
  assert.ok(sidecarSvc, JSON.stringify(services.map((x) => [x.service, x.role])));
  assert.equal(sidecarSvc.requests, N);
  assert.deepEqual(sidecarSvc.k8s, podOf(api, 'istio-proxy'));
  const app = named(`${API_SVC}:${String(apiSrv.port)}`, 'server');
  assert.ok(app);
  assert.equal(app.requests, N);
  assert.deepEqual(app.k8s, podOf(api, 'api'));

  const o = rep.metrics.overhead_analysis;
  assert.deepEqual(o.proxy_comms, ['envoy']);
  const proxies = o.proxies as (ProxyFigure & { k8s?: K8sField })[];
  assert.equal(proxies.length, 1, JSON.stringify(proxies));
  assert.equal(proxies[0].comm, 'haproxy');
  assert.equal(proxies[0].pid, haproxy.pid);
  assert.deepEqual(proxies[0].k8s, podOf(api, 'istio-proxy'), 'the sidecar, recognised by its container');
  assert.equal(proxies[0].requests, N);
  const split = (o.by_service as (ServiceOverhead & { k8s?: K8sField })[]).find(
    (s) => s.service === `${API_SVC}:${String(apiSrv.port)}`,
  );
  assert.ok(split, JSON.stringify(o.by_service));
  assert.deepEqual(split.path, [`${String(haproxy.pid)}:haproxy`]);
  assert.deepEqual(split.k8s, podOf(api, 'api'));
  assert.equal(split.requests, N);
  assert.ok(split.clients_seen);
  const {
    total_ms: total,
    application_ms: application,
    mesh_processing_ms: mesh,
    kernel_processing_ms: kernel,
  } = split;
  assert.ok(total !== null && application !== null && mesh !== null && kernel !== null, JSON.stringify(split));
  assert.ok(Math.abs(total - (application + mesh + kernel)) < 1e-3, 'the parts add up');
  assert.ok(application >= 1, `the server sleeps 1 ms: application ${String(application)} ms`);
  assert.ok(mesh > 0, `the sidecar takes some time: ${String(mesh)} ms`);
  // the client's own timing: the probe's total is what it waited for, within 10 % (+0.1 ms)
  const clientMs = c.latency_us.mean / 1000;
  assert.ok(
    Math.abs(total - clientMs) <= 0.1 * clientMs + 0.1,
    `total ${String(total)} vs client ${String(clientMs)} ms`,
  );
});
