// Ageing of the probes' counting maps (src/pipeline/map-aging.ts), against a
// fake kernel map: idle keys move out of the map into user space, reads see
// the live and the expired counts merged by key (the same totals before and
// after expiry), a key that comes back adds to its kept counts, and the
// store stays within its bound by folding the least recently active keys
// into coarser ones, counted. Also the drop report's interval differences
// over a fold (src/report/drops.ts diffDropFigures).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MapAger, mapAgeInterval, type AgeMapSpec, type CountingMaps } from '../src/pipeline/map-aging.js';
import { coarsenDropKey, dropKeyIdleMs } from '../src/probes/drops.js';
import { diffDropFigures, readDropFigures, type DropFigures } from '../src/report/drops.js';
import type { MapReader } from '../src/pipeline/session.js';
import * as R from '../src/records.js';

const hex = (k: Uint8Array) => Buffer.from(k).toString('hex');

/** A per-CPU hash map as the kernel side uses it: keys made on first count, never deleted but by the ager. */
class FakeMaps implements CountingMaps {
  readonly maps = new Map<string, Map<string, { key: Uint8Array; value: BigUint64Array }>>();
  deletes = 0;

  count(map: string, key: Uint8Array, packets: number, bytes = packets * 100): void {
    const m = this.maps.get(map) ?? new Map<string, { key: Uint8Array; value: BigUint64Array }>();
    this.maps.set(map, m);
    const e = m.get(hex(key)) ?? { key: Uint8Array.from(key), value: new BigUint64Array(2) };
    e.value[0] += BigInt(packets);
    e.value[1] += BigInt(bytes);
    m.set(hex(key), e);
  }

  size(map: string): number {
    return this.maps.get(map)?.size ?? 0;
  }

  readPercpuHash(map: string): [Uint8Array, BigUint64Array][] {
    return [...(this.maps.get(map)?.values() ?? [])].map((e) => [Uint8Array.from(e.key), BigUint64Array.from(e.value)]);
  }

  mapLookupAndDelete(map: string, key: Uint8Array): BigUint64Array | null {
    const m = this.maps.get(map);
    const e = m?.get(hex(key));
    if (!m || !e) return null;
    m.delete(hex(key));
    this.deletes++;
    return BigUint64Array.from(e.value);
  }
}

class Clock {
  t = 1_000_000;
  now = () => this.t;
}

/** An 8-byte key: [group, peer, 0...]; coarsening zeroes the peer. */
const key = (group: number, peer: number) => Uint8Array.from([group, peer, 0, 0, 0, 0, 0, 0]);
const coarsenPeer = (k: Uint8Array) => Uint8Array.from([k[0], 0, ...k.subarray(2)]);

/** Packets per key and in all, from a read. */
function totals(entries: [Uint8Array, BigUint64Array][]): {
  byKey: Map<string, bigint>;
  packets: bigint;
  bytes: bigint;
} {
  const byKey = new Map<string, bigint>();
  let packets = 0n;
  let bytes = 0n;
  for (const [k, v] of entries) {
    assert.ok(!byKey.has(hex(k)), `key ${hex(k)} read twice`);
    byKey.set(hex(k), v[0]);
    packets += v[0];
    bytes += v[1];
  }
  return { byKey, packets, bytes };
}

/** Packets per group (the first key byte): what coarsening must keep exact. */
function byGroup(entries: [Uint8Array, BigUint64Array][]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const [k, v] of entries) out[k[0]] = (out[k[0]] ?? 0) + Number(v[0]);
  return out;
}

const spec = (o: Partial<AgeMapSpec> = {}): AgeMapSpec => ({ map: 'm', idleMs: 60_000, maxKept: 100, ...o });

