/**
 * What the running kernel offers, probed at start-up (the libbpf-tools way:
 * tracepoint_exists, kprobe_exists, fentry_can_attach), and the preflight
 * that `--check` prints. Nothing here is assumed from the kernel version.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { addon, type BpfObject } from '../native.js';
import { log } from '../log.js';
import { EXIT_KERNEL, MeshprobeError } from '../errors.js';
import { cgroup2Root } from '../filter/resolve.js';
import { findLibssl, LIBSSL_PROBES } from './libssl.js';
import { btfHasFunc } from './btf-enum.js';
import { exists } from './exists.js';

export const CAP = { NET_ADMIN: 12, SYS_ADMIN: 21, PERFMON: 38, BPF: 39 } as const;

const TRACEFS_CANDIDATES = ['/sys/kernel/tracing', '/sys/kernel/debug/tracing'];
export const BPFFS = '/sys/fs/bpf';
/** The kernel's BTF; MESHPROBE_VMLINUX_BTF points elsewhere (a test, or a kernel whose BTF lives in a file). */
export const DEFAULT_VMLINUX_BTF = '/sys/kernel/btf/vmlinux';
export const VMLINUX_BTF = process.env.MESHPROBE_VMLINUX_BTF || DEFAULT_VMLINUX_BTF;

/** MESHPROBE_DISABLE_HOOKS=kind[,kind]: never choose these kinds of hook (to try a fallback path). */
function disabledKinds(): Set<string> {
  return new Set(
    (process.env.MESHPROBE_DISABLE_HOOKS ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  );
}

interface Mount {
  source: string;
  target: string;
  type: string;
}

function mounts(): Mount[] {
  try {
    return readFileSync('/proc/mounts', 'utf8')
      .trim()
      .split('\n')
      .map((l) => {
        const [source, target, type] = l.split(' ');
        return { source, target, type };
      });
  } catch {
    return [];
  }
}

/** Effective capabilities of this process, as a bit set. */
export function effectiveCaps(): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? BigInt('0x' + m[1]) : 0n;
}

export function hasCap(caps: bigint, cap: number): boolean {
  return (caps & (1n << BigInt(cap))) !== 0n;
}

/** Can we load and attach tracing BPF programs? (CAP_BPF+CAP_PERFMON, or CAP_SYS_ADMIN) */
export function canTraceWithBpf(caps = effectiveCaps()): boolean {
  return hasCap(caps, CAP.SYS_ADMIN) || (hasCap(caps, CAP.BPF) && hasCap(caps, CAP.PERFMON));
}

export function tracefsPath(): string | undefined {
  const ms = mounts();
  for (const c of TRACEFS_CANDIDATES) {
    if (ms.some((m) => m.target === c && m.type === 'tracefs')) return c;
  }
  return undefined;
}

export function bpffsMounted(): boolean {
  return mounts().some((m) => m.target === BPFFS && m.type === 'bpf');
}

function tryMount(type: string, target: string): boolean {
  try {
    execFileSync('mount', ['-t', type, type === 'bpf' ? 'bpf' : 'nodev', target], { stdio: 'pipe' });
    log.debug(`mounted ${type} at ${target}`);
    return true;
  } catch (e) {
    log.debug(`could not mount ${type} at ${target}`, {
      error: (e instanceof Error ? e.message : String(e)).split('\n')[0],
    });
    return false;
  }
}

/** Mounts tracefs and bpffs where missing and we are allowed to. */
export function ensureMounts(opts: { bpffs?: boolean } = {}): { tracefs?: string; bpffs: boolean } {
  let tracefs = tracefsPath();
  if (!tracefs && hasCap(effectiveCaps(), CAP.SYS_ADMIN) && exists(TRACEFS_CANDIDATES[0])) {
    if (tryMount('tracefs', TRACEFS_CANDIDATES[0])) tracefs = tracefsPath();
  }
  let bpffs = bpffsMounted();
  if (!bpffs && opts.bpffs && hasCap(effectiveCaps(), CAP.SYS_ADMIN) && exists(BPFFS)) {
    bpffs = tryMount('bpf', BPFFS) && bpffsMounted();
  }
  return { tracefs, bpffs };
}

