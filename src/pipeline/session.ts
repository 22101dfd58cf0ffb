/**
 * Runs one probe from start to stop, the same way for every probe:
 * preflight -> choose hooks -> open, configure, load -> start the decoding
 * workers -> attach -> wait -> detach -> final drain -> counters.
 * The probe itself is a ProbeDefinition: its BPF object, its hook choices
 * and its settings.
 */
import { AGE_INTERVAL_MS, ConnectionAger, ServiceAger } from './aging.js';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { addon, type BpfObject, type ProgramStats } from '../native.js';
import { bpfObjectPath } from '../paths.js';
import { EXIT_KERNEL, EXIT_PRIVILEGE, MeshprobeError, errorCode } from '../errors.js';
import { log } from '../log.js';
import {
  attachHook,
  canTraceWithBpf,
  chooseHooks,
  ensureMounts,
  nextChoice,
  refusedProgram,
  VMLINUX_BTF,
  DEFAULT_VMLINUX_BTF,
  type HookCandidate,
  type HookChoice,
} from '../kernel/features.js';
import { createState, type State } from '../wasm.js';
import { onlineCpus } from './cpus.js';
import { WorkerPool, type PoolTotals } from './pool.js';
import { MapAger, mapAgeInterval, type AgeMapSpec, type AgingCounts } from './map-aging.js';

export interface ProbeDefinition<O> {
  /** command name, e.g. "latency-probe" */
  name: string;
  /** build/bpf/<object>.bpf.o */
  object: string;
  /** per slot, the hooks that can serve it, best first */
  hooks: Record<string, HookCandidate[]>;
  /** slots the probe can run without (a warning names what is not measured then) */
  optionalSlots?: string[];
  /** number of MP_STAT_* counters in the object's "stats" map */
  statCount: number;
  /** a raw_tp program that sends the CPU's batch of records (run on each CPU periodically and at stop) */
  flushProgram?: string;
  /** writes the object's settings (const volatile globals, map sizes) before load; `programs`: the programs that will load */
  configure(obj: BpfObject, options: O, programs: ReadonlySet<string>): void;
  /** fills the object's maps after load, before anything is attached */
  afterLoad?(obj: BpfObject, options: O): void;
  /** per-CPU hash maps the probe's figures are read from (kept in the result at stop) */
  countMaps?: string[];
  /** count maps whose idle keys move out of the kernel into user space (src/pipeline/map-aging.ts) */
  ageMaps?(options: O): AgeMapSpec[];
  /** what this kernel makes the probe measure less well, apart from its hook choices (said at start, in the report) */
  kernelNotes?(): string[];
}

/** Per-CPU hash maps as [key, u64 words summed over CPUs] (the probe's own counting in the kernel). */
export interface MapReader {
  percpuHash(name: string): [Uint8Array, BigUint64Array][];
  /** the kernel counters (the stats map), for reading them after the maps */
  stats(): bigint[];
  /** an aged map's keys expired and coarsened so far (undefined: the map is not aged) */
  aging?(name: string): AgingCounts | undefined;
}

export interface PipelineOptions {
  workers: number;
  connCapacity: number;
  serviceCapacity: number;
  pagesPerCpu: number;
  wakeupBytes: number;
  stagingBytes: number;
}

export const PAGE_SIZE = 4096;
/** A ring must hold several 4 KiB record batches (one perf sample each). */
export const MIN_RING_PAGES = 4;

export const DEFAULT_PIPELINE: PipelineOptions = {
  workers: 2,
  connCapacity: 4096,
  serviceCapacity: 512,
  pagesPerCpu: 256, // 1 MiB per CPU
  wakeupBytes: 128 * 1024,
  stagingBytes: 1 << 20,
};

export interface SessionResult {
  state: State;
  hooks: HookChoice[];
  /** what this kernel made the probe measure less well, or not at all (pipeline.degraded in reports) */
  degraded: string[];
  /** calls whose return a kretprobe missed (no return slot free), over the run; null without kretprobes */
  kretprobeMissed: number | null;
  kernelStats: bigint[];
  programs: ProgramStats[];
  pool: PoolTotals;
  startedAt: Date;
  endedAt: Date;
  startNs: bigint;
  endNs: bigint;
  /** the countMaps as they were at stop */
  maps: MapReader;
}

/** The hooks a slot tried, and why each failed: "fexit: EPERM; kprobe: no tracefs". */
const triedText = (c: HookChoice) => c.tried.map((t) => `${t.name}: ${String(t.why)}`).join('; ');

