// A fake Kubernetes node for end-to-end tests (root): a kubepods cgroup tree
// of the systemd or the cgroupfs driver under a test-owned parent of the real
// cgroup2 mount (<root>/meshprobe-test-<pid>-<n>/kubepods.slice/...), pods
// with containers, the kubelet's /var/log/pods-style directories and
// /var/log/containers-style symlinks in a temporary directory, processes
// moved into a container's (or a pod's) cgroup, a pod deleted mid-test, and a
// cleanup that moves every process back to the cgroup it came from and
// removes every directory it made (deepest first). Synchronous throughout, so
// that the cleanup can also run from a process 'exit' handler.
import { randomBytes, randomUUID } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { errorCode } from '../../src/errors.js';
import { cgroup2Root } from '../../src/filter/resolve.js';
import type { ContainerRuntime, QosClass } from '../../src/k8s/identity.js';
import { onProcessExit } from './netns.js';

export type CgroupDriver = 'systemd' | 'cgroupfs';

export interface FakePodSpec {
  namespace: string;
  name: string;
  /** default: a random UUID */
  uid?: string;
  /** default: besteffort */
  qos?: QosClass;
  /** default: the node's */
  runtime?: ContainerRuntime;
  /** container names, or names with a given 64-hex ID (default: random) */
  containers: (string | { name: string; id: string })[];
}

export interface FakeContainer {
  name: string;
  /** 64 hex digits */
  id: string;
  /** relative to the cgroup2 mount, as /proc/<pid>/cgroup shows it */
  cgroupPath: string;
  /** absolute */
  cgroupDir: string;
  /** the cgroup's id: its directory's inode */
  cgroupId: bigint;
}

export interface FakePod {
  namespace: string;
  name: string;
  uid: string;
  qos: QosClass;
  runtime: ContainerRuntime;
  cgroupPath: string;
  cgroupDir: string;
  cgroupId: bigint;
  containers: FakeContainer[];
  /** its /var/log/pods-style directory */
  logDir: string;
  /** the container of that name (throws if none) */
  container(name: string): FakeContainer;
}

export interface FakeNode {
  driver: CgroupDriver;
  runtime: ContainerRuntime;
  /** the cgroup2 mount */
  root: string;
  /** the test-owned parent, relative to the mount (/meshprobe-test-<pid>-<n>) */
  top: string;
  /** /var/log/pods-style (MESHPROBE_PODS_DIR) */
  podsDir: string;
  /** /var/log/containers-style (MESHPROBE_CONTAINERS_DIR) */
  containersDir: string;
  pods: FakePod[];
  addPod(spec: FakePodSpec): FakePod;
  /** writes `pid` to the cgroup.procs of a container's cgroup (or a pod's: a sandbox process) */
  moveInto(pid: number, into: FakeContainer | FakePod): void;
  /** moves `pid` back to the cgroup it was in before its first moveInto */
  moveBack(pid: number): void;
  /** removes the pod's log directory and symlinks, moves its processes back, removes its cgroups */
  deletePod(pod: FakePod): void;
  /** deletes every pod and removes every directory made; throws if anything is left */
  cleanup(): void;
  /** directories made and still there (cgroups and the log tree) */
  leftovers(): string[];
}

const SYSTEMD_SCOPE: Record<ContainerRuntime, string> = {
  containerd: 'cri-containerd',
  'cri-o': 'crio',
  docker: 'docker',
};

let nodes = 0;

/** The cgroup v2 path (relative to the mount) of process `pid`. */
export function cgroupOf(pid: number): string {
  const line = readFileSync(`/proc/${String(pid)}/cgroup`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('0::'));
  if (line === undefined)
    throw new Error(`process ${String(pid)} has no cgroup v2 line in /proc/${String(pid)}/cgroup`);
  return line.slice(3);
}

