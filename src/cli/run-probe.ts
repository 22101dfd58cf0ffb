/**
 * What every probe command does once its options are parsed: --check, the
 * outputs (bind the Prometheus port, check InfluxDB is reachable) before
 * anything is loaded, start the session, then every aggregation interval
 * the stream line or the InfluxDB points, sampling, the live progress line;
 * stop on --duration, a signal, a closed stream or an error; build and write
 * the report. A signal or an error never loses what was measured.
 */
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
import type { ProbeOutputs, SamplingInfo } from '../export/model.js';

export type { ProbeOutputs };
import { JsonStream } from '../export/stream.js';
import { InfluxExporter, checkInfluxReachable, type InfluxOptions } from '../export/influx.js';
import { PrometheusExporter } from '../export/prometheus.js';
import { Progress } from './progress.js';
import { VERSION } from './version.js';

export type Format = 'json' | 'json-stream' | 'influx' | 'prometheus';
export const FORMATS: Format[] = ['json', 'json-stream', 'influx', 'prometheus'];

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

export async function runProbe<O, F, R>(o: RunOptions<O, F, R>): Promise<void> {
  // signals first: one that arrives while the programs load stops the run as soon as it has started
  const ac = new AbortController();
  let stopReason = 'duration';
  const stop = (why: string) => {
    if (!ac.signal.aborted) {
      stopReason = why;
      ac.abort();
    }
  };
  const onSignal = (sig: NodeJS.Signals) => {
    if (ac.signal.aborted) {
      log.warn(`${sig} again: exiting without waiting`);
      process.exit(130);
    }
    stop(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const { out, outputs } = o;
  const sampler = out.sampleRate === 'auto' ? new AutoSampler(out.maxEventRate) : undefined;
  /** sampling as a span reports it: the changes made after the first `since` (by count: times are rounded) */
  const sampling = (since = 0): SamplingInfo =>
    sampler
      ? {
          mode: 'auto',
          rate: sampler.rate,
          change_count: sampler.changeCount,
          changes: sampler.changes.slice(Math.max(0, sampler.changes.length - (sampler.changeCount - since))),
        }
      : { mode: 'fixed', rate: out.sampleRate as number };

  // outputs that can fail are set up before anything is loaded
  let session: RunningSession | undefined;
  let influx: InfluxExporter | undefined;
  let prom: PrometheusExporter | undefined;
  let stream: JsonStream | undefined;
  const startedAt = new Date();
  const closeOutputs = async () => {
    await prom?.close();
    prom = undefined;
    stream?.close();
    stream = undefined;
    if (influx) {
      const i = influx;
      influx = undefined;
      return i.close(INFLUX_CLOSE_TIMEOUT_MS);
    }
    return undefined;
  };
  try {
    if (out.format === 'influx') {
      await checkInfluxReachable(out.influx!);
      influx = new InfluxExporter(out.influx!);
    } else if (out.format === 'prometheus') {
      prom = new PrometheusExporter({
        port: out.prometheus!.port,
        host: out.prometheus!.host,
        le: out.prometheus!.le,
        version: VERSION,
        collect: () => {
          const s = session;
          // scraped while the programs load: nothing measured yet, an empty set (build_info only)
          if (!s)
            return {
              probe: o.def.name,
              host: os.hostname(),
              start: startedAt,
              end: new Date(),
              cumulative: true,
              histograms: [],
              counters: [],
              gauges: [],
            };
          return outputs.metricSet(
            outputs.read(s.state, s.kernelStats(), s.maps),
            { start: startedAt, end: new Date(), cumulative: true },
            sampling(),
          );
        },
      });
      await prom.start();
    } else if (out.format === 'json-stream') {
      stream = new JsonStream(out.output);
    }
    session = await startSession(
      o.def,
      o.probeOptions,
      o.pipeline,
      sampler ? sampler.rate : (out.sampleRate as number),
    );
  } catch (e) {
    await closeOutputs();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    throw e;
  }
  const s = session;
  const t0 = process.hrtime.bigint();
  const sinceStart = () => Number(process.hrtime.bigint() - t0) / 1e9;
  log.info(
    `${o.def.name}: measuring${o.durationS ? ` for ${o.durationS} s` : ' until Ctrl-C (SIGINT) or SIGTERM'}` +
      (prom ? `; metrics at http://${out.prometheus!.host}:${out.prometheus!.port}/metrics` : ''),
  );

  // every aggregation interval: the stream line or the InfluxDB points
  let prev: F | undefined;
  let intervalStart = new Date();
  let changesBefore = 0; // the sampler's changes made before the current interval
  let seq = 0;
  let outputError: MeshprobeError | undefined;
  const emitInterval = (cur: F, end: Date) => {
    const delta = outputs.diff(cur, prev);
    prev = cur;
    const span = { start: intervalStart, end, seq: seq++ };
    const sampled = sampling(changesBefore);
    intervalStart = end;
    changesBefore = sampler?.changeCount ?? 0;
    if (stream && !stream.write(outputs.interval(delta, span, sampled))) {
      if (stream.failed) {
        outputError = new MeshprobeError('MP_OUTPUT', `${stream.closed} to ${out.output}`);
        stop('error');
      } else {
        log.info(`${o.def.name}: stopping: ${stream.closed}`);
        stop('output closed');
      }
    }
    influx?.write(outputs.metricSet(delta, { ...span, cumulative: false }, sampled));
  };

  const progress = (out.progress ?? process.stderr.isTTY) && !o.quiet ? new Progress(o.durationS) : undefined;
  const timers: NodeJS.Timeout[] = [];
  let watchFailed = false;
  let result: SessionResult;
  try {
    if (stream || influx)
      timers.push(
        setInterval(
          () => emitInterval(outputs.read(s.state, s.kernelStats(), s.maps), new Date()),
          out.intervalS * 1000,
        ),
      );
    // every second: the sampler and the live line
    let lastStats = s.kernelStats();
    let lastTick = process.hrtime.bigint();
    let lastProgress: F | undefined;
    timers.push(
      setInterval(() => {
        if (sampler) {
          const now = process.hrtime.bigint();
          const stats = s.kernelStats();
          const a = outputs.demand(stats),
            b = outputs.demand(lastStats);
          const seconds = Number(now - lastTick) / 1e9;
          lastStats = stats;
          lastTick = now;
          const next = sampler.tick({ seen: a.seen - b.seen, lost: a.lost - b.lost, seconds }, sinceStart());
          if (next !== undefined) {
            s.setSampleRate(next);
            const c = sampler.changes[sampler.changes.length - 1];
            log.info(`sample rate ${c.from} -> ${c.to}: ${c.reason}`);
          }
        }
        if (outputs.watch) {
          try {
            outputs.watch(s.state, s.kernelStats(), s.maps);
          } catch (e) {
            if (!watchFailed) log.warn(`${o.def.name}: ${(e as Error).message} (names may be missing from the report)`);
            watchFailed = true;
          }
        }
        if (progress) {
          const cur = outputs.read(s.state, s.kernelStats(), s.maps);
          const recent = outputs.progress(outputs.diff(cur, lastProgress));
          lastProgress = cur;
          progress.update({ ...outputs.progress(cur), recent, rate: sampling().rate });
        }
      }, 1000),
    );
    timers.push(
      setInterval(() => {
        if (s.error()) stop('error');
      }, 200),
    );
    if (log.enabled('debug')) {
      timers.push(
        setInterval(
          () => log.debug('pipeline counters', { ...readCounters(s.state), kernel: s.kernelStats().map(Number) }),
          5000,
        ),
      );
    }
    try {
      await waitFor(o.durationS, ac.signal);
    } catch {
      // aborted by a signal, a closed stream or a worker error: stop and report what was measured
    }
  } finally {
    for (const t of timers) clearInterval(t);
    progress?.end();
    log.debug(`stopping (${stopReason})`);
    try {
      result = await s.stop();
    } catch (e) {
      await closeOutputs();
      throw e;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
  log.debug('pipeline totals', {
    ...result.pool,
    ...readCounters(result.state),
    kernel: result.kernelStats.map(Number),
  });

  let report: R;
  let where: string | undefined;
  try {
    // the last (partial) interval, then the exporters' own accounting
    if ((stream && !stream.closed) || influx)
      emitInterval(outputs.read(result.state, result.kernelStats, result.maps), result.endedAt);
    const exports: Record<string, unknown> = {};
    if (stream) exports.json_stream = { lines: stream.lines, ...(stream.closed ? { closed: stream.closed } : {}) };
    if (prom) exports.prometheus = prom.stats();
    const stillStreaming = stream && !stream.closed ? stream : undefined;
    if (stream && !stillStreaming) stream.close();
    if (stillStreaming) stream = undefined; // closed below, after the summary line
    const influxStats = await closeOutputs();
    if (influxStats) {
      exports.influx = influxStats;
      if (influxStats.points_dropped > 0) {
        log.warn(
          `InfluxDB: ${influxStats.points_dropped} points could not be written${influxStats.last_error ? ` (${influxStats.last_error})` : ''}; the report holds every figure`,
        );
      }
    }
    report = o.buildReport(result, {
      sampling: sampling(),
      exports: Object.keys(exports).length ? exports : undefined,
    });
    if (stillStreaming) {
      stillStreaming.write({ type: 'summary', ...(report as object) });
      stillStreaming.close();
    } else if (out.format === 'json-stream') {
      // the stream broke: the report goes to a file of its own rather than nowhere
      if (outputError) where = writeJson(path.join(os.tmpdir(), `meshprobe-report-${process.pid}.json`), report);
    } else {
      where = writeJson(out.output, report);
    }
  } finally {
    await closeOutputs();
  }
  if (!o.quiet) {
    process.stderr.write(o.summary(report) + '\n');
    if (where && where !== 'stdout') process.stderr.write(`report: ${where}\n`);
  }
  if (outputError)
    throw new MeshprobeError(outputError.code, `${outputError.message}; the report was saved to ${where}`);
  const err = s.error();
  if (err) throw new MeshprobeError(err.code, `${err.message} (the report above holds what was measured before it)`);
}
