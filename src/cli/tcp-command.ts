/**
 * The command line of the probes built on the TCP socket programs
 * (latency-probe, connection-tracker): the options they share on top of
 * every probe's, their parsing, and the run. Each command is its probe
 * definition, its outputs and its report.
 */
import type { Command } from 'commander';
import type { LatencyOptions } from '../probes/latency.js';
import type { PipelineOptions, ProbeDefinition, SessionResult } from '../pipeline/session.js';
import type { ServiceDef } from '../filter/services.js';
import type { SamplingInfo } from '../export/model.js';
import {
  addProbeOptions,
  applyCommon,
  checkRequested,
  filtersFrom,
  newCommand,
  outputFrom,
  runProbeCommand,
  type CommonProbeFlags,
} from './program.js';
import { parsePositiveInt } from './options.js';
import type { ProbeOutputs } from './run-probe.js';
import { DEFAULT_PROXY_COMMS, parseProxyComms } from '../report/overhead.js';

interface Flags extends CommonProbeFlags {
  socketTableSize: string;
  proxyComm: string;
  inferRoles: boolean;
}

export interface TcpCommand<F, R> {
  name: string;
  description: string;
  defaultOutput: string;
  def: ProbeDefinition<LatencyOptions>;
  outputs(services: readonly ServiceDef[]): ProbeOutputs<F>;
  buildReport(
    r: SessionResult,
    ctx: {
      filters: string[];
      services: readonly ServiceDef[];
      proxyComms: readonly string[];
      sampling: SamplingInfo;
      exports?: Record<string, unknown>;
    },
  ): R;
  summary: (report: R) => string;
  /** pipeline defaults of this command (e.g. a larger service table) */
  pipelineDefaults?: Partial<PipelineOptions>;
}

export function tcpProbeCommand<F, R>(c: TcpCommand<F, R>): Command {
  return addProbeOptions(newCommand(c.name, c.description), c.defaultOutput, c.pipelineDefaults)
    .option('--socket-table-size <n>', 'sockets the kernel side tracks at once (LRU)', '65536')
    .option('--no-infer-roles', 'ignore connections opened before the probe started')
    .option(
      '--proxy-comm <names>',
      'process names of sidecar proxies, for overhead_analysis (comma list)',
      DEFAULT_PROXY_COMMS.join(','),
    )
    .action(async (f: Flags) => {
      applyCommon(f);
      const out = outputFrom(f);
      const { filter, services } = filtersFrom(f);
      const proxyComms = parseProxyComms(f.proxyComm);
      const options: LatencyOptions = {
        filter,
        socketTableSize: parsePositiveInt(f.socketTableSize, '--socket-table-size', 1 << 24),
        inferRoles: f.inferRoles,
      };
      if (checkRequested(f, c.def, options)) return;
      await runProbeCommand(f, out, {
        def: c.def,
        options,
        reporting: () => ({
          outputs: c.outputs(services),
          buildReport: (r, extra) => c.buildReport(r, { filters: filter.expressions, services, proxyComms, ...extra }),
          summary: c.summary,
        }),
      });
    });
}
