/**
 * Ageing the probes' counting maps: per-CPU hashes of u64 counters that the
 * kernel side adds to and nothing deletes from (packet-drop-probe's `drops`
 * and `pkts`). A probe declares them (ProbeDefinition.ageMaps); the session
 * ticks a MapAger and reads the maps through it.
 *
 *  - Each tick reads the map and remembers each key's value; a key whose
 *    value did not change for `idleMs` is taken out of the kernel map
 *    (mapLookupAndDelete: atomic from 5.14) and its counts are kept here.
 *    The kernel map has room again for new keys.
 *  - read() returns the live entries and the kept ones merged by key (the
 *    same key bytes): a key that comes back adds to its kept counts, so
 *    every total reads the same before and after a key expires.
 *  - The store holds at most `maxKept` keys. Past it, the least recently
 *    active kept keys are folded into coarser keys (`coarsen`: for drops,
 *    the remote address and port zeroed), which many keys share; what stays
 *    in the key (location, reason, local side) keeps its totals exact. When
 *    nothing is left to fold, idle keys stay in the kernel map until there
 *    is room (the kernel map's own bound applies again, counted there).
 *
 * Counted per map: keys expired (moved out of the kernel map) and keys
 * coarsened (folded into a coarser key).
 */
import { log } from '../log.js';

export interface AgeMapSpec {
  /** the per-CPU hash map (its value a run of u64 words) */
  map: string;
  /** a key whose counts did not change for this long is taken out of the kernel map (ms) */
  idleMs: number;
  /** expired keys kept in user space at most (the probes use 4 x the map's max entries) */
  maxKept: number;
  /**
   * a coarser key for an expired key's counts: the same bytes when the key
   * is as coarse as it gets; without it, kept keys are never folded
   */
  coarsen?: (key: Uint8Array) => Uint8Array;
}

/** What the ager needs of the loaded object (BpfObject has both). */
export interface CountingMaps {
  readPercpuHash(map: string): [Uint8Array, BigUint64Array][];
  mapLookupAndDelete(map: string, key: Uint8Array): BigUint64Array | null;
}

export interface AgingCounts {
  /** keys taken out of the kernel map, their counts kept in user space */
  expired: number;
  /** kept keys folded into a coarser key (the store was at its bound) */
  coarsened: number;
}

export const DEFAULT_IDLE_MS = 60_000;
/** Ticks are at most this far apart (and a sixth of the shortest idle period, at least 50 ms). */
export const MAX_TICK_MS = 10_000;

/** How often the session ticks the ager: a key expires between idleMs and idleMs + 2 ticks after its last change. */
export function mapAgeInterval(specs: readonly AgeMapSpec[]): number {
  const idle = Math.min(...specs.map((s) => s.idleMs));
  return Math.max(50, Math.min(MAX_TICK_MS, Math.floor(idle / 6)));
}

/**
 * The kept counts of one map: an entry per key in a Map (its order: least
 * recently active first), the key's hex as the Map's key and its u64 words
 * in one shared array (a slot per key; ~200 bytes a key in all).
 */
class Store {
  private words = 0;
  private slab = new BigUint64Array(0);
  private readonly free: number[] = [];
  private used = 0;

  /** the slot of each kept key, least recently active first */
  readonly slots = new Map<string, number>();

  get size(): number {
    return this.slots.size;
  }

  has(h: string): boolean {
    return this.slots.has(h);
  }

  value(h: string): BigUint64Array | undefined {
    const slot = this.slots.get(h);
    return slot === undefined ? undefined : this.slab.slice(slot * this.words, (slot + 1) * this.words);
  }

  /** Adds `value` to the entry of `h` (made if missing), and makes it the most recently active. */
  add(h: string, value: BigUint64Array): void {
    if (this.words === 0) this.words = value.length;
    if (value.length !== this.words)
      throw new Error(`map ageing: a value of ${String(value.length)} words, not ${String(this.words)}`);
    let slot = this.slots.get(h);
    if (slot === undefined) {
      slot = this.free.pop() ?? this.used++;
      if ((slot + 1) * this.words > this.slab.length) {
        const grown = new BigUint64Array(Math.max(64, 2 * (slot + 1)) * this.words);
        grown.set(this.slab);
        this.slab = grown;
      }
      this.slab.fill(0n, slot * this.words, (slot + 1) * this.words);
    }
    this.slots.delete(h);
    this.slots.set(h, slot);
    for (let i = 0; i < this.words; i++) this.slab[slot * this.words + i] += value[i];
  }

  /** Takes out the least recently active entry: its key's hex and value. */
  shift(): { h: string; value: BigUint64Array } | undefined {
    const first = this.slots.entries().next();
    if (first.done) return undefined;
    const [h, slot] = first.value;
    const value = this.slab.slice(slot * this.words, (slot + 1) * this.words);
    this.slots.delete(h);
    this.free.push(slot);
    return { h, value };
  }
}

interface AgedMap {
  spec: AgeMapSpec;
  /** live keys: their value when last changed, and when that was seen */
  seen: Map<string, { value: BigUint64Array; since: number }>;
  /** kept keys that can still be folded */
  fine: Store;
  /** kept keys as coarse as they get */
  coarse: Store;
  counts: AgingCounts;
  /** the store was full with nothing left to fold (said once) */
  warned: boolean;
  /** the kept entries as read() returns them, until the next tick changes them */
  keptView?: { entries: [Uint8Array, BigUint64Array][]; index: Map<string, number> };
}

function keptView(m: AgedMap): NonNullable<AgedMap['keptView']> {
  const entries: [Uint8Array, BigUint64Array][] = [];
  const index = new Map<string, number>();
  for (const store of [m.fine, m.coarse])
    for (const h of store.slots.keys()) {
      const v = store.value(h);
      if (!v) continue;
      index.set(h, entries.length);
      entries.push([unhex(h), v]);
    }
  return { entries, index };
}

