#!/usr/bin/env node
/**
 * analyze-latency: the kernel's view of each service (a latency-probe
 * report) beside what the mesh reported for it (Istio's
 * istio_request_duration_milliseconds, Hubble's
 * hubble_http_request_duration_seconds, from scrapes, saved Prometheus API
 * results or a live Prometheus), the differences and their likely causes.
 */
import { Option } from 'commander';
import { EXIT_RUNTIME, MeshprobeError, usageError } from '../errors.js';
import { loadServices } from '../filter/services.js';
import { writeJson } from '../report/write.js';
import { main, newCommand } from './program.js';
import { checkWritable, parseDuration } from './options.js';
import { analyze, fmt, type AnalyzeOptions, type MeshInput } from '../analyze/compare.js';
import { readProbeReport, type ProbeReport } from '../analyze/ebpf.js';
import { readInput, readReportInput } from '../input.js';
import { queryMesh, queriesFor } from '../analyze/live.js';
import { MESH_METRICS, MeshInputError, readMeshText, requestsOf, type MeshSource } from '../analyze/mesh.js';
import { renderReport } from '../analyze/render.js';
import type { AnalysisReport } from '../analyze/types.js';
import { setLogLevel, log, type LogLevel } from '../log.js';

interface Flags {
  ebpfProbe?: string;
  istioMetrics?: string;
  ciliumMetrics?: string;
  prometheusUrl?: string;
  range?: string;
  time?: string;
  serviceMap: string[];
  services?: string;
  json?: boolean;
  output?: string;
  logLevel?: LogLevel;
}

const DEFAULT_RANGE_S = 300;

function parseServiceMap(pairs: readonly string[]): Map<string, string> {
  const map = new Map<string, string>();
  for (const p of pairs) {
    const i = p.indexOf('=');
    const k = p.slice(0, i).trim();
    const v = p.slice(i + 1).trim();
    if (i < 0 || !k || !v)
      throw usageError(
        `invalid --service-map "${p}": use PROBE_SERVICE=MESH_SERVICE, e.g. --service-map nginx:8080=reviews`,
      );
    if (map.has(k.toLowerCase())) throw usageError(`--service-map ${k} is given twice`);
    map.set(k.toLowerCase(), v);
  }
  return map;
}

/** --time: now, RFC 3339, or unix seconds. */
export function parseTime(s: string): Date {
  if (s === 'now') return new Date();
  if (/^\d+(\.\d+)?$/.test(s)) return new Date(Number(s) * 1000);
  const d = new Date(s);
  if (Number.isNaN(d.getTime()) || !/^\d{4}-\d{2}-\d{2}/.test(s))
    throw usageError(`invalid --time "${s}": use now, 2026-11-26T06:50:08Z or unix seconds`);
  return d;
}

async function run(f: Flags): Promise<void> {
  if (f.logLevel) setLogLevel(f.logLevel);
  const ebpfProbe = checkFlags(f);
  const serviceMap = parseServiceMap(f.serviceMap);
  if (f.output) checkWritable(f.output);
  const defs = f.services ? loadServices(f.services) : [];
  const recorded = readReportInput(ebpfProbe, '--ebpf-probe');
  const probe = readProbeReport(recorded, ebpfProbe, defs);
  const notes: string[] = [];
  if (probe.streamLine)
    notes.push(
      typeof recorded !== 'string'
        ? `${ebpfProbe}: msgpack records; its summary record ${probe.streamLine} is used`
        : `${ebpfProbe}: a json-stream; its summary line ${probe.streamLine} is used`,
    );
  if (defs.length && defs.every((d) => d.ports.length === 0))
    notes.push(`--services ${String(f.services)}: no entry lists ports, so no probe service could be renamed from it`);
  const mesh = readMeshFiles(f, notes);
  const live = f.prometheusUrl ? await queryPrometheus(f.prometheusUrl, f, probe, mesh, notes) : undefined;
  const report = compare({
    probe,
    mesh,
    serviceMap,
    inputs: {
      ebpf_probe: ebpfProbe,
      ...(f.istioMetrics ? { istio_metrics: f.istioMetrics } : {}),
      ...(f.ciliumMetrics ? { cilium_metrics: f.ciliumMetrics } : {}),
      ...(f.prometheusUrl ? { prometheus_url: withoutCredentials(f.prometheusUrl) } : {}),
    },
    live,
    notes,
  });
  if (f.output) {
    writeJson(f.output, report);
    if (f.json) process.stderr.write(`analyze-latency: the report is in ${f.output}\n`);
  }
  if (f.json && !f.output) writeJson('-', report);
  if (!f.json) process.stdout.write(renderReport(report));
}

/** The combinations of options that cannot work; returns --ebpf-probe, which is required. */
function checkFlags(f: Flags): string {
  if (!f.ebpfProbe)
    throw usageError(
      '--ebpf-probe FILE is required: the latency-probe report (JSON, or its json-stream) to compare with the mesh',
    );
  if (!f.istioMetrics && !f.ciliumMetrics && !f.prometheusUrl) {
    throw usageError(
      'nothing to compare with: give --istio-metrics FILE, --cilium-metrics FILE or --prometheus-url URL',
    );
  }
  if (f.prometheusUrl && f.istioMetrics && f.ciliumMetrics) {
    throw usageError(
      '--prometheus-url is not used when both --istio-metrics and --cilium-metrics are given: drop one of them',
    );
  }
  if (!f.prometheusUrl && (f.range !== undefined || f.time !== undefined)) {
    throw usageError(`--${f.range !== undefined ? 'range' : 'time'} is for --prometheus-url`);
  }
  return f.ebpfProbe;
}

