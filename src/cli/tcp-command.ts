/**
 * The command line of the probes built on the TCP socket programs
 * (latency-probe, connection-tracker): the options they share on top of
 * every probe's, their parsing, and the run. Each command is its probe
 * definition, its outputs and its report.
 */
import type { Command } from 'commander';
import { defaultSocketTableSize, type LatencyOptions } from '../probes/latency.js';
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
import { parseDuration, parsePositiveInt } from './options.js';
import type { ProbeOutputs } from './run-probe.js';
import { DEFAULT_PROXY_COMMS, parseProxyComms } from '../report/overhead.js';
import { DEFAULT_MAX_PODS, DEFAULT_POD_GRACE_MS, PodNames } from '../k8s/names.js';

interface Flags extends CommonProbeFlags, PodFlags {
  socketTableSize?: string;
  proxyComm: string;
  inferRoles: boolean;
}

/** The pod-name options every probe has (src/k8s/names.ts). */
export interface PodFlags {
  maxPods: string;
  podGracePeriod: string;
}

export function addPodOptions(cmd: Command): Command {
  return cmd
    .option(
      '--max-pods <n>',
      'Kubernetes pods with their own namespace/pod/container labels; the rest are pod="other" (and counted)',
      String(DEFAULT_MAX_PODS),
    )
    .option(
      '--pod-grace-period <time>',
      "how long a deleted pod's series are still exported (its log directory gone): 30s, 2m",
      `${String(DEFAULT_POD_GRACE_MS / 1000)}s`,
    );
}

/** The run's pod names: one per run, so its caches hold (the kubelet's directories: MESHPROBE_PODS_DIR, MESHPROBE_CONTAINERS_DIR). */
export function podNamesFrom(f: PodFlags): PodNames {
  return new PodNames({
    maxPods: parsePositiveInt(f.maxPods, '--max-pods', 1_000_000),
    graceMs: Math.round(parseDuration(f.podGracePeriod, '--pod-grace-period') * 1000),
  });
}

export interface TcpCommand<F, R> {
  name: string;
  description: string;
  defaultOutput: string;
  def: ProbeDefinition<LatencyOptions>;
  outputs(services: readonly ServiceDef[], pods: PodNames): ProbeOutputs<F>;
  buildReport(
    r: SessionResult,
    ctx: {
      filters: string[];
      services: readonly ServiceDef[];
      proxyComms: readonly string[];
      pods: PodNames;
      sampling: SamplingInfo;
      exports?: Record<string, unknown>;
    },
  ): R;
  summary: (report: R) => string;
  /** pipeline defaults of this command (e.g. a larger service table) */
  pipelineDefaults?: Partial<PipelineOptions>;
}

export function tcpProbeCommand<F, R>(c: TcpCommand<F, R>): Command {
  return addPodOptions(addProbeOptions(newCommand(c.name, c.description), c.defaultOutput, c.pipelineDefaults))
    .option(
      '--socket-table-size <n>',
      'sockets the kernel side tracks at once (LRU; default: 4 per --max-connections row, at least 4096)',
    )
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
      const pods = podNamesFrom(f);
      const options: LatencyOptions = {
        filter,
        socketTableSize:
          f.socketTableSize === undefined
            ? defaultSocketTableSize(parsePositiveInt(f.maxConnections, '--max-connections', 65536))
            : parsePositiveInt(f.socketTableSize, '--socket-table-size', 1 << 24),
        inferRoles: f.inferRoles,
      };
      if (checkRequested(f, c.def, options)) return;
      await runProbeCommand(f, out, {
        def: c.def,
        options,
        reporting: () => ({
          outputs: c.outputs(services, pods),
          buildReport: (r, extra) =>
            c.buildReport(r, { filters: filter.expressions, services, proxyComms, pods, ...extra }),
          summary: c.summary,
        }),
      });
    });
}
