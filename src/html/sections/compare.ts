/**
 * The kernel against the mesh: for each service of analyze-latency's report,
 * the eBPF views' quantiles beside those Istio or Cilium reported, the
 * differences with their likely causes, and what could not be matched.
 */
import assert from 'node:assert/strict';
import { html, type Html } from '../html.js';
import { arr, isObj, num, obj, str, type Obj } from '../read.js';
import { columnChart, type BarSeries } from '../charts/bars.js';
import { fmtMs, fmtCount, tickMs } from '../format.js';
import { EBPF_COLORS, MESH_COLORS, tint } from '../palette.js';
import { grid, note, section, table, type ReportInputs, type Section } from '../section.js';

const QUANTILES = [
  ['p50_ms', 'p50'],
  ['p90_ms', 'p90'],
  ['p99_ms', 'p99'],
  ['mean_ms', 'mean'],
] as const;

/** At most this many services get a chart; the differences table has them all. */
export const MAX_COMPARE_CHARTS = 12;

interface Source extends BarSeries {
  fig: Obj;
  bounds: number[];
  /** the bucket each quantile was interpolated in, as analyze-latency says (upper null: +Inf) */
  qbuckets: Record<string, [number, number] | undefined>;
}

function pair(v: unknown): [number, number] | undefined {
  const a = arr(v);
  const lo = num(a[0]);
  if (lo === null || a.length < 2) return undefined;
  return [lo, num(a[1]) ?? Infinity];
}

