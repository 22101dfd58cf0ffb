/**
 * Ageing the connection table: closed connections give their rows back.
 *
 * The table has --max-connections rows, each with its connection's
 * histogram (~16 KiB). A closed connection's figures already count in the
 * views and the services (they are added as its records are decoded); its
 * row is only still needed to pair it with its other end (the mesh-overhead
 * analysis) and to name services. So, every 100 ms when half the rows or
 * more are in use, the rows of connections closed at least `graceNs` ago
 * (250 ms) are folded and freed:
 *
 *  - both ends of a connection on this host are folded together (one waits
 *    for the other to close), into a pair of folded rows per (client
 *    process, server process, service): the client's ephemeral port, the
 *    only thing that told the connections apart, becomes a number no real
 *    port has (>= 65536) shared by the pair, so that the pairing of
 *    src/report/overhead.ts still joins them; a connection whose other end
 *    is elsewhere folds alone;
 *  - the folded rows keep the sum of their connections' histograms, bytes
 *    and requests (state.aged, read through allConnections());
 *  - the table's rows are released (assembly/index.ts releaseRow) while no
 *    worker decodes (sweepBegin/sweepEnd hold every worker's lock).
 *
 * Records that arrive for a connection after its row was freed (a late
 * record from another CPU's ring) would take a new row that no close ever
 * frees: rows of connections folded in the last sweeps are folded too.
 */
import type { ConnSlot, State } from '../wasm.js';
import { endpoint, readConnSlot, readConnTable } from '../wasm.js';
import { merge } from '../histogram.js';
import { ROLE_CLIENT, ROLE_SERVER } from '../records.js';
import { pairConnections } from '../report/overhead.js';

export interface AgingOptions {
  /** sweep when at least this share of the rows is in use */
  highWater: number;
  /** free a closed connection's row only this long after its close (ns) */
  graceNs: bigint;
  /** folded row groups kept at most (the least recently added are dropped beyond) */
  maxGroups: number;
  /** aged client connections' open times kept one by one this long (ns), then summed */
  openTimesNs: number;
}

// The grace covers the records of a closed connection still in other CPUs' rings (the session makes
// the kernel flush its batches every 100 ms; a record later than that takes a row again and is
// folded into the same group at the next sweep). Rows needed under churn: about
// 2 ends x new connections/s x (grace + AGE_INTERVAL_MS), i.e. 0.7 x the rate, plus the open ones.
export const DEFAULT_AGING: AgingOptions = {
  highWater: 0.5,
  graceNs: 250_000_000n,
  maxGroups: 4096,
  openTimesNs: 15 * 60e9,
};

/** How often the session looks (one load); it sweeps only when the table is at its high water. */
export const AGE_INTERVAL_MS = 100;

/** Pseudo-ports of folded rows start here: no real port is this large. */
const FOLDED_PORT_BASE = 65536;

interface Group {
  port: number;
  rows: ConnSlot[];
  connections: number;
  /** last sweep that added to it */
  sweep: number;
}

/** One per state: the fold's groups and the connection ids folded lately. */
export class ConnectionAger {
  private readonly groups = new Map<string, Group>();
  private nextPort = FOLDED_PORT_BASE;
  private sweepNo = 0;
  /** conn_id -> group key, for the ids folded in the last two sweeps */
  private recent = new Map<bigint, string>();
  private older = new Map<bigint, string>();

  constructor(
    private readonly state: State,
    private readonly opts: AgingOptions = DEFAULT_AGING,
  ) {}

  /** Sweeps if the table is full enough; returns the rows freed. */
  tick(nowNs: bigint = process.hrtime.bigint()): number {
    const ex = this.state.exports;
    const cap = this.state.layout.connCap;
    if (ex.connRowsInUse() < Math.max(1, Math.ceil(cap * this.opts.highWater))) return 0;
    return this.sweep(nowNs);
  }

  /** Folds and frees the rows of connections closed at least graceNs before nowNs (their ends both). */
  sweep(nowNs: bigint): number {
    const ex = this.state.exports;
    if (!ex.sweepBegin()) return 0;
    let freed = 0;
    try {
      const rows = readConnTable(this.state, { histograms: false });
      const old = nowNs - this.opts.graceNs;
      const late = (c: ConnSlot) => this.recent.has(c.conn_id) || this.older.has(c.conn_id);
      const due = new Set(rows.filter((c) => (c.closed && BigInt(c.end_ns) <= old) || (!c.opened && late(c))));
      if (due.size === 0) return 0;
      const peerOf = pairConnections(rows);
      const done = new Set<ConnSlot>();
      this.sweepNo++;
      this.older = this.recent;
      this.recent = new Map();
      for (const c of due) {
        if (done.has(c)) continue;
        const peer = peerOf(c);
        if (peer && !due.has(peer)) continue; // its other end is open: both go together later
        const ends = peer ? [c, peer] : [c];
        for (const e of ends) done.add(e);
        const full = ends.map((e) => readConnSlot(this.state, e.slot) ?? e);
        this.fold(full);
        for (const e of ends) if (ex.releaseRow(e.slot)) freed++;
      }
    } finally {
      ex.sweepEnd();
    }
    if (freed > 0) {
      this.state.aged.sweeps++;
      this.sumOldOpenTimes(Number(nowNs));
      this.dropOldGroups();
      this.state.aged.rows = [...this.groups.values()].flatMap((g) => g.rows);
    }
    return freed;
  }

