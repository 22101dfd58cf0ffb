/**
 * connection-tracker: the latency probe's programs (they count the exchanges
 * of each connection, which reuse needs) with the connection figures turned
 * on (bpf/latency.bpf.c measure_connections): TCP set-up time on both sides,
 * failed connects by cause, connection lifetimes, requests per connection
 * and idle gaps, as MP_REC_MEASURE records.
 * Report: src/report/connections.ts.
 */
import type { BpfObject } from '../native.js';
import type { ProbeDefinition } from '../pipeline/session.js';
import { latencyProbe, type LatencyOptions } from './latency.js';

export type ConnectionOptions = LatencyOptions;

export const connectionProbe: ProbeDefinition<ConnectionOptions> = {
  ...latencyProbe,
  name: 'connection-tracker',
  configure(obj: BpfObject, o: ConnectionOptions) {
    latencyProbe.configure(obj, o);
    obj.setGlobal('measure_connections', true);
  },
};
