/**
 * Where the time of a request goes, with sidecar proxies in the path:
 * latency-probe's overhead_analysis.
 *
 * Every connection the probe measured has, per side, the sum and count of
 * its exchanges (the client view on a client socket, the server view on an
 * accepted one). Both ends of a connection on this host are paired by their
 * addresses (loopback pairs also by network namespace), or, for traffic that
 * iptables redirected to a sidecar (the accepted socket's local address is
 * not the one connected to), by the client's own address alone. A proxy is a
 * process whose name is in the proxy list (envoy, haproxy, linkerd2-proxy
 * by default; --proxy-comm), or, on Kubernetes, one in a mesh sidecar
 * container (istio-proxy, linkerd-proxy, cilium-envoy: isProxy): it serves requests on its accepted sockets and
 * forwards them on its own client sockets, so
 *
 *   proxy processing = mean server view downstream - mean client view upstream
 *
 * is the time a request spends inside that proxy (both directions). For an
 * application's client socket, the path is followed through proxies to the
 * application servers it ends at, and what the client observes splits into
 *
 *   total       = mean client view of the application's sockets
 *   application = mean server view of the servers at the end of the path
 *   mesh        = sum of the processing of the proxies on the path
 *   kernel      = total - mesh - application (kernel, loopback and network
 *                 hops, on both sides of every proxy)
 *
 * Means, because means add up and percentiles do not. A proxy's processing
 * is its mean over all the routes it serves (the kernel cannot tell which
 * downstream request became which upstream one), which is exact for a
 * sidecar that forwards one service.
 */
import type { ConnSlot } from '../wasm.js';
import { ROLE_CLIENT, ROLE_SERVER } from '../records.js';
import { usageError } from '../errors.js';

export const DEFAULT_PROXY_COMMS = ['envoy', 'haproxy', 'linkerd2-proxy'] as const;

export interface ProxyFigure {
  comm: string;
  pid: number;
  netns: number;
  /** requests it served (server view on its accepted sockets) */
  requests: number;
  /** requests it sent upstream (client view on its own connections) */
  upstream_requests: number;
  /** mean server view downstream: what the proxy's clients wait for, as it sees it; null when it served none measured */
  downstream_ms: number | null;
  /** mean client view upstream: what the proxy itself waits for; null when it has no measured upstream */
  upstream_ms: number | null;
  /** downstream - upstream: the time a request spends inside the proxy */
  processing_ms: number | null;
}

export interface OverheadPart {
  requests: number;
  total_ms: number | null;
  application_ms: number | null;
  kernel_processing_ms: number | null;
  mesh_processing_ms: number | null;
}

export interface ServiceOverhead extends OverheadPart {
  service: string;
  /** the proxies on the path, in order from the client (pid:comm) */
  path: string[];
  /** clients on this host (false: the service's own side only, its clients are elsewhere) */
  clients_seen: boolean;
}

export interface OverheadAnalysis extends OverheadPart {
  proxy_comms: string[];
  proxies: ProxyFigure[];
  by_service: ServiceOverhead[];
  /** client requests whose server side was not on this host (in total_ms of no split) */
  requests_unpaired: number;
  /** the network's round trip: p50 of the kernel's minimum RTT */
  network_ms?: number | null;
  /** p50 of the kernel's smoothed RTT (with delayed-ACK waits), for reference */
  network_srtt_ms?: number | null;
  method: string;
}

interface Side {
  c: ConnSlot;
  sum: number;
  count: number;
  proxy: boolean;
}

