/**
 * Pod names for one probe run: what the reports and the exporters put on each figure.
 *
 * One PodNames per run (created with the run's outputs, src/cli/tcp-command.ts and
 * src/cli/packet-drop-probe.ts), around one K8sIdentity (src/k8s/identity.ts), so its caches hold:
 *
 * - of(cgroupId): the pod of a socket's cgroup (the kernel records it at connection open). An answer is
 *   kept for the run: the final report still names the pods deleted while it ran.
 * - expire(): asks K8sIdentity.forget() (the kubelet's directories listed at most once a second) for the
 *   pods gone for longer than the grace period; from then on their series are not exported (Prometheus:
 *   they disappear from /metrics; InfluxDB and the stream have no new points of them anyway).
 * - labels(ref): the exporter labels `namespace`, `pod`, `container`. At most `maxPods` distinct pods get
 *   their own; the others are labelled pod="other" (no container) and counted (pods_over_label_limit), so
 *   the label cardinality stays bounded whatever the node runs. A pod keeps the label it was first given
 *   for the run; an expired pod's place is given to the next pod.
 */
import { readFileSync } from 'node:fs';
import type { Labels } from '../export/model.js';
import { K8sIdentity, podServiceName, sidecarContainer, type K8sPodIdentity } from './identity.js';

/** Pods that get their own labels at most (--max-pods). */
export const DEFAULT_MAX_PODS = 1000;
/** How long a deleted pod keeps its series, milliseconds (--pod-grace-period). */
export const DEFAULT_POD_GRACE_MS = 60_000;

/** The pod of a figure (what the reports print, plus the UID the expiry works with). */
export interface PodRef {
  namespace: string;
  pod: string;
  container?: string;
  podUid: string;
}

/** The `k8s` field of a JSON entry. */
export interface K8sField {
  namespace: string;
  pod: string;
  container?: string;
}

/** `{ k8s: {namespace, pod, container} }` to spread into a JSON entry, or nothing when the pod is not known. */
export function k8sField(ref: PodRef | undefined): { k8s?: K8sField } {
  if (!ref) return {};
  return {
    k8s: {
      namespace: ref.namespace,
      pod: ref.pod,
      ...(ref.container !== undefined ? { container: ref.container } : {}),
    },
  };
}

/** How a pod's service is named: `namespace/pod:port` (a host process keeps `comm:port`). */
export function podService(ref: Pick<PodRef, 'namespace' | 'pod'>, port: number): string {
  return `${podServiceName(ref)}:${String(port)}`;
}

/** The label value of the pods beyond the bound. */
export const OTHER_POD = 'other';

export interface PodNamesOptions {
  identity?: K8sIdentity;
  /** pods with their own labels at most (default DEFAULT_MAX_PODS) */
  maxPods?: number;
  /** how long a pod whose log directory is gone keeps its series (default DEFAULT_POD_GRACE_MS) */
  graceMs?: number;
}

/** The report's `k8s` section. */
export interface PodStats {
  /** distinct pods named so far */
  pods_seen: number;
  /** pods with their own labels now */
  pods_labelled: number;
  /** distinct pods labelled pod="other" because --max-pods were labelled already */
  pods_over_label_limit: number;
  /** pods gone past the grace period: their series are no longer exported */
  pods_expired: number;
  max_pods: number;
  grace_period_seconds: number;
  pods_dir: string;
  containers_dir: string;
}

/** Remembered cgroups at most (a node's containers over a long run); then the oldest go. */
const MAX_REMEMBERED = 65_536;

const toRef = (id: K8sPodIdentity): PodRef => ({
  namespace: id.namespace,
  pod: id.pod,
  ...(id.container !== undefined ? { container: id.container } : {}),
  podUid: id.podUid,
});

export class PodNames {
  readonly identity: K8sIdentity;
  readonly maxPods: number;
  readonly graceMs: number;
  /** cgroup id → its pod (kept for the run, bounded) */
  private readonly byCgroup = new Map<bigint, PodRef>();
  /** process id → its pod (packet-drop-probe's port owners), bounded like byCgroup */
  private readonly byPid = new Map<number, PodRef | null>();
  private readonly seen = new Set<string>();
  private readonly labelled = new Set<string>();
  private readonly over = new Set<string>();
  private readonly expiredUids = new Set<string>();

