/**
 * Kubernetes identity of a process from the node's own files, without the API server:
 *
 *   cgroup id  → cgroup v2 path            (cgroupPathOf, src/filter/resolve.ts)
 *   cgroup path → pod UID, container ID     (parseKubepodsCgroup: the kubelet's and the runtimes' naming)
 *   pod UID    → namespace, pod             (the kubelet's /var/log/pods/<namespace>_<pod>_<uid>/)
 *   container ID → container name           (the kubelet's /var/log/containers/<pod>_<namespace>_<container>-<id>.log)
 *
 * Host processes (no kubepods cgroup) have no identity: callers keep comm:port for them.
 *
 * Cgroup names, as real nodes show them (cgroup v2, path relative to the cgroup2 mount):
 *
 * systemd driver: the kubelet makes one slice per QoS class and one per pod; systemd slice names spell their
 * whole ancestry with "-", and the pod UID's "-" become "_" (kubernetes/kubernetes#26751, kubelet-systemd
 * proposal; systemd-cgls in kontena/pharos-cluster#440 and netdata/netdata#4868). Guaranteed pods sit
 * directly under kubepods.slice (CJLove/rt-operator notes/cgroupv1_notes.md):
 *   /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<64hex>.scope
 *   /kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/crio-<64hex>.scope
 *   /kubepods.slice/kubepods-pod<uid_>.slice/docker-<64hex>.scope
 * The runtime names the container's scope "<prefix>-<id>.scope" from runc's systemd cgroupsPath
 * "slice:prefix:id": containerd "cri-containerd" (containerd/cri#290), CRI-O "crio" and "crio-conmon" for its
 * monitor process (cri-o/cri-o#811, opencontainers/runc#4620), dockershim "docker". CRI-O's pod sandbox without
 * an infra container shows as "crio-<64hex>" with no ".scope" (containerd/nri#227).
 *
 * cgroupfs driver: plain directories; the pod UID keeps its "-"; containerd and docker name the container
 * directory by its bare ID, CRI-O by "crio-<id>" (cri-o/cri-o#812; Qard/container-info test fixtures):
 *   /kubepods/burstable/pod<uid>/<64hex>      /kubepods/besteffort/pod<uid>/crio-<64hex>      /kubepods/pod<uid>/<64hex>
 *
 * Prefixes: --cgroup-root moves the tree (kind runs its kubelet with the root "/kubelet", which the systemd
 * driver spells /kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/
 * kubelet-kubepods-besteffort-pod<uid_>.slice/cri-containerd-<id>.scope), and a node inside a container adds
 * the container's own cgroup in front (/docker/<id>/kubepods.slice/..., kubernetes/minikube#11280). A
 * containerd run with the systemd driver while runc is not makes the literal directory
 * /system.slice/containerd.service/kubepods-burstable-pod<uid_>.slice:cri-containerd:<id>
 * (containerd/containerd#5226). All of these are read here.
 *
 * Static pods (the kubelet's manifests) have a 32-hex UID with no dashes ("kubepods-burstable-pod8daa50c3...slice").
 */
import { readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { MeshprobeError, errorCode } from '../errors.js';
import { cgroup2Root, cgroupPathOf } from '../filter/resolve.js';

export type QosClass = 'guaranteed' | 'burstable' | 'besteffort';
export type ContainerRuntime = 'containerd' | 'cri-o' | 'docker';

/** What a cgroup path says by itself. */
export interface KubepodsCgroup {
  /** with dashes, as in /var/log/pods and the API */
  podUid: string;
  /** undefined for the pod's own cgroup (a pause/sandbox process) and for CRI-O's conmon scope */
  containerId?: string;
  qos: QosClass;
  /** from the scope prefix; cgroupfs containerd and docker both use the bare ID, so none there */
  runtime?: ContainerRuntime;
}

/** The names of a pod's process. */
export interface K8sPodIdentity {
  namespace: string;
  pod: string;
  /** unknown when the process is the pod's own (sandbox) or its container has no log entry yet */
  container?: string;
  podUid: string;
  containerId?: string;
}

const UUID_DASH = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const UUID_UNDERSCORE = '[0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12}';
/** static pods: the kubelet's hash of the manifest */
const HASH_UID = '[0-9a-f]{32}';

/** "<prefix-chain>kubepods[-<qos>]-pod<uid_>" (the part before ".slice") */
const SYSTEMD_POD = new RegExp(
  `^((?:[a-z0-9_.]+-)*kubepods)(?:-(burstable|besteffort))?-pod(${UUID_UNDERSCORE}|${HASH_UID})$`,
);
const CGROUPFS_POD = new RegExp(`^pod(${UUID_DASH}|${HASH_UID})$`);
/** runc's systemd path written as a plain directory: "<pod slice>:<prefix>:<id>" */
const COLON_FORM = /^(.+)\.slice:(cri-containerd|crio|docker):([0-9a-f]{64})$/;

const SCOPE_RUNTIME: Record<string, ContainerRuntime> = {
  'cri-containerd': 'containerd',
  crio: 'cri-o',
  docker: 'docker',
};

/** A container's cgroup directly below its pod's. */
function containerSegment(seg: string): { containerId?: string; runtime?: ContainerRuntime } | undefined {
  let m = /^crio-conmon-[0-9a-f]{64}(\.scope)?$/.exec(seg);
  if (m) return { runtime: 'cri-o' }; // CRI-O's monitor: the pod's, no container's
  m = /^(cri-containerd|crio|docker)-([0-9a-f]{64})\.scope$/.exec(seg);
  if (m) return { containerId: m[2], runtime: SCOPE_RUNTIME[m[1]] };
  m = /^crio-([0-9a-f]{64})$/.exec(seg);
  if (m) return { containerId: m[1], runtime: 'cri-o' };
  m = /^([0-9a-f]{64})$/.exec(seg);
  if (m) return { containerId: m[1] };
  return undefined;
}

function result(podUid: string, qos: QosClass, below: string | undefined): KubepodsCgroup {
  const out: KubepodsCgroup = { podUid, qos };
  const c = below === undefined ? undefined : containerSegment(below);
  if (c?.containerId !== undefined) out.containerId = c.containerId;
  if (c?.runtime !== undefined) out.runtime = c.runtime;
  return out;
}

/**
 * Pod UID, container ID, QoS class and runtime of a cgroup v2 path (relative to the cgroup2 mount; any
 * prefix before the kubepods tree is allowed); undefined for a path outside any pod. The pod's own cgroup
 * (the sandbox's pause process) gives no containerId; cgroups below a container's (a container that makes
 * its own) give that container.
 */
export function parseKubepodsCgroup(p: string): KubepodsCgroup | undefined {
  const segs = p.split('/').filter((s) => s !== '');
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i];
    const colon = COLON_FORM.exec(seg);
    if (colon) {
      const pod = SYSTEMD_POD.exec(colon[1]);
      if (!pod) continue;
      return {
        podUid: pod[3].replace(/_/g, '-'),
        containerId: colon[3],
        qos: (pod[2] as QosClass | undefined) ?? 'guaranteed',
        runtime: SCOPE_RUNTIME[colon[2]],
      };
    }
    if (seg.endsWith('.slice')) {
      const m = SYSTEMD_POD.exec(seg.slice(0, -'.slice'.length));
      if (!m) continue;
      const [, chain, qos] = m;
      // the slice's own name spells its parents: they must be there
      const parents = qos ? [`${chain}.slice`, `${chain}-${qos}.slice`] : [`${chain}.slice`];
      if (i < parents.length || parents.some((name, k) => segs[i - parents.length + k] !== name)) continue;
      return result(m[3].replace(/_/g, '-'), (qos as QosClass | undefined) ?? 'guaranteed', segs[i + 1]);
    }
    const m = CGROUPFS_POD.exec(seg);
    if (!m) continue;
    const parent = segs[i - 1] as string | undefined;
    if (parent === 'kubepods') return result(m[1], 'guaranteed', segs[i + 1]);
    if ((parent === 'burstable' || parent === 'besteffort') && segs[i - 2] === 'kubepods')
      return result(m[1], parent, segs[i + 1]);
  }
  return undefined;
}