const bucketText = (b: [number, number]) => `${fmtMs(b[0])}–${Number.isFinite(b[1]) ? fmtMs(b[1]) : '+Inf'}`;

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
  arr(svc.ebpf)
    .filter(isObj)
    .forEach((e, i) => {
      const view = str(e.view) ?? '?';
      out.push({
        key: `ebpf ${view}`,
        label: `eBPF ${view} view (${str(e.probe_service) ?? '?'})`,
        color: EBPF_COLORS[i % EBPF_COLORS.length],
        fig: e,
        bounds: [],
        qbuckets: {},
      });
    });
  arr(svc.mesh)
    .filter(isObj)
    .forEach((m, i) => {
      const source = str(m.source) ?? 'mesh';
      const reporter = str(m.reporter) ?? '';
      const ns = str(m.namespace);
      const qb = obj(m.quantile_buckets_ms);
      out.push({
        key: `${source} ${reporter}`.trim(),
        label: `${source}${reporter ? ` · ${reporter}` : ''}${ns ? ` (${ns})` : ''}`,
        color: MESH_COLORS[i % MESH_COLORS.length],
        fig: m,
        bounds: arr(m.bucket_bounds_ms)
          .map(num)
          .filter((x): x is number => x !== null),
        qbuckets: { p50: pair(qb.p50), p90: pair(qb.p90), p99: pair(qb.p99) },
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
  const bucketOf = (s: Source, quantile: string, v: number) =>
    s.qbuckets[quantile] ?? (s.bounds.length ? bucketAround(s.bounds, v) : null);
  const coarse = sources
    .filter((s) => s.bounds.length > 0 || s.qbuckets.p99)
    .map((s) => {
      const p99 = num(s.fig.p99_ms);
      const b = p99 !== null ? bucketOf(s, 'p99', p99) : null;
      return b ? `${s.label}'s p99 lies in its bucket ${bucketText(b)}` : '';
    })
    .filter(Boolean);
  // what the mesh would report for the kernel's own requests, when analyze-latency could tell
  const fromEbpf = new Map<string, number>();
  for (const d of arr(svc.differences).filter(isObj)) {
    const v = num(d.mesh_from_ebpf_ms);
    if (v !== null)
      fromEbpf.set(`${String(str(d.source))} ${str(d.reporter) ?? ''}`.trim() + `|${String(str(d.quantile))}`, v);
  }
  const sims: Source[] = sources
    .filter((s) => s.bounds.length > 0 && QUANTILES.some(([, l]) => fromEbpf.has(`${s.key}|${l}`)))
    .map((s) => ({
      key: `${s.key} from ebpf`,
      label: `${s.label}, computed from the kernel's requests`,
      color: tint(s.color, 0.55),
      fig: {},
      bounds: s.bounds,
      qbuckets: {},
    }));
  const all = [...sources, ...sims];
  for (const [f, l] of QUANTILES) {
    const row = values[QUANTILES.findIndex(([g]) => g === f)];
    for (const s of sims) row.push(fromEbpf.get(`${s.key.replace(/ from ebpf$/, '')}|${l}`) ?? null);
  }
  return columnChart({
    chart: 'compare',
    instance: name,
    title: name,
    subtitle: 'eBPF vs mesh',
    categories: QUANTILES.map(([f, l]) => ({ key: f.replace('_ms', ''), label: l })),
    series: all,
    values,
    mode: 'grouped',
    log,
    valueLabel: `latency${log ? ' (log scale)' : ''}`,
    format: tickMs,
    tip: (c, s, v) => {
      const src = all.find((x) => x.key === s.key);
      assert.ok(src, 'every series is one of the sources');
      const b = src.bounds.length || src.qbuckets[c.key] ? bucketOf(src, c.key, v) : null;
      const n = num(src.fig.requests);
      return `${s.label} ${c.label}: ${fmtMs(v)}${b ? ` (mesh bucket ${bucketText(b)})` : ''}${n !== null ? `; ${fmtCount(n)} requests` : ''}`;
    },
    caption:
      coarse.length || sims.length
        ? `${coarse.length ? `${coarse.join('; ')}: a mesh quantile is interpolated inside such a bucket.` : ''}${sims.length ? " Pale: what the mesh would report for the kernel's own requests (their histogram in the mesh's buckets)." : ''}`.trim()
        : undefined,
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
  const notes = arr(rep.notes)
    .map(str)
    .filter((s): s is string => !!s);
  const ins = obj(rep.inputs);
  const diffs = services.flatMap((s) =>
    arr(s.differences)
      .filter(isObj)
      .map((d) => ({ service: str(s.service) ?? '?', d })),
  );
  const shown = services.filter((s) => arr(s.ebpf).length + arr(s.mesh).length > 0).slice(0, MAX_COMPARE_CHARTS);
  return section(
    'compare',
    'eBPF vs mesh',
    html`<p class="lead">From analyze-latency: ${
      Object.entries(ins)
        .flatMap(([k, v]) => {
          const s = str(v);
          return s ? [`${k.replace(/_/g, ' ')} ${s}`] : [];
        })
        .join('; ') || 'no inputs named'
    }.</p>`,
    shown.length
      ? grid(...shown.map(compareChart))
      : note('The analysis matched no service between the probe and the mesh.', 'warn'),
    services.length > shown.length
      ? note(`Charts for ${shown.length} of ${services.length} services; the table has all differences.`, 'info')
      : '',
    diffs.length
      ? table(
          'differences',
          [
            { head: 'service', cell: (r) => html`<span class="name">${r.service}</span>` },
            {
              head: 'source',
              cell: (r) => {
                const view = str(r.d.ebpf_view);
                return `${str(r.d.source) ?? ''} ${str(r.d.reporter) ?? ''}${view ? ` vs eBPF ${view}` : ''}`;
              },
            },
            { head: 'quantile', cell: (r) => str(r.d.quantile) ?? '' },
            { head: 'eBPF', cell: (r) => fmtMs(num(r.d.ebpf_ms)), num: true },
            { head: 'mesh', cell: (r) => fmtMs(num(r.d.mesh_ms)), num: true },
            {
              head: 'mesh − eBPF',
              cell: (r) => {
                const v = num(r.d.diff_ms);
                return v === null ? '–' : `${v > 0 ? '+' : ''}${fmtMs(v)}`;
              },
              num: true,
            },
            ...(diffs.some((r) => num(r.d.mesh_from_ebpf_ms) !== null)
              ? [{ head: 'mesh from eBPF', cell: (r: { d: Obj }) => fmtMs(num(r.d.mesh_from_ebpf_ms)), num: true }]
              : []),
            ...(diffs.some((r) => pair(r.d.mesh_bucket_ms))
              ? [
                  {
                    head: 'mesh bucket',
                    cell: (r: { d: Obj }) => {
                      const b = pair(r.d.mesh_bucket_ms);
                      return b ? bucketText(b) : '–';
                    },
                  },
                ]
              : []),
            { head: 'likely cause', cell: (r) => str(r.d.likely_cause) ?? '' },
          ],
          diffs,
          'Differences',
        )
      : '',
    notes.length
      ? html`<h3>Notes from the analysis</h3><ul class="notes">${notes.map((n) => html`<li>${n}</li>`)}</ul>`
      : '',
  );
}