/** An IPv4 address as a dual-stack socket shows it (::ffff:7f00:1) written as IPv4, so both ends compare. */
export function plainAddr(a: string): string {
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(a);
  if (m) {
    const hi = parseInt(m[1], 16);
    const lo = parseInt(m[2], 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  const d = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  return d ? d[1] : a;
}
const isLoopback = (a: string) => a.startsWith('127.') || a === '::1';
const r4 = (x: number) => Math.round(x * 1e4) / 1e4;
const msOf = (sum: number, count: number) => (count > 0 ? sum / count / 1e6 : null);

/** The key both ends of one connection agree on (from the server's side). */
function serverKey(laddrIn: string, lport: number, raddrIn: string, rport: number, netns: number): string {
  const laddr = plainAddr(laddrIn);
  const raddr = plainAddr(raddrIn);
  const scope = isLoopback(laddr) || isLoopback(raddr) ? `${netns}|` : '';
  return `${scope}${laddr}|${lport}|${raddr}|${rport}`;
}

export interface OverheadInputs {
  conns: readonly ConnSlot[];
  proxyComms: readonly string[];
  /** the service name of an application's server socket (the report's namer) */
  serviceOf(c: ConnSlot): string;
  commOf(c: ConnSlot): string;
  /** a proxy whatever its name (a mesh sidecar by its container's name): as well as proxyComms */
  isProxy?(c: ConnSlot): boolean;
}

export function analyzeOverhead(inp: OverheadInputs): OverheadAnalysis {
  const proxySet = new Set(inp.proxyComms);
  const sides: Side[] = inp.conns.flatMap((c) => {
    const h = c.hist;
    if (!h || !(h.count > 0) || (c.role !== ROLE_CLIENT && c.role !== ROLE_SERVER)) return [];
    return [{ c, sum: h.sum_ns, count: h.count, proxy: proxySet.has(inp.commOf(c)) || inp.isProxy?.(c) === true }];
  });
  const peers = pairEnds(sides);
  const byPid = proxyProcesses(sides, inp);
  const proxies = proxyFigures(byPid, peers);
  const net: Network = { sides, inp, byPid, peers };
  const groups = new Map<string, Group>();
  const unpaired = groupClients(net, groups);
  groupInboundServers(net, groups);
  const byService = serviceOverheads(groups, proxies);

  // overall: request-weighted over the services whose clients are here and split completely
  const full = byService.filter((s) => s.clients_seen && s.kernel_processing_ms !== null);
  const n = full.reduce((a, s) => a + s.requests, 0);
  const w = (k: keyof OverheadPart) =>
    n > 0 ? r4(full.reduce((a, s) => a + (s[k] as number) * s.requests, 0) / n) : null;
  const allClients = sides.filter((s) => !s.proxy && s.c.role === ROLE_CLIENT);
  const [cs, cc] = sumOf(allClients);
  return {
    requests: n,
    total_ms: n > 0 ? w('total_ms') : cc > 0 ? r4(cs / cc / 1e6) : null,
    application_ms: w('application_ms'),
    kernel_processing_ms: w('kernel_processing_ms'),
    mesh_processing_ms: w('mesh_processing_ms'),
    proxy_comms: [...inp.proxyComms],
    proxies: [...proxies.values()].map((p) => p.figure).sort((a, b) => b.requests - a.requests),
    by_service: byService,
    requests_unpaired: unpaired.count,
    method:
      'means over the measured connections: total = client view of applications (not proxies); application = server view of ' +
      'the application servers their requests reach; mesh = per proxy on the path, its server view downstream minus its client ' +
      'view upstream; kernel = total - mesh - application. Requests whose server side is not on this host are in requests_unpaired' +
      (unpaired.count > 0 ? ` (mean ${r4(unpaired.sum / unpaired.count / 1e6)} ms)` : ''),
  };
}

/** The other end, on this host, of each connection of `conns` (src/pipeline/aging.ts folds both ends together). */
export function pairConnections(conns: readonly ConnSlot[]): (c: ConnSlot) => ConnSlot | undefined {
  return peerFinder(conns, (c) => c.role, endKeys);
}

/**
 * The keys both ends of one connection agree on: `pair`, its addresses and
 * ports (from the server's side); `source`, the client's own address, for
 * traffic that iptables redirected to a sidecar (the accepted socket's local
 * address is not the one the client connected to).
 */
export function endKeys(c: Pick<ConnSlot, 'role' | 'laddr' | 'lport' | 'raddr' | 'rport' | 'netns'>): {
  pair: string;
  source: string;
} {
  return c.role === ROLE_SERVER
    ? { pair: serverKey(c.laddr, c.lport, c.raddr, c.rport, c.netns), source: sourceKey(c.raddr, c.rport, c.netns) }
    : { pair: serverKey(c.raddr, c.rport, c.laddr, c.lport, c.netns), source: sourceKey(c.laddr, c.lport, c.netns) };
}

function sourceKey(a0: string, port: number, netns: number): string {
  const a = plainAddr(a0);
  return isLoopback(a) ? `${netns}|${a}|${port}` : `${a}|${port}`;
}

/**
 * The other end of each item: the one of the other role with the same pair
 * key, else the only one of the other role with the same source key.
 */
export function peerFinder<T>(
  items: readonly T[],
  role: (t: T) => number,
  keys: (t: T) => { pair: string; source: string },
): (t: T) => T | undefined {
  const byPair = new Map<string, T>();
  const bySource = new Map<string, T[]>();
  const k = new Map<T, { pair: string; source: string }>();
  for (const t of items) {
    const r = role(t);
    if (r !== ROLE_CLIENT && r !== ROLE_SERVER) continue;
    const ks = keys(t);
    k.set(t, ks);
    byPair.set(`${r}|${ks.pair}`, t);
    const src = `${r}|${ks.source}`;
    const list = bySource.get(src);
    if (list) list.push(t);
    else bySource.set(src, [t]);
  }
  return (t) => {
    const ks = k.get(t);
    if (!ks) return undefined;
    const other = role(t) === ROLE_CLIENT ? ROLE_SERVER : ROLE_CLIENT;
    const hit = byPair.get(`${other}|${ks.pair}`);
    if (hit) return hit;
    const src = bySource.get(`${other}|${ks.source}`);
    return src?.length === 1 ? src[0] : undefined;
  };
}

/** Sum and count of the exchanges of some sides. */
const sumOf = (xs: Iterable<Side>): [number, number] => {
  let sum = 0;
  let count = 0;
  for (const s of xs) {
    sum += s.sum;
    count += s.count;
  }
  return [sum, count];
};

/** The other end of a connection on this host, from either end. */
interface Peers {
  /** the server socket a client socket reaches */
  ofClient(s: Side): Side | undefined;
  /** the client socket a server socket was connected from */
  ofServer(s: Side): Side | undefined;
}

function pairEnds(sides: Side[]): Peers {
  const find = peerFinder(
    sides,
    (s) => s.c.role,
    (s) => endKeys(s.c),
  );
  return { ofClient: find, ofServer: find };
}

/** A proxy process: the sockets it serves on (down) and the ones it forwards on (up). */
interface ProxyProcess {
  comm: string;
  netns: number;
  down: Side[];
  up: Side[];
}

/** The proxies, one per process. */
function proxyProcesses(sides: Side[], inp: OverheadInputs): Map<number, ProxyProcess> {
  const byPid = new Map<number, ProxyProcess>();
  for (const s of sides) {
    if (!s.proxy) continue;
    const p = byPid.get(s.c.tgid) ?? { comm: inp.commOf(s.c), netns: s.c.netns, down: [], up: [] };
    (s.c.role === ROLE_SERVER ? p.down : p.up).push(s);
    byPid.set(s.c.tgid, p);
  }
  return byPid;
}

/** A proxy's figure, and its processing time unrounded (for the sums along a path). */
interface ProxyTime {
  figure: ProxyFigure;
  processingNs: number | null;
}

/** Each proxy's figures; its upstreams are narrowed to its request routes (in `byPid`) when it has any. */
function proxyFigures(byPid: Map<number, ProxyProcess>, peers: Peers): Map<number, ProxyTime> {
  const proxies = new Map<number, ProxyTime>();
  for (const [pid, p] of byPid) {
    const [ds, dc] = sumOf(p.down);
    // A proxy's own side connections (its control plane, tracing, health checks) are not request
    // routes: when some upstreams pair with a server here, only those are its routes.
    const routes = p.up.filter((u) => peers.ofClient(u));
    if (routes.length) p.up = routes;
    const [us, uc] = sumOf(p.up);
    const down = msOf(ds, dc);
    const up = msOf(us, uc);
    const processingNs = dc > 0 && uc > 0 ? ds / dc - us / uc : null;
    proxies.set(pid, {
      figure: {
        comm: p.comm,
        pid,
        netns: p.netns,
        requests: dc,
        upstream_requests: uc,
        downstream_ms: down === null ? null : r4(down),
        upstream_ms: up === null ? null : r4(up),
        processing_ms: processingNs === null ? null : r4(processingNs / 1e6),
      },
      processingNs,
    });
  }
  return proxies;
}

/** What the paths are followed through: the measured sides, the proxies, the ends paired. */
interface Network {
  sides: Side[];
  inp: OverheadInputs;
  byPid: Map<number, ProxyProcess>;
  peers: Peers;
}

/** From a server socket: the proxies crossed (in order) and the application servers reached. */
interface Walk {
  path: number[];
  ends: Side[];
  /** some upstream of a proxy leaves the host or is unmeasured */
  open: boolean;
  service?: string;
}

function walk(first: Side, { byPid, peers }: Network): Walk {
  const path: number[] = [];
  const ends: Side[] = [];
  let open = false;
  const seen = new Set<number>();
  let frontier = [first];
  while (frontier.length) {
    const next: Side[] = [];
    for (const srv of frontier) {
      if (!srv.proxy) {
        ends.push(srv);
        continue;
      }
      const pid = srv.c.tgid;
      if (seen.has(pid)) continue;
      seen.add(pid);
      path.push(pid);
      const ups = byPid.get(pid)?.up ?? [];
      if (!ups.length) open = true;
      for (const u of ups) {
        const peer = peers.ofClient(u);
        if (peer) next.push(peer);
        else open = true;
      }
    }
    frontier = next;
  }
  return { path, ends, open };
}

/** The requests of one service along one path of proxies. */
interface Group {
  service: string;
  path: number[];
  clientSum: number;
  clientCount: number;
  ends: Set<Side>;
  clients_seen: boolean;
}

/** The group under `key`, new and empty the first time. */
function groupOf(
  groups: Map<string, Group>,
  key: string,
  service: string,
  path: number[],
  clientsSeen: boolean,
): Group {
  let g = groups.get(key);
  if (!g) {
    g = { service, path, clientSum: 0, clientCount: 0, ends: new Set<Side>(), clients_seen: clientsSeen };
    groups.set(key, g);
  }
  return g;
}

/**
 * Groups the applications' client requests by the service and path they
 * reach; returns the requests whose path leaves the host or is not measured.
 */
function groupClients(net: Network, groups: Map<string, Group>): { count: number; sum: number } {
  const { sides, inp, peers } = net;
  const walks = new Map<Side, Walk>();
  const forward = (first: Side): Walk => {
    let w = walks.get(first);
    if (!w) walks.set(first, (w = walk(first, net)));
    return w;
  };
  const unpaired = { count: 0, sum: 0 };
  const endsKey = (ends: Side[]) => [...new Set(ends.map((e) => inp.serviceOf(e.c)))].sort().join(',');
  for (const cl of sides) {
    if (cl.proxy || cl.c.role !== ROLE_CLIENT) continue;
    const peer = peers.ofClient(cl);
    const w = peer ? forward(peer) : undefined;
    if (!w || w.ends.length === 0 || w.open) {
      unpaired.count += cl.count;
      unpaired.sum += cl.sum;
      continue;
    }
    const service = (w.service ??= endsKey(w.ends));
    const g = groupOf(groups, `${service}\u0000${w.path.join('>')}`, service, w.path, true);
    g.clientSum += cl.sum;
    g.clientCount += cl.count;
    for (const e of w.ends) g.ends.add(e);
  }
  return unpaired;
}

/** Application servers reached only from clients elsewhere: their side of the path (inbound sidecars). */
function groupInboundServers(net: Network, groups: Map<string, Group>): void {
  const { sides, inp, byPid, peers } = net;
  const covered = new Set([...groups.values()].flatMap((g) => [...g.ends]));
  for (const srv of sides) {
    if (srv.proxy || srv.c.role !== ROLE_SERVER || covered.has(srv)) continue;
    const path: number[] = [];
    let s: Side | undefined = srv;
    const seen = new Set<number>();
    for (;;) {
      const cl: Side | undefined = s && peers.ofServer(s);
      if (!cl?.proxy || seen.has(cl.c.tgid)) break;
      seen.add(cl.c.tgid);
      path.unshift(cl.c.tgid);
      const downs: Side[] = byPid.get(cl.c.tgid)?.down ?? [];
      s = downs.length === 1 ? downs[0] : undefined; // one route back only
    }
    const service = inp.serviceOf(srv.c);
    groupOf(groups, `${service}\u0000${path.join('>')}\u0000inbound`, service, path, false).ends.add(srv);
  }
}

/** Each group's split: total, application, mesh (its proxies' processing), kernel (the rest); most requests first. */
function serviceOverheads(groups: Map<string, Group>, proxies: Map<number, ProxyTime>): ServiceOverhead[] {
  const byService: ServiceOverhead[] = [];
  for (const g of groups.values()) {
    const [es, ec] = sumOf(g.ends);
    const appNs = ec > 0 ? es / ec : null;
    const meshParts = g.path.map((pid) => proxies.get(pid)?.processingNs ?? null);
    const meshNs = meshParts.some((x) => x === null) ? null : meshParts.reduce<number>((a, x) => a + (x as number), 0);
    const totalNs = g.clientCount > 0 ? g.clientSum / g.clientCount : null;
    const kernelNs = totalNs !== null && appNs !== null && meshNs !== null ? totalNs - meshNs - appNs : null;
    byService.push({
      service: g.service,
      requests: g.clients_seen ? g.clientCount : ec,
      total_ms: totalNs === null ? null : r4(totalNs / 1e6),
      application_ms: appNs === null ? null : r4(appNs / 1e6),
      kernel_processing_ms: kernelNs === null ? null : r4(kernelNs / 1e6),
      mesh_processing_ms: meshNs === null ? null : r4(meshNs / 1e6),
      path: g.path.map((pid) => `${pid}:${String(proxies.get(pid)?.figure.comm)}`),
      clients_seen: g.clients_seen,
    });
  }
  byService.sort((a, b) => b.requests - a.requests);
  return byService;
}

/** A comma list of process names for --proxy-comm (15 characters at most: the kernel's comm). */
export function parseProxyComms(v: string): string[] {
  const names = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (!names.length) throw usageError('--proxy-comm: give process names, e.g. --proxy-comm envoy,haproxy');
  for (const n of names)
    if (n.length > 15)
      throw usageError(
        `--proxy-comm: '${n}' is longer than 15 characters; the kernel keeps the first 15 of a process name: write '${n.slice(0, 15)}'`,
      );
  return names;
}
