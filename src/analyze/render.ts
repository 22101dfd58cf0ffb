/** The human form of an AnalysisReport: one table per service and mesh view, then the likely causes. */
import type { AnalysisReport, EbpfView, MeshView } from './types.js';
import { fmtBound, QUANTILES } from './compare.js';
import { jsonText } from './promapi.js';

const COLS = ['p50', 'p90', 'p99', 'mean'] as const;

function num(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '-';
  return x.toFixed(digits);
}

function signed(x: number | null | undefined): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '-';
  const t = x.toFixed(3);
  return /^-?0\.000$/.test(t) ? '0.000' : (x > 0 ? '+' : '') + t;
}

function count(x: number): string {
  return Number.isInteger(x) ? String(x) : x.toFixed(1);
}

function row(cells: string[], widths: number[]): string {
  return (
    '  ' +
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join('  ')
      .trimEnd()
  );
}

function fig(v: EbpfView | MeshView, c: (typeof COLS)[number]): number | null {
  return c === 'mean' ? v.mean_ms : v[`${c}_ms`];
}

function bucketText(b: [number, number | null] | undefined): string {
  if (!b) return '-';
  return `(${fmtBound(b[0])},${fmtBound(b[1])}]`;
}

export function renderReport(r: AnalysisReport): string {
  const out: string[] = [];
  const w = r.windows ?? {};
  const src = [
    r.inputs.ebpf_probe
      ? `kernel: ${r.inputs.ebpf_probe}${w.ebpf_duration_s !== undefined ? ` (${w.ebpf_duration_s} s${w.ebpf_start ? ` from ${w.ebpf_start}` : ''})` : ''}`
      : undefined,
    r.inputs.istio_metrics ? `istio: ${r.inputs.istio_metrics}` : undefined,
    r.inputs.cilium_metrics ? `cilium: ${r.inputs.cilium_metrics}` : undefined,
    r.inputs.prometheus_url
      ? `prometheus: ${r.inputs.prometheus_url}${w.prometheus_range_s !== undefined ? ` (increase over ${w.prometheus_range_s} s to ${String(w.prometheus_time)})` : ''}`
      : undefined,
  ].filter(Boolean);
  out.push(`analyze-latency: ${src.join('; ')}`);
  out.push(
    'times in ms; mesh quantiles are histogram_quantile as Prometheus computes it, with the bucket (lower,upper] each was interpolated in',
  );
  for (const s of r.services) {
    out.push('');
    const probeNames = [...new Set(s.ebpf.map((e) => `${e.probe_service} ${e.view}`))];
    out.push(
      `${s.service}${probeNames.length ? `  (probe: ${probeNames.join(', ')})` : '  (no probe service matched)'}`,
    );
    for (const m of s.mesh) {
      const diffs = s.differences.filter((d) => d.source === m.source && d.reporter === m.reporter);
      const view = diffs[0]?.ebpf_view;
      const e = s.ebpf.find((x) => x.view === view && x.probe_service === diffs[0]?.probe_service);
      const rows: string[][] = [['', 'requests', 'p50', 'p90', 'p99', 'mean']];
      if (e) {
        const req =
          e.requests_estimated !== undefined && e.requests_estimated !== e.requests
            ? `${count(e.requests)}~${count(e.requests_estimated)}`
            : count(e.requests);
        rows.push([`kernel ${e.view} view`, req, ...COLS.map((c) => num(fig(e, c)))]);
      }
      const qb = m.quantile_buckets_ms ?? {};
      rows.push([
        `${m.source} ${m.reporter}`,
        count(m.requests),
        ...QUANTILES.map(([n]) => `${num(fig(m, n))} ${bucketText(qb[n])}`),
        num(m.mean_ms),
      ]);
      const d = (c: string) => diffs.find((x) => x.quantile === c);
      if (e) {
        rows.push(['mesh - kernel', '', ...COLS.map((c) => signed(d(c)?.diff_ms))]);
        const exp = QUANTILES.map(([n]) => d(n)?.mesh_from_ebpf_ms);
        if (exp.some((x) => x !== undefined))
          rows.push(['kernel in mesh buckets', '', ...exp.map((x) => num(x ?? null)), '']);
      }
      const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
      for (const r of rows) out.push(row(r, widths));
      if (e) for (const x of diffs) out.push(`    ${x.quantile}: ${x.likely_cause}`);
      else out.push('    no probe figures to compare with (see the notes)');
      const bounds = m.bucket_bounds_ms;
      out.push(`    ${m.source} buckets (ms): ${bounds.map((b) => fmtBound(b)).join(' ')} +Inf`);
    }
  }
  if (r.overhead_analysis) {
    const o = r.overhead_analysis;
    const keys = ['total_ms', 'application_ms', 'kernel_processing_ms', 'mesh_processing_ms'].filter((k) => k in o);
    out.push('');
    out.push(
      `probe overhead analysis (means): ${keys.map((k) => `${k} ${o[k] === null ? 'null' : jsonText(o[k])}`).join(', ')}`,
    );
  }
  if (r.notes.length) {
    out.push('');
    out.push('notes:');
    for (const n of r.notes) out.push(`  - ${n}`);
  }
  return out.join('\n') + '\n';
}
