#!/usr/bin/env node
/** connection-tracker: TCP set-up and TLS handshake time, failed connects, connection reuse and pools. */
import { connectionProbe } from '../probes/connections.js';
import { buildConnectionReport, connectionOutputs, connectionSummary } from '../report/connections.js';
import { main } from './program.js';
import { tcpProbeCommand } from './tcp-command.js';

await main(
  tcpProbeCommand({
    name: 'connection-tracker',
    description:
      'Measures TCP set-up and TLS handshake time, failed connects by cause, connection reuse and pool efficiency, in the kernel.',
    defaultOutput: 'conns.json',
    def: connectionProbe,
    outputs: connectionOutputs,
    buildReport: buildConnectionReport,
    summary: connectionSummary,
    // every service has a series per figure (set-up, TLS, lifetime, ...) beside its latency
    pipelineDefaults: { serviceCapacity: 2048 },
  }),
);
