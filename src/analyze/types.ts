/**
 * The contract between analyze-latency (writes it with --json) and
 * generate-report (reads it with --compare): the kernel's view of each
 * service beside what a mesh (Istio, Cilium/Hubble) reported for it.
 * Times are milliseconds; a figure that could not be computed is null.
 */

/** One source's view of one service. */
export interface ViewFigures {
  /** requests the figures cover (for histograms: the +Inf bucket's count, i.e. _count) */
  requests: number;
  p50_ms: number | null;
  p90_ms: number | null;
  p99_ms: number | null;
  /** _sum / _count where the source has a sum; the eBPF report's mean */
  mean_ms: number | null;
}

export interface EbpfView extends ViewFigures {
  /** which of the probe's views these figures are */
  view: 'client' | 'server';
  /** the probe's own service name (comm:port or a --services name) */
  probe_service: string;
  /** the probe's estimate of the requests when it sampled (--sample-rate); optional */
  requests_estimated?: number;
}

export interface MeshView extends ViewFigures {
  /** 'istio' (istio_request_duration_milliseconds) or 'cilium' (hubble_http_request_duration_seconds) */
  source: 'istio' | 'cilium';
  /** Istio: source | destination; Hubble: client | server */
  reporter: string;
  /** the metric it came from */
  metric: string;
  /** the upper bounds (ms) of the histogram's buckets, +Inf excluded: tells the resolution */
  bucket_bounds_ms: number[];
  /** optional: the mesh's namespace of the service, when its labels say */
  namespace?: string;
  /** optional: the names the mesh's labels give the service (what matching used) */
  aliases?: string[];
  /** optional: the bucket (lower, upper] in ms each quantile was interpolated in; upper null = +Inf */
  quantile_buckets_ms?: Partial<Record<'p50' | 'p90' | 'p99', [number, number | null]>>;
  /** optional: where the figures came from (a file, or the Prometheus URL) */
  input?: string;
}

export interface Difference {
  /** 'istio' | 'cilium' */
  source: string;
  reporter: string;
  quantile: 'p50' | 'p90' | 'p99' | 'mean';
  ebpf_ms: number | null;
  mesh_ms: number | null;
  /** mesh - ebpf */
  diff_ms: number | null;
  /** one sentence: why they differ (bucket resolution, truncation to whole ms, sidecar time, reporter side, ...) */
  likely_cause: string;
  /** optional: the probe's view and service the mesh figure was compared with */
  ebpf_view?: 'client' | 'server';
  probe_service?: string;
  /** optional: the mesh bucket (lower, upper] in ms the quantile was interpolated in; upper null = +Inf */
  mesh_bucket_ms?: [number, number | null];
  /**
   * optional: what the mesh would report for the kernel's own requests (its
   * histogram put in the mesh's buckets, after Istio's truncation to whole ms);
   * only when the probe's report has the raw buckets of exactly these requests
   */
  mesh_from_ebpf_ms?: number | null;
}

export interface ServiceComparison {
  /** the name the comparison is keyed by (the mesh's service name when matched) */
  service: string;
  ebpf: EbpfView[];
  mesh: MeshView[];
  differences: Difference[];
}

export interface AnalysisReport {
  tool: 'analyze-latency';
  report_version: 1;
  generated_at: string;
  inputs: { ebpf_probe?: string; istio_metrics?: string; cilium_metrics?: string; prometheus_url?: string };
  services: ServiceComparison[];
  /** the eBPF report's overhead_analysis, copied when present */
  overhead_analysis?: Record<string, unknown>;
  /** what could not be matched or computed, one sentence each */
  notes: string[];
  /** optional: the time each side covers */
  windows?: {
    /** the probe's start and duration */
    ebpf_start?: string;
    ebpf_duration_s?: number;
    /** --prometheus-url: the range of increase() and the evaluation time */
    prometheus_range_s?: number;
    prometheus_time?: string;
  };
}
