/**
 * What every probe command does once its options are parsed: --check, the
 * outputs (bind the Prometheus port, check InfluxDB is reachable) before
 * anything is loaded, start the session, then every aggregation interval
 * the stream line or the InfluxDB points, sampling, the live progress line;
 * stop on --duration, a signal, a closed stream or an error; build and write
 * the report. A signal or an error never loses what was measured.
 */
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { log } from '../log.js';
import { MeshprobeError } from '../errors.js';
import { preflight, candidateAvailable, tracefsPath, VMLINUX_BTF } from '../kernel/features.js';
import {
  loadProbe,
  startSession,
  type LoadedProbe,
  type PipelineOptions,
  type ProbeDefinition,
  type RunningSession,
  type SessionResult,
} from '../pipeline/session.js';
import { AutoSampler } from '../pipeline/sampling.js';
import { writeJson } from '../report/write.js';
import { readCounters } from '../wasm.js';
import type { MetricSet, ProbeOutputs, SamplingInfo } from '../export/model.js';
import { JsonStream } from '../export/stream.js';
import { MsgpackStream } from '../export/msgpack.js';
import { InfluxExporter, checkInfluxReachable, type InfluxOptions, type InfluxStats } from '../export/influx.js';
import { PrometheusExporter } from '../export/prometheus.js';
import { Progress } from './progress.js';
import { endWithParent, watchParentChain } from './parent-death.js';
import { VERSION } from './version.js';

export type { ProbeOutputs };

export type Format = 'json' | 'json-stream' | 'msgpack' | 'influx' | 'prometheus';
export const FORMATS: Format[] = ['json', 'json-stream', 'msgpack', 'influx', 'prometheus'];
/** The formats written record by record, every interval then the summary (json-stream's content; msgpack: as records) */
const STREAMED: readonly Format[] = ['json-stream', 'msgpack'];

export interface OutputOptions {
  format: Format;
  output: string;
  intervalS: number;
  sampleRate: number | 'auto';
  /** --sample-rate auto: measured exchanges per second to stay under */
  maxEventRate: number;
  influx?: InfluxOptions;
  prometheus?: { port: number; host: string; le?: number[] };
  /** the live progress line: undefined = when stderr is a terminal */
  progress?: boolean;
}

export interface RunOptions<O, F, R> {
  def: ProbeDefinition<O>;
  probeOptions: O;
  pipeline: PipelineOptions;
  durationS?: number;
  out: OutputOptions;
  outputs: ProbeOutputs<F>;
  buildReport(result: SessionResult, extra: { sampling: SamplingInfo; exports?: Record<string, unknown> }): R;
  summary(report: R): string;
  quiet?: boolean;
}

/**
 * --check: what this kernel offers, and what the run would use: the probe's
 * object is really loaded (the verifier has its say, fallbacks included)
 * and closed again, nothing attached. Returns false when the probe cannot run.
 */
export function printCheck<O>(def: ProbeDefinition<O>, options: O): boolean {
  const p = preflight();
  const lines = [
    `kernel: ${p.kernel}`,
    `BTF: ${p.btf ? `yes (${VMLINUX_BTF})` : 'NO: CO-RE programs cannot load'}`,
    `capabilities: CAP_BPF ${p.caps.bpf ? 'yes' : 'no'}, CAP_PERFMON ${p.caps.perfmon ? 'yes' : 'no'}, ` +
      `CAP_NET_ADMIN ${p.caps.net_admin ? 'yes' : 'no'}, CAP_SYS_ADMIN ${p.caps.sys_admin ? 'yes' : 'no'}`,
    `tracefs: ${p.tracefs ?? 'NOT mounted (mount -t tracefs nodev /sys/kernel/tracing)'}`,
    `bpffs: ${p.bpffs ? 'mounted at /sys/fs/bpf' : 'not mounted (mount -t bpf bpf /sys/fs/bpf)'}`,
    `libbpf: ${p.libbpf}`,
    `BPF atomics: ${p.atomics ? `yes (${def.object}.bpf.o)` : `no, before 5.12 (${def.object}.noatomics.bpf.o)`}`,
  ];
  const tracefs = tracefsPath();
  let ok = p.btf && p.caps.can_trace && !!p.tracefs;
  let loaded: LoadedProbe | undefined;
  if (ok) {
    try {
      loaded = loadProbe(def, options);
      loaded.obj.close();
    } catch (e) {
      ok = false;
      lines.push(`load: FAILED: ${(e as Error).message}`);
    }
  }
  for (const slot of Object.keys(def.hooks)) {
    const optional = def.optionalSlots?.includes(slot);
    const used = loaded?.hooks.find((h) => h.slot === slot)?.chosen;
    const verdict = used
      ? `${used.name} (loaded: the kernel verified it)`
      : loaded
        ? optional
          ? 'none (optional: not measured)'
          : 'NONE'
        : 'not loaded';
    lines.push(`hook ${slot}: ${verdict}`);
    for (const c of def.hooks[slot]) {
      const a = candidateAvailable(c, tracefs);
      const refused = loaded?.hooks
        .find((h) => h.slot === slot)
        ?.tried.find((t) => t.name === c.name && !t.ok && /refused/.test(t.why ?? ''));
      const why = refused?.why ?? (a.ok ? undefined : a.why);
      lines.push(`  ${why ? '-' : '+'} ${c.name}${why ? `: ${why}` : ''}`);
    }
  }
  for (const d of loaded?.degraded ?? []) lines.push(`degraded: ${d}`);
  lines.push(ok ? `${def.name}: ready` : `${def.name}: NOT ready (see above)`);
  process.stdout.write(lines.join('\n') + '\n');
  return ok;
}

