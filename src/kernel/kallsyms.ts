/**
 * Kernel text symbols from /proc/kallsyms, to name the addresses BPF programs
 * report (the kfree_skb tracepoint's `location`). Loaded once; lookups are a
 * binary search over the sorted start addresses, cached per address.
 *
 * With kptr_restrict (or without CAP_SYSLOG) every address reads as zero:
 * `restricted` is then true and lookup() finds nothing.
 */
import { readFileSync } from 'node:fs';
import { MeshprobeError } from '../errors.js';

export interface KernelSymbol {
  name: string;
  /** bytes from the symbol's start */
  offset: number;
  /** the module, for symbols of loadable modules */
  module?: string;
}

export class Kallsyms {
  /** every address read as 0: kernel.kptr_restrict hides them from this process */
  readonly restricted: boolean;
  /** text symbols kept */
  readonly size: number;
  /** start addresses, ascending, as high and low 32-bit halves (no BigInt per symbol) */
  private readonly hi: Uint32Array;
  private readonly lo: Uint32Array;
  private readonly names: string[];
  /** index + 1 into `moduleNames`, 0 for the kernel's own text */
  private readonly moduleOf: Uint16Array;
  private readonly moduleNames: string[] = [];
  private readonly cache = new Map<bigint, KernelSymbol | undefined>();

  /**
   * Parses in one pass over the text, without an object or a BigInt per
   * line: a node agent reads the ~120,000 lines at start and again when a
   * module appears, and per-line objects made a transient 50 MB of heap.
   */
  constructor(path = '/proc/kallsyms') {
    let text: string;
    try {
      text = readFileSync(path, 'latin1');
    } catch (e) {
      throw new MeshprobeError('MP_KALLSYMS', `cannot read ${path}: ${(e as Error).message}`);
    }
    let lines = 0;
    for (let at = text.indexOf('\n'); at >= 0; at = text.indexOf('\n', at + 1)) lines++;
    lines++;
    const hi = new Uint32Array(lines);
    const lo = new Uint32Array(lines);
    const mods = new Uint16Array(lines);
    const names: string[] = [];
    const moduleIndex = new Map<string, number>();
    let n = 0;
    let nonzero = false;
    let any = false;
    for (let start = 0; start < text.length;) {
      let end = text.indexOf('\n', start);
      if (end < 0) end = text.length;
      // "ffffffff81000000 T _stext" or "... t name\t[module]"
      const sp1 = text.indexOf(' ', start);
      const type = sp1 > start && sp1 < end ? text.charCodeAt(sp1 + 1) : 0;
      if (type === 0x74 /* t */ || type === 0x54 /* T */) {
        any = true;
        const split = Math.max(start, sp1 - 8);
        const h = split > start ? parseInt(text.slice(start, split), 16) : 0;
        const l = parseInt(text.slice(split, sp1), 16);
        if (h !== 0 || l !== 0) {
          nonzero = true;
          // the rest of the line only: a search of the whole text for a tab would cross every later line
          const rest = text.slice(sp1 + 3, end);
          const tab = rest.indexOf('\t');
          hi[n] = h;
          lo[n] = l;
          names.push(tab < 0 ? rest : rest.slice(0, tab));
          if (tab >= 0) {
            const m = rest.slice(tab + 1).replace(/^\[|\]$/g, '');
            let mi = moduleIndex.get(m);
            if (mi === undefined) {
              this.moduleNames.push(m);
              mi = this.moduleNames.length;
              moduleIndex.set(m, mi);
            }
            mods[n] = mi;
          }
          n++;
        }
      }
      start = end + 1;
    }
    this.restricted = any && !nonzero;
    // /proc/kallsyms is mostly in address order: sort an index, then lay the arrays out by it
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort((a, b) => hi[a] - hi[b] || lo[a] - lo[b]);
    this.hi = new Uint32Array(n);
    this.lo = new Uint32Array(n);
    this.moduleOf = new Uint16Array(n);
    this.names = new Array<string>(n);
    for (let i = 0; i < n; i++) {
      const j = order[i];
      this.hi[i] = hi[j];
      this.lo[i] = lo[j];
      this.moduleOf[i] = mods[j];
      this.names[i] = names[j];
    }
    this.size = n;
  }

  /**
   * The text symbol holding `addr` (the last symbol starting at or before
   * it), or undefined: below the first symbol, or addresses restricted.
   * Beyond the last symbol the answer is a guess (its size is not known).
   */
  lookup(addr: bigint): KernelSymbol | undefined {
    if (this.cache.has(addr)) return this.cache.get(addr);
    const ah = Number(addr >> 32n);
    const al = Number(addr & 0xffffffffn);
    let lo = 0;
    let hi = this.size - 1;
    let at = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.hi[mid] < ah || (this.hi[mid] === ah && this.lo[mid] <= al)) {
        at = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    let sym: KernelSymbol | undefined;
    if (at >= 0) {
      sym = { name: this.names[at], offset: Number(addr - this.startOf(at)) };
      const m = this.moduleOf[at];
      if (m) sym.module = this.moduleNames[m - 1];
    }
    this.cache.set(addr, sym);
    return sym;
  }

  /** The start address of a text symbol by name (the first one of that name), for tests and tools. */
  address(name: string): bigint | undefined {
    const i = this.names.indexOf(name);
    return i < 0 ? undefined : this.startOf(i);
  }

  private startOf(i: number): bigint {
    return (BigInt(this.hi[i]) << 32n) | BigInt(this.lo[i]);
  }
}
