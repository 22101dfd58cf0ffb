/**
 * What a service is.
 *
 * By default a server is named after the process that owns the listening
 * port, "comm:port" (nginx:80); a client's service is the peer it talks to:
 * that server's name when the probe sees its side too, else "addr:port".
 *
 * --services FILE overrides this. Either JSON:
 *   { "api-server": { "ports": [8080], "comm": ["api"], "cgroup": ["/kubepods.slice/..."], "netns": ["blue"] } }
 * or one line per service ("#" starts a comment):
 *   api-server  port=8080,8443  comm=api
 *   billing     netns=billing
 * An entry lists any of ports, comm, cgroup, netns; a socket belongs to it
 * when every kind listed matches (any value of a kind). Ports are the
 * server's: a server socket matches by its local port, a client socket by
 * the remote port. comm, cgroup and netns describe the server's side. The
 * first entry that matches wins; sockets no entry matches keep the default name.
 */
import { readFileSync } from 'node:fs';
import { usageError } from '../errors.js';

export interface ServiceDef {
  name: string;
  ports: number[];
  comm: string[];
  cgroup: string[];
  netns: string[];
}

const KINDS = ['ports', 'comm', 'cgroup', 'netns'] as const;

export function loadServices(file: string): ServiceDef[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw usageError(`cannot read --services ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseServices(text, file);
}

export function parseServices(text: string, file = 'services file'): ServiceDef[] {
  const trimmed = text.trim();
  const defs = trimmed.startsWith('{') ? fromJson(trimmed, file) : fromLines(text, file);
  const seen = new Set<string>();
  for (const d of defs) {
    if (seen.has(d.name)) throw usageError(`${file}: service "${d.name}" is defined twice`);
    seen.add(d.name);
    if (KINDS.every((k) => d[k].length === 0)) {
      throw usageError(`${file}: service "${d.name}" has no ports, comm, cgroup or netns: give at least one`);
    }
    for (const p of d.ports) {
      if (!Number.isInteger(p) || p < 1 || p > 65535)
        throw usageError(`${file}: service "${d.name}": port ${p} must be 1-65535`);
    }
    for (const c of d.comm) {
      if (Buffer.byteLength(c) > 15)
        throw usageError(`${file}: service "${d.name}": comm "${c}" is longer than 15 characters`);
    }
  }
  return defs;
}

function fromJson(text: string, file: string): ServiceDef[] {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw usageError(`${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
    throw usageError(`${file}: expected an object of service name -> { ports, comm, cgroup, netns }`);
  return Object.entries(obj as Record<string, unknown>).map(([name, v]) => {
    if (typeof v !== 'object' || v === null) throw usageError(`${file}: service "${name}" must be an object`);
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      if (!['ports', 'port', 'comm', 'cgroup', 'netns'].includes(k))
        throw usageError(`${file}: service "${name}": unknown key "${k}" (use ports, comm, cgroup, netns)`);
    }
    const list = (x: unknown): unknown[] => (x === undefined ? [] : Array.isArray(x) ? x : [x]);
    return {
      name,
      ports: [...list(o.ports), ...list(o.port)].map(Number),
      comm: list(o.comm).map(String),
      cgroup: list(o.cgroup).map(String),
      netns: list(o.netns).map(String),
    };
  });
}

function fromLines(text: string, file: string): ServiceDef[] {
  const defs: ServiceDef[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    const [name, ...rest] = line.split(/\s+/);
    const d: ServiceDef = { name, ports: [], comm: [], cgroup: [], netns: [] };
    for (const kv of rest) {
      const m = /^(ports?|comm|cgroup|netns)=(.+)$/.exec(kv);
      if (!m) throw usageError(`${file}:${i + 1}: "${kv}": use port=, comm=, cgroup= or netns= (comma lists allowed)`);
      const vals = m[2].split(',').filter(Boolean);
      if (m[1].startsWith('port')) d.ports.push(...vals.map(Number));
      else d[m[1] as 'comm' | 'cgroup' | 'netns'].push(...vals);
    }
    defs.push(d);
  });
  return defs;
}

/** What the probe knows of a socket when it names its service. */
export interface SocketFacts {
  /** the server's port: local port of a server socket, remote port of a client socket */
  port: number;
  /** comm of the server's process, when known */
  comm?: string;
  /** cgroup v2 path of the server's process, when known */
  cgroupPath?: string;
  /** network namespace inode of the server's socket, when known */
  netns?: number;
}

/** The first entry the socket matches; `netnsIno` resolves an entry's netns name. */
export function matchService(
  defs: readonly ServiceDef[],
  s: SocketFacts,
  netnsIno: (name: string) => number | undefined,
): string | undefined {
  const cgroupPath = s.cgroupPath;
  for (const d of defs) {
    if (d.ports.length && !d.ports.includes(s.port)) continue;
    if (d.comm.length && (!s.comm || !d.comm.includes(s.comm))) continue;
    if (d.cgroup.length && (!cgroupPath || !d.cgroup.some((c) => isUnder(cgroupPath, c)))) continue;
    if (d.netns.length && (s.netns === undefined || !d.netns.some((n) => netnsIno(n) === s.netns))) continue;
    return d.name;
  }
  return undefined;
}

function isUnder(path: string, dir: string): boolean {
  const d = dir.replace(/\/+$/, '');
  return path === d || path.startsWith(d + '/') || d === '';
}