export function tracepointExists(group: string, name: string, tracefs = tracefsPath()): boolean {
  return !!tracefs && exists(`${tracefs}/events/${group}/${name}`);
}

/** Does tracepoint group/name carry `field` (its format file, e.g. kfree_skb's reason, 5.17+)? */
export function tracepointHasField(group: string, name: string, field: string, tracefs = tracefsPath()): boolean {
  if (!tracefs) return false;
  try {
    const format = readFileSync(`${tracefs}/events/${group}/${name}/format`, 'utf8');
    return new RegExp(`^\\s*field:[^;]*[\\s*]${field}(\\[\\d*\\])?;`, 'm').test(format);
  } catch {
    return false;
  }
}

const kfuncs = new Map<string, boolean>();

/** Does the running kernel have kfunc `name` (its BTF says)? Read once per name. */
export function kfuncExists(name: string): boolean {
  let found = kfuncs.get(name);
  if (found !== undefined) return found;
  try {
    found = btfHasFunc(name, VMLINUX_BTF);
  } catch (e) {
    log.debug(`cannot tell whether kfunc ${name} exists`, { error: (e as Error).message });
    found = false;
  }
  kfuncs.set(name, found);
  return found;
}

/** Kprobes need CONFIG_KPROBES; available_filter_functions lists what can be probed. */
export function kprobeExists(func: string, tracefs = tracefsPath()): boolean {
  if (!tracefs || !exists(`${tracefs}/kprobe_events`)) return false;
  try {
    const list = readFileSync(`${tracefs}/available_filter_functions`, 'utf8');
    return new RegExp(`^${func}(\\s|$)`, 'm').test(list);
  } catch {
    return false;
  }
}

export function fentryCanAttach(func: string): { ok: boolean; reason?: string } {
  const r = addon().fentryCanAttach(func);
  return { ok: r.ok, reason: r.ok ? undefined : r.reason };
}

/** One way to hook an event: the BPF programs that implement it and what they need. */
export interface HookCandidate {
  /** short name used in logs and reports, e.g. "raw_tracepoint:sock_send_length" */
  name: string;
  kind: 'tracepoint' | 'raw_tracepoint' | 'tp_btf' | 'fentry' | 'kprobe' | 'cgroup_skb' | 'uprobe';
  /** tracepoint "group/name", kernel function name, "cgroup2" (the root, for cgroup_skb), or "libssl" (uprobes) */
  target: string;
  programs: string[];
  /** a kfunc the programs call: the candidate is usable only where the kernel's BTF has it */
  requiresKfunc?: string;
  /** what is measured less well when this candidate is the one chosen (said at start and in the report) */
  degraded?: string;
}

export interface HookChoice {
  slot: string;
  chosen?: HookCandidate;
  tried: { name: string; ok: boolean; why?: string }[];
}

/** Whether a hook candidate can be used here; when it cannot, why. */
export type Availability = { ok: true; why?: undefined } | { ok: false; why: string };

export function candidateAvailable(c: HookCandidate, tracefs = tracefsPath()): Availability {
  if (disabledKinds().has(c.kind)) return { ok: false, why: 'disabled by MESHPROBE_DISABLE_HOOKS' };
  if (c.requiresKfunc && !kfuncExists(c.requiresKfunc))
    return { ok: false, why: `no kfunc ${c.requiresKfunc} in this kernel` };
  switch (c.kind) {
    // tp_btf: a BTF-typed raw tracepoint needs the tracepoint and the kernel's BTF for it (btf_trace_<name>);
    // a kernel whose BTF lacks that type refuses the program at load, and loadProbe moves to the next
    // candidate; without the kernel's BTF in sysfs libbpf fails the whole object, so it is not offered
    case 'tracepoint':
    case 'raw_tracepoint':
    case 'tp_btf': {
      if (c.kind === 'tp_btf' && !exists(DEFAULT_VMLINUX_BTF))
        return { ok: false, why: `no kernel BTF at ${DEFAULT_VMLINUX_BTF} (a BTF-typed tracepoint needs it)` };
      const [group, name] = c.target.split('/');
      if (!tracefs) return { ok: false, why: 'tracefs is not mounted' };
      return tracepointExists(group, name, tracefs) ? { ok: true } : { ok: false, why: `no tracepoint ${c.target}` };
    }
    case 'kprobe':
      return kprobeExists(c.target, tracefs)
        ? { ok: true }
        : { ok: false, why: 'kprobes unavailable (no kprobe_events or function not probeable)' };
    case 'fentry': {
      const r = fentryCanAttach(c.target);
      return r.ok ? { ok: true } : { ok: false, why: `fentry refused: ${r.reason ?? 'no reason given'}` };
    }
    case 'cgroup_skb':
      return cgroup2Root()
        ? { ok: true }
        : { ok: false, why: 'no cgroup v2 mount (mount -t cgroup2 none /sys/fs/cgroup)' };
    case 'uprobe': {
      const lib = findLibssl();
      return lib
        ? { ok: true }
        : {
            ok: false,
            why: 'no OpenSSL libssl (libssl.so.3 or .so.1.1) exporting SSL_do_handshake, SSL_connect and SSL_accept',
          };
    }
  }
}

