/**
 * Turns --filter clauses into the selectors the kernel compares
 * (bpf/filter.h): names become numbers here, once, at start-up.
 *
 *   netns=NAME      the inode of /run/netns/NAME (what `ip netns add` made), or a number
 *   cgroup=PATH     a cgroup v2 directory (absolute, or relative to the cgroup2 mount); the
 *                   kernel is given an fd of it (bpf_current_task_under_cgroup), which holds in
 *                   any cgroup namespace; its inode (the cgroup id) goes in the report
 *   namespace=NS    the pods of Kubernetes namespace NS on this node: their UIDs from the
 *                   kubelet's pod log directories (/var/log/pods/<ns>_<pod>_<uid>), their
 *                   cgroups found by "pod<uid>" in the cgroup2 tree (systemd and cgroupfs drivers)
 *   service=NAME    a --services entry, else "comm:port" or "comm" (a listening process)
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { usageError } from '../errors.js';
import type { FilterClause } from './parse.js';
import type { ServiceDef } from './services.js';
import { exists } from '../kernel/exists.js';

export interface Selector {
  clause: number;
  port?: number;
  tgid?: number;
  comm?: string;
  netns?: number;
  cgroupId?: bigint;
  /** the cgroup's directory, opened by src/filter/kernel.ts for the kernel */
  cgroupDir?: string;
}

export interface ResolvedFilter {
  selectors: Selector[];
  clauses: number;
  /** the expressions, as given (for the report) */
  expressions: string[];
}

export interface ResolveEnv {
  /** where `ip netns` keeps its names */
  netnsDir: string;
  /** the kubelet's pod log directories */
  podsDir: string;
  /** cgroup2 mount point, or undefined when there is none */
  cgroupRoot?: string;
}

export const MAX_SELECTORS = 64;
export const MAX_CLAUSES = 32;

export function defaultResolveEnv(): ResolveEnv {
  return {
    netnsDir: process.env.MESHPROBE_NETNS_DIR ?? '/run/netns',
    podsDir: process.env.MESHPROBE_PODS_DIR ?? '/var/log/pods',
    cgroupRoot: cgroup2Root(),
  };
}

/** The cgroup v2 mount point (unified or hybrid hierarchy). */
export function cgroup2Root(): string | undefined {
  try {
    for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
      const f = line.split(' ');
      if (f[2] === 'cgroup2') return f[1];
    }
  } catch {
    /* no /proc: no cgroup2 */
  }
  return undefined;
}

export function netnsInode(name: string, env: Pick<ResolveEnv, 'netnsDir'>): number | undefined {
  if (/^\d+$/.test(name)) return Number(name);
  if (name.includes('/')) return undefined;
  try {
    return statSync(path.join(env.netnsDir, name)).ino;
  } catch {
    return undefined;
  }
}

/** id (inode) and absolute directory of a cgroup v2; undefined if it does not exist. */
export function cgroupInfo(p: string, root: string): { id: bigint; dir: string; path: string } | undefined {
  const rel =
    path.posix.normalize('/' + (p.startsWith(root + '/') ? p.slice(root.length) : p)).replace(/\/+$/, '') || '/';
  const abs = path.join(root, rel);
  try {
    const st = statSync(abs, { bigint: true });
    if (!st.isDirectory()) return undefined;
    return { id: st.ino, dir: abs, path: rel };
  } catch {
    return undefined;
  }
}

/** Pod UIDs of namespace `ns` from the kubelet's log directories "<ns>_<pod>_<uid>". */
export function podUids(ns: string, podsDir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(podsDir);
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const n of names) {
    const m = /^([a-z0-9-]+)_(.+)_([0-9a-f-]{36})$/.exec(n);
    if (m && m[1] === ns) out.push(m[3]);
  }
  return out;
}