  private fold(ends: ConnSlot[]): void {
    const client = ends.find((e) => e.role === ROLE_CLIENT);
    const server = ends.find((e) => e.role === ROLE_SERVER);
    const lateKey = ends.map((e) => this.recent.get(e.conn_id) ?? this.older.get(e.conn_id)).find((k) => k);
    const key = lateKey ?? groupKey(ends, client, server);
    let g = this.groups.get(key);
    if (!g) {
      g = { port: this.nextPort++, rows: [], connections: 0, sweep: this.sweepNo };
      this.groups.set(key, g);
    }
    for (const e of ends) {
      if (e.role === ROLE_CLIENT && e.opened && e.closed && e.end_ns > e.start_ns) {
        const k = endpoint(e.raddr, e.rport, e.family);
        const list = this.state.aged.clientOpen.recent.get(k) ?? [];
        list.push(e.start_ns, e.end_ns);
        this.state.aged.clientOpen.recent.set(k, list);
      }
      const folded = { ...e, slot: -1, conn_id: 0n, closed: true };
      // the ephemeral side becomes the group's pseudo-port (the pair's ends agree on it)
      if (e.role === ROLE_SERVER) folded.rport = g.port;
      else folded.lport = g.port;
      const at = g.rows.findIndex((r) => r.role === e.role);
      if (at < 0) g.rows.push(folded);
      else g.rows[at] = addRow(g.rows[at], folded);
      this.recent.set(e.conn_id, key);
    }
    g.connections += ends.length;
    g.sweep = this.sweepNo;
    this.state.aged.connections += ends.length;
    this.state.aged.requests += ends.reduce((a, e) => a + e.requests, 0);
  }

  /** Moves the open times of connections closed more than openTimesNs ago into the sums. */
  private sumOldOpenTimes(nowNs: number): void {
    const t = this.state.aged.clientOpen;
    const before = nowNs - this.opts.openTimesNs;
    for (const [k, list] of t.recent) {
      const keep: number[] = [];
      let sum = 0;
      for (let i = 0; i < list.length; i += 2) {
        const [from, to] = [list[i], list[i + 1]];
        if (to >= before) {
          keep.push(from, to);
          continue;
        }
        sum += to - from;
        t.olderFromNs = Math.min(t.olderFromNs, from);
        t.olderToNs = Math.max(t.olderToNs, to);
      }
      if (sum > 0) t.olderNs.set(k, (t.olderNs.get(k) ?? 0) + sum);
      if (keep.length) t.recent.set(k, keep);
      else t.recent.delete(k);
    }
  }

  private dropOldGroups(): void {
    const over = this.groups.size - this.opts.maxGroups;
    if (over <= 0) return;
    const oldest = [...this.groups.entries()].sort((a, b) => a[1].sweep - b[1].sweep).slice(0, over);
    for (const [k, g] of oldest) {
      this.groups.delete(k);
      this.state.aged.dropped += g.connections;
    }
  }
}

/** What a folded group is: the processes at both ends, their addresses and the service port. */
function groupKey(ends: ConnSlot[], client: ConnSlot | undefined, server: ConnSlot | undefined): string {
  const who = (c: ConnSlot) => [c.role, c.tgid, c.comm, c.netns, c.family, c.cgroup_id, c.flags].join(',');
  if (client && server) return `pair|${who(client)}|${client.laddr}|${who(server)}|${server.laddr}|${server.lport}`;
  const c = ends[0];
  return c.role === ROLE_SERVER
    ? `server|${who(c)}|${c.laddr}|${c.lport}|${c.raddr}`
    : `client|${who(c)}|${c.laddr}|${c.raddr}|${c.rport}`;
}

/** Row a with row b's figures added (b is newer: its srtt wins). */
function addRow(a: ConnSlot, b: ConnSlot): ConnSlot {
  return {
    ...a,
    flags: a.flags | b.flags,
    start_ns: Math.min(a.start_ns || b.start_ns, b.start_ns || a.start_ns),
    end_ns: Math.max(a.end_ns, b.end_ns),
    requests: a.requests + b.requests,
    requests_kernel: a.requests_kernel + b.requests_kernel,
    bytes_sent: a.bytes_sent + b.bytes_sent,
    bytes_received: a.bytes_received + b.bytes_received,
    srtt_us: b.srtt_us || a.srtt_us,
    hist: a.hist && b.hist ? merge(a.hist, b.hist) : (a.hist ?? b.hist),
  };
}