/** Checks what can be checked before anything is loaded, and picks each slot's hook (an optional slot may have none). Throws MeshprobeError. */
export function checkPrerequisites(def: ProbeDefinition<unknown>): HookChoice[] {
  if (!canTraceWithBpf()) {
    throw new MeshprobeError(
      'MP_NO_PRIVILEGE',
      `${def.name} needs root, or CAP_BPF and CAP_PERFMON: run it with sudo`,
      EXIT_PRIVILEGE,
    );
  }
  if (!existsSync(VMLINUX_BTF)) {
    throw new MeshprobeError(
      'MP_NO_BTF',
      `this kernel has no BTF (${VMLINUX_BTF} is missing): use a kernel built with CONFIG_DEBUG_INFO_BTF=y`,
      EXIT_KERNEL,
    );
  }
  const mounts = ensureMounts();
  if (!mounts.tracefs) {
    throw new MeshprobeError(
      'MP_NO_TRACEFS',
      'tracefs is not mounted and could not be mounted: mount -t tracefs nodev /sys/kernel/tracing',
      EXIT_KERNEL,
    );
  }
  const choices = chooseHooks(def.hooks);
  for (const c of choices) {
    if (!c.chosen && def.optionalSlots?.includes(c.slot)) continue; // named in the degradations (loadProbe)
    if (!c.chosen) {
      throw new MeshprobeError('MP_NO_HOOK', `this kernel offers no hook for ${c.slot} (${triedText(c)})`, EXIT_KERNEL);
    }
    log.debug(`hook ${c.slot}: using ${c.chosen.name}`);
  }
  return choices;
}

export interface RunningSession {
  /** resolves when stop() has finished */
  stop(): Promise<SessionResult>;
  state: State;
  hooks: HookChoice[];
  degraded: string[];
  kernelStats(): bigint[];
  /** the probe's countMaps, live */
  maps: MapReader;
  /** measure 1 request in n from now on (bpf/filter.bpf.h sample_rate) */
  setSampleRate(n: number): void;
  error(): MeshprobeError | undefined;
}

/** Writes the sample rate map every probe has (bpf/filter.bpf.h). */
function writeSampleRate(obj: BpfObject, n: number): void {
  const v = new Uint8Array(4);
  new DataView(v.buffer).setUint32(0, Math.max(1, Math.floor(n)), true);
  obj.mapUpdate('sample_rate', new Uint8Array(4), v);
}

/** A slot with the hook it uses. */
export type UsedHook = HookChoice & { chosen: HookCandidate };

const isUsed = (c: HookChoice): c is UsedHook => c.chosen !== undefined;

/** The probe's object loaded into the kernel with the hooks it verified, and what it had to do without. */
export interface LoadedProbe {
  obj: BpfObject;
  hooks: UsedHook[];
  degraded: string[];
  /** the object file, e.g. build/bpf/latency.noatomics.bpf.o */
  path: string;
}

/**
 * Chooses the hooks, opens and configures the object and loads it; a program
 * the verifier refuses moves its slot to the next candidate, or leaves an
 * optional slot out. What was given up is named in `degraded`. `--check`
 * runs this too, so that it says what the run will really use.
 */
export function loadProbe<O>(def: ProbeDefinition<O>, options: O): LoadedProbe {
  const choices = checkPrerequisites(def);
  let hooks = choices.filter(isUsed);
  const degraded = [...(def.kernelNotes?.() ?? [])];
  for (const c of choices) {
    if (!c.chosen) degraded.push(`${c.slot}: not measured (${triedText(c)})`);
  }
  addon().setDebug(log.enabled('debug'));
  // kernels before 5.12 refuse BPF atomics: the build makes a variant without them
  const atomics = addon().atomicsSupported();
  const path = bpfObjectPath(atomics ? def.object : `${def.object}.noatomics`);
  if (!existsSync(path)) throw new MeshprobeError('MP_NOT_BUILT', `BPF object not built (${path}): run npm run build`);
  log.debug(`BPF object ${path}${atomics ? '' : ' (this kernel has no BPF atomics)'}`);

  for (;;) {
    const obj = openConfigured(def, options, path, hooks);
    try {
      obj.load();
      for (const h of hooks) if (h.chosen.degraded) degraded.push(`${h.slot}: ${h.chosen.degraded}`);
      for (const d of degraded) log.warn(d);
      return { obj, hooks, degraded, path };
    } catch (e) {
      obj.close();
      // a hook that exists but whose program this kernel refuses: try the next one for that slot
      const refused = refusedProgram((e as { libbpfLog?: string }).libbpfLog);
      if (!refused) throw asMeshprobeError(e);
      const next = nextChoice(def.hooks, hooks, refused, 'refused by the verifier');
      const optional = hooks.find((h) => h.chosen.programs.includes(refused) && def.optionalSlots?.includes(h.slot));
      if (!next && optional) {
        // an optional measurement this kernel cannot verify: the probe runs without it
        degraded.push(`${optional.slot}: not measured: the kernel refused ${refused} (--log-level debug shows why)`);
        hooks = hooks.filter((h) => h !== optional);
        continue;
      }
      if (!next) throw asMeshprobeError(e);
      const moved = next.find((c, i) => c.chosen !== hooks[i].chosen);
      assert.ok(moved?.chosen, 'nextChoice moves one slot to another hook');
      log.warn(`the kernel refused ${refused}; using ${moved.chosen.name} for ${moved.slot}`);
      hooks = next.filter(isUsed);
    }
  }
}