/** Waits `seconds` (any length: timers cap at 2^31-1 ms, so long waits are chained), or forever. */
async function waitFor(seconds: number | undefined, signal: AbortSignal): Promise<void> {
  const MAX = 2 ** 31 - 1;
  let left = seconds === undefined ? Infinity : seconds * 1000;
  if (signal.aborted) throw new Error('aborted');
  while (left > 0) {
    const step = Math.min(left, MAX);
    await sleep(step, undefined, { signal });
    left -= step;
  }
}

/** How long InfluxDB writes may take at shutdown before what is left is reported lost. */
export const INFLUX_CLOSE_TIMEOUT_MS = 5_000;

/**
 * One run, in its steps: start (the outputs that can fail, then the
 * programs), measure (the exports every interval, the live line) until
 * --duration, a signal, a closed stream or an error, stop, write the report.
 */
export async function runProbe<O, F, R>(o: RunOptions<O, F, R>): Promise<void> {
  // signals first: one that arrives while the programs load stops the run as soon as it has started;
  // they are heard until the report is written
  const stop = new StopControl();
  stop.listen();
  try {
    await run(o, stop);
  } finally {
    stop.unlisten();
  }
}

async function run<O, F, R>(o: RunOptions<O, F, R>, stop: StopControl): Promise<void> {
  // never outlive the command the user started (npx, a wrapper): SIGHUP when the parent exits, and a watch on the parent's parent
  const parent = endWithParent();
  if (parent.armed && 'gone' in parent) {
    throw new MeshprobeError(
      'MP_PARENT_GONE',
      `the command that started ${o.def.name} (PID ${parent.parent}) has already exited: nothing measured; ` +
        'run it with setsid to detach it',
    );
  }
  log.debug(parent.armed ? `SIGHUP when parent ${parent.parent} exits` : `no parent-death signal: ${parent.why}`);
  const unwatch = watchParentChain((why) => {
    log.info(`${o.def.name}: ${why}: stopping`);
    stop.stop('parent chain gone');
  });
  try {
    await measureAndReport(o, stop);
  } finally {
    unwatch?.();
  }
}

async function measureAndReport<O, F, R>(o: RunOptions<O, F, R>, stop: StopControl): Promise<void> {
  const sampling = new Sampling(o.out);
  const exports = new Exports(o, sampling, stop.force);
  const session = await start(o, stop, sampling, exports);
  const t0 = process.hrtime.bigint();
  log.info(
    `${o.def.name}: measuring${o.durationS ? ` for ${o.durationS} s` : ' until Ctrl-C (SIGINT) or SIGTERM'}` +
      (exports.metricsUrl ? `; metrics at ${exports.metricsUrl}` : ''),
  );
  const intervals = new IntervalWriter(o.outputs, sampling, exports, stop);
  const result = await measure({ o, stop, sampling, exports, session, intervals, t0 });
  const { report, where, writeError } = await writeReport(o, result, sampling, exports, intervals);
  // the summary line always, even when the report could not be written anywhere
  if (!o.quiet) {
    process.stderr.write(o.summary(report) + '\n');
    if (where && where !== 'stdout') process.stderr.write(`report: ${where}\n`);
  }
  if (writeError) throw writeError;
  if (exports.error)
    throw new MeshprobeError(exports.error.code, `${exports.error.message}; the report was saved to ${String(where)}`);
  const err = session.error();
  if (err) throw new MeshprobeError(err.code, `${err.message} (the report above holds what was measured before it)`);
}