/**
 * Attaches a chosen hook's programs: tracepoints, raw tracepoints, fentry
 * and kprobes by their section; cgroup_skb programs to the cgroup2 root
 * (every local socket); uprobes to libssl's functions (every process that
 * maps it).
 */
export function attachHook(obj: BpfObject, c: HookCandidate): string[] {
  const attached: string[] = [];
  if (c.kind === 'cgroup_skb') {
    const root = cgroup2Root();
    if (!root) throw new MeshprobeError('MP_NO_CGROUP2', 'no cgroup v2 mount to attach to', EXIT_KERNEL);
    for (const p of c.programs) {
      obj.attachCgroup(p, root);
      attached.push(`${p} (cgroup ${root})`);
    }
  } else if (c.kind === 'uprobe') {
    const lib = findLibssl();
    if (!lib) throw new MeshprobeError('MP_NO_LIBSSL', 'libssl is gone', EXIT_KERNEL);
    for (const u of LIBSSL_PROBES) {
      if (!c.programs.includes(u.program) || !lib.functions.includes(u.func)) continue;
      obj.attachUprobe(u.program, lib.path, u.func, u.retprobe);
      attached.push(`${u.program} (${u.retprobe ? 'uretprobe' : 'uprobe'} ${lib.path}:${u.func})`);
    }
  } else if (c.kind === 'kprobe') {
    const tracefs = tracefsPath();
    if (!tracefs)
      throw new MeshprobeError(
        'MP_NO_TRACEFS',
        'tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing',
        EXIT_KERNEL,
      );
    removeStaleKprobeEvents(tracefs);
    const sections = new Map(obj.programs().map((p) => [p.name, p.section]));
    for (const p of c.programs) {
      if (sections.get(p)?.startsWith('kretprobe/')) {
        try {
          obj.attachKretprobe(p, c.target, KRETPROBE_MAXACTIVE, tracefs);
          attached.push(`${p} (kretprobe ${c.target}, ${KRETPROBE_MAXACTIVE} return slots)`);
        } catch (e) {
          // tracefs not writable (a read-only mount in a container): libbpf's kretprobe, with the kernel's default slots
          log.warn(
            `kretprobe on ${c.target} with ${KRETPROBE_MAXACTIVE} return slots not possible (${(e as Error).message}): ` +
              "using the kernel's default number, past which concurrent blocked calls are missed",
          );
          obj.attach(p);
          attached.push(`${p} (kretprobe ${c.target}, default return slots)`);
        }
      } else {
        obj.attach(p);
        attached.push(p);
      }
    }
  } else {
    for (const p of c.programs) {
      obj.attach(p);
      attached.push(p);
    }
  }
  return attached;
}

/**
 * Return slots of each kretprobe: calls in flight at once (a thread blocked
 * in tcp_recvmsg holds one). The kernel's default is max(10, 2 x CPUs) on
 * preemptible kernels, the CPU count otherwise; past it returns are missed,
 * so a busy server of blocking threads lost most of its exchanges on 5.10
 * before. 4096 is the kernel's maximum.
 */
export const KRETPROBE_MAXACTIVE = 4096;