test('a key unchanged for the idle period leaves the kernel map; a key still counting stays', () => {
  const k = new FakeMaps();
  const clock = new Clock();
  const ager = new MapAger(k, [spec()], clock.now);
  k.count('m', key(1, 1), 5);
  k.count('m', key(2, 1), 5);
  ager.tick(); // both first seen now
  for (let s = 10; s <= 50; s += 10) {
    clock.t += 10_000;
    k.count('m', key(2, 1), 1); // key 2 keeps counting
    ager.tick();
  }
  assert.equal(k.size('m'), 2, 'idle for 50 s: still in the kernel map');
  clock.t += 9_999;
  ager.tick();
  assert.equal(k.size('m'), 2, 'idle for 59.999 s: still there');
  clock.t += 1;
  ager.tick();
  assert.equal(k.size('m'), 1, 'idle for 60 s: taken out');
  assert.ok(k.maps.get('m')?.has(hex(key(2, 1))), 'the counting key stays');
  assert.deepEqual(ager.counts('m'), { expired: 1, coarsened: 0 });
  assert.equal(ager.kept('m'), 1);
  assert.equal(ager.counts('other'), undefined, 'a map not aged');
});

test('reads give the same totals, per key and in all, before and after keys expire', () => {
  const k = new FakeMaps();
  const clock = new Clock();
  const ager = new MapAger(k, [spec({ idleMs: 1000 })], clock.now);
  for (let p = 0; p < 20; p++) k.count('m', key(p % 3, p), p + 1);
  const before = totals(ager.read('m'));
  ager.tick();
  clock.t += 1000;
  ager.tick();
  assert.equal(k.size('m'), 0, 'every key idle: all taken out');
  assert.equal(ager.counts('m')?.expired, 20);
  const after = totals(ager.read('m'));
  assert.deepEqual(after, before);
  assert.equal(before.packets, 210n);
});

test('a key that comes back adds to its kept counts, and expires into them again', () => {
  const k = new FakeMaps();
  const clock = new Clock();
  const ager = new MapAger(k, [spec({ idleMs: 1000 })], clock.now);
  const a = key(7, 9);
  k.count('m', a, 10);
  ager.tick();
  clock.t += 1000;
  ager.tick();
  assert.equal(k.size('m'), 0);
  k.count('m', a, 3); // the same flow drops again: a new kernel entry
  const merged = ager.read('m');
  assert.equal(merged.length, 1, 'one entry for the key: kept + live');
  assert.equal(merged[0][1][0], 13n);
  assert.equal(merged[0][1][1], 1300n, 'every word summed');
  ager.tick();
  clock.t += 1000;
  ager.tick();
  assert.equal(k.size('m'), 0, 'expired again');
  assert.deepEqual(ager.counts('m'), { expired: 2, coarsened: 0 });
  assert.equal(ager.kept('m'), 1, 'merged into its kept entry');
  assert.equal(ager.read('m')[0][1][0], 13n);
});

test('a key deleted before the ager takes it is not counted', () => {
  const k = new FakeMaps();
  const clock = new Clock();
  const ager = new MapAger(k, [spec({ idleMs: 1000 })], clock.now);
  k.count('m', key(1, 1), 1);
  ager.tick();
  clock.t += 1000;
  const real = k.mapLookupAndDelete.bind(k);
  k.mapLookupAndDelete = (map, kk) => {
    real(map, kk); // someone else took it between the read and the delete
    return null;
  };
  ager.tick();
  assert.deepEqual(ager.counts('m'), { expired: 0, coarsened: 0 });
  assert.equal(ager.kept('m'), 0);
});