/** Opens the outputs, then loads and attaches the probe; a failure closes what was opened. */
async function start<O, F, R>(
  o: RunOptions<O, F, R>,
  stop: StopControl,
  sampling: Sampling,
  exports: Exports<O, F, R>,
): Promise<RunningSession> {
  try {
    await exports.open();
    exports.session = await startSession(o.def, o.probeOptions, o.pipeline, sampling.startRate);
    return exports.session;
  } catch (e) {
    await exports.close();
    throw e;
  }
}

/** What the measuring step works with. */
interface Measuring<O, F, R> {
  o: RunOptions<O, F, R>;
  stop: StopControl;
  sampling: Sampling;
  exports: Exports<O, F, R>;
  session: RunningSession;
  intervals: IntervalWriter<O, F, R>;
  /** when measuring began (process.hrtime) */
  t0: bigint;
}

/** Measures until --duration, a signal, a closed stream or an error, then stops the session. */
async function measure<O, F, R>(m: Measuring<O, F, R>): Promise<SessionResult> {
  const { o, session: s, stop } = m;
  const progress = (o.out.progress ?? process.stderr.isTTY) && !o.quiet ? new Progress(o.durationS) : undefined;
  const timers: NodeJS.Timeout[] = [];
  let result: SessionResult;
  try {
    startTimers(m, progress, timers);
    try {
      await waitFor(o.durationS, stop.signal);
    } catch {
      // aborted by a signal, a closed stream or a worker error: stop and report what was measured
    }
  } finally {
    for (const t of timers) clearInterval(t);
    progress?.end();
    log.debug(`stopping (${stop.reason})`);
    result = await stopSession(s, stop, m.exports);
  }
  log.debug('pipeline totals', {
    ...result.pool,
    ...readCounters(result.state),
    kernel: result.kernelStats.map(Number),
  });
  return result;
}

/** The timers of a run, in `timers`: the exports every interval, the per-second work, the error check, debug counters. */
function startTimers<O, F, R>(m: Measuring<O, F, R>, progress: Progress | undefined, timers: NodeJS.Timeout[]): void {
  const { o, session: s, exports } = m;
  if (exports.stream || exports.influx) {
    timers.push(
      setInterval(() => {
        m.intervals.write(o.outputs.read(s.state, s.kernelStats(), s.maps), new Date());
      }, o.out.intervalS * 1000),
    );
  }
  const sinceStart = () => Number(process.hrtime.bigint() - m.t0) / 1e9;
  const second = new EverySecond(o.def.name, o.outputs, s, m.sampling, progress, sinceStart);
  timers.push(
    setInterval(() => {
      second.tick();
    }, 1000),
  );
  timers.push(
    setInterval(() => {
      if (s.error()) m.stop.stop('error');
    }, 200),
  );
  if (log.enabled('debug')) {
    timers.push(
      setInterval(() => {
        log.debug('pipeline counters', { ...readCounters(s.state), kernel: s.kernelStats().map(Number) });
      }, 5000),
    );
  }
}

/** Stops the session (detach, drain, counters); if that fails, the outputs are closed before the error goes on. */
async function stopSession<O, F, R>(
  s: RunningSession,
  stop: StopControl,
  exports: Exports<O, F, R>,
): Promise<SessionResult> {
  try {
    return await s.stop();
  } catch (e) {
    await exports.close();
    throw e;
  }
}

/**
 * The last (partial) interval and the exporters' own accounting, then the
 * report: the stream's summary line, --output, or, when the stream broke, a
 * file of its own rather than nowhere.
 */
