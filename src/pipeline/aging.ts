/**
 * Ageing the connection table: closed connections give their rows back.
 *
 * The table has --max-connections rows, each with its connection's compact
 * histogram (1,216 bytes a row; src/wasm.ts readRowHistogramAt: buckets of
 * 1/8 of a power of two, exact count/sum/min/max; a folded row merges them
 * as they are, at the same resolution). A closed connection's figures
 * already count in the views and the services (they are added as its
 * records are decoded); its row is only still needed to pair it with its
 * other end (the mesh-overhead analysis) and to name services. So, when
 * half the rows or more are in use, the rows of connections closed at
 * least `graceNs` ago (250 ms) are folded and freed (looked for every
 * 100 ms; swept once 1/64 of the rows are due, or a second after the last
 * sweep):
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
import { endpoint, readConnSlot, readSvcSlot, readSvcTable, wasmConst } from '../wasm.js';
import { merge } from '../histogram.js';
import { ROLE_CLIENT, ROLE_SERVER } from '../records.js';
import { endKeys, peerFinder } from '../report/overhead.js';

interface Cached {
  row: ConnSlot;
  filled: number;
  keys: { pair: string; source: string };
}

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
  private lastSweepNs = 0n;
  /** conn_id -> group key, for the ids folded in the last two sweeps */
  private recent = new Map<bigint, string>();
  private older = new Map<bigint, string>();
  /** slot -> its row as last parsed, its pairing keys, and the CS_FILLED bits then (parsed again when they change) */
  private readonly cache = new Map<number, Cached>();

  constructor(
    private readonly state: State,
    private readonly opts: AgingOptions = DEFAULT_AGING,
  ) {}

  /** Sweeps if the table is full enough and some closed rows are due; returns the rows freed. */
  tick(nowNs: bigint = process.hrtime.bigint()): number {
    const ex = this.state.exports;
    const cap = this.state.layout.connCap;
    if (ex.connRowsInUse() < Math.max(1, Math.ceil(cap * this.opts.highWater))) return 0;
    const due = ex.connDue(nowNs - this.opts.graceNs); // one pass over the rows in Wasm, no lock
    // a sweep costs ~2-5 ms of this thread at 4096 rows: one per 1/64 of the rows due, or per second
    if (due === 0 || (due < cap / 64 && nowNs - this.lastSweepNs < 1_000_000_000n)) return 0;
    this.lastSweepNs = nowNs;
    return this.sweep(nowNs);
  }

  /**
   * Folds and frees the rows of connections closed at least graceNs before
   * nowNs (their ends both). What to fold is decided without the locks
   * (workers only add rows and figures meanwhile; only this thread frees
   * rows); the folding itself, which reads each row's latest figures and
   * frees it, holds them.
   */
  sweep(nowNs: bigint): number {
    const ex = this.state.exports;
    const rows = this.readRows();
    const old = nowNs - this.opts.graceNs;
    const late = (c: ConnSlot) => this.recent.has(c.conn_id) || this.older.has(c.conn_id);
    const due = new Set(rows.filter((c) => (c.closed && BigInt(c.end_ns) <= old) || (!c.opened && late(c))));
    if (due.size === 0) return 0;
    const peerOf = peerFinder(
      rows,
      (c) => c.role,
      (c) => this.cache.get(c.slot)?.keys ?? endKeys(c),
    );
    const plan: ConnSlot[][] = [];
    const done = new Set<ConnSlot>();
    for (const c of due) {
      if (done.has(c)) continue;
      // the other end, when the two choose each other (a 4-tuple used again while the old rows wait
      // out their grace can make one row the "peer" of two: it then folds alone)
      const p = peerOf(c);
      const peer = p && !done.has(p) && peerOf(p) === c ? p : undefined;
      if (peer && !due.has(peer)) continue; // its other end is open: both go together later
      const ends = peer ? [c, peer] : [c];
      for (const e of ends) done.add(e);
      plan.push(ends);
    }
    if (plan.length === 0 || !ex.sweepBegin()) return 0;
    let freed = 0;
    const folded = new Map<bigint, string>();
    try {
      this.sweepNo++;
      for (const ends of plan) {
        // with their histograms, as they are now (only this thread frees rows: the slot is still theirs)
        const now = ends.flatMap((e) => {
          const r = readConnSlot(this.state, e.slot);
          return r?.conn_id === e.conn_id ? [r] : [];
        });
        if (now.length === 0) continue;
        this.fold(now, folded);
        for (const e of now) {
          if (ex.releaseRow(e.slot)) freed++;
          this.cache.delete(e.slot);
        }
      }
    } finally {
      ex.sweepEnd();
      // the ids folded now are looked for in the next two sweeps (their late records)
      this.older = this.recent;
      this.recent = folded;
    }
    if (freed > 0) {
      this.state.aged.sweeps++;
      this.sumOldOpenTimes(Number(nowNs));
      this.dropOldGroups();
      this.state.aged.rows = [...this.groups.values()].flatMap((g) => g.rows);
    }
    return freed;
  }

  /** The rows in use, without histograms: parsed once per connection (and when more of it is known), then only their close read. */
  private readRows(): ConnSlot[] {
    const { connTable, connSlotBytes, connCap } = this.state.layout;
    const dv = new DataView(this.state.memory.buffer);
    const [KEY, FILLED, CLOSED, END] = ['CS_KEY', 'CS_FILLED', 'CS_CLOSED', 'CS_END_NS'].map((n) => wasmConst(n));
    const out: ConnSlot[] = [];
    for (let i = 0; i < connCap; i++) {
      const at = connTable + i * connSlotBytes;
      const key = dv.getBigUint64(at + KEY, true);
      if (key === 0n) {
        this.cache.delete(i);
        continue;
      }
      const filled = dv.getUint32(at + FILLED, true);
      let e = this.cache.get(i);
      if (e?.row.conn_id !== key || e.filled !== filled) {
        const row = readConnSlot(this.state, i, { histograms: false });
        if (!row) continue;
        e = { row, filled, keys: endKeys(row) };
        this.cache.set(i, e);
      } else {
        e.row.closed = dv.getUint32(at + CLOSED, true) !== 0;
        e.row.end_ns = Number(dv.getBigUint64(at + END, true));
      }
      out.push(e.row);
    }
    return out;
  }

  /** Adds these ends (one connection's, or a late row of one folded before) to their group; `folded` collects their ids. */
  private fold(ends: ConnSlot[], folded: Map<bigint, string>): void {
    const client = ends.find((e) => e.role === ROLE_CLIENT);
    const server = ends.find((e) => e.role === ROLE_SERVER);
    const earlier = (e: ConnSlot) => folded.get(e.conn_id) ?? this.recent.get(e.conn_id) ?? this.older.get(e.conn_id);
    const lateKey = ends.map(earlier).find((k) => k);
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
      const row = { ...e, slot: -1, conn_id: 0n, closed: true };
      // the ephemeral side becomes the group's pseudo-port (the pair's ends agree on it)
      if (e.role === ROLE_SERVER) row.rport = g.port;
      else row.lport = g.port;
      const at = g.rows.findIndex((r) => r.role === e.role);
      if (at < 0) g.rows.push(row);
      else g.rows[at] = addRow(g.rows[at], row);
    }
    // a late row's connection was counted when it was first folded; its requests are new
    const fresh = ends.filter((e) => !earlier(e)).length;
    for (const e of ends) folded.set(e.conn_id, key);
    g.connections += fresh;
    g.sweep = this.sweepNo;
    this.state.aged.connections += fresh;
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