const hex = (k: Uint8Array) => Buffer.from(k.buffer, k.byteOffset, k.byteLength).toString('hex');

/** A key's bytes from its hex (a view on Buffer's pool: no copy of its own). */
function unhex(h: string): Uint8Array {
  const b = Buffer.from(h, 'hex');
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

function same(a: BigUint64Array, b: BigUint64Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function sum(a: BigUint64Array, b: BigUint64Array): BigUint64Array {
  const out = new BigUint64Array(Math.max(a.length, b.length));
  for (let i = 0; i < out.length; i++) out[i] = (a[i] ?? 0n) + (b[i] ?? 0n);
  return out;
}

export class MapAger {
  private readonly maps = new Map<string, AgedMap>();

  constructor(
    private readonly source: CountingMaps,
    specs: readonly AgeMapSpec[],
    private readonly now: () => number = Date.now,
  ) {
    for (const spec of specs) {
      if (!(spec.idleMs > 0) || !(spec.maxKept >= 1)) throw new Error(`map ageing of ${spec.map}: bad settings`);
      this.maps.set(spec.map, {
        spec,
        seen: new Map(),
        fine: new Store(),
        coarse: new Store(),
        counts: { expired: 0, coarsened: 0 },
        warned: false,
      });
    }
  }

  /**
   * The map's entries: live ones and expired ones merged by key (each word
   * summed). The arrays are shared between reads until the next tick: read them, never write.
   */
  read(name: string): [Uint8Array, BigUint64Array][] {
    const live = this.source.readPercpuHash(name);
    const m = this.maps.get(name);
    if (!m || m.fine.size + m.coarse.size === 0) return live;
    m.keptView ??= keptView(m);
    const { entries, index } = m.keptView;
    const out = entries.slice();
    for (const [k, v] of live) {
      const i = index.get(hex(k));
      if (i === undefined) out.push([k, v]);
      else out[i] = [k, sum(entries[i][1], v)];
    }
    return out;
  }

  /** Keys expired and coarsened so far in an aged map; undefined for a map not aged. */
  counts(name: string): AgingCounts | undefined {
    const m = this.maps.get(name);
    return m ? { ...m.counts } : undefined;
  }

  /** Keys kept in user space now (for tests and the docs' memory figures). */
  kept(name: string): number {
    const m = this.maps.get(name);
    return m ? m.fine.size + m.coarse.size : 0;
  }

  tick(): void {
    for (const m of this.maps.values()) this.age(m);
  }

  private age(m: AgedMap): void {
    const { spec } = m;
    m.keptView = undefined; // kept entries are added to or folded below
    const now = this.now();
    const present = new Set<string>();
    const idle: { h: string; key: Uint8Array; since: number }[] = [];
    for (const [key, value] of this.source.readPercpuHash(spec.map)) {
      const h = hex(key);
      present.add(h);
      const s = m.seen.get(h);
      if (!s || !same(s.value, value)) m.seen.set(h, { value, since: now });
      else if (now - s.since >= spec.idleMs) idle.push({ h, key, since: s.since });
    }
    for (const h of m.seen.keys()) if (!present.has(h)) m.seen.delete(h);
    idle.sort((a, b) => a.since - b.since); // the store's order: least recently active first
    for (const { h, key } of idle) {
      const where = this.admit(m, h, key);
      if (!where) {
        if (!m.warned)
          log.warn(
            `${spec.map}: ${String(spec.maxKept)} expired keys kept, none left to fold: idle keys stay in the kernel map`,
          );
        m.warned = true;
        continue;
      }
      const value = this.source.mapLookupAndDelete(spec.map, key);
      m.seen.delete(h);
      if (!value) continue; // gone already: nothing to keep
      m.counts.expired++;
      if (where === 'fold') {
        m.coarse.add(this.coarseOf(m, key), value);
        m.counts.coarsened++;
      } else this.store(m, h, key, value);
    }
  }

  /** The hex of the coarser key (the key's own when it is as coarse as it gets). */
  private coarseOf(m: AgedMap, key: Uint8Array): string {
    return hex(m.spec.coarsen ? m.spec.coarsen(key) : key);
  }

  /**
   * Where an expired key's counts can go without the store passing its
   * bound: 'keep' (its own entry, existing or new: room is made by folding
   * the least recently active kept keys), 'fold' (straight into its coarse
   * key, already kept), or nothing (it stays in the kernel map).
   */
  private admit(m: AgedMap, h: string, key: Uint8Array): 'keep' | 'fold' | undefined {
    if (m.fine.has(h) || m.coarse.has(h)) return 'keep';
    while (m.fine.size + m.coarse.size >= m.spec.maxKept && m.fine.size > 0) this.foldOldest(m);
    if (m.fine.size + m.coarse.size < m.spec.maxKept) return 'keep';
    return m.coarse.has(this.coarseOf(m, key)) ? 'fold' : undefined;
  }

  private store(m: AgedMap, h: string, key: Uint8Array, value: BigUint64Array): void {
    if (m.coarse.has(h)) m.coarse.add(h, value);
    else if (m.fine.has(h)) m.fine.add(h, value);
    else if (this.coarseOf(m, key) === h) m.coarse.add(h, value);
    else m.fine.add(h, value);
  }

  /** Folds the least recently active fine key into its coarse key. */
  private foldOldest(m: AgedMap): void {
    const oldest = m.fine.shift();
    if (!oldest) return;
    m.coarse.add(this.coarseOf(m, unhex(oldest.h)), oldest.value);
    m.counts.coarsened++;
  }
}