async function writeReport<O, F, R>(
  o: RunOptions<O, F, R>,
  result: SessionResult,
  sampling: Sampling,
  exports: Exports<O, F, R>,
  intervals: IntervalWriter<O, F, R>,
): Promise<{ report: R; where?: string; writeError?: Error }> {
  let report: R | undefined;
  try {
    if ((exports.stream && !exports.stream.closed) || exports.influx)
      intervals.write(o.outputs.read(result.state, result.kernelStats, result.maps), result.endedAt);
    const { accounting, summaryStream } = await exports.finish();
    report = o.buildReport(result, { sampling: sampling.info(), exports: accounting });
    if (summaryStream) {
      summaryStream.write({ type: 'summary', ...(report as object) });
      summaryStream.close();
      return { report };
    }
    if (STREAMED.includes(o.out.format)) {
      if (!exports.error) return { report };
      return { report, where: writeJson(path.join(os.tmpdir(), `meshprobe-report-${process.pid}.json`), report) };
    }
    return { report, where: writeJson(o.out.output, report) };
  } catch (e) {
    // built but not written: the caller still prints the summary, then fails with this
    if (report === undefined) throw e;
    return { report, writeError: e instanceof Error ? e : new Error(String(e)) };
  } finally {
    await exports.close();
  }
}

/**
 * How the run stops: --duration, a signal, a closed stream or an error. Signals are heard until
 * the report is written: the first starts the orderly stop; a second says it is under way (a
 * supervisor or an impatient user sends two); a third stops waiting for the outputs (InfluxDB's
 * last writes), and the report is still written with what was measured.
 */
class StopControl {
  private readonly ac = new AbortController();
  private readonly forceAc = new AbortController();
  private signals = 0;
  /** why it stopped, for the debug log */
  reason = 'duration';

  get signal(): AbortSignal {
    return this.ac.signal;
  }

  /** aborted at the third signal: stop waiting for the outputs */
  get force(): AbortSignal {
    return this.forceAc.signal;
  }

  stop(why: string): void {
    if (!this.ac.signal.aborted) {
      this.reason = why;
      this.ac.abort();
    }
  }

  private readonly onSignal = (sig: NodeJS.Signals): void => {
    this.signals++;
    if (this.signals === 1 || !this.ac.signal.aborted) {
      this.stop(sig);
    } else if (this.signals === 2) {
      log.warn(`${sig} again: stopping, the report is being written (a third ${sig} stops waiting for the outputs)`);
    } else if (this.signals === 3) {
      log.warn(`${sig} a third time: not waiting for the outputs; writing the report with what was measured`);
      this.forceAc.abort();
    } else {
      // something is stuck (a file system, the kernel): the user's fourth word is final
      log.warn(`${sig} a fourth time: exiting now, without the report`);
      process.exit(130);
    }
  };

  /**
   * SIGHUP: the parent-death signal (src/cli/parent-death.ts) or a terminal that hung up. It stops
   * the run in order like a first SIGTERM, and is not counted towards the later ones: one Ctrl-C
   * under npx brings SIGINT to node and to npm, and npm's exit brings this.
   */
  private readonly onHangup = (): void => {
    if (!this.ac.signal.aborted) this.stop('SIGHUP');
  };

  listen(): void {
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
    process.on('SIGHUP', this.onHangup);
  }

  unlisten(): void {
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
    process.off('SIGHUP', this.onHangup);
  }
}

/** --sample-rate: a fixed rate, or auto (the sampler and its changes). */
class Sampling {
  readonly sampler: AutoSampler | undefined;
  private readonly fixed: number;

  constructor(out: OutputOptions) {
    this.sampler = out.sampleRate === 'auto' ? new AutoSampler(out.maxEventRate) : undefined;
    this.fixed = out.sampleRate === 'auto' ? 1 : out.sampleRate;
  }

  /** the rate the session starts with */
  get startRate(): number {
    return this.sampler ? this.sampler.rate : this.fixed;
  }

  /** the sampler's changes so far */
  get changeCount(): number {
    return this.sampler?.changeCount ?? 0;
  }

  /** sampling as a span reports it: the changes made after the first `since` (by count: times are rounded) */
  info(since = 0): SamplingInfo {
    const { sampler } = this;
    return sampler
      ? {
          mode: 'auto',
          rate: sampler.rate,
          change_count: sampler.changeCount,
          changes: sampler.changes.slice(Math.max(0, sampler.changes.length - (sampler.changeCount - since))),
        }
      : { mode: 'fixed', rate: this.fixed };
  }
}