/** How a pod service is named: namespace/pod. */
export function podServiceName(id: Pick<K8sPodIdentity, 'namespace' | 'pod'>): string {
  return `${id.namespace}/${id.pod}`;
}

/** Container names of the service meshes' proxies. */
export const SIDECAR_CONTAINERS: readonly string[] = ['istio-proxy', 'linkerd-proxy', 'cilium-envoy'];

/** Is this container a mesh sidecar (Istio, Linkerd, Cilium's Envoy)? */
export function sidecarContainer(name: string | undefined): boolean {
  return name !== undefined && SIDECAR_CONTAINERS.includes(name);
}

// Kubernetes names: namespaces and container names are DNS labels, pod names DNS subdomains; none has "_",
// which the kubelet uses as the separator (BuildPodLogsDirectory: <namespace>_<pod>_<uid>; the legacy symlink
// /var/log/containers/<pod>_<namespace>_<container>-<id>.log, pkg/kubelet/kuberuntime/legacy.go).
const LABEL = '[a-z0-9](?:[-a-z0-9]*[a-z0-9])?';
const SUBDOMAIN = '[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?';
const POD_DIR = new RegExp(`^(${LABEL})_(${SUBDOMAIN})_(${UUID_DASH}|${HASH_UID})$`);
const CONTAINER_LOG = new RegExp(`^(${SUBDOMAIN})_(${LABEL})_(${LABEL})-([0-9a-f]{64})\\.log$`);
const CONTAINER_DIR = new RegExp(`^${LABEL}$`);

/** cgroup ids remembered at most (then the cache starts over: a cheap lookup each, cgroupPathOf caches too) */
const MAX_CACHED = 16_384;

interface PodEntry {
  namespace: string;
  pod: string;
  uid: string;
  /** the last time its log directory was listed */
  lastSeen: number;
  /** when its log directory was first found missing */
  goneAt?: number;
  /** container directory names, read when first needed */
  containers?: string[];
}

interface ContainerEntry {
  container: string;
  /** from the symlink's target, when it points into a pod directory */
  podUid?: string;
  namespace: string;
  pod: string;
  lastSeen: number;
  /** when its symlink was first found missing */
  goneAt?: number;
}

export interface K8sIdentityOptions {
  /** the cgroup2 mount (default: found in /proc/self/mounts) */
  cgroupRoot?: string;
  /** the kubelet's pod log directories (default $MESHPROBE_PODS_DIR or /var/log/pods) */
  podsDir?: string;
  /** the kubelet's container log symlinks (default $MESHPROBE_CONTAINERS_DIR or /var/log/containers) */
  containersDir?: string;
  /** milliseconds, for tests (default Date.now) */
  now?: () => number;
  /** cgroup id → path relative to the mount (default cgroupPathOf of src/filter/resolve.ts) */
  pathOf?: (id: bigint) => string | undefined;
  /** the directories are listed again on a miss at most this often (default 1000 ms) */
  refreshMs?: number;
  /** how long a pod whose log directory is gone keeps its names (default 60 s) */
  graceMs?: number;
}

/** A pod whose log directory is gone: its series may be expired once the grace period has passed. */
export interface GonePod {
  namespace: string;
  pod: string;
  podUid: string;
  goneAt: number;
}

/**
 * Names of the pods' processes on this node, cached per cgroup id. The kubelet's directories are listed
 * again on a miss (a cgroup of an unknown pod or container) at most once per refreshMs; a pod whose log
 * directory has disappeared is reported by gonePods() and dropped by forget() after the grace period.
 */
