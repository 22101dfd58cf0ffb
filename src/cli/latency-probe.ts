#!/usr/bin/env node
/** latency-probe: request/response latency of every TCP connection on the host. */
import { latencyProbe, type LatencyOptions } from '../probes/latency.js';
import { buildLatencyReport, summaryLine } from '../report/latency.js';
import { addProbeOptions, applyCommon, main, newCommand, pipelineFrom, type CommonProbeFlags } from './program.js';
import { checkWritable, parseDuration, parseFilters, parsePositiveInt } from './options.js';
import { printCheck, runProbe } from './run-probe.js';

interface Flags extends CommonProbeFlags {
  socketTableSize: string;
  inferRoles: boolean;
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
    const filters = parseFilters(f.filter ?? []);
    const options: LatencyOptions = {
      port: filters.port,
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
      output: f.output,
      quiet: f.quiet,
      buildReport: (r) => buildLatencyReport(r, { filters: { ...filters } }),
      summary: summaryLine,
    });
  });

await main(cmd);