  constructor(o: PodNamesOptions = {}) {
    this.identity = o.identity ?? new K8sIdentity({ graceMs: o.graceMs ?? DEFAULT_POD_GRACE_MS });
    this.maxPods = o.maxPods ?? DEFAULT_MAX_PODS;
    this.graceMs = o.graceMs ?? this.identity.graceMs;
  }

  /** The pod of cgroup `id` (a socket's), or undefined for a host process. */
  of(id: bigint): PodRef | undefined {
    const hit = this.byCgroup.get(id);
    if (hit) return hit;
    const found = this.identity.ofCgroupId(id);
    if (!found) return undefined;
    const ref = toRef(found);
    // a container named by the fallback (its log symlink not listed yet) is asked again next time
    if (found.containerId === undefined || found.container !== undefined) this.keep(this.byCgroup, id, ref);
    this.seen.add(ref.podUid);
    return ref;
  }

  /** The pod of process `pid` (from /proc/<pid>/cgroup), or undefined for a host process or one gone. */
  ofPid(pid: number): PodRef | undefined {
    const hit = this.byPid.get(pid);
    if (hit !== undefined) return hit ?? undefined;
    let line: string | undefined;
    try {
      line = readFileSync(`/proc/${String(pid)}/cgroup`, 'utf8')
        .split('\n')
        .find((l) => l.startsWith('0::'));
    } catch {
      return undefined; // the process has ended: asked again if it shows up again
    }
    const found = line === undefined ? undefined : this.identity.ofCgroupPath(line.slice(3));
    const ref = found ? toRef(found) : undefined;
    this.keep(this.byPid, pid, ref ?? null);
    if (ref) this.seen.add(ref.podUid);
    return ref;
  }

  private keep<K, V>(m: Map<K, V>, k: K, v: V): void {
    if (m.size >= MAX_REMEMBERED) {
      const oldest = m.keys().next();
      if (!oldest.done) m.delete(oldest.value);
    }
    m.set(k, v);
  }

  /** Is the process in cgroup `id` a mesh sidecar, by its container's name (istio-proxy, linkerd-proxy, cilium-envoy)? */
  sidecar(id: bigint): boolean {
    return sidecarContainer(this.of(id)?.container);
  }

  /**
   * Drops the pods gone for longer than the grace period (the kubelet's directories are listed at most
   * once per second): their series are no longer exported and their label places are free again.
   */
  expire(): void {
    for (const g of this.identity.forget(this.graceMs)) {
      this.expiredUids.add(g.podUid);
      this.labelled.delete(g.podUid);
    }
  }

  /** Has this pod expired (gone past the grace period)? */
  expired(ref: PodRef | undefined): boolean {
    return ref !== undefined && this.expiredUids.has(ref.podUid);
  }

  /** Does this pod get its own labels (false: beyond --max-pods, labelled pod="other")? */
  private admitted(ref: PodRef): boolean {
    if (this.labelled.has(ref.podUid)) return true;
    if (this.over.has(ref.podUid)) return false;
    if (this.labelled.size < this.maxPods) {
      this.labelled.add(ref.podUid);
      return true;
    }
    this.over.add(ref.podUid);
    return false;
  }

  /** The exporter labels of a pod: namespace, pod, container ({} for a host process; pod="other" beyond the bound). */
  labels(ref: PodRef | undefined): Labels {
    if (!ref) return {};
    if (!this.admitted(ref)) return { namespace: ref.namespace, pod: OTHER_POD };
    return {
      namespace: ref.namespace,
      pod: ref.pod,
      ...(ref.container !== undefined ? { container: ref.container } : {}),
    };
  }

  /** The service label of a series: a pod's own service name, with pod "other" beyond the bound. */
  serviceLabel(name: string, ref: PodRef | undefined, port: number): string {
    if (!ref || this.admitted(ref) || name !== podService(ref, port)) return name;
    return podService({ namespace: ref.namespace, pod: OTHER_POD }, port);
  }

  /** Distinct pods labelled "other" so far. */
  get overLimit(): number {
    return this.over.size;
  }

  stats(): PodStats {
    return {
      pods_seen: this.seen.size,
      pods_labelled: this.labelled.size,
      pods_over_label_limit: this.over.size,
      pods_expired: this.expiredUids.size,
      max_pods: this.maxPods,
      grace_period_seconds: this.graceMs / 1000,
      pods_dir: this.identity.podsDir,
      containers_dir: this.identity.containersDir,
    };
  }
}