export class K8sIdentity {
  readonly cgroupRoot: string | undefined;
  readonly podsDir: string;
  readonly containersDir: string;
  readonly refreshMs: number;
  readonly graceMs: number;
  /** how many times the directories were listed (for tests and the report's overhead) */
  refreshes = 0;
  private readonly now: () => number;
  private readonly pathOf: (id: bigint) => string | undefined;
  private readonly pods = new Map<string, PodEntry>();
  private readonly containers = new Map<string, ContainerEntry>();
  /** null: a host cgroup, for good */
  private readonly byId = new Map<bigint, K8sPodIdentity | null>();
  private listedAt: number | undefined;

  constructor(o: K8sIdentityOptions = {}) {
    this.cgroupRoot = o.cgroupRoot ?? cgroup2Root();
    this.podsDir = o.podsDir ?? process.env.MESHPROBE_PODS_DIR ?? '/var/log/pods';
    this.containersDir = o.containersDir ?? process.env.MESHPROBE_CONTAINERS_DIR ?? '/var/log/containers';
    this.now = o.now ?? Date.now;
    this.refreshMs = o.refreshMs ?? 1000;
    this.graceMs = o.graceMs ?? 60_000;
    const root = this.cgroupRoot;
    this.pathOf = o.pathOf ?? ((id) => (root === undefined ? undefined : cgroupPathOf(id, root)));
  }

  /** The names of the process(es) in cgroup `id`; undefined for a host cgroup or a pod this node does not know. */
  ofCgroupId(id: bigint): K8sPodIdentity | undefined {
    const hit = this.byId.get(id);
    if (hit !== undefined) return hit ?? undefined;
    const rel = this.pathOf(id);
    if (rel === undefined) return undefined; // not cached: the walk may find it later
    const parsed = parseKubepodsCgroup(rel);
    if (!parsed) {
      this.remember(id, null);
      return undefined;
    }
    const r = this.identify(parsed);
    // kept once complete; a container named by the fallback (its log symlink not there yet) is asked again
    if (r && (r.containerId === undefined || this.containers.has(r.containerId))) this.remember(id, r);
    return r;
  }

  /** Caches an answer; host cgroups come and go too (sessions, transient units): the cache is bounded. */
  private remember(id: bigint, r: K8sPodIdentity | null): void {
    if (this.byId.size >= MAX_CACHED) this.byId.clear();
    this.byId.set(id, r);
  }

  /** The names for a cgroup path (relative to the cgroup2 mount, or absolute under it). */
  ofCgroupPath(p: string): K8sPodIdentity | undefined {
    const root = this.cgroupRoot;
    const rel = root !== undefined && p.startsWith(root + '/') ? p.slice(root.length) : p;
    const parsed = parseKubepodsCgroup(rel);
    return parsed ? this.identify(parsed) : undefined;
  }

  /** Pods whose log directory is gone (still named until forget() drops them). */
  gonePods(): GonePod[] {
    const out: GonePod[] = [];
    for (const p of this.pods.values())
      if (p.goneAt !== undefined) out.push({ namespace: p.namespace, pod: p.pod, podUid: p.uid, goneAt: p.goneAt });
    return out;
  }

  /** When pod `podUid`'s log directory was last listed (undefined: never, or forgotten). */
  lastSeen(podUid: string): number | undefined {
    return this.pods.get(podUid)?.lastSeen;
  }

  /**
   * Lists the directories (at most once per refreshMs), then drops the pods gone for at least `graceMs`,
   * with their containers and cached cgroups; returns them, for exporters to expire their series.
   */
  forget(graceMs = this.graceMs): GonePod[] {
    this.maybeRefresh();
    const now = this.now();
    const dropped = this.gonePods().filter((g) => now - g.goneAt >= graceMs);
    const uids = new Set(dropped.map((g) => g.podUid));
    for (const uid of uids) this.pods.delete(uid);
    const ids = new Set<string>();
    for (const [id, c] of this.containers) {
      const podDropped = c.podUid !== undefined && uids.has(c.podUid);
      if (podDropped || (c.goneAt !== undefined && now - c.goneAt >= graceMs)) ids.add(id);
    }
    for (const id of ids) this.containers.delete(id);
    for (const [id, r] of this.byId) {
      if (r && (uids.has(r.podUid) || (r.containerId !== undefined && ids.has(r.containerId)))) this.byId.delete(id);
    }
    return dropped;
  }