test('past its bound the store folds the least recently active keys into coarser ones, totals per group exact', () => {
  const k = new FakeMaps();
  const clock = new Clock();
  const maxKept = 8;
  const ager = new MapAger(k, [spec({ idleMs: 1000, maxKept, coarsen: coarsenPeer })], clock.now);
  let sent = 0;
  const groups: Record<number, number> = {};
  // 40 peers in 2 groups, in waves of 5: each wave expires before the next
  for (let wave = 0; wave < 8; wave++) {
    for (let i = 0; i < 5; i++) {
      const peer = wave * 5 + i + 1;
      const g = peer % 2;
      k.count('m', key(g, peer), peer);
      sent += peer;
      groups[g] = (groups[g] ?? 0) + peer;
    }
    ager.tick();
    clock.t += 1000;
    ager.tick();
    assert.equal(k.size('m'), 0, `wave ${String(wave)}: all expired`);
    assert.ok(
      ager.kept('m') <= maxKept,
      `wave ${String(wave)}: ${String(ager.kept('m'))} kept, bound ${String(maxKept)}`,
    );
    assert.equal(totals(ager.read('m')).packets, BigInt(sent), `wave ${String(wave)}: total unchanged`);
  }
  const c = ager.counts('m');
  assert.ok(c);
  assert.equal(c.expired, 40);
  // 2 coarse keys (one per group) + at most 6 fine ones: at least 32 of the 40 folded
  assert.ok(c.coarsened >= 32, `coarsened ${String(c.coarsened)}`);
  const read = ager.read('m');
  assert.deepEqual(byGroup(read), groups, 'totals per group (what a coarse key keeps) exact');
  const fine = read.filter(([kk]) => kk[1] !== 0).map(([kk]) => kk[1]);
  assert.ok(fine.length > 0 && fine.length <= maxKept - 2);
  // the kept fine keys are the most recently active: the last wave's peers
  for (const p of fine) assert.ok(p > 40 - fine.length, `peer ${String(p)} kept fine, an older one was not`);
  assert.equal(read.filter(([kk]) => kk[1] === 0).length, 2, 'one coarse key per group');
});

test('a store full of keys that cannot be folded leaves idle keys in the kernel map, counts intact', () => {
  const k = new FakeMaps();
  const clock = new Clock();
  const ager = new MapAger(k, [spec({ idleMs: 1000, maxKept: 3 })], clock.now); // no coarsen
  for (let p = 1; p <= 5; p++) k.count('m', key(p, 0), p);
  ager.tick();
  clock.t += 1000;
  ager.tick();
  assert.equal(ager.kept('m'), 3);
  assert.equal(k.size('m'), 2, 'two stay in the kernel map');
  assert.deepEqual(ager.counts('m'), { expired: 3, coarsened: 0 });
  assert.equal(totals(ager.read('m')).packets, 15n);
  k.count('m', key(1, 0), 1); // a kept key that comes back can still expire into its entry
  ager.tick();
  clock.t += 1000;
  ager.tick();
  assert.equal(ager.counts('m')?.expired, 4);
  assert.equal(totals(ager.read('m')).packets, 16n);
});

test('a key whose coarse key is kept folds straight into it when nothing else can be folded', () => {
  const k = new FakeMaps();
  const clock = new Clock();
  const ager = new MapAger(k, [spec({ idleMs: 1000, maxKept: 2, coarsen: coarsenPeer })], clock.now);
  for (const [g, p] of [
    [1, 1],
    [2, 1],
    [1, 2],
    [2, 2],
    [1, 3],
  ])
    k.count('m', key(g, p), 1);
  ager.tick();
  clock.t += 1000;
  ager.tick();
  assert.equal(k.size('m'), 0);
  assert.equal(ager.kept('m'), 2);
  assert.deepEqual(ager.counts('m'), { expired: 5, coarsened: 5 });
  assert.deepEqual(byGroup(ager.read('m')), { 1: 3, 2: 2 });
  k.count('m', key(3, 1), 1); // a new group with both slots taken by coarse keys: stays in the kernel
  ager.tick();
  clock.t += 1000;
  ager.tick();
  assert.equal(k.size('m'), 1);
  assert.deepEqual(byGroup(ager.read('m')), { 1: 3, 2: 2, 3: 1 });
});

