// The Kubernetes manifests in deploy/kubernetes, without a cluster: every
// object validated against the Kubernetes (and Prometheus Operator) schemas
// of kubernetes-models, the kustomization listing exactly the files, and the
// DaemonSet consistent with what it runs: the image scripts/image.sh tags,
// commands the Containerfile puts on PATH (package.json bins), flags the real
// CLI accepts, one port everywhere it is named (--port, containerPort,
// probes, annotations, Service, PodMonitor), the capabilities of the systemd
// unit, and host mounts at the paths the code reads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { Service } from 'kubernetes-models/v1/Service';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import { repoRoot } from './helpers/workload.js';
import { cliPath } from './helpers/probe.js';
import { DEFAULT_METRICS_PORT } from '../src/cli/program.js';
import { defaultResolveEnv } from '../src/filter/resolve.js';
import { BPFFS, DEFAULT_VMLINUX_BTF } from '../src/kernel/features.js';

const DIR = join(repoRoot, 'deploy', 'kubernetes');
const read = (...p: string[]) => readFileSync(join(repoRoot, ...p), 'utf8');

interface Loaded {
  file: string;
  obj: Record<string, unknown>;
}

/** Every document of every YAML file in deploy/kubernetes (kustomization.yaml apart), parsed strictly. */
function loadAll(): Loaded[] {
  const out: Loaded[] = [];
  for (const file of yamlFiles()) {
    if (file === 'kustomization.yaml') continue;
    for (const doc of parseAllDocuments(readFileSync(join(DIR, file), 'utf8'), { strict: true })) {
      assert.deepEqual(
        doc.errors.map((e) => e.message),
        [],
        `${file}: YAML errors`,
      );
      const obj: unknown = doc.toJS({ maxAliasCount: 100 });
      assert.ok(obj && typeof obj === 'object' && !Array.isArray(obj), `${file}: a document that is not an object`);
      out.push({ file, obj: obj as Record<string, unknown> });
    }
  }
  return out;
}

function yamlFiles(): string[] {
  return readdirSync(DIR)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort();
}

/** The schema model of an object, validated (throws with the schema's message). */
function model(o: Loaded) {
  const { apiVersion, kind } = o.obj;
  const key = `${String(apiVersion)} ${String(kind)}`;
  switch (key) {
    case 'v1 Namespace':
      return new Namespace(o.obj);
    case 'v1 ServiceAccount':
      return new ServiceAccount(o.obj);
    case 'v1 Service':
      return new Service(o.obj);
    case 'apps/v1 DaemonSet':
      return new DaemonSet(o.obj);
    case 'monitoring.coreos.com/v1 PodMonitor':
      // spec is required by the type; validate() says so when it is missing
      return new PodMonitor(o.obj as unknown as ConstructorParameters<typeof PodMonitor>[0]);
    default:
      assert.fail(`${o.file}: ${key} has no schema model in this test: add it`);
  }
}

function one<T>(objs: Loaded[], kind: string, make: (o: Record<string, unknown>) => T): T {
  const hits = objs.filter((o) => o.obj.kind === kind);
  assert.equal(hits.length, 1, `one ${kind} in deploy/kubernetes, found ${hits.length}`);
  return make(hits[0].obj);
}

function manifests() {
  const objs = loadAll();
  const ds = one(objs, 'DaemonSet', (o) => new DaemonSet(o));
  const spec = ds.spec?.template.spec;
  assert.ok(spec, 'the DaemonSet has a pod spec');
  return {
    objs,
    ds,
    spec,
    service: one(objs, 'Service', (o) => new Service(o)),
    podMonitor: one(
      objs,
      'PodMonitor',
      (o) => new PodMonitor(o as unknown as ConstructorParameters<typeof PodMonitor>[0]),
    ),
  };
}

