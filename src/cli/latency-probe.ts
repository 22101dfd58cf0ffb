#!/usr/bin/env node
/** latency-probe: request/response latency of every TCP connection on the host. */
import { latencyProbe } from '../probes/latency.js';
import { buildLatencyReport, latencyOutputs, summaryLine } from '../report/latency.js';
import { main } from './program.js';
import { tcpProbeCommand } from './tcp-command.js';

await main(
  tcpProbeCommand({
    name: 'latency-probe',
    description:
      'Measures request/response latency of TCP connections in the kernel: client, server and network views.',
    defaultOutput: 'latency-metrics.json',
    def: latencyProbe,
    outputs: latencyOutputs,
    buildReport: buildLatencyReport,
    summary: summaryLine,
  }),
);
