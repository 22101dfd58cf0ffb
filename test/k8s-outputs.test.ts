// Pod identity in every output, without the kernel (no root): a fake node's
// kubelet directories in a temp dir and cgroup ids mapped to kubepods paths by
// hand, read by the run's PodNames (src/k8s/names.ts). Service names
// (namespace/pod:port for pods, comm:port for host processes, clients named by
// their server's pod), the JSON "k8s" field, Prometheus labels and InfluxDB
// tags, the --max-pods bound and its overflow count, expiry after the grace
// period, a sidecar recognised by its container name in overhead_analysis,
// and analyze-latency pairing mesh workloads with pods.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes, randomUUID } from 'node:crypto';
import { histogramOf } from '../src/histogram.js';
import {
  latencyMetricSet,
  latencyMetrics,
  serviceIdentifier,
  type LatencyFigures,
  type ServiceFigure,
} from '../src/report/latency.js';
import { LATENCY_STATS } from '../src/probes/latency.js';
import { COUNTER_NAMES, type ConnSlot, type Counters } from '../src/wasm.js';
import { ROLE_CLIENT, ROLE_SERVER } from '../src/records.js';
import { connSlot } from './helpers/conn-slot.js';
import { K8sIdentity } from '../src/k8s/identity.js';
import { PodNames, k8sField, podService } from '../src/k8s/names.js';
import { renderPrometheus } from '../src/export/prometheus.js';
import { toLineProtocol } from '../src/export/influx.js';
import { analyzeOverhead } from '../src/report/overhead.js';
import { analyze, podOfWorkload, type MeshInput } from '../src/analyze/compare.js';
import { readProbeReport } from '../src/analyze/ebpf.js';
import { readMeshText } from '../src/analyze/mesh.js';

// ------------------------------------------------------------ a fake node without cgroups

interface Pod {
  namespace: string;
  name: string;
  uid: string;
  /** container name -> [cgroup id, container id] */
  containers: Map<string, [bigint, string]>;
  logDir: string;
}