  /** Lists the kubelet's directories now. */
  refresh(): void {
    const now = this.now();
    this.listedAt = now;
    this.refreshes++;
    const seen = new Set<string>();
    for (const name of listDir(this.podsDir)) {
      const m = POD_DIR.exec(name);
      if (!m) continue;
      const [, namespace, pod, uid] = m;
      seen.add(uid);
      const e = this.pods.get(uid);
      if (e) {
        e.lastSeen = now;
        delete e.goneAt;
        delete e.containers; // read again when needed: a debug container may have been added
      } else this.pods.set(uid, { namespace, pod, uid, lastSeen: now });
    }
    for (const e of this.pods.values()) if (!seen.has(e.uid) && e.goneAt === undefined) e.goneAt = now;
    const listed = new Set<string>();
    for (const name of listDir(this.containersDir)) {
      const m = CONTAINER_LOG.exec(name);
      if (!m) continue;
      const [, pod, namespace, container, id] = m;
      listed.add(id);
      const e = this.containers.get(id);
      if (e) {
        e.lastSeen = now;
        delete e.goneAt;
        continue;
      }
      const target = this.linkTarget(name);
      const entry: ContainerEntry = { namespace, pod, container: target.container ?? container, lastSeen: now };
      if (target.podUid !== undefined) entry.podUid = target.podUid;
      this.containers.set(id, entry);
    }
    for (const [id, e] of this.containers) if (!listed.has(id) && e.goneAt === undefined) e.goneAt = now;
  }

  private maybeRefresh(): void {
    if (this.listedAt === undefined || this.now() - this.listedAt >= this.refreshMs) this.refresh();
  }

  /**
   * The symlink points at /var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log: its container name is
   * exact even when the kubelet shortened the link's own name to 255 bytes (legacyLogSymlink truncates).
   */
  private linkTarget(name: string): { podUid?: string; container?: string } {
    let target: string;
    try {
      target = readlinkSync(path.join(this.containersDir, name));
    } catch {
      return {}; // a plain file (not the kubelet's symlink): its name is all there is
    }
    const parts = target.split('/');
    const podDir = POD_DIR.exec(parts.at(-3) ?? '');
    const container = parts.at(-2) ?? '';
    if (!podDir || !CONTAINER_DIR.test(container)) return {};
    return { podUid: podDir[3], container };
  }

  private identify(c: KubepodsCgroup): K8sPodIdentity | undefined {
    const known = () => this.pods.has(c.podUid) && (c.containerId === undefined || this.containers.has(c.containerId));
    if (!known()) this.maybeRefresh();
    const pod = this.pods.get(c.podUid);
    if (!pod) return undefined;
    const out: K8sPodIdentity = { namespace: pod.namespace, pod: pod.pod, podUid: c.podUid };
    if (c.containerId === undefined) return out;
    out.containerId = c.containerId;
    const name = this.containers.get(c.containerId)?.container ?? this.onlyContainer(pod);
    if (name !== undefined) out.container = name;
    return out;
  }

  /**
   * The pod's container when it has just one directory in its log directory (listed once per refresh). A
   * sandbox's own scope (containerd's pause process) is then named after that container too: it holds no
   * sockets, so no figure is misnamed.
   */
  private onlyContainer(pod: PodEntry): string | undefined {
    pod.containers ??= listDir(path.join(this.podsDir, `${pod.namespace}_${pod.pod}_${pod.uid}`)).filter((n) =>
      CONTAINER_DIR.test(n),
    );
    return pod.containers.length === 1 ? pod.containers[0] : undefined;
  }
}

/** A directory's entries; none when it does not exist (no kubelet on this node, or the pod is gone). */
function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (err) {
    const code = errorCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw new MeshprobeError(
      'MP_K8S_DIR',
      `cannot list ${dir} (${code ?? String(err)}): pod names need read access to the kubelet's log directories`,
    );
  }
}
