/**
 * The kernel against the mesh: for each service of analyze-latency's report,
 * the eBPF views' quantiles beside those Istio or Cilium reported, the
 * differences with their likely causes, and what could not be matched.
 */
import { html, type Html } from '../html.js';
import { arr, isObj, num, obj, str, type Obj } from '../read.js';
import { columnChart, type BarSeries } from '../charts/bars.js';
import { fmtMs, fmtCount, tickMs } from '../format.js';
import { EBPF_COLORS, MESH_COLORS } from '../palette.js';
import { grid, note, section, table, type ReportInputs, type Section } from '../section.js';

const QUANTILES = [['p50_ms', 'p50'], ['p90_ms', 'p90'], ['p99_ms', 'p99'], ['mean_ms', 'mean']] as const;

/** At most this many services get a chart; the differences table has them all. */
export const MAX_COMPARE_CHARTS = 12;

interface Source extends BarSeries {
  fig: Obj;
  bounds: number[];
}

/** The mesh histogram bucket holding a value: its bounds, which bound the mesh's answer. */
export function bucketAround(bounds: readonly number[], v: number): [number, number] | null {
  if (bounds.length === 0) return null;
  const sorted = [...bounds].sort((a, b) => a - b);
  let lo = 0;
  for (const b of sorted) {
    if (v <= b + 1e-12) return [lo, b];
    lo = b;
  }
  return [lo, Infinity];
}

function sourcesOf(svc: Obj): Source[] {
  const out: Source[] = [];
  arr(svc.ebpf).filter(isObj).forEach((e, i) => {
    const view = str(e.view) ?? '?';
    out.push({ key: `ebpf ${view}`, label: `eBPF ${view} view (${str(e.probe_service) ?? '?'})`, color: EBPF_COLORS[i % EBPF_COLORS.length], fig: e, bounds: [] });
  });
  arr(svc.mesh).filter(isObj).forEach((m, i) => {
    const source = str(m.source) ?? 'mesh';
    const reporter = str(m.reporter) ?? '';
    out.push({
      key: `${source} ${reporter}`.trim(), label: `${source}${reporter ? ` · ${reporter}` : ''}`, color: MESH_COLORS[i % MESH_COLORS.length], fig: m,
      bounds: arr(m.bucket_bounds_ms).map(num).filter((x): x is number => x !== null),
    });
  });
  return out;
}

export function compareChart(svc: Obj): Html {
  const name = str(svc.service) ?? '?';
  const sources = sourcesOf(svc);
  const values = QUANTILES.map(([f]) => sources.map((s) => num(s.fig[f])));
  const pos = values.flat().filter((v): v is number => v !== null && v > 0);
  const log = pos.length > 0 && Math.max(...pos) / Math.min(...pos) > 20;
  const coarse = sources.filter((s) => s.bounds.length > 0).map((s) => {
    const p99 = num(s.fig.p99_ms);
    const b = p99 !== null ? bucketAround(s.bounds, p99) : null;
    return b ? `${s.label}'s p99 lies in its bucket ${fmtMs(b[0])}–${Number.isFinite(b[1]) ? fmtMs(b[1]) : '+Inf'}` : '';
  }).filter(Boolean);
  return columnChart({
    chart: 'compare',
    instance: name,
    title: name,
    subtitle: 'eBPF vs mesh',
    categories: QUANTILES.map(([f, l]) => ({ key: f.replace('_ms', ''), label: l })),
    series: sources,
    values,
    mode: 'grouped',
    log,
    valueLabel: `latency${log ? ' (log scale)' : ''}`,
    format: tickMs,
    tip: (c, s, v) => {
      const src = sources.find((x) => x.key === s.key)!;
      const b = bucketAround(src.bounds, v);
      return `${s.label} ${c.label}: ${fmtMs(v)}${b ? ` (mesh bucket ${fmtMs(b[0])}–${Number.isFinite(b[1]) ? fmtMs(b[1]) : '+Inf'})` : ''}; ${fmtCount(num(src.fig.requests))} requests`;
    },
    caption: coarse.length ? `${coarse.join('; ')}: a mesh quantile is interpolated inside such a bucket.` : undefined,
    alt: `Latency quantiles of ${name} as the kernel and the mesh saw them`,
    data: { service: name },
    height: 260,
  });
}

export function compareSection(inputs: ReportInputs): Section | undefined {
  const input = inputs.compare;
  if (!input) return undefined;
  const rep = input.report;
  const services = arr(rep.services).filter(isObj);
  const notes = arr(rep.notes).map(str).filter((s): s is string => !!s);
  const ins = obj(rep.inputs);
  const diffs = services.flatMap((s) => arr(s.differences).filter(isObj).map((d) => ({ service: str(s.service) ?? '?', d })));
  const shown = services.filter((s) => arr(s.ebpf).length + arr(s.mesh).length > 0).slice(0, MAX_COMPARE_CHARTS);
  return section('compare', 'eBPF vs mesh',
    html`<p class="lead">From analyze-latency: ${Object.entries(ins).filter(([, v]) => str(v)).map(([k, v]) => `${k.replace(/_/g, ' ')} ${str(v)}`).join('; ') || 'no inputs named'}.</p>`,
    shown.length ? grid(...shown.map(compareChart)) : note('The analysis matched no service between the probe and the mesh.', 'warn'),
    services.length > shown.length ? note(`Charts for ${shown.length} of ${services.length} services; the table has all differences.`, 'info') : '',
    diffs.length ? table('differences', [
      { head: 'service', cell: (r) => html`<span class="name">${r.service}</span>` },
      { head: 'source', cell: (r) => `${str(r.d.source) ?? ''} ${str(r.d.reporter) ?? ''}` },
      { head: 'quantile', cell: (r) => str(r.d.quantile) ?? '' },
      { head: 'eBPF', cell: (r) => fmtMs(num(r.d.ebpf_ms)), num: true },
      { head: 'mesh', cell: (r) => fmtMs(num(r.d.mesh_ms)), num: true },
      { head: 'mesh − eBPF', cell: (r) => { const v = num(r.d.diff_ms); return v === null ? '–' : `${v > 0 ? '+' : ''}${fmtMs(v)}`; }, num: true },
      { head: 'likely cause', cell: (r) => str(r.d.likely_cause) ?? '' },
    ], diffs, 'Differences') : '',
    notes.length ? html`<h3>Notes from the analysis</h3><ul class="notes">${notes.map((n) => html`<li>${n}</li>`)}</ul>` : '',
  );
}