class FakeKubelet {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'meshprobe-k8s-outputs-'));
  readonly podsDir = path.join(this.dir, 'pods');
  readonly containersDir = path.join(this.dir, 'containers');
  /** cgroup id -> path relative to the cgroup2 mount */
  readonly paths = new Map<bigint, string>([[1n, '/user.slice/user-0.slice/session-1.scope']]);
  now = 1_000_000;
  private nextId = 100n;

  constructor() {
    mkdirSync(this.podsDir);
    mkdirSync(this.containersDir);
  }

  addPod(namespace: string, name: string, containers: string[]): Pod {
    const uid = randomUUID();
    const logDir = path.join(this.podsDir, `${namespace}_${name}_${uid}`);
    mkdirSync(logDir);
    const pod: Pod = { namespace, name, uid, containers: new Map(), logDir };
    for (const c of containers) {
      const id = randomBytes(32).toString('hex');
      mkdirSync(path.join(logDir, c));
      writeFileSync(path.join(logDir, c, '0.log'), '');
      symlinkSync(path.join(logDir, c, '0.log'), path.join(this.containersDir, `${name}_${namespace}_${c}-${id}.log`));
      const cg = this.nextId++;
      this.paths.set(
        cg,
        `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid.replace(/-/g, '_')}.slice/cri-containerd-${id}.scope`,
      );
      pod.containers.set(c, [cg, id]);
    }
    return pod;
  }

  deletePod(p: Pod): void {
    rmSync(p.logDir, { recursive: true, force: true });
    for (const [c, [, id]] of p.containers)
      rmSync(path.join(this.containersDir, `${p.name}_${p.namespace}_${c}-${id}.log`), { force: true });
  }

  names(o: { maxPods?: number; graceMs?: number } = {}): PodNames {
    const identity = new K8sIdentity({
      cgroupRoot: '/sys/fs/cgroup',
      podsDir: this.podsDir,
      containersDir: this.containersDir,
      pathOf: (id) => this.paths.get(id),
      now: () => this.now,
      refreshMs: 0,
      graceMs: o.graceMs ?? 10_000,
    });
    return new PodNames({ identity, ...o });
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const cgroupOf = (p: Pod, c: string): bigint => {
  const x = p.containers.get(c);
  assert.ok(x, `${p.name} has no container ${c}`);
  return x[0];
};

let nextTgid = 1000;
const sock = (
  role: 'c' | 's',
  comm: string,
  cgroup: bigint,
  local: string,
  remote: string,
  count = 10,
  meanMs = 1,
  tgid = nextTgid++,
): ConnSlot => connSlot({ role, comm, tgid, netns: 4026531840, local, remote, count, meanMs, cgroup_id: cgroup });

const kernel = (v: Partial<Record<(typeof LATENCY_STATS)[number], number>>) =>
  Object.fromEntries(LATENCY_STATS.map((n) => [n, v[n] ?? 0])) as LatencyFigures['kernel'];
const counters = (v: Partial<Counters>) => Object.fromEntries(COUNTER_NAMES.map((n) => [n, v[n] ?? 0])) as Counters;
const slot = (role: number, port: number, raddr = '') => ({ role, port, raddr, family: 2, tgid: 1 });

/** The figures the probe would read: one service figure per slot, named by serviceIdentifier. */
function figures(
  conns: ConnSlot[],
  pods: PodNames,
  slots: { role: number; port: number; raddr?: string; n: number }[],
) {
  const identify = serviceIdentifier(conns, [], pods);
  const services: ServiceFigure[] = slots.map((s, i) => {
    const id = identify(slot(s.role, s.port, s.raddr));
    return {
      key: String(i + 1),
      name: id.name,
      role: s.role === ROLE_CLIENT ? 'client' : 'server',
      port: s.port,
      requests: s.n,
      hist: histogramOf(Array.from({ length: s.n }, (_, k) => 1_000_000 + k)),
      ...(id.k8s ? { k8s: id.k8s } : {}),
    };
  });
  for (const s of services) if (s.k8s) pods.labels(s.k8s);
  const f: LatencyFigures = {
    client: histogramOf([1_000_000]),
    server: histogramOf([1_000_000]),
    network: histogramOf([]),
    services,
    kernel: kernel({ measured_client: 1, measured_server: 1 }),
    counters: counters({}),
    podsOverLimit: pods.overLimit,
  };
  return f;
}

const SPAN = { start: new Date(0), end: new Date(10_000), cumulative: true };
const SAMPLING = { mode: 'fixed' as const, rate: 1 };

test('service names: a pod server is namespace/pod:port, its local clients name it too; host processes keep comm:port', (t) => {
  const node = new FakeKubelet();
  t.after(() => {
    node.cleanup();
  });
  const web = node.addPod('shop', 'web-5d9c7-abcde', ['web']);
  const pods = node.names();
  const conns = [
    sock('s', 'mpload', cgroupOf(web, 'web'), '127.0.0.1:8080', '127.0.0.1:40000'),
    sock('c', 'curl', 1n, '127.0.0.1:40000', '127.0.0.1:8080'),
    sock('s', 'nginx', 1n, '127.0.0.1:9090', '127.0.0.1:40001'),
  ];
  const identify = serviceIdentifier(conns, [], pods);
  const server = identify(slot(ROLE_SERVER, 8080));
  assert.equal(server.name, 'shop/web-5d9c7-abcde:8080');
  assert.deepEqual(k8sField(server.k8s), { k8s: { namespace: 'shop', pod: 'web-5d9c7-abcde', container: 'web' } });
  const client = identify(slot(ROLE_CLIENT, 8080, '127.0.0.1'));
  assert.equal(client.name, 'shop/web-5d9c7-abcde:8080', "a client's service is its server pod's");
  assert.equal(client.k8s?.pod, 'web-5d9c7-abcde');
  assert.deepEqual(identify(slot(ROLE_SERVER, 9090)), { name: 'nginx:9090' }, 'a host process: no k8s');
  assert.deepEqual(identify(slot(ROLE_CLIENT, 443, '10.0.0.9')), { name: '10.0.0.9:443' }, 'a server elsewhere');
  // --services still names the service; the pod is still known
  const named = serviceIdentifier(
    conns,
    [{ name: 'storefront', ports: [8080], comm: [], cgroup: [], netns: [] }],
    pods,
  );
  assert.equal(named(slot(ROLE_SERVER, 8080)).name, 'storefront');
  assert.equal(named(slot(ROLE_SERVER, 8080)).k8s?.namespace, 'shop');
  assert.equal(podService({ namespace: 'a', pod: 'b' }, 1), 'a/b:1');
});

test('JSON k8s field, Prometheus labels and InfluxDB tags on pod series only; none on host ones', (t) => {
  const node = new FakeKubelet();
  t.after(() => {
    node.cleanup();
  });
  const web = node.addPod('shop', 'web-5d9c7-abcde', ['web']);
  const pods = node.names();
  const conns = [
    sock('s', 'mpload', cgroupOf(web, 'web'), '127.0.0.1:8080', '127.0.0.1:40000'),
    sock('s', 'nginx', 1n, '127.0.0.1:9090', '127.0.0.1:40001'),
  ];
  const f = figures(conns, pods, [
    { role: ROLE_SERVER, port: 8080, n: 30 },
    { role: ROLE_CLIENT, port: 8080, raddr: '127.0.0.1', n: 30 },
    { role: ROLE_SERVER, port: 9090, n: 7 },
  ]);
  const rows = latencyMetrics(f, SAMPLING).services as Record<string, unknown>[];
  const web8080 = rows.filter((r) => r.service === 'shop/web-5d9c7-abcde:8080');
  assert.equal(web8080.length, 2, 'server and client');
  for (const r of web8080) {
    assert.deepEqual(r.k8s, { namespace: 'shop', pod: 'web-5d9c7-abcde', container: 'web' });
    assert.equal(r.requests, 30);
  }
  const host = rows.find((r) => r.service === 'nginx:9090');
  assert.ok(host);
  assert.equal('k8s' in host, false, 'no k8s field for a host process');

  const set = latencyMetricSet(f, SPAN, SAMPLING, pods);
  const text = renderPrometheus(set);
  assert.match(
    text,
    /^meshprobe_service_request_duration_seconds_count\{container="web",namespace="shop",pod="web-5d9c7-abcde",role="server",service="shop\/web-5d9c7-abcde:8080"\} 30$/m,
  );
  assert.match(
    text,
    /^meshprobe_service_request_duration_seconds_count\{container="web",namespace="shop",pod="web-5d9c7-abcde",role="client",service="shop\/web-5d9c7-abcde:8080"\} 30$/m,
  );
  assert.match(text, /^meshprobe_service_request_duration_seconds_count\{role="server",service="nginx:9090"\} 7$/m);
  assert.doesNotMatch(text, /pod=""|namespace=""|container=""/, 'no empty labels');
  assert.match(text, /^meshprobe_k8s_pods_over_label_limit_total 0$/m);

  const lines = toLineProtocol({ ...set, cumulative: false });
  const summary = lines.filter((l) => l.startsWith('meshprobe_service_request_duration,'));
  assert.equal(summary.length, 3);
  assert.ok(
    summary.some((l) =>
      l.startsWith(
        'meshprobe_service_request_duration,container=web,host=' + set.host.replace(/[ ,=]/g, (c) => `\\${c}`),
      ),
    ),
    summary.join('\n'),
  );
  const webLine = summary.find((l) => l.includes('role=server') && l.includes('pod=web-5d9c7-abcde'));
  assert.ok(webLine, summary.join('\n'));
  assert.match(
    webLine,
    /,namespace=shop,pod=web-5d9c7-abcde,probe=latency-probe,role=server,service=shop\/web-5d9c7-abcde:8080 /,
  );
  assert.match(webLine, / count=30i,/);
  const hostLine = summary.find((l) => l.includes('service=nginx:9090'));
  assert.ok(hostLine);
  assert.doesNotMatch(hostLine, /namespace=|pod=|container=/, 'no pod tags on a host series');
});

test('--max-pods: pods beyond the bound are pod="other" (merged, counted); an expired pod frees its place', (t) => {
  const node = new FakeKubelet();
  t.after(() => {
    node.cleanup();
  });
  const a = node.addPod('shop', 'a-0', ['app']);
  const b = node.addPod('shop', 'b-0', ['app']);
  const c = node.addPod('shop', 'c-0', ['app']);
  const pods = node.names({ maxPods: 1, graceMs: 5_000 });
  const conns = [
    sock('s', 'x', cgroupOf(a, 'app'), '127.0.0.1:8001', '127.0.0.1:40000'),
    sock('s', 'x', cgroupOf(b, 'app'), '127.0.0.1:8002', '127.0.0.1:40001'),
    sock('s', 'x', cgroupOf(c, 'app'), '127.0.0.1:8002', '127.0.0.1:40002'),
  ];
  // b and c serve the same port (b's connection named it): two slots of one name
  const f = figures(conns, pods, [
    { role: ROLE_SERVER, port: 8001, n: 5 },
    { role: ROLE_SERVER, port: 8002, n: 3 },
  ]);
  assert.equal(pods.overLimit, 1, 'b is over the bound');
  const text = renderPrometheus(latencyMetricSet(f, SPAN, SAMPLING, pods));
  assert.match(text, /\{container="app",namespace="shop",pod="a-0",role="server",service="shop\/a-0:8001"\} 5$/m);
  assert.match(text, /\{namespace="shop",pod="other",role="server",service="shop\/other:8002"\} 3$/m);
  assert.doesNotMatch(text, /b-0/, 'the pod over the bound is not in any label');
  assert.match(text, /^meshprobe_k8s_pods_over_label_limit_total 1$/m);
  // the JSON keeps every name
  const rows = latencyMetrics(f, SAMPLING).services as Record<string, unknown>[];
  assert.deepEqual(
    rows.map((r) => r.service),
    ['shop/a-0:8001', 'shop/b-0:8002'],
  );
  assert.deepEqual(pods.stats().pods_over_label_limit, 1);

  // a is deleted: named within the grace period, expired after it
  node.deletePod(a);
  node.now += 1_000;
  pods.expire();
  assert.match(renderPrometheus(latencyMetricSet(f, SPAN, SAMPLING, pods)), /pod="a-0"/, 'within the grace period');
  node.now += 5_000;
  pods.expire();
  const after = renderPrometheus(latencyMetricSet(f, SPAN, SAMPLING, pods));
  assert.doesNotMatch(after, /a-0/, 'expired: its series are gone');
  assert.equal(pods.stats().pods_expired, 1);
  assert.equal(pods.stats().pods_labelled, 0, 'its label place is free');
  // the final report still names it
  assert.equal(serviceIdentifier(conns, [], pods)(slot(ROLE_SERVER, 8001)).name, 'shop/a-0:8001');
  // the next new pod takes the free place
  const d = node.addPod('shop', 'd-0', ['app']);
  const ref = pods.of(cgroupOf(d, 'app'));
  assert.deepEqual(pods.labels(ref), { namespace: 'shop', pod: 'd-0', container: 'app' });
});

test('overhead_analysis: a process in an istio-proxy container is a sidecar whatever its name', (t) => {
  const node = new FakeKubelet();
  t.after(() => {
    node.cleanup();
  });
  const web = node.addPod('shop', 'web-5d9c7-abcde', ['web']);
  const api = node.addPod('shop', 'api-7f8d9-fghij', ['api', 'istio-proxy']);
  const pods = node.names();
  const proxyCg = cgroupOf(api, 'istio-proxy');
  // web -> api's sidecar (:15006) -> api (:8080); the sidecar is called "pilot-proxy", not in --proxy-comm
  const conns = [
    sock('c', 'mpload', cgroupOf(web, 'web'), '127.0.0.1:41000', '127.0.0.1:15006', 100, 5, 10),
    sock('s', 'pilot-proxy', proxyCg, '127.0.0.1:15006', '127.0.0.1:41000', 100, 4.5, 20),
    sock('c', 'pilot-proxy', proxyCg, '127.0.0.1:42000', '127.0.0.1:8080', 100, 3, 20),
    sock('s', 'mpload', cgroupOf(api, 'api'), '127.0.0.1:8080', '127.0.0.1:42000', 100, 2.5, 30),
  ];
  const identify = serviceIdentifier(conns, [], pods);
  const inputs = {
    conns,
    proxyComms: ['envoy'],
    commOf: (c: ConnSlot) => c.comm,
    serviceOf: (c: ConnSlot) =>
      identify({ role: c.role, port: c.lport, raddr: c.raddr, family: c.family, tgid: c.tgid }).name,
  };
  const byName = analyzeOverhead(inputs);
  assert.equal(byName.proxies.length, 0, 'by --proxy-comm alone: no proxy');
  const o = analyzeOverhead({ ...inputs, isProxy: (c) => pods.sidecar(c.cgroup_id) });
  assert.deepEqual(
    o.proxies.map((p) => [p.comm, p.pid, p.processing_ms]),
    [['pilot-proxy', 20, 1.5]],
  );
  const s = o.by_service.find((x) => x.service === 'shop/api-7f8d9-fghij:8080');
  assert.ok(s, JSON.stringify(o.by_service));
  assert.equal(s.total_ms, 5);
  assert.equal(s.application_ms, 2.5);
  assert.equal(s.mesh_processing_ms, 1.5);
  assert.equal(s.kernel_processing_ms, 1);
  assert.deepEqual(s.path, ['20:pilot-proxy']);
});

// ------------------------------------------------------------ analyze-latency

test('podOfWorkload: Deployment, StatefulSet and DaemonSet pod names', () => {
  assert.equal(podOfWorkload('reviews-v1-7d8f9c6b5d-x2x4k', 'reviews-v1'), true, 'Deployment');
  assert.equal(podOfWorkload('ratings-v1-0', 'ratings-v1'), true, 'StatefulSet');
  assert.equal(podOfWorkload('ratings-v1-12', 'ratings-v1'), true, 'StatefulSet');
  assert.equal(podOfWorkload('details-v1-b2k9z', 'details-v1'), true, 'DaemonSet');
  assert.equal(podOfWorkload('reviews-v2-7d8f9c6b5d-x2x4k', 'reviews-v1'), false, 'another workload');
  assert.equal(podOfWorkload('reviews-v1', 'reviews-v1'), false, 'the workload itself is no pod of it');
  assert.equal(podOfWorkload('reviews-v1-7d8f9c6b5d-x2x4kq', 'reviews-v1'), false, 'a 6-character suffix');
  assert.equal(podOfWorkload('reviews-v1-abc-def-x2x4k', 'reviews-v1'), false, 'three parts');
  assert.equal(podOfWorkload('Reviews-V1-0', 'reviews-v1'), true, 'case');
});

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/analyze/', import.meta.url));

test('analyze-latency pairs Istio workloads with the pods of the report without --service-map', () => {
  const report = JSON.parse(readFileSync(path.join(FIXTURES, 'latency-probe.json'), 'utf8')) as {
    metrics: { services: Record<string, unknown>[] };
  };
  // the fixture's services, as the probe names pods (no --services): namespace/pod:port with their k8s field
  const pods: Record<string, [string, string]> = {
    reviews: ['reviews-v1-7d8f9c6b5d-x2x4k', 'reviews'],
    ratings: ['ratings-v1-0', 'ratings'],
    details: ['details-v1-b2k9z', 'details'],
  };
  for (const s of report.metrics.services) {
    const p = pods[String(s.service)] as [string, string] | undefined;
    if (!p) continue;
    s.service = `bookinfo/${p[0]}:9080`;
    s.k8s = { namespace: 'bookinfo', pod: p[0], container: p[1] };
  }
  const text = JSON.stringify(report);
  const probe = readProbeReport(text, 'latency-probe.json');
  assert.deepEqual(probe.services.find((s) => s.service.includes('reviews'))?.k8s, {
    namespace: 'bookinfo',
    pod: 'reviews-v1-7d8f9c6b5d-x2x4k',
    container: 'reviews',
  });
  const istio = readFileSync(path.join(FIXTURES, 'istio-envoy.txt'), 'utf8');
  const mesh: MeshInput = {
    source: 'istio',
    input: 'istio-envoy.txt',
    ranged: false,
    histograms: readMeshText(istio, 'istio', 'istio-envoy.txt').histograms,
  };
  const r = analyze({ probe, mesh: [mesh], inputs: {} });
  for (const [svc, [pod]] of Object.entries(pods)) {
    const c = r.services.find((x) => x.service === svc);
    if (!c) continue; // the fixture's mesh file may not have every service
    assert.ok(
      c.ebpf.some((e) => e.probe_service === `bookinfo/${pod}:9080`),
      `${svc}: paired with the pod's service (${JSON.stringify(c.ebpf)})`,
    );
  }
  const reviews = r.services.find((x) => x.service === 'reviews');
  assert.ok(reviews, 'reviews compared');
  assert.ok(reviews.ebpf.length > 0 && reviews.differences.length > 0, 'reviews paired');

  // in another namespace, the same pod name does not pair
  const other = JSON.parse(text) as typeof report;
  for (const s of other.metrics.services) {
    if (s.k8s) (s.k8s as Record<string, string>).namespace = 'elsewhere';
  }
  assert.throws(
    () => analyze({ probe: readProbeReport(JSON.stringify(other), 'x.json'), mesh: [mesh], inputs: {} }),
    (e: unknown) => e instanceof Error && (e as Error & { code?: string }).code === 'MP_NOTHING_TO_COMPARE',
    'no pairing across namespaces',
  );
});