/** Removes the kretprobe events of meshprobe runs that ended without removing theirs (killed). */
function removeStaleKprobeEvents(tracefs: string): void {
  let lines: string[];
  try {
    lines = readFileSync(`${tracefs}/kprobe_events`, 'utf8').split('\n');
  } catch {
    return;
  }
  // every meshprobe event: the kernel refuses (EBUSY) to remove one that a running probe uses,
  // in whatever PID namespace it runs, so only those of runs that were killed go
  for (const l of lines) {
    const m = /^[pr]\d*:(meshprobe\/mp_\S+)/.exec(l);
    if (!m) continue;
    try {
      appendFileSync(`${tracefs}/kprobe_events`, `-:${m[1]}\n`);
      log.debug(`removed the stale kretprobe ${m[1]}`);
    } catch (e) {
      log.debug(`kretprobe ${m[1]} kept (in use by a running probe?)`, { error: (e as Error).message });
    }
  }
}

/** Picks, per slot, the first candidate this kernel supports (candidates in order of preference). */
export function chooseHooks(slots: Record<string, HookCandidate[]>): HookChoice[] {
  const tracefs = tracefsPath();
  return Object.entries(slots).map(([slot, cands]) => {
    const tried: HookChoice['tried'] = [];
    for (const c of cands) {
      const r = candidateAvailable(c, tracefs);
      tried.push({ name: c.name, ok: r.ok, why: r.why });
      log.debug(`hook ${slot}: ${c.name} ${r.ok ? 'available' : `unavailable: ${r.why}`}`);
      if (r.ok) return { slot, chosen: c, tried };
    }
    return { slot, tried };
  });
}

export interface Preflight {
  kernel: string;
  btf: boolean;
  caps: { bpf: boolean; perfmon: boolean; net_admin: boolean; sys_admin: boolean; can_trace: boolean };
  tracefs?: string;
  bpffs: boolean;
  libbpf: string;
  /** BPF atomic instructions (5.12+); without them the <probe>.noatomics object is used */
  atomics: boolean;
}

export function preflight(): Preflight {
  const caps = effectiveCaps();
  const mountsNow = ensureMounts({ bpffs: true });
  return {
    kernel: os.release(),
    btf: exists(VMLINUX_BTF),
    caps: {
      bpf: hasCap(caps, CAP.BPF),
      perfmon: hasCap(caps, CAP.PERFMON),
      net_admin: hasCap(caps, CAP.NET_ADMIN),
      sys_admin: hasCap(caps, CAP.SYS_ADMIN),
      can_trace: canTraceWithBpf(caps),
    },
    tracefs: mountsNow.tracefs,
    bpffs: mountsNow.bpffs,
    libbpf: addon().libbpfVersion(),
    atomics: addon().atomicsSupported(),
  };
}

/** The program libbpf says the kernel refused, from its log ("prog 'NAME': BPF program load failed"). */
export function refusedProgram(libbpfLog: string | undefined): string | undefined {
  if (!libbpfLog) return undefined;
  const all = [...libbpfLog.matchAll(/prog '([^']+)': (?:BPF program load failed|failed to load)/g)];
  return all.length ? all[all.length - 1][1] : undefined;
}

/**
 * After the kernel refused `program` at load (a hook that exists but whose
 * program this kernel cannot verify, e.g. fexit using bpf_get_func_ret before
 * 5.17): the same choices with that slot moved to its next usable candidate,
 * or undefined when there is none.
 */
export function nextChoice(
  slots: Record<string, HookCandidate[]>,
  choices: HookChoice[],
  program: string,
  why: string,
  available: (c: HookCandidate) => Availability = (c) => candidateAvailable(c),
): HookChoice[] | undefined {
  const i = choices.findIndex((c) => c.chosen?.programs.includes(program));
  if (i < 0) return undefined;
  const cur = choices[i];
  const chosen = cur.chosen;
  if (!chosen) return undefined; // (found by its chosen candidate: always set)
  const cands = slots[cur.slot];
  const tried = cur.tried.map((t) => (t.name === chosen.name ? { name: t.name, ok: false, why } : t));
  for (const c of cands.slice(cands.indexOf(chosen) + 1)) {
    const r = available(c);
    if (!tried.some((t) => t.name === c.name)) tried.push({ name: c.name, ok: r.ok, why: r.why });
    if (r.ok) return choices.map((x, j) => (j === i ? { slot: x.slot, chosen: c, tried } : x));
  }
  return undefined;
}
