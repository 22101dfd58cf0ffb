/**
 * Writes a resolved filter into a BPF object's settings (bpf/filter.bpf.h),
 * as struct mp_selector (bpf/filter.h) entries. Every probe calls this from
 * its configure().
 */
import type { BpfObject } from '../native.js';
import { MAX_SELECTORS, type ResolvedFilter, type Selector } from './resolve.js';

/** struct mp_selector: offsets checked against the C compiler by test/filter.test.ts */
export const SELECTOR = {
  size: 40,
  cgroup_id: 0,
  tgid: 8,
  netns: 12,
  port: 16,
  cgroup_level: 18,
  clause: 19,
  comm: 24,
  commSize: 16,
} as const;

export function encodeSelectors(sel: readonly Selector[]): Uint8Array {
  const out = new Uint8Array(MAX_SELECTORS * SELECTOR.size);
  const dv = new DataView(out.buffer);
  sel.forEach((s, i) => {
    const at = i * SELECTOR.size;
    dv.setBigUint64(at + SELECTOR.cgroup_id, s.cgroupId ?? 0n, true);
    dv.setUint32(at + SELECTOR.tgid, s.tgid ?? 0, true);
    dv.setUint32(at + SELECTOR.netns, s.netns ?? 0, true);
    dv.setUint16(at + SELECTOR.port, s.port ?? 0, true);
    dv.setUint8(at + SELECTOR.cgroup_level, s.cgroupLevel ?? 0);
    dv.setUint8(at + SELECTOR.clause, s.clause);
    if (s.comm) out.set(Buffer.from(s.comm).subarray(0, SELECTOR.commSize - 1), at + SELECTOR.comm);
  });
  return out;
}

export function applyFilter(obj: BpfObject, f: ResolvedFilter): void {
  if (f.selectors.length > MAX_SELECTORS) throw new RangeError(`at most ${MAX_SELECTORS} selectors`);
  obj.setGlobal('selectors', encodeSelectors(f.selectors));
  obj.setGlobal('selector_count', f.selectors.length);
  obj.setGlobal('clause_mask', f.clauses >= 32 ? 0xffffffff : (1 << f.clauses) - 1 >>> 0);
  obj.setGlobal('filter_by_comm', f.selectors.some((s) => !!s.comm));
}

export const NO_FILTER: ResolvedFilter = { selectors: [], clauses: 0, expressions: [] };
