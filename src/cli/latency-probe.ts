#!/usr/bin/env node
/** latency-probe: request/response latency of every TCP connection on the host. */
import { latencyProbe, LATENCY_STATS, type LatencyOptions } from '../probes/latency.js';
import {
  buildLatencyReport, diffLatencyFigures, latencyIntervalReport, latencyMetricSet, readLatencyFigures, summaryLine, type LatencyFigures,
} from '../report/latency.js';
import { ms } from '../report/views.js';
import { percentile } from '../histogram.js';
import { addProbeOptions, applyCommon, filtersFrom, main, newCommand, outputFrom, pipelineFrom, type CommonProbeFlags } from './program.js';
import { checkWritable, parseDuration, parsePositiveInt } from './options.js';
import { printCheck, runProbe, type ProbeOutputs } from './run-probe.js';
import type { ServiceDef } from '../filter/services.js';

interface Flags extends CommonProbeFlags {
  socketTableSize: string;
  inferRoles: boolean;
}

const stat = (name: (typeof LATENCY_STATS)[number]) => LATENCY_STATS.indexOf(name);

export function latencyOutputs(services: readonly ServiceDef[]): ProbeOutputs<LatencyFigures> {
  return {
    read: (state, kernelStats) => readLatencyFigures(state, kernelStats, services),
    diff: diffLatencyFigures,
    interval: latencyIntervalReport,
    metricSet: latencyMetricSet,
    progress: (f) => {
      const h = f.client.count > 0 ? f.client : f.server;
      return {
        requests: h.count,
        p50_ms: h.count ? ms(percentile(h, 0.5)) : null,
        p99_ms: h.count ? ms(percentile(h, 0.99)) : null,
        lost: f.kernel.output_failures,
      };
    },
    demand: (k) => ({
      seen: Number(k[stat('emitted')] ?? 0n) + Number(k[stat('unsampled_client')] ?? 0n) + Number(k[stat('unsampled_server')] ?? 0n),
      lost: Number(k[stat('output_failures')] ?? 0n),
    }),
  };
}

const cmd = addProbeOptions(
  newCommand('latency-probe', 'Measures request/response latency of TCP connections in the kernel: client, server and network views.'),
  'latency-metrics.json',
)
  .option('--socket-table-size <n>', 'sockets the kernel side tracks at once (LRU)', '65536')
  .option('--no-infer-roles', 'ignore connections opened before the probe started')
  .action(async (f: Flags) => {
    applyCommon(f);
    if (f.check) {
      process.exitCode = printCheck(latencyProbe as never) ? 0 : 4;
      return;
    }
    const out = outputFrom(f);
    const { filter, services } = filtersFrom(f);
    const options: LatencyOptions = {
      filter,
      socketTableSize: parsePositiveInt(f.socketTableSize, '--socket-table-size', 1 << 24),
      inferRoles: f.inferRoles,
    };
    const pipeline = pipelineFrom(f);
    checkWritable(f.output);
    await runProbe({
      def: latencyProbe,
      probeOptions: options,
      pipeline,
      durationS: f.duration !== undefined ? parseDuration(f.duration, '--duration') : undefined,
      out,
      outputs: latencyOutputs(services),
      quiet: f.quiet,
      buildReport: (r, extra) => buildLatencyReport(r, { filters: filter.expressions, services, ...extra }),
      summary: summaryLine,
    });
  });

await main(cmd);