test('ticks: a sixth of the shortest idle period, between 50 ms and 10 s; the idle period from the environment', () => {
  assert.equal(mapAgeInterval([spec({ idleMs: 60_000 })]), 10_000);
  assert.equal(mapAgeInterval([spec({ idleMs: 120_000 }), spec({ idleMs: 1200 })]), 200);
  assert.equal(mapAgeInterval([spec({ idleMs: 100 })]), 50);
  assert.equal(dropKeyIdleMs({}), 60_000);
  assert.equal(dropKeyIdleMs({ MESHPROBE_DROP_KEY_IDLE_MS: '1500' }), 1500);
  assert.throws(() => dropKeyIdleMs({ MESHPROBE_DROP_KEY_IDLE_MS: 'soon' }), { code: 'MP_USAGE' });
  assert.throws(() => new MapAger(new FakeMaps(), [spec({ idleMs: 0 })]), /bad settings/);
});

/** A 56-byte drop key: one location and reason, local 10.0.0.1:lport, remote 10.0.0.2:rport. */
function dropKey(lport: number, rport: number): Uint8Array {
  const k = new Uint8Array(R.DKEY_SIZE);
  const dv = new DataView(k.buffer);
  dv.setBigUint64(R.DKEY_LOCATION, 0xffffffff81000000n, true);
  dv.setUint32(R.DKEY_REASON, 3, true);
  dv.setUint32(R.DKEY_NETNS, 4026531840, true);
  dv.setUint16(R.DKEY_LPORT, lport, true);
  dv.setUint16(R.DKEY_RPORT, rport, true);
  k[R.DKEY_PROTOCOL] = 17;
  k[R.DKEY_FAMILY] = 2;
  k[R.DKEY_DIR] = 1;
  k.set([10, 0, 0, 1], R.DKEY_LADDR);
  k.set([10, 0, 0, 2], R.DKEY_RADDR);
  return k;
}

test('drop keys coarsen to their local side; intervals over a fold count only new drops', () => {
  const c = coarsenDropKey(dropKey(53, 40000));
  assert.deepEqual(c, coarsenDropKey(dropKey(53, 40001)), 'every peer of one local side: one coarse key');
  assert.deepEqual(coarsenDropKey(c), c, 'as coarse as it gets');
  const dv = new DataView(c.buffer);
  assert.equal(dv.getUint16(R.DKEY_LPORT, true), 53);
  assert.equal(dv.getUint16(R.DKEY_RPORT, true), 0);

  const k = new FakeMaps();
  const clock = new Clock();
  const ager = new MapAger(k, [{ map: 'drops', idleMs: 1000, maxKept: 2, coarsen: coarsenDropKey }], clock.now);
  let seen = 0;
  const maps: MapReader = {
    percpuHash: (name) => (name === 'drops' ? ager.read(name) : []),
    stats: () => {
      const s = new Array<bigint>(R.STAT__COUNT).fill(0n);
      s[R.STAT_DROP_SEEN] = BigInt(seen);
      return s;
    },
    aging: (name) => ager.counts(name),
  };
  const counted = (f: DropFigures) => f.drops.reduce((a, d) => a + d.packets, 0);
  let prev: DropFigures | undefined;
  let intervals = 0;
  for (let wave = 0; wave < 6; wave++) {
    for (let i = 0; i < 4; i++) {
      k.count('drops', dropKey(53, 40000 + wave * 4 + i), 2);
      seen += 2;
    }
    if (wave === 3) {
      k.count('drops', dropKey(53, 40000), 5); // the first peer comes back after its key was folded
      seen += 5;
    }
    ager.tick();
    clock.t += 1000;
    ager.tick();
    const cur = readDropFigures(maps);
    assert.equal(counted(cur), seen, `wave ${String(wave)}: the breakdown holds every drop`);
    const d = diffDropFigures(cur, prev);
    assert.equal(counted(d), wave === 3 ? 13 : 8, `wave ${String(wave)}: the interval counts its own drops`);
    assert.equal(d.kernel.drop_seen, counted(d));
    intervals += counted(d);
    prev = cur;
  }
  assert.equal(intervals, seen);
  assert.ok(prev);
  assert.equal(prev.keys.expired, 25);
  assert.ok(prev.keys.coarsened >= 22, `coarsened ${String(prev.keys.coarsened)}`);
});
