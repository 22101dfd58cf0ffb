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
  private readonly addrs: BigUint64Array;
  private readonly names: string[];
  private readonly modules: (string | undefined)[];
  private readonly cache = new Map<bigint, KernelSymbol | undefined>();

  constructor(path = '/proc/kallsyms') {
    let text: string;
    try {
      text = readFileSync(path, 'latin1');
    } catch (e) {
      throw new MeshprobeError('MP_KALLSYMS', `cannot read ${path}: ${(e as Error).message}`);
    }
    const rows: { addr: bigint; name: string; module?: string }[] = [];
    let nonzero = false;
    let any = false;
    for (const line of text.split('\n')) {
      // "ffffffff81000000 T _stext" or "... t name\t[module]"
      const sp1 = line.indexOf(' ');
      if (sp1 <= 0) continue;
      const type = line.charCodeAt(sp1 + 1);
      if (type !== 0x74 /* t */ && type !== 0x54 /* T */) continue;
      any = true;
      const addr = BigInt('0x' + line.slice(0, sp1));
      if (addr === 0n) continue;
      nonzero = true;
      const rest = line.slice(sp1 + 3);
      const tab = rest.indexOf('\t');
      if (tab < 0) rows.push({ addr, name: rest });
      else rows.push({ addr, name: rest.slice(0, tab), module: rest.slice(tab + 1).replace(/^\[|\]$/g, '') });
    }
    this.restricted = any && !nonzero;
    rows.sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0));
    this.addrs = BigUint64Array.from(rows.map((r) => r.addr));
    this.names = rows.map((r) => r.name);
    this.modules = rows.map((r) => r.module);
    this.size = rows.length;
  }

  /**
   * The text symbol holding `addr` (the last symbol starting at or before
   * it), or undefined: below the first symbol, or addresses restricted.
   * Beyond the last symbol the answer is a guess (its size is not known).
   */
  lookup(addr: bigint): KernelSymbol | undefined {
    if (this.cache.has(addr)) return this.cache.get(addr);
    let lo = 0;
    let hi = this.addrs.length - 1;
    let at = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.addrs[mid] <= addr) {
        at = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    let sym: KernelSymbol | undefined;
    if (at >= 0) {
      sym = { name: this.names[at], offset: Number(addr - this.addrs[at]) };
      const m = this.modules[at];
      if (m) sym.module = m;
    }
    this.cache.set(addr, sym);
    return sym;
  }

  /** The start address of a text symbol by name (the first one of that name), for tests and tools. */
  address(name: string): bigint | undefined {
    const i = this.names.indexOf(name);
    return i < 0 ? undefined : this.addrs[i];
  }
}