/** The --format outputs beside the report: a json-stream, InfluxDB writes, or a Prometheus endpoint to scrape. */
class Exports<O, F, R> {
  stream: JsonStream | undefined;
  influx: InfluxExporter | undefined;
  prom: PrometheusExporter | undefined;
  /** where Prometheus scrapes, once it listens */
  metricsUrl: string | undefined;
  /** the running session, once started: what a scrape reads */
  session: RunningSession | undefined;
  /** the json-stream could not be written (a full disk, ...): the run stops and fails with this */
  error: MeshprobeError | undefined;
  private readonly startedAt = new Date();

  constructor(
    private readonly o: RunOptions<O, F, R>,
    private readonly sampling: Sampling,
    /** aborted at a third signal: close() does not wait for the last writes */
    private readonly force: AbortSignal,
  ) {}

  /** Opens what can fail before anything is loaded: InfluxDB must answer, the Prometheus port must be free. */
  async open(): Promise<void> {
    const { out } = this.o;
    if (out.format === 'influx') {
      assert.ok(out.influx, 'outputFrom sets the options of --format influx');
      await checkInfluxReachable(out.influx);
      this.influx = new InfluxExporter(out.influx);
    } else if (out.format === 'prometheus') {
      assert.ok(out.prometheus, 'outputFrom sets the options of --format prometheus');
      const { port, host, le } = out.prometheus;
      this.prom = new PrometheusExporter({ port, host, le, version: VERSION, collect: () => this.scrape() });
      await this.prom.start();
      this.metricsUrl = `http://${host}:${port}/metrics`;
    } else if (out.format === 'json-stream') {
      this.stream = new JsonStream(out.output);
    } else if (out.format === 'msgpack') {
      this.stream = new MsgpackStream(out.output);
    }
  }

  /** What a Prometheus scrape gets: everything since the start. */
  private scrape(): MetricSet {
    const { def, outputs } = this.o;
    const s = this.session;
    // scraped while the programs load: nothing measured yet, an empty set (build_info only)
    if (!s)
      return {
        probe: def.name,
        host: os.hostname(),
        start: this.startedAt,
        end: new Date(),
        cumulative: true,
        histograms: [],
        counters: [],
        gauges: [],
      };
    return outputs.metricSet(
      outputs.read(s.state, s.kernelStats(), s.maps),
      { start: this.startedAt, end: new Date(), cumulative: true },
      this.sampling.info(),
    );
  }

  /** One interval: a stream line, InfluxDB points. A stream that can take no more stops the run. */
  writeInterval(
    delta: F,
    span: { start: Date; end: Date; seq: number },
    sampled: SamplingInfo,
    stop: StopControl,
  ): void {
    const { def, outputs, out } = this.o;
    const { stream } = this;
    if (stream && !stream.write(outputs.interval(delta, span, sampled))) {
      if (stream.failed) {
        this.error = new MeshprobeError('MP_OUTPUT', `${String(stream.closed)} to ${out.output}`);
        stop.stop('error');
      } else {
        log.info(`${def.name}: stopping: ${String(stream.closed)}`);
        stop.stop('output closed');
      }
    }
    this.influx?.write(outputs.metricSet(delta, { ...span, cumulative: false }, sampled));
  }

  /**
   * Closes the outputs, but a json-stream still open: its summary line goes
   * last. What each output did (exports in the report), and that stream.
   */
  async finish(): Promise<{ accounting?: Record<string, unknown>; summaryStream?: JsonStream }> {
    const exports: Record<string, unknown> = {};
    const { stream, prom } = this;
    if (stream) {
      const closed = stream.closed ? { closed: stream.closed } : {};
      if (stream instanceof MsgpackStream) exports.msgpack = { records: stream.lines, ...closed };
      else exports.json_stream = { lines: stream.lines, ...closed };
    }
    if (prom) exports.prometheus = prom.stats();
    const stillStreaming = stream && !stream.closed ? stream : undefined;
    if (stream && !stillStreaming) stream.close();
    if (stillStreaming) this.stream = undefined; // closed by the caller, after the summary line
    const influxStats = await this.close();
    if (influxStats) {
      exports.influx = influxStats;
      if (influxStats.points_dropped > 0) {
        log.warn(
          `InfluxDB: ${influxStats.points_dropped} points could not be written${influxStats.last_error ? ` (${influxStats.last_error})` : ''}; the report holds every figure`,
        );
      }
    }
    return { accounting: Object.keys(exports).length ? exports : undefined, summaryStream: stillStreaming };
  }