/** The value of `--flag value` in a container's args. */
function flag(c: IContainer, name: string): string | undefined {
  const args = c.args ?? [];
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

/** The container port a probe's port (number or name) designates, in that container. */
function portOf(c: IContainer, port: number | string): number {
  if (typeof port === 'number') return port;
  const p = (c.ports ?? []).find((x) => x.name === port);
  assert.ok(p, `container ${c.name}: no port named ${port}`);
  return p.containerPort;
}

/** Every container port of the pod by name. */
function namedPorts(spec: IPodSpec): Map<string, number> {
  const m = new Map<string, number>();
  for (const c of spec.containers)
    for (const p of c.ports ?? []) {
      assert.ok(p.name, `container ${c.name}: port ${p.containerPort} has no name`);
      assert.ok(!m.has(p.name), `port name ${p.name} used twice`);
      m.set(p.name, p.containerPort);
    }
  return m;
}

test('every manifest parses and validates against the Kubernetes schemas (kubernetes-models)', () => {
  const objs = loadAll();
  assert.deepEqual([...new Set(objs.map((o) => String(o.obj.kind)))].sort(), [
    'DaemonSet',
    'Namespace',
    'PodMonitor',
    'Service',
    'ServiceAccount',
  ]);
  for (const o of objs) {
    const m = model(o);
    assert.doesNotThrow(
      () => {
        m.validate();
      },
      `${o.file}: ${String(o.obj.kind)} does not validate`,
    );
    assert.equal(m.metadata?.name, 'meshprobe', `${o.file}: name`);
    if (o.obj.kind !== 'Namespace') assert.equal(m.metadata.namespace, 'meshprobe', `${o.file}: namespace`);
  }
  // the validation is live: the same DaemonSet with a port as a string, or without containers, is refused
  const { ds } = manifests();
  const broken = structuredClone(ds.toJSON()) as unknown as {
    spec: { template: { spec: { containers: { ports: { containerPort: unknown }[] }[] } } };
  };
  broken.spec.template.spec.containers[0].ports[0].containerPort = '9435';
  assert.throws(() => {
    new DaemonSet(broken as unknown as Record<string, unknown>).validate();
  }, /containerPort must be integer/);
  const noContainers = structuredClone(ds.toJSON()) as unknown as { spec: { template: { spec: object } } };
  noContainers.spec.template.spec = {};
  assert.throws(() => {
    new DaemonSet(noContainers as unknown as Record<string, unknown>).validate();
  }, /containers/);
});

test('kustomization.yaml lists exactly the manifests of the folder', () => {
  const k = parseAllDocuments(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8'));
  assert.equal(k.length, 1);
  const kust = k[0].toJS() as { apiVersion?: string; kind?: string; resources?: string[] };
  assert.equal(kust.apiVersion, 'kustomize.config.k8s.io/v1beta1');
  assert.equal(kust.kind, 'Kustomization');
  assert.deepEqual(
    [...(kust.resources ?? [])].sort(),
    yamlFiles().filter((f) => f !== 'kustomization.yaml'),
  );
});

test('the image, the commands and the report directory are the ones the image build makes', () => {
  const { spec } = manifests();
  const pkg = JSON.parse(read('package.json')) as { version: string; bin: Record<string, string> };
  // scripts/image.sh: tag=<repository>:$version, the version read from package.json
  const tagLine = /^tag=(\S+):\$version$/m.exec(read('scripts', 'image.sh'));
  assert.ok(tagLine, 'scripts/image.sh names its default tag as tag=<repository>:$version');
  assert.match(read('scripts', 'image.sh'), /^version=\$\(node -p 'require\("\.\/package\.json"\)\.version'\)$/m);
  const image = `${tagLine[1]}:${pkg.version}`;
  const containerfile = read('Containerfile');
  // the runtime stage (the last FROM): the commands it links onto PATH, its working directory, its ports
  const runtime = containerfile.slice(containerfile.lastIndexOf('\nFROM '));
  const linked = /for c in ([a-z -]+); do[\s\\]*ln -s "\/opt\/meshprobe\/bin\/\$c\.js" "\/usr\/local\/bin\/\$c"/.exec(
    runtime,
  );
  assert.ok(linked, 'the Containerfile links the commands into /usr/local/bin');
  const onPath = linked[1].trim().split(/\s+/);
  const workdirs = [...runtime.matchAll(/^WORKDIR (\S+)$/gm)].map((m) => m[1]);
  assert.ok(workdirs.length > 0, 'the runtime stage has a WORKDIR');
  const workdir = workdirs[workdirs.length - 1];
  const exposed = [...runtime.matchAll(/^EXPOSE (.+)$/gm)].flatMap((m) => m[1].trim().split(/\s+/));
  const probes = ['latency-probe', 'connection-tracker', 'packet-drop-probe'];
  assert.ok(spec.containers.length >= 1);
  for (const c of spec.containers) {
    assert.equal(c.image, image, `container ${c.name}: the image scripts/image.sh tags`);
    assert.equal(c.imagePullPolicy, 'IfNotPresent', `container ${c.name}: a local image is not pulled`);
    assert.ok(c.command && c.command.length === 1, `container ${c.name}: command is the probe alone`);
    const cmd = c.command[0];
    assert.ok(probes.includes(cmd), `container ${c.name}: ${cmd} is a probe`);
    assert.equal(c.name, cmd, 'each container is named after its probe');
    assert.ok(cmd in pkg.bin, `${cmd} is a bin of package.json`);
    assert.ok(onPath.includes(cmd), `${cmd} is linked onto PATH by the Containerfile (${onPath.join(' ')})`);
    // the final report goes to the emptyDir mounted on the image's working directory
    const reports = (c.volumeMounts ?? []).find((m) => m.name === 'reports');
    assert.ok(reports, `container ${c.name}: the reports volume`);
    assert.equal(reports.mountPath, workdir, 'reports are mounted on the image WORKDIR');
    assert.equal(flag(c, '--output'), `${workdir}/${cmd}.json`);
    assert.ok(
      spec.volumes?.some((v) => v.name === 'reports' && v.emptyDir),
      'reports is an emptyDir',
    );
    for (const p of c.ports ?? []) {
      if (exposed.length)
        assert.ok(exposed.includes(`${p.containerPort}/tcp`) || exposed.includes(`${p.containerPort}`));
    }
  }
  // latency-probe (or connection-tracker in its place) and packet-drop-probe
  assert.deepEqual(
    spec.containers.map((c) => c.command?.[0]),
    ['latency-probe', 'packet-drop-probe'],
  );
});

test('the real CLI accepts every container argument, $(VAR)s from the downward API', () => {
  const { spec } = manifests();
  for (const c of spec.containers) {
    const cmd = c.command?.[0];
    assert.ok(cmd);
    const env = new Map((c.env ?? []).map((e) => [e.name, e]));
    // Kubernetes leaves a $(VAR) of a variable the container does not define as it is
    const args = (c.args ?? []).map((a) =>
      a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_, name: string) => {
        const e = env.get(name);
        assert.ok(e, `container ${c.name}: $(${name}) is not in its env`);
        if (name === 'POD_IP') {
          assert.equal(e.valueFrom?.fieldRef?.fieldPath, 'status.podIP');
          return '127.0.0.1';
        }
        assert.ok(e.value !== undefined, `${name}: a value this test can substitute`);
        return e.value;
      }),
    );
    // A last flag that fails on purpose after every other one is parsed and checked (commander's
    // unknown options and values, --format, --port, --listen, --output's form, --filter): exit 2
    // with that flag's own message proves the rest went through. Nothing is loaded.
    const sentinel =
      cmd === 'packet-drop-probe'
        ? { args: ['--filter', 'pid=1'], message: /--filter pid=1: drops have no process to match/ }
        : { args: ['--socket-table-size', '0'], message: /invalid --socket-table-size "0"/ };
    const r = spawnSync(process.execPath, [cliPath(cmd), ...args, ...sentinel.args], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(r.status, 2, `${cmd} ${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, sentinel.message, `${cmd} ${args.join(' ')}: rejected before the sentinel: ${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

test('one port per probe: --port, containerPort, readiness and liveness on /metrics, annotations, Service, PodMonitor', () => {
  const { ds, spec, service, podMonitor } = manifests();
  assert.equal(spec.hostNetwork, true);
  const ports = namedPorts(spec);
  for (const c of spec.containers) {
    assert.equal(flag(c, '--format'), 'prometheus');
    assert.equal(flag(c, '--listen'), '$(POD_IP)', 'listens on the pod IP (hostNetwork: the node address)');
    const port = Number(flag(c, '--port'));
    assert.equal(c.ports?.length, 1, `container ${c.name}: one port`);
    assert.equal(c.ports[0].containerPort, port, `container ${c.name}: containerPort = --port`);
    assert.equal(c.ports[0].protocol ?? 'TCP', 'TCP');
    for (const [what, probe] of [
      ['readinessProbe', c.readinessProbe],
      ['livenessProbe', c.livenessProbe],
    ] as const) {
      assert.ok(probe?.httpGet, `container ${c.name}: ${what} httpGet`);
      assert.equal(probe.httpGet.path, '/metrics');
      assert.equal(portOf(c, probe.httpGet.port), port, `container ${c.name}: ${what} port`);
      assert.equal(probe.httpGet.host, undefined, 'probed on the pod IP, where it listens');
    }
  }
  const latency = spec.containers.find((c) => c.name === 'latency-probe');
  assert.ok(latency);
  assert.equal(Number(flag(latency, '--port')), DEFAULT_METRICS_PORT, "latency-probe on the probes' default port");
  const ann = ds.spec?.template.metadata?.annotations ?? {};
  assert.equal(ann['prometheus.io/scrape'], 'true');
  assert.equal(ann['prometheus.io/path'], '/metrics');
  assert.equal(Number(ann['prometheus.io/port']), DEFAULT_METRICS_PORT);
  const podLabels = ds.spec?.template.metadata?.labels ?? {};
  assert.deepEqual(ds.spec?.selector.matchLabels, podLabels, 'the selector is the pod labels');
  // Service: headless, selects the pods, one port per named container port, same number
  assert.equal(service.spec?.clusterIP, 'None');
  assert.deepEqual(service.spec.selector, podLabels);
  assert.deepEqual(
    (service.spec.ports ?? []).map((p) => [
      p.name,
      p.port,
      typeof p.targetPort === 'string' ? ports.get(p.targetPort) : p.targetPort,
    ]),
    [...ports].map(([name, n]) => [name, n, n]),
  );
  // PodMonitor: every named port, /metrics, the probe's own labels kept
  assert.deepEqual(podMonitor.spec.selector.matchLabels, podLabels);
  assert.deepEqual(podMonitor.spec.namespaceSelector?.matchNames, [ds.metadata?.namespace]);
  const endpoints = podMonitor.spec.podMetricsEndpoints;
  assert.deepEqual(
    endpoints.map((e) => e.port),
    [...ports.keys()],
  );
  for (const e of endpoints) {
    assert.equal(e.path, '/metrics');
    assert.equal(
      e.honorLabels,
      true,
      `${String(e.port)}: honorLabels keeps the probe's namespace/pod/container labels`,
    );
  }
});

test('security: host PID and network, not privileged, the capabilities of the systemd unit plus SYS_RESOURCE', () => {
  const { spec } = manifests();
  assert.equal(spec.hostPID, true);
  assert.equal(spec.hostNetwork, true);
  assert.equal(spec.dnsPolicy, 'ClusterFirstWithHostNet');
  assert.equal(spec.automountServiceAccountToken, false, 'the probes never call the API server');
  assert.equal(spec.serviceAccountName, 'meshprobe');
  assert.deepEqual(spec.tolerations, [{ operator: 'Exists' }], 'runs on every node, tainted ones too');
  const unit = read('deploy', 'systemd', 'meshprobe@.service');
  const bounding = /^CapabilityBoundingSet=(.+)$/m.exec(unit);
  assert.ok(bounding);
  const systemdCaps = bounding[1]
    .trim()
    .split(/\s+/)
    .map((c) => c.replace(/^CAP_/, ''));
  const want = [...systemdCaps, 'SYS_RESOURCE'].sort();
  assert.deepEqual(want, ['BPF', 'DAC_READ_SEARCH', 'NET_ADMIN', 'PERFMON', 'SYSLOG', 'SYS_PTRACE', 'SYS_RESOURCE']);
  for (const c of spec.containers) {
    const sc = c.securityContext;
    assert.ok(sc, `container ${c.name}: securityContext`);
    assert.equal(sc.privileged, false);
    assert.equal(sc.allowPrivilegeEscalation, false);
    assert.equal(sc.readOnlyRootFilesystem, true);
    assert.equal(sc.runAsUser, 0, 'added capabilities reach the effective set of uid 0 only');
    assert.deepEqual(sc.capabilities?.drop, ['ALL']);
    assert.deepEqual([...(sc.capabilities.add ?? [])].sort(), want);
    // memory requested and bounded, with headroom over the ~150-200 MB measured (see the comments)
    const mem = (s: string | number | undefined) => {
      const m = /^(\d+)Mi$/.exec(String(s));
      assert.ok(m, `container ${c.name}: memory in Mi, got ${String(s)}`);
      return Number(m[1]);
    };
    const req = mem(c.resources?.requests?.memory);
    const lim = mem(c.resources?.limits?.memory);
    assert.ok(req >= 192 && lim >= 2 * req, `container ${c.name}: memory ${req}Mi / ${lim}Mi`);
    assert.ok(c.resources?.requests?.cpu !== undefined && c.resources.limits?.cpu !== undefined);
  }
});

test('host mounts: the paths the code reads, at the same path, read-only but bpffs', () => {
  const { spec } = manifests();
  const hostVolumes = new Map(
    (spec.volumes ?? []).filter((v) => v.hostPath).map((v) => [v.name, v.hostPath?.path ?? '']),
  );
  const saved = process.env.MESHPROBE_PODS_DIR;
  delete process.env.MESHPROBE_PODS_DIR;
  let env: ReturnType<typeof defaultResolveEnv>;
  try {
    env = defaultResolveEnv();
  } finally {
    if (saved !== undefined) process.env.MESHPROBE_PODS_DIR = saved;
  }
  const features = read('dist', 'src', 'kernel', 'features.js');
  const tracefs = /TRACEFS_CANDIDATES = \[([^\]]*)\]/.exec(features);
  assert.ok(tracefs, 'the tracefs candidates in src/kernel/features.ts');
  const tracefsPaths = [...tracefs[1].matchAll(/'([^']+)'/g)].map((m) => m[1]);
  assert.ok(tracefsPaths.length >= 1);
  // the kubelet's container log links: src/ reads them once pod identity names containers
  const containersDefault = /MESHPROBE_CONTAINERS_DIR \?\? '([^']+)'/.exec(
    spawnSync('grep', ['-rho', "MESHPROBE_CONTAINERS_DIR ?? '[^']*'", join(repoRoot, 'dist', 'src')], {
      encoding: 'utf8',
    }).stdout,
  );
  const needed: { path: string; writable?: boolean }[] = [
    { path: env.podsDir },
    { path: containersDefault?.[1] ?? '/var/log/containers' },
    { path: BPFFS, writable: true },
    { path: DEFAULT_VMLINUX_BTF },
    { path: env.cgroupRoot ?? '/sys/fs/cgroup' },
    ...tracefsPaths.map((path) => ({ path })),
  ];
  assert.equal(env.podsDir, '/var/log/pods');
  for (const c of spec.containers) {
    const mounts = c.volumeMounts ?? [];
    for (const m of mounts) {
      const host = hostVolumes.get(m.name);
      if (host !== undefined) assert.equal(host, m.mountPath, `${m.name}: the host path at the same path`);
      assert.ok(m.name === 'reports' || host !== undefined, `${m.name}: a hostPath or the reports emptyDir`);
    }
    for (const n of needed) {
      // the deepest mount holding the path is the one it is read through
      const holder = mounts
        .filter((m) => n.path === m.mountPath || n.path.startsWith(m.mountPath.replace(/\/$/, '') + '/'))
        .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
      assert.ok(holder, `container ${c.name}: nothing mounts ${n.path}`);
      assert.ok(hostVolumes.has(holder.name), `${n.path} comes from the host`);
      assert.equal(holder.readOnly ?? false, !n.writable, `${n.path} through ${holder.mountPath}: readOnly`);
    }
    assert.deepEqual(
      mounts.map((m) => m.mountPath).sort(),
      [
        '/sys',
        '/sys/fs/bpf',
        '/sys/fs/cgroup',
        '/sys/kernel/debug',
        '/sys/kernel/tracing',
        '/var/lib/meshprobe',
        '/var/log/containers',
        '/var/log/pods',
      ],
      `container ${c.name}: mounts`,
    );
  }
});
