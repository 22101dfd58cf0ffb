/**
 * What every probe command does once its options are parsed: --check, start
 * the session, wait for --duration or a signal, stop, build and write the
 * report. A signal or an error never loses what was measured.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { log } from '../log.js';
import { MeshprobeError } from '../errors.js';
import { preflight, chooseHooks, candidateAvailable, tracefsPath } from '../kernel/features.js';
import { startSession, type PipelineOptions, type ProbeDefinition, type SessionResult } from '../pipeline/session.js';
import { writeJson } from '../report/write.js';
import { readCounters } from '../wasm.js';

export interface RunOptions<O, R> {
  def: ProbeDefinition<O>;
  probeOptions: O;
  pipeline: PipelineOptions;
  durationS?: number;
  output: string;
  buildReport(result: SessionResult): R;
  summary(report: R): string;
  quiet?: boolean;
}

/** --check: what this kernel offers, and the hook each slot would use. */
export function printCheck(def: ProbeDefinition<unknown>): boolean {
  const p = preflight();
  const lines = [
    `kernel: ${p.kernel}`,
    `BTF: ${p.btf ? 'yes (/sys/kernel/btf/vmlinux)' : 'NO: CO-RE programs cannot load'}`,
    `capabilities: CAP_BPF ${p.caps.bpf ? 'yes' : 'no'}, CAP_PERFMON ${p.caps.perfmon ? 'yes' : 'no'}, ` +
      `CAP_NET_ADMIN ${p.caps.net_admin ? 'yes' : 'no'}, CAP_SYS_ADMIN ${p.caps.sys_admin ? 'yes' : 'no'}`,
    `tracefs: ${p.tracefs ?? 'NOT mounted (mount -t tracefs nodev /sys/kernel/tracing)'}`,
    `bpffs: ${p.bpffs ? 'mounted at /sys/fs/bpf' : 'not mounted (mount -t bpf bpf /sys/fs/bpf)'}`,
    `libbpf: ${p.libbpf}`,
    `BPF atomics: ${p.atomics ? `yes (${def.object}.bpf.o)` : `no, before 5.12 (${def.object}.noatomics.bpf.o)`}`,
  ];
  const tracefs = tracefsPath();
  let ok = p.btf && p.caps.can_trace && !!p.tracefs;
  for (const choice of chooseHooks(def.hooks)) {
    ok &&= !!choice.chosen;
    lines.push(`hook ${choice.slot}: ${choice.chosen ? choice.chosen.name : 'NONE available'}`);
    for (const c of def.hooks[choice.slot]) {
      const a = candidateAvailable(c, tracefs);
      lines.push(`  ${a.ok ? '+' : '-'} ${c.name}${a.ok ? '' : `: ${a.why}`}`);
    }
  }
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

export async function runProbe<O, R>(o: RunOptions<O, R>): Promise<void> {
  // signals first: one that arrives while the programs load stops the run as soon as it has started
  const ac = new AbortController();
  let stopReason = 'duration';
  const onSignal = (sig: NodeJS.Signals) => {
    if (ac.signal.aborted) {
      log.warn(`${sig} again: exiting without waiting`);
      process.exit(130);
    }
    stopReason = sig;
    ac.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const session = await startSession(o.def, o.probeOptions, o.pipeline);
  log.info(`${o.def.name}: measuring${o.durationS ? ` for ${o.durationS} s` : ' until Ctrl-C (SIGINT) or SIGTERM'}`);
  const errorWatch = setInterval(() => {
    if (session.error()) {
      stopReason = 'error';
      ac.abort();
    }
  }, 200);
  // --log-level debug: the pipeline's counters every 5 s
  const counterLog = log.enabled('debug')
    ? setInterval(() => log.debug('pipeline counters', { ...readCounters(session.state), kernel: session.kernelStats().map(Number) }), 5000)
    : undefined;

  try {
    await waitFor(o.durationS, ac.signal);
  } catch {
    // aborted by a signal or a worker error: stop and report what was measured
  } finally {
    clearInterval(errorWatch);
    clearInterval(counterLog);
  }
  log.debug(`stopping (${stopReason})`);
  const result = await session.stop();
  log.debug('pipeline totals', { ...result.pool, ...readCounters(result.state), kernel: result.kernelStats.map(Number) });
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  const report = o.buildReport(result);
  const where = writeJson(o.output, report);
  if (!o.quiet) {
    process.stderr.write(o.summary(report) + '\n');
    if (where !== 'stdout') process.stderr.write(`report: ${where}\n`);
  }
  const err = session.error();
  if (err) throw new MeshprobeError(err.code, `${err.message} (the report above holds what was measured before it)`);
}