export interface ServiceAgingOptions {
  /** look at the services every this many ms */
  everyMs: number;
  /** sweep when at least this share of the service slots is in use */
  highWater: number;
  /** a service with no new record for this long gives its slot back */
  idleMs: number;
  /** expired services kept (the least recently active are forgotten beyond) */
  maxKept: number;
}

export const DEFAULT_SERVICE_AGING: ServiceAgingOptions = {
  everyMs: 10_000,
  highWater: 0.5,
  idleMs: 5 * 60_000,
  maxKept: 8192,
};

/**
 * Idle services give their slots back: once half the service slots are in
 * use, a service with no new record for idleMs leaves the table; its
 * figures are kept in state.aged.services and added back by readSvcTable, so
 * that every report and series reads the same (a service that comes back
 * takes a new slot and keeps counting from its kept figures).
 */
export class ServiceAger {
  /** key -> [requests when last changed, when (ms)] */
  private readonly last = new Map<bigint, [number, number]>();
  private lastLook = -Infinity;

  constructor(
    private readonly state: State,
    private readonly opts: ServiceAgingOptions = DEFAULT_SERVICE_AGING,
  ) {}

  /** Looks every everyMs; expires idle services when the table is full enough. Returns the slots freed. */
  tick(nowMs: number = Date.now()): number {
    if (nowMs - this.lastLook < this.opts.everyMs) return 0;
    this.lastLook = nowMs;
    const ex = this.state.exports;
    const slots = readSvcTable(this.state, { histograms: false }).filter((s) => s.slot >= 0); // flushed: pending counts too
    const live = new Set<bigint>();
    const idle: number[] = [];
    for (const s of slots) {
      live.add(s.key);
      const was = this.last.get(s.key);
      if (!was || was[0] !== s.requests) this.last.set(s.key, [s.requests, nowMs]);
      else if (nowMs - was[1] >= this.opts.idleMs) idle.push(s.slot);
    }
    for (const k of this.last.keys()) if (!live.has(k)) this.last.delete(k);
    if (idle.length === 0 || ex.svcSlotsInUse() < Math.ceil(this.state.layout.svcCap * this.opts.highWater)) return 0;
    return this.expire(idle);
  }

  /** Frees these slots (their figures kept first). */
  expire(slots: number[]): number {
    const ex = this.state.exports;
    if (!ex.sweepBegin()) return 0;
    let freed = 0;
    try {
      ex.sweepFlush();
      for (const i of slots) {
        const s = readSvcSlot(this.state, i, { flush: false });
        if (!s) continue;
        const kept = this.state.aged.services.get(s.key);
        const merged =
          kept && kept.hist && s.hist
            ? { ...s, slot: -1, requests: s.requests + kept.requests, hist: merge(s.hist, kept.hist) }
            : { ...s, slot: -1 };
        // re-inserted: the map's order is the order of last activity (the oldest are forgotten first)
        this.state.aged.services.delete(s.key);
        this.state.aged.services.set(s.key, merged);
        if (ex.releaseSvc(i)) freed++;
        this.last.delete(s.key);
      }
    } finally {
      ex.sweepEnd();
    }
    this.state.aged.servicesExpired += freed;
    const kept = this.state.aged.services;
    for (const k of kept.keys()) {
      if (kept.size <= this.opts.maxKept) break;
      kept.delete(k);
      this.state.aged.servicesDropped++;
    }
    return freed;
  }
}