  /** Closes every output still open; InfluxDB's accounting once its last writes are done (or given up). */
  async close(): Promise<InfluxStats | undefined> {
    await this.prom?.close();
    this.prom = undefined;
    this.stream?.close();
    this.stream = undefined;
    if (this.influx) {
      const i = this.influx;
      this.influx = undefined;
      // a third signal: the last writes are not waited for (counted dropped)
      const hurry = () => {
        i.hurry();
      };
      const closing = i.close(INFLUX_CLOSE_TIMEOUT_MS); // first: close() sets the deadline hurry() cuts
      if (this.force.aborted) hurry();
      this.force.addEventListener('abort', hurry, { once: true });
      try {
        return await closing;
      } finally {
        this.force.removeEventListener('abort', hurry);
      }
    }
    return undefined;
  }
}

/** Every aggregation interval: what it added, to the stream and InfluxDB. */
class IntervalWriter<O, F, R> {
  private prev: F | undefined;
  private start = new Date();
  /** the sampler's changes made before the current interval */
  private changesBefore = 0;
  private seq = 0;

  constructor(
    private readonly outputs: ProbeOutputs<F>,
    private readonly sampling: Sampling,
    private readonly exports: Exports<O, F, R>,
    private readonly stop: StopControl,
  ) {}

  /** The interval that ends at `end`, from the cumulative figures then. */
  write(cur: F, end: Date): void {
    const delta = this.outputs.diff(cur, this.prev);
    this.prev = cur;
    const span = { start: this.start, end, seq: this.seq++ };
    const sampled = this.sampling.info(this.changesBefore);
    this.start = end;
    this.changesBefore = this.sampling.changeCount;
    this.exports.writeInterval(delta, span, sampled, this.stop);
  }
}

/** Every second: the sampler's next rate, the probe's watch, the live progress line. */
class EverySecond<F> {
  private lastStats: bigint[];
  private lastTick: bigint;
  private lastProgress: F | undefined;
  private watchFailed = false;

  constructor(
    private readonly name: string,
    private readonly outputs: ProbeOutputs<F>,
    private readonly s: RunningSession,
    private readonly sampling: Sampling,
    private readonly progress: Progress | undefined,
    private readonly sinceStart: () => number,
  ) {
    this.lastStats = s.kernelStats();
    this.lastTick = process.hrtime.bigint();
  }

  tick(): void {
    this.sample();
    this.watch();
    this.showProgress();
  }

  /** --sample-rate auto: the rate for the next second, from the demand and loss of the last one. */
  private sample(): void {
    const { sampler } = this.sampling;
    if (!sampler) return;
    const now = process.hrtime.bigint();
    const stats = this.s.kernelStats();
    const a = this.outputs.demand(stats),
      b = this.outputs.demand(this.lastStats);
    const seconds = Number(now - this.lastTick) / 1e9;
    this.lastStats = stats;
    this.lastTick = now;
    const next = sampler.tick({ seen: a.seen - b.seen, lost: a.lost - b.lost, seconds }, this.sinceStart());
    if (next !== undefined) {
      this.s.setSampleRate(next);
      const c = sampler.changes[sampler.changes.length - 1];
      log.info(`sample rate ${c.from} -> ${c.to}: ${c.reason}`);
    }
  }

  /** The probe's own look around (who owns what), warned about once if it fails. */
  private watch(): void {
    if (!this.outputs.watch) return;
    const { s } = this;
    try {
      this.outputs.watch(s.state, s.kernelStats(), s.maps);
    } catch (e) {
      if (!this.watchFailed) log.warn(`${this.name}: ${(e as Error).message} (names may be missing from the report)`);
      this.watchFailed = true;
    }
  }

  private showProgress(): void {
    if (!this.progress) return;
    const { s, outputs } = this;
    const cur = outputs.read(s.state, s.kernelStats(), s.maps);
    const recent = outputs.progress(outputs.diff(cur, this.lastProgress));
    this.lastProgress = cur;
    this.progress.update({ ...outputs.progress(cur), recent, rate: this.sampling.info().rate });
  }
}