/** A URL as reports and messages show it: without user and password. */
const withoutCredentials = (url: string) => url.replace(/\/\/[^@/]*@/, '//');

/** --istio-metrics and --cilium-metrics: scrapes or saved Prometheus API results. */
function readMeshFiles(f: Flags, notes: string[]): MeshInput[] {
  const mesh: MeshInput[] = [];
  for (const [source, file] of [
    ['istio', f.istioMetrics],
    ['cilium', f.ciliumMetrics],
  ] as [MeshSource, string | undefined][]) {
    if (!file) continue;
    const text = readInput(file, `--${source}-metrics`);
    try {
      const set = readMeshText(text, source, file);
      notes.push(...set.notes);
      mesh.push({ source, input: file, ranged: set.ranged, histograms: set.histograms });
    } catch (e) {
      if (e instanceof MeshInputError) throw usageError(e.message);
      throw e;
    }
  }
  return mesh;
}

/**
 * --prometheus-url: the sources not given as files, over the probe's run
 * (or --range, --time); adds them to `mesh`. Returns the range and time.
 */
async function queryPrometheus(
  url: string,
  f: Flags,
  probe: ProbeReport,
  mesh: MeshInput[],
  notes: string[],
): Promise<{ rangeS: number; time: Date }> {
  const rangeS =
    f.range !== undefined
      ? parseDuration(f.range, '--range')
      : probe.durationS !== undefined
        ? Math.max(1, Math.ceil(probe.durationS))
        : DEFAULT_RANGE_S;
  const end =
    probe.startedAt && probe.durationS !== undefined
      ? new Date(probe.startedAt.getTime() + probe.durationS * 1000)
      : undefined;
  const time = f.time !== undefined ? parseTime(f.time) : end && end.getTime() <= Date.now() ? end : new Date();
  const sources = (['istio', 'cilium'] as MeshSource[]).filter(
    (s) => !(s === 'istio' ? f.istioMetrics : f.ciliumMetrics),
  );
  const results = await queryMesh({ url, rangeS, time }, sources);
  const window = `${fmt(rangeS)} s to ${time.toISOString()}`;
  let any = false;
  for (const r of results) {
    log.debug(`prometheus queries for ${r.source}`, { queries: r.queries });
    const withRequests = r.histograms.filter((h) => requestsOf(h) > 0);
    if (r.histograms.length === 0) {
      notes.push(`Prometheus has no ${MESH_METRICS[r.source][0].name} series in the ${window}`);
      continue;
    }
    if (withRequests.length === 0) {
      notes.push(`Prometheus's ${MESH_METRICS[r.source][0].name} series counted no requests in the ${window}`);
      continue;
    }
    any = true;
    mesh.push({ source: r.source, input: url, ranged: true, histograms: r.histograms });
  }
  if (!any && mesh.length === 0) {
    const names = sources.map((s) => MESH_METRICS[s][0].name).join(' or ');
    throw usageError(
      `Prometheus at ${withoutCredentials(url)} has no ${names} requests in the ${window} ` +
        `(query: ${queriesFor(sources[0], rangeS).buckets}): check the time (--time), the range (--range) and that it scrapes the proxies`,
    );
  }
  return { rangeS, time };
}

/** The comparison; nothing to compare is a usage error (the message says how to pair services). */
function compare(opts: AnalyzeOptions): AnalysisReport {
  try {
    return analyze(opts);
  } catch (e) {
    if ((e as { code?: string }).code === 'MP_NOTHING_TO_COMPARE') throw usageError((e as Error).message);
    throw e;
  }
}

const cmd = newCommand(
  'analyze-latency',
  "Compares the kernel's latency (a latency-probe report) with Istio's and Cilium/Hubble's, per service.",
)
  .option('--ebpf-probe <file>', 'latency-probe report (JSON, or a json-stream or msgpack file: its summary)')
  .option(
    '--istio-metrics <file>',
    'istio_request_duration_milliseconds: a scrape (text/OpenMetrics) or a Prometheus API result (JSON)',
  )
  .option(
    '--cilium-metrics <file>',
    'hubble_http_request_duration_seconds: a scrape (text/OpenMetrics) or a Prometheus API result (JSON)',
  )
  .option(
    '--prometheus-url <url>',
    'query a live Prometheus for the sources not given as files, e.g. http://prometheus:9090',
  )
  .option(
    '--range <time>',
    "--prometheus-url: the increase() window, e.g. 60s, 5m (default: the probe run's duration, else 5m)",
  )
  .option(
    '--time <time>',
    '--prometheus-url: evaluation time, now, RFC 3339 or unix seconds (default: the end of the probe run)',
  )
  .addOption(
    new Option(
      '--service-map <probe=mesh>',
      'pair a probe service with a mesh service (repeatable), e.g. nginx:8080=reviews',
    )
      .argParser((v: string, acc: string[]) => [...acc, v])
      .default([], 'none'),
  )
  .option('--services <file>', "the probe's --services file: renames its comm:port services by port")
  .option('--json', 'write the AnalysisReport JSON (to stdout, or to --output)')
  .addOption(new Option('-o, --output <file>', 'write the AnalysisReport JSON to this file'))
  .action(async (f: Flags) => {
    try {
      await run(f);
    } catch (e) {
      if (e instanceof MeshprobeError) throw e;
      const err = e as Partial<Error> & { code?: string }; // anything can be thrown
      const message = err.message ?? String(e);
      if (err.code === 'MP_REPORT_WRITE') throw new MeshprobeError('MP_REPORT_WRITE', message, 1);
      // not foreseen: one line all the same (the stack with --log-level debug)
      throw new MeshprobeError('MP_ANALYZE', message, EXIT_RUNTIME, err.stack);
    }
  });

await main(cmd);