/**
 * Loads the probe, starts the decoding workers on its perf rings, attaches
 * its hooks and starts the flush timer; what cannot start is undone.
 */
export async function startSession<O>(
  def: ProbeDefinition<O>,
  options: O,
  pipe: PipelineOptions,
  sampleRate = 1,
): Promise<RunningSession> {
  const { obj, hooks, degraded } = loadProbe(def, options);
  let pool: WorkerPool | undefined;
  try {
    def.afterLoad?.(obj, options);
    const ageMaps = def.ageMaps?.(options) ?? [];
    writeSampleRate(obj, sampleRate);
    const state = createState({
      connCapacity: pipe.connCapacity,
      serviceCapacity: pipe.serviceCapacity,
      workers: pipe.workers,
      stagingBytes: pipe.stagingBytes,
    });
    const cpus = onlineCpus();
    pool = await WorkerPool.start({
      memory: state.memory,
      mapFd: obj.mapFd('events'),
      cpus,
      workers: Math.min(pipe.workers, cpus.length),
      pagesPerCpu: pipe.pagesPerCpu,
      // the kernel caps the watermark at the ring's size: wake at a quarter of the ring at most
      wakeupBytes: Math.min(pipe.wakeupBytes, (pipe.pagesPerCpu * PAGE_SIZE) / 4),
    });
    attachHooks(def, obj, hooks, degraded);
    return running(def, { obj, hooks, degraded, state, pool, cpus, ageMaps });
  } catch (e) {
    if (pool) await pool.stop().catch(() => undefined); // before the map its rings belong to is closed
    obj.close();
    throw asMeshprobeError(e);
  }
}

/** Attaches each slot's hook; an optional slot that cannot attach is named in `degraded`, any other fails the start. */
function attachHooks<O>(def: ProbeDefinition<O>, obj: BpfObject, hooks: UsedHook[], degraded: string[]): void {
  for (const h of hooks) {
    try {
      for (const what of attachHook(obj, h.chosen)) log.debug(`attached ${what}`);
    } catch (e) {
      if (!def.optionalSlots?.includes(h.slot)) throw e;
      degraded.push(`${h.slot}: not measured: ${(e as Error).message}`);
      log.warn(`${h.slot} not measured: ${(e as Error).message}`);
    }
  }
}

/** What a started session holds until it stops. */
interface Started {
  obj: BpfObject;
  hooks: UsedHook[];
  degraded: string[];
  state: State;
  pool: WorkerPool;
  cpus: number[];
  ageMaps: AgeMapSpec[];
}

/** The session while it measures: the flush timer runs; stop() ends it once, however often it is called. */
function running<O>(def: ProbeDefinition<O>, started: Started): RunningSession {
  const { obj, pool, state, hooks, degraded } = started;
  const flush = batchFlusher(obj, def.flushProgram, started.cpus);
  const flushTimer = setInterval(flush, FLUSH_INTERVAL_MS);
  const ager = new ConnectionAger(state);
  const svcAger = new ServiceAger(state);
  const ageTimer = setInterval(() => {
    try {
      ager.tick();
      svcAger.tick();
    } catch (e) {
      clearInterval(ageTimer); // a bug: rows stop ageing (the table fills, counted), the measuring goes on
      log.error(`table ageing stopped: ${(e as Error).stack ?? String(e)}`);
    }
  }, AGE_INTERVAL_MS);
  const mapAger = new MapAger(obj, started.ageMaps);
  const mapAgeTimer = started.ageMaps.length
    ? setInterval(() => {
        try {
          mapAger.tick();
        } catch (e) {
          clearInterval(mapAgeTimer); // keys stop expiring (the kernel map fills, counted), the measuring goes on
          log.error(`count map ageing stopped: ${(e as Error).stack ?? String(e)}`);
        }
      }, mapAgeInterval(started.ageMaps))
    : undefined;
  const since = { startedAt: new Date(), startNs: process.hrtime.bigint() };
  let stopped: Promise<SessionResult> | undefined;
  return {
    state,
    hooks,
    degraded,
    kernelStats: () => obj.readPercpuArray('stats', def.statCount),
    maps: {
      percpuHash: (name) => mapAger.read(name),
      stats: () => obj.readPercpuArray('stats', def.statCount),
      aging: (name) => mapAger.counts(name),
    },
    setSampleRate: (n) => {
      if (!stopped) writeSampleRate(obj, n);
    },
    error: () => pool.error,
    stop() {
      stopped ??= (async () => {
        const kretprobeMissed = detachCountingMisses(obj);
        clearInterval(flushTimer);
        clearInterval(ageTimer);
        clearInterval(mapAgeTimer);
        const endNs = process.hrtime.bigint();
        const endedAt = new Date();
        const times = { startedAt: since.startedAt, endedAt, startNs: since.startNs, endNs };
        return collect(def, started, flush, times, kretprobeMissed, mapAger);
      })();
      return stopped;
    },
  };
}