export function createFakeNode(opts: { driver: CgroupDriver; runtime?: ContainerRuntime; root?: string }): FakeNode {
  const root = opts.root ?? cgroup2Root();
  if (root === undefined) throw new Error('fake node: this machine has no cgroup2 mount');
  const driver = opts.driver;
  const runtime = opts.runtime ?? 'containerd';
  const top = `/meshprobe-test-${String(process.pid)}-${String(++nodes)}`;
  const logs = mkdtempSync(path.join(tmpdir(), 'meshprobe-fake-node-'));
  const podsDir = path.join(logs, 'pods');
  const containersDir = path.join(logs, 'containers');
  mkdirSync(podsDir);
  mkdirSync(containersDir);
  /** cgroup directories made, in creation order (absolute) */
  const made: string[] = [];
  /** where each moved process came from */
  const origin = new Map<number, string>();
  const pods: FakePod[] = [];

  const mk = (rel: string): string => {
    const abs = path.join(root, rel);
    if (!existsSync(abs)) {
      mkdirSync(abs);
      made.push(abs);
    }
    return abs;
  };
  const ino = (abs: string) => statSync(abs, { bigint: true }).ino;

  /** writes pid to a cgroup's cgroup.procs; false if the process has ended */
  const writeProcs = (dir: string, pid: number): boolean => {
    try {
      writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
      return true;
    } catch (err) {
      if (errorCode(err) === 'ESRCH') return false;
      throw err;
    }
  };
  const moveBack = (pid: number) => {
    const from = origin.get(pid) ?? '/';
    const dir = path.join(root, from);
    // its first cgroup may be gone meanwhile: then the mount's root
    if (!existsSync(dir) || !writeProcs(dir, pid)) {
      if (existsSync(`/proc/${String(pid)}`)) writeProcs(root, pid);
    }
    origin.delete(pid);
  };
  const procsOf = (dir: string): number[] =>
    readFileSync(path.join(dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map(Number);
  const removeCgroup = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const pid of procsOf(dir)) moveBack(pid);
    rmdirSync(dir);
    made.splice(made.indexOf(dir), 1);
  };

  /** the pods' parent for a QoS class (guaranteed pods sit directly under kubepods) */
  const qosParent = (qos: QosClass): string => {
    const base = driver === 'systemd' ? `${top}/kubepods.slice` : `${top}/kubepods`;
    mk(base);
    if (qos === 'guaranteed') return base;
    return path.posix.join(base, driver === 'systemd' ? `kubepods-${qos}.slice` : qos);
  };

  const addPod = (spec: FakePodSpec): FakePod => {
    const uid = spec.uid ?? randomUUID();
    const qos = spec.qos ?? 'besteffort';
    const rt = spec.runtime ?? runtime;
    mk(top);
    const parent = qosParent(qos);
    mk(parent);
    const podName =
      driver === 'systemd'
        ? `kubepods${qos === 'guaranteed' ? '' : `-${qos}`}-pod${uid.replace(/-/g, '_')}.slice`
        : `pod${uid}`;
    const cgroupPath = path.posix.join(parent, podName);
    const cgroupDir = mk(cgroupPath);
    const logDir = path.join(podsDir, `${spec.namespace}_${spec.name}_${uid}`);
    mkdirSync(logDir);
    const containers = spec.containers.map((c): FakeContainer => {
      const { name, id } = typeof c === 'string' ? { name: c, id: randomBytes(32).toString('hex') } : c;
      const leaf = driver === 'systemd' ? `${SYSTEMD_SCOPE[rt]}-${id}.scope` : rt === 'cri-o' ? `crio-${id}` : id;
      const rel = path.posix.join(cgroupPath, leaf);
      const dir = mk(rel);
      mkdirSync(path.join(logDir, name));
      const log = path.join(logDir, name, '0.log');
      writeFileSync(log, '');
      symlinkSync(log, path.join(containersDir, `${spec.name}_${spec.namespace}_${name}-${id}.log`));
      return { name, id, cgroupPath: rel, cgroupDir: dir, cgroupId: ino(dir) };
    });
    const pod: FakePod = {
      namespace: spec.namespace,
      name: spec.name,
      uid,
      qos,
      runtime: rt,
      cgroupPath,
      cgroupDir,
      cgroupId: ino(cgroupDir),
      containers,
      logDir,
      container(name) {
        const c = containers.find((x) => x.name === name);
        if (!c) throw new Error(`fake pod ${spec.name} has no container ${name}`);
        return c;
      },
    };
    pods.push(pod);
    return pod;
  };

  const deletePod = (pod: FakePod) => {
    rmSync(pod.logDir, { recursive: true, force: true });
    for (const c of pod.containers) {
      rmSync(path.join(containersDir, `${pod.name}_${pod.namespace}_${c.name}-${c.id}.log`), { force: true });
    }
    for (const c of pod.containers) removeCgroup(c.cgroupDir);
    removeCgroup(pod.cgroupDir);
    pods.splice(pods.indexOf(pod), 1);
  };

  const leftovers = () => [...made, logs].filter((d) => existsSync(d));

  const cleanup = () => {
    const errors: string[] = [];
    for (const pod of [...pods]) {
      try {
        deletePod(pod);
      } catch (err) {
        errors.push(`pod ${pod.namespace}/${pod.name}: ${String(err)}`);
      }
    }
    for (const pid of [...origin.keys()]) {
      try {
        moveBack(pid);
      } catch (err) {
        errors.push(`process ${String(pid)}: ${String(err)}`);
      }
    }
    for (const dir of [...made].reverse()) {
      try {
        removeCgroup(dir);
      } catch (err) {
        errors.push(`${dir}: ${String(err)}`);
      }
    }
    rmSync(logs, { recursive: true, force: true });
    const left = leftovers();
    if (left.length === 0) unregister();
    if (errors.length > 0 || left.length > 0)
      throw new Error(`fake node cleanup: ${[...errors, ...left.map((d) => `left ${d}`)].join('; ')}`);
  };
  // registered before the first cgroup is made: a test that dies midway still leaves nothing
  const unregister = onProcessExit(cleanup);

  return {
    driver,
    runtime,
    root,
    top,
    podsDir,
    containersDir,
    pods,
    addPod,
    moveInto(pid, into) {
      if (!origin.has(pid)) origin.set(pid, cgroupOf(pid));
      if (!writeProcs(into.cgroupDir, pid)) throw new Error(`fake node: process ${String(pid)} has ended`);
    },
    moveBack,
    deletePod,
    cleanup,
    leftovers,
  };
}
