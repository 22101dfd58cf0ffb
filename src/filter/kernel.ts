/**
 * Writes a resolved filter into a BPF object (bpf/filter.bpf.h): the
 * selectors as struct mp_selector (bpf/filter.h) settings before load, and
 * the fds of the filters' cgroups into the filter_cgroups map after load.
 * Every probe calls both, from its configure() and afterLoad().
 */
import { closeSync, openSync } from 'node:fs';
import type { BpfObject } from '../native.js';
import { usageError } from '../errors.js';
import { MAX_SELECTORS, type ResolvedFilter, type Selector } from './resolve.js';

/** struct mp_selector: offsets checked against the C compiler by test/filter.test.ts */
export const SELECTOR = {
  size: 40,
  cgroup_id: 0,
  tgid: 8,
  netns: 12,
  port: 16,
  cgroup_slot: 18,
  clause: 19,
  comm: 24,
  commSize: 16,
} as const;

/** The cgroup directories of the selectors, each once, in slot order. */
export function cgroupSlots(sel: readonly Selector[]): string[] {
  return [...new Set(sel.map((s) => s.cgroupDir).filter((d): d is string => !!d))];
}

export function encodeSelectors(sel: readonly Selector[]): Uint8Array {
  const slots = cgroupSlots(sel);
  const out = new Uint8Array(MAX_SELECTORS * SELECTOR.size);
  const dv = new DataView(out.buffer);
  sel.forEach((s, i) => {
    const at = i * SELECTOR.size;
    dv.setBigUint64(at + SELECTOR.cgroup_id, s.cgroupDir ? (s.cgroupId ?? 1n) : 0n, true);
    dv.setUint32(at + SELECTOR.tgid, s.tgid ?? 0, true);
    dv.setUint32(at + SELECTOR.netns, s.netns ?? 0, true);
    dv.setUint16(at + SELECTOR.port, s.port ?? 0, true);
    dv.setUint8(at + SELECTOR.cgroup_slot, s.cgroupDir ? slots.indexOf(s.cgroupDir) : 0);
    dv.setUint8(at + SELECTOR.clause, s.clause);
    if (s.comm) out.set(Buffer.from(s.comm).subarray(0, SELECTOR.commSize - 1), at + SELECTOR.comm);
  });
  return out;
}

/** Before load: the selectors. */
export function applyFilter(obj: BpfObject, f: ResolvedFilter): void {
  if (f.selectors.length > MAX_SELECTORS) throw new RangeError(`at most ${MAX_SELECTORS} selectors`);
  obj.setGlobal('selectors', encodeSelectors(f.selectors));
  obj.setGlobal('selector_count', f.selectors.length);
  obj.setGlobal('clause_mask', f.clauses >= 32 ? 0xffffffff : ((1 << f.clauses) - 1) >>> 0);
  obj.setGlobal(
    'filter_by_comm',
    f.selectors.some((s) => !!s.comm),
  );
}

/** After load: an fd of each cgroup into filter_cgroups (the map keeps its own reference). */
export function loadFilterCgroups(obj: BpfObject, f: ResolvedFilter): void {
  cgroupSlots(f.selectors).forEach((dir, i) => {
    let fd: number;
    try {
      fd = openSync(dir, 'r');
    } catch (e) {
      throw usageError(
        `cannot open cgroup ${dir} for the filter: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      );
    }
    try {
      const key = new Uint8Array(4),
        value = new Uint8Array(4);
      new DataView(key.buffer).setUint32(0, i, true);
      new DataView(value.buffer).setUint32(0, fd, true);
      obj.mapUpdate('filter_cgroups', key, value);
    } finally {
      closeSync(fd);
    }
  });
}

export const NO_FILTER: ResolvedFilter = { selectors: [], clauses: 0, expressions: [] };