/**
 * Detaches every program; first reads the calls whose return a kretprobe
 * missed, while attached (detaching removes the kretprobe events and their
 * counts). Null without kretprobes or when they cannot be read.
 */
function detachCountingMisses(obj: BpfObject): number | null {
  let kretprobeMissed: number | null = null;
  try {
    const misses = Object.values(obj.kretprobeMisses());
    if (misses.some((m) => m < 0))
      log.warn("cannot read the kretprobes' missed returns from kprobe_profile: kretprobe_missed is left out");
    else if (misses.length) kretprobeMissed = misses.reduce((a, b) => a + b, 0);
    if (kretprobeMissed)
      log.warn(
        `kretprobes missed ${kretprobeMissed} returns (calls in flight beyond their return slots): those reads and writes were not seen`,
      );
  } finally {
    obj.detachAll();
  }
  return kretprobeMissed;
}

/** After detach: what is still in flight (running programs, the CPUs' batches, the rings), then the counters; closes the object. */
async function collect<O>(
  def: ProbeDefinition<O>,
  started: Started,
  flush: () => void,
  times: Pick<SessionResult, 'startedAt' | 'endedAt' | 'startNs' | 'endNs'>,
  kretprobeMissed: number | null,
  mapAger: MapAger,
): Promise<SessionResult> {
  const { obj } = started;
  await sleep(20); // programs already running finish their output
  flush(); // what the CPUs' batches still hold
  const totals = await started.pool.stop();
  const kernelStats = obj.readPercpuArray('stats', def.statCount);
  const programs = obj.programStats();
  const kept = new Map((def.countMaps ?? []).map((m) => [m, mapAger.read(m)]));
  const aging = new Map((def.countMaps ?? []).map((m) => [m, mapAger.counts(m)]));
  obj.close();
  const maps: MapReader = {
    percpuHash(name) {
      const v = kept.get(name);
      if (!v) throw new Error(`map ${name} was not kept at stop (countMaps)`);
      return v;
    },
    stats: () => kernelStats,
    aging: (name) => aging.get(name),
  };
  return {
    state: started.state,
    hooks: started.hooks,
    degraded: started.degraded,
    kretprobeMissed,
    kernelStats,
    programs,
    pool: totals,
    ...times,
    maps,
  };
}

/** Opens the object with only the chosen hooks' programs (and the flush program) to load, configured. */
function openConfigured<O>(def: ProbeDefinition<O>, options: O, path: string, hooks: UsedHook[]): BpfObject {
  const obj = new (addon().BpfObject)(path, VMLINUX_BTF !== DEFAULT_VMLINUX_BTF ? { btfCustomPath: VMLINUX_BTF } : {});
  try {
    const wanted = new Set(hooks.flatMap((h) => h.chosen.programs));
    for (const p of obj.programs()) obj.setAutoload(p.name, wanted.has(p.name) || p.name === def.flushProgram);
    def.configure(obj, options, wanted);
    return obj;
  } catch (e) {
    obj.close();
    throw asMeshprobeError(e);
  }
}

/** Records wait in per-CPU batches in the kernel at most this long. */
export const FLUSH_INTERVAL_MS = 100;

/** Runs the flush program on every CPU; a failure is logged once and counted, never thrown. */
function batchFlusher(obj: BpfObject, program: string | undefined, cpus: number[]): () => void {
  let warned = false;
  return () => {
    if (!program) return;
    for (const cpu of cpus) {
      try {
        obj.testRun(program, cpu);
      } catch (e) {
        if (!warned) log.warn(`cannot flush the record batch of CPU ${cpu}: ${(e as Error).message}`);
        warned = true;
      }
    }
  };
}

function asMeshprobeError(e: unknown): MeshprobeError {
  if (e instanceof MeshprobeError) return e;
  const err = e as Error & { libbpfLog?: string };
  const code = errorCode(e) ?? 'MP_INTERNAL';
  const hint = code === 'MP_ERR_BPF_LOAD' ? ' (run with --log-level debug for the verifier log)' : '';
  return new MeshprobeError(
    code,
    `${err.message}${hint}`,
    code.startsWith('MP_ERR_BPF') ? EXIT_KERNEL : 1,
    err.libbpfLog,
  );
}
