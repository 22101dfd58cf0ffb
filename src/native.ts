/**
 * Typed view of the N-API addon (native/). The addon is context-aware: the
 * main thread and every worker load their own instance.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { ADDON_PATH } from './paths.js';
import { MeshprobeError } from './errors.js';

export interface ProgramInfo {
  name: string;
  section: string;
  autoload: boolean;
}
export interface ProgramStats {
  name: string;
  id: number;
  runTimeNs: bigint;
  runCount: bigint;
}

export interface BpfObject {
  /** a const volatile setting: an integer, or the raw bytes of a struct/array (size must match) */
  setGlobal(name: string, value: number | bigint | boolean | Uint8Array): void;
  setMapMaxEntries(map: string, entries: number): void;
  setAutoload(program: string, on: boolean): void;
  programs(): ProgramInfo[];
  load(): void;
  attach(program: string): void;
  /** attaches a cgroup program (its SEC() says ingress/egress/sockops...) to a cgroup v2 directory, as a link */
  attachCgroup(program: string, cgroupPath: string): void;
  /** uprobe (or uretprobe) on `funcName` in the ELF file `binaryPath`, every process */
  attachUprobe(program: string, binaryPath: string, funcName: string, retprobe: boolean): void;
  /** a kretprobe made through tracefs with `maxactive` return slots (libbpf's perf-based ones have the kernel's default, 10 on 2 CPUs) */
  attachKretprobe(program: string, func: string, maxactive: number, tracefs: string): void;
  /** returns missed by this object's kretprobes (no slot free), per tracefs event, while they are attached */
  kretprobeMisses(): Record<string, number>;
  detachAll(): void;
  mapFd(map: string): number;
  readPercpuArray(map: string, count: number): bigint[];
  /**
   * Every entry of a per-CPU hash map whose value is a run of u64 words: the
   * raw key bytes, and each word summed over the possible CPUs.
   */
  readPercpuHash(mapName: string): [Uint8Array, BigUint64Array][];
  /**
   * Takes one key out of a per-CPU hash map of u64 words: its value, each
   * word summed over the possible CPUs, or null when the key is not there.
   * Atomic where the kernel can (5.14+); before, a lookup then a delete
   * (increments between the two are lost).
   */
  mapLookupAndDelete(mapName: string, key: Uint8Array): BigUint64Array | null;
  programStats(): ProgramStats[];
  /** runs a loaded raw_tp program once on `cpu` (BPF_PROG_TEST_RUN); returns its return value */
  testRun(program: string, cpu: number): number;
  /** bpf_map_update_elem(BPF_ANY); key and value sizes must match the map's */
  mapUpdate(map: string, key: Uint8Array, value: Uint8Array): void;
  close(): void;
}

export interface PerfReader {
  start(onData: () => void): void;
  drain(dest: Uint8Array): number;
  backlog(): number;
  close(): void;
}

export interface Addon {
  BpfObject: new (path: string, opts?: { btfCustomPath?: string }) => BpfObject;
  PerfReader: new (mapFd: number, cpus: number[], pagesPerCpu: number, wakeupBytes: number) => PerfReader;
  fentryCanAttach(func: string): { ok: boolean; errno: number; reason?: string };
  /** can this kernel load BPF atomic instructions (5.12+)? */
  atomicsSupported(): boolean;
  libbpfVersion(): string;
  possibleCpus(): number;
  setDebug(on: boolean): void;
  /**
   * prctl(PR_SET_PDEATHSIG): the kernel sends `signal` to this process when its parent exits.
   * `alive` is false if the parent is no longer `expectedParent` (it died before the call).
   */
  setParentDeathSignal(signal: number, expectedParent: number): { parent: number; alive: boolean };
}

let cached: Addon | undefined;

export function addon(): Addon {
  if (cached) return cached;
  if (!existsSync(ADDON_PATH)) {
    throw new MeshprobeError('MP_NOT_BUILT', `native addon not built (${ADDON_PATH}): run npm run build`);
  }
  const require = createRequire(import.meta.url);
  cached = require(ADDON_PATH) as Addon;
  return cached;
}
