// The latency-probe report as the tests read it: LatencyReport (src/report/latency.ts) with the parts that it
// leaves as unknown (metrics.services[], metrics.connections[], metrics.overhead_analysis, exports)
// spelled out from the code that writes them, and the lines of a json-stream. Types only: nothing here
// checks a report at run time, the tests' assertions do.
import type { InfluxStats } from '../../src/export/influx.js';
import type { PrometheusExporterStats } from '../../src/export/prometheus.js';
import type { BucketList, RangeLabel } from '../../src/histogram.js';
import type { ConnectionsAged, LatencyMetrics, LatencyReport } from '../../src/report/latency.js';
import type { OverheadAnalysis } from '../../src/report/overhead.js';
import type { PercentileName } from '../../src/report/views.js';

type Role = 'client' | 'server' | 'unknown';

/** One entry of metrics.services (servicesOut() in src/report/latency.ts, without its histogram). */
export interface ServiceEntry {
  service: string;
  role: Role;
  port: number;
  peer?: string | string[];
  requests: number;
  requests_estimated: number;
  percentiles: Record<PercentileName, number> | null;
  mean_ms: number | null;
  min_ms: number | null;
  max_ms: number | null;
  latency_histogram: Record<RangeLabel, number> | null;
  buckets: BucketList;
}

/** One entry of metrics.connections (buildLatencyReport() in src/report/latency.ts). */
export interface ConnectionEntry {
  conn_id: string;
  role: Role;
  role_inferred: boolean;
  local: string;
  remote: string;
  pid: number;
  comm: string;
  netns: number;
  cgroup_id: string;
  cgroup: string | null;
  requests: number;
  percentiles: Record<PercentileName, number> | null;
  mean_ms: number | null;
  min_rtt_ms: number;
  srtt_ms: number;
  bytes_sent: number;
  bytes_received: number;
  closed: boolean;
}

/** report.exports (src/cli/run-probe.ts): each output's own accounting. */
export interface ExportsSection {
  json_stream?: { lines: number; closed?: string };
  prometheus?: PrometheusExporterStats;
  influx?: InfluxStats;
}

/** metrics, of the final report or of one interval. */
export type LatencyMetricsRead = Omit<LatencyMetrics, 'services'> & { services: ServiceEntry[] };

/** A latency-probe JSON report. */
export type LatencyReportRead = Omit<LatencyReport, 'metrics' | 'exports'> & {
  metrics: Omit<LatencyMetricsRead, 'overhead_analysis'> & {
    connections: ConnectionEntry[];
    connections_aged: ConnectionsAged;
    overhead_analysis: OverheadAnalysis;
  };
  exports?: ExportsSection;
};

/** One line of --format json-stream: an interval (latencyIntervalReport()), or the last one, the whole report. */
export type LatencyStreamLine =
  | {
      type: 'interval';
      probe: 'latency-probe';
      report_version: number;
      host: string;
      seq: number;
      start: string;
      end: string;
      duration_seconds: number;
      metrics: LatencyMetricsRead;
    }
  | ({ type: 'summary' } & LatencyReportRead);