/** cgroup2 paths (relative to the root) of the pods with these UIDs: "pod<uid>" or "pod<uid with _>" in a directory name. */
export function podCgroups(uids: readonly string[], root: string, maxDepth = 6): string[] {
  const wanted = uids.flatMap((u) => [`pod${u}`, `pod${u.replace(/-/g, '_')}`]);
  const found: string[] = [];
  const walk = (rel: string, depth: number) => {
    if (depth > maxDepth) return;
    let entries;
    try {
      entries = readdirSync(path.join(root, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const child = `${rel}/${e.name}`;
      if (wanted.some((w) => e.name === w || e.name.endsWith(`-${w}.slice`))) found.push(child);
      else walk(child, depth + 1);
    }
  };
  walk('', 0);
  return found;
}

function tgidOf(pid: string): number | undefined {
  try {
    const m = /^Tgid:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

const IP_LIKE = /^(\d{1,3}(\.\d{1,3}){3}|\[?[0-9a-f:]*:[0-9a-f:]*\]?)$/i;

export function resolveFilters(
  clauses: readonly FilterClause[],
  services: readonly ServiceDef[],
  env: ResolveEnv,
): ResolvedFilter {
  if (clauses.length > MAX_CLAUSES)
    throw usageError(`too many --filter options (${clauses.length}): at most ${MAX_CLAUSES}`);
  const selectors: Selector[] = [];
  clauses.forEach((c, clause) => {
    for (const v of c.values) selectors.push(...valueSelectors(c, v, clause, services, env));
  });
  if (selectors.length > MAX_SELECTORS) {
    throw usageError(
      `the filters need ${selectors.length} kernel selectors, more than ${MAX_SELECTORS}: use fewer values`,
    );
  }
  return { selectors, clauses: clauses.length, expressions: clauses.map((c) => c.text) };
}

function valueSelectors(
  c: FilterClause,
  v: string,
  clause: number,
  services: readonly ServiceDef[],
  env: ResolveEnv,
): Selector[] {
  const bad = (why: string) => usageError(`--filter ${c.text}: ${why}`);
  const cgroup = (p: string): Selector => {
    if (!env.cgroupRoot) throw bad('this machine has no cgroup v2 mount, which cgroup filters need');
    const info = cgroupInfo(p, env.cgroupRoot);
    if (!info) throw bad(`no cgroup ${p} under ${env.cgroupRoot}`);
    return { clause, cgroupId: info.id, cgroupDir: info.dir };
  };
  const netns = (name: string): Selector => {
    const ino = netnsInode(name, env);
    if (ino === 0) throw bad('netns 0 is no namespace: use an ip netns name or an inode number');
    if (ino === undefined)
      throw bad(`no network namespace "${name}" (ip netns list shows the names, in ${env.netnsDir})`);
    return { clause, netns: ino };
  };
  switch (c.key) {
    case 'port':
      return [{ clause, port: Number(v) }];
    case 'pid':
      if (!exists(`/proc/${v}`)) throw bad(`no process with pid ${v}`);
      if (tgidOf(v) !== Number(v))
        throw bad(`${v} is a thread of process ${String(tgidOf(v))}: filter by the process id`);
      return [{ clause, tgid: Number(v) }];
    case 'comm':
      return [{ clause, comm: v }];
    case 'cgroup':
      return [cgroup(v)];
    case 'netns':
      return [netns(v)];
    case 'namespace': {
      if (!env.cgroupRoot) throw bad('this machine has no cgroup v2 mount, which namespace filters need');
      const uids = podUids(v, env.podsDir);
      if (uids.length === 0) throw bad(`no pod of namespace "${v}" on this node (none in ${env.podsDir})`);
      const paths = podCgroups(uids, env.cgroupRoot);
      if (paths.length === 0)
        throw bad(`the ${uids.length} pods of namespace "${v}" have no cgroup under ${env.cgroupRoot}`);
      return paths.map(cgroup);
    }
    case 'service': {
      const def = services.find((d) => d.name === v);
      if (def) return serviceSelectors(def, clause, cgroup, netns);
      const m = /^(.+):(\d+)$/.exec(v);
      if (m && IP_LIKE.test(m[1])) {
        throw bad(
          `"${v}" names a peer address, which is not a service here: filter with port=${m[2]}, or name it in --services`,
        );
      }
      if (m) {
        const port = Number(m[2]);
        if (port < 1 || port > 65535 || Buffer.byteLength(m[1]) > 15) throw bad(`"${v}" is not comm:port`);
        return [{ clause, comm: m[1], port }];
      }
      if (Buffer.byteLength(v) > 15)
        throw bad(`no service "${v}" in --services, and it is too long to be a process name`);
      return [{ clause, comm: v }];
    }
  }
}

/** An entry's selectors: every combination of its kinds' values (kinds all hold, values any). */
function serviceSelectors(
  d: ServiceDef,
  clause: number,
  cgroup: (p: string) => Selector,
  netns: (n: string) => Selector,
): Selector[] {
  let out: Selector[] = [{ clause }];
  const cross = (alts: Selector[]) => {
    if (alts.length) out = out.flatMap((s) => alts.map((a) => ({ ...s, ...a, clause })));
  };
  cross(d.ports.map((port) => ({ clause, port })));
  cross(d.comm.map((comm) => ({ clause, comm })));
  cross(d.cgroup.map(cgroup));
  cross(d.netns.map(netns));
  return out;
}

let cgroupPaths: Map<bigint, string> | undefined;
let walkedAt = 0;

/** Path (relative to the cgroup2 root) of cgroup `id`; the tree is walked again when the id is new. */
export function cgroupPathOf(id: bigint, root = cgroup2Root()): string | undefined {
  if (!root || id === 0n) return undefined;
  const hit = cgroupPaths?.get(id);
  if (hit !== undefined) return hit;
  if (cgroupPaths && Date.now() - walkedAt < 5000) return undefined; // walked just now: it is gone
  walkedAt = Date.now();
  const paths = new Map<bigint, string>();
  cgroupPaths = paths;
  const walk = (rel: string, depth: number) => {
    try {
      paths.set(statSync(path.join(root, rel) || '/', { bigint: true }).ino, rel || '/');
    } catch {
      return;
    }
    if (depth > 8) return;
    let entries;
    try {
      entries = readdirSync(path.join(root, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) walk(`${rel}/${e.name}`, depth + 1);
  };
  walk('', 0);
  return paths.get(id);
}
