/**
 * Finding OpenSSL's libssl on this machine for the TLS uprobes (bpf/tls.bpf.c),
 * and checking that it exports the functions they attach to: the ELF dynamic
 * symbol table (.dynsym) is read here, no nm/readelf needed.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, realpathSync } from 'node:fs';
import { exists } from './exists.js';

/** The uprobes of bpf/tls.bpf.c: program, libssl function, uretprobe or not. */
export interface LibsslProbe {
  program: string;
  func: string;
  retprobe: boolean;
  required: boolean;
}

export const LIBSSL_PROBES: readonly LibsslProbe[] = [
  { program: 'tls_ssl_hs_client', func: 'SSL_connect', retprobe: false, required: true },
  { program: 'tls_ssl_hs_ret', func: 'SSL_connect', retprobe: true, required: true },
  { program: 'tls_ssl_hs_server', func: 'SSL_accept', retprobe: false, required: true },
  { program: 'tls_ssl_hs_ret', func: 'SSL_accept', retprobe: true, required: true },
  { program: 'tls_ssl_hs', func: 'SSL_do_handshake', retprobe: false, required: true },
  { program: 'tls_ssl_hs_ret', func: 'SSL_do_handshake', retprobe: true, required: true },
  // the role for SSL_do_handshake, and forgetting an SSL* that is reset or freed
  { program: 'tls_ssl_set_client', func: 'SSL_set_connect_state', retprobe: false, required: false },
  { program: 'tls_ssl_set_server', func: 'SSL_set_accept_state', retprobe: false, required: false },
  { program: 'tls_ssl_clear', func: 'SSL_clear', retprobe: false, required: false },
  { program: 'tls_ssl_free', func: 'SSL_free', retprobe: false, required: false },
];

export interface Libssl {
  /** the file, symlinks resolved (uprobes attach to the inode, every process that maps it) */
  path: string;
  /** defined functions of LIBSSL_PROBES it exports */
  functions: string[];
  /** LIBSSL_PROBES functions it lacks */
  missing: string[];
  /** every required function is there */
  usable: boolean;
}

/** OpenSSL's sonames; NSS's libssl3.so is another library with other functions. */
const SONAME = /^libssl\.so\.(3|1\.1)$/;
const FALLBACKS = [
  '/usr/lib/x86_64-linux-gnu/libssl.so.3',
  '/lib/x86_64-linux-gnu/libssl.so.3',
  '/usr/lib/aarch64-linux-gnu/libssl.so.3',
  '/usr/lib64/libssl.so.3',
  '/usr/lib/libssl.so.3',
  '/usr/lib/x86_64-linux-gnu/libssl.so.1.1',
];

/** Paths of libssl.so.3 / .so.1.1 in `ldconfig -p` output, for this machine's architecture first. */
export function parseLdconfig(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)\s*$/.exec(line);
    if (!m || !SONAME.test(m[1])) continue;
    const is64 = /x86-64|64bit|AArch64/.test(m[2]);
    if (process.arch === 'x64' || process.arch === 'arm64' ? is64 : !is64) out.push(m[3]);
  }
  // 3 before 1.1
  return out.sort((a, b) => Number(b.endsWith('.so.3')) - Number(a.endsWith('.so.3')));
}

function ldconfigPaths(): string[] {
  for (const bin of ['ldconfig', '/sbin/ldconfig', '/usr/sbin/ldconfig']) {
    try {
      return parseLdconfig(execFileSync(bin, ['-p'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
    } catch {
      // not on PATH, or failed: try the next, then the fixed paths
    }
  }
  return [];
}

/**
 * Names of the functions an ELF file defines in its dynamic symbol table
 * (STT_FUNC or STT_GNU_IFUNC, st_shndx != SHN_UNDEF). ELF64 and ELF32, either byte order.
 */
export function elfDynamicFunctions(buf: Buffer): Set<string> {
  if (buf.length < 52 || buf.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file');
  const is64 = buf[4] === 2;
  const le = buf[5] === 1;
  const u16 = (o: number) => (le ? buf.readUInt16LE(o) : buf.readUInt16BE(o));
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const addr = (o: number) => (is64 ? Number(le ? buf.readBigUInt64LE(o) : buf.readBigUInt64BE(o)) : u32(o));
  const shoff = addr(is64 ? 0x28 : 0x20);
  const shentsize = u16(is64 ? 0x3a : 0x2e);
  const shnum = u16(is64 ? 0x3c : 0x30);
  const sections: { type: number; offset: number; size: number; link: number; entsize: number }[] = [];
  for (let i = 0; i < shnum; i++) {
    const o = shoff + i * shentsize;
    if (o + shentsize > buf.length) throw new Error('ELF section headers out of range');
    sections.push(
      is64
        ? {
            type: u32(o + 4),
            offset: addr(o + 0x18),
            size: addr(o + 0x20),
            link: u32(o + 0x28),
            entsize: addr(o + 0x38),
          }
        : { type: u32(o + 4), offset: u32(o + 0x10), size: u32(o + 0x14), link: u32(o + 0x18), entsize: u32(o + 0x24) },
    );
  }
  const SHT_DYNSYM = 11;
  const STT_FUNC = 2;
  const STT_GNU_IFUNC = 10;
  const names = new Set<string>();
  for (const s of sections.filter((x) => x.type === SHT_DYNSYM)) {
    if (s.link >= sections.length) continue; // a link (from the file) to no section
    const str = sections[s.link];
    const entsize = s.entsize || (is64 ? 24 : 16);
    for (let o = s.offset; o + entsize <= s.offset + s.size && o + entsize <= buf.length; o += entsize) {
      const nameOff = u32(o);
      const info = is64 ? buf[o + 4] : buf[o + 12];
      const shndx = is64 ? u16(o + 6) : u16(o + 14);
      const type = info & 0xf;
      if (shndx === 0 || (type !== STT_FUNC && type !== STT_GNU_IFUNC)) continue;
      const start = str.offset + nameOff;
      const end = buf.indexOf(0, start);
      if (end < 0 || end > str.offset + str.size) continue;
      names.add(buf.toString('latin1', start, end));
    }
  }
  return names;
}

/** What a libssl file offers to the uprobes. */
export function inspectLibssl(path: string): Libssl {
  const real = realpathSync(path);
  const defined = elfDynamicFunctions(readFileSync(real));
  const funcs = [...new Set(LIBSSL_PROBES.map((p) => p.func))];
  const functions = funcs.filter((f) => defined.has(f));
  const missing = funcs.filter((f) => !defined.has(f));
  const usable = LIBSSL_PROBES.filter((p) => p.required).every((p) => defined.has(p.func));
  return { path: real, functions, missing, usable };
}

/**
 * The OpenSSL libssl this machine's programs load (ldconfig's cache, then the
 * usual paths): the first file that exports the handshake functions, or
 * undefined. `candidates` replaces the search (tests, or a --libssl option).
 */
export function findLibssl(candidates?: string[]): Libssl | undefined {
  const tried = new Set<string>();
  for (const p of candidates ?? [...ldconfigPaths(), ...FALLBACKS]) {
    if (!exists(p)) continue;
    let info: Libssl;
    try {
      info = inspectLibssl(p);
    } catch {
      continue; // unreadable or not ELF
    }
    if (tried.has(info.path)) continue;
    tried.add(info.path);
    if (info.usable) return info;
  }
  return undefined;
}
