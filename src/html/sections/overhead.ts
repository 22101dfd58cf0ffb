/**
 * Where the time goes: the overhead analysis as stacked bars, overall and
 * per service: application (the servers' own time), kernel and network
 * (what lies between client and server, proxies excluded), and mesh (the
 * sidecar proxies on the path). Means, because means add up and
 * percentiles do not. A second chart shows the kernel and mesh parts alone,
 * which next to the application's time are often too thin to see.
 *
 * Reports before sidecar recognition have mesh_processing_ms null and no
 * proxies: the mesh part is drawn as 0 and said to be "no sidecar seen".
 */
import { html, type Html } from '../html.js';
import { arr, isObj, num, str, type Obj } from '../read.js';
import { hbarChart, type BarSeries, type Category } from '../charts/bars.js';
import { emptyChart } from '../charts/frame.js';
import { fmtCount, fmtMs, fmtPct, tickMs } from '../format.js';
import { OVERHEAD_COLOR } from '../palette.js';
import { grid, note, section, table, type ReportInputs, type Section } from '../section.js';
import { latencySource } from './latency.js';

export interface OverheadRow {
  key: string;
  label: string;
  requests: number | null;
  total: number | null;
  application: number | null;
  kernel: number | null;
  mesh: number | null;
  /** none: no proxy on the path (the mesh part is 0); seen: proxies on it; their time may still be unknown (mesh null) */
  sidecar: 'none' | 'seen';
  /** the proxies on the path, from the client */
  path: string[];
  /** false: only the service's side is on this host, its clients are elsewhere */
  clientsSeen: boolean;
}

/** The overhead analysis: from the latency figures, else the one analyze-latency copied. */
export function overheadSource(inputs: ReportInputs): { oa: Obj; from: string } | undefined {
  const src = latencySource(inputs);
  if (src && isObj(src.metrics.overhead_analysis)) return { oa: src.metrics.overhead_analysis, from: src.input.file };
  const compare = inputs.compare;
  const c = compare?.report.overhead_analysis;
  if (compare && isObj(c)) return { oa: c, from: compare.file };
  return undefined;
}

function rowOf(key: string, label: string, o: Obj, sidecar: 'none' | 'seen'): OverheadRow {
  return {
    key,
    label,
    sidecar,
    requests: num(o.requests),
    total: num(o.total_ms),
    application: num(o.application_ms),
    kernel: num(o.kernel_processing_ms),
    mesh: num(o.mesh_processing_ms),
    path: arr(o.path).map(String),
    clientsSeen: o.clients_seen !== false,
  };
}

export function overheadRows(oa: Obj): OverheadRow[] {
  const proxies = arr(oa.proxies);
  const overall: 'none' | 'seen' = Array.isArray(oa.proxies)
    ? proxies.length > 0
      ? 'seen'
      : 'none'
    : num(oa.mesh_processing_ms)
      ? 'seen'
      : 'none';
  const rows = [rowOf('all', 'all requests', oa, overall)];
  arr(oa.by_service)
    .filter(isObj)
    .forEach((s, i) => {
      const name = str(s.service) ?? '?';
      const path = arr(s.path);
      const sidecar = Array.isArray(s.path)
        ? path.length > 0
          ? 'seen'
          : 'none'
        : num(s.mesh_processing_ms)
          ? 'seen'
          : 'none';
      rows.push(
        rowOf(`svc${i}:${name}`, `${name}${s.clients_seen === false ? ' (server side only)' : ''}`, s, sidecar),
      );
    });
  return rows;
}

const SERIES: (BarSeries & { field: 'application' | 'kernel' | 'mesh' | 'other' | 'unsplit' })[] = [
  { key: 'application', label: 'application (server view)', color: OVERHEAD_COLOR.application, field: 'application' },
  { key: 'kernel', label: 'kernel and network', color: OVERHEAD_COLOR.kernel, field: 'kernel' },
  { key: 'mesh', label: 'mesh (sidecar proxies)', color: OVERHEAD_COLOR.mesh, field: 'mesh' },
  { key: 'other', label: 'not attributed', color: OVERHEAD_COLOR.other, field: 'other' },
  { key: 'unsplit', label: 'total, not split (no server view)', color: OVERHEAD_COLOR.total, field: 'unsplit' },
];

/** The stacked parts of a row: [application, kernel, mesh, not attributed, not split] in ms. */
export function parts(r: OverheadRow): (number | null)[] {
  const total = r.total ?? (r.application !== null ? r.application + (r.kernel ?? 0) + (r.mesh ?? 0) : null);
  if (r.application === null) return [null, null, null, null, total];
  const mesh = r.mesh ?? (r.sidecar === 'none' ? 0 : null);
  const sum = r.application + (r.kernel ?? 0) + (mesh ?? 0);
  const rest = total !== null ? total - sum : 0;
  const other = total !== null && rest > Math.max(1e-4, total * 0.01) ? rest : null;
  return [r.application, r.kernel, mesh, other, null];
}

function rowNote(r: OverheadRow, total: number): string {
  const side = r.sidecar === 'none' ? ' · no sidecar seen' : r.mesh === null ? ' · proxy time unknown' : '';
  return `${fmtMs(total)}${side}`;
}

export function overheadChart(rows: OverheadRow[]): Html {
  const drawable = rows.filter((r) => r.total !== null || r.application !== null);
  if (drawable.length === 0)
    return emptyChart(
      'overhead-breakdown',
      'Where the time goes',
      'Neither a client view nor a server view was measured: there is nothing to split.',
    );
  const noMesh = drawable.every((r) => r.sidecar === 'none');
  const values = drawable.map(parts);
  const used = SERIES.filter(
    (s, i) => ['application', 'kernel', 'mesh'].includes(s.field) || values.some((v) => (v[i] ?? 0) > 0),
  );
  const idx = used.map((s) => SERIES.indexOf(s));
  const cats: Category[] = drawable.map((r, i) => ({
    key: r.key,
    label: r.label,
    note: rowNote(r, r.total ?? values[i].reduce<number>((a, v) => a + (v ?? 0), 0)),
  }));
  return hbarChart({
    chart: 'overhead-breakdown',
    title: 'Where the time goes',
    subtitle: 'mean per request, overall and per service',
    categories: cats,
    series: used.map((s) => ({
      key: s.key,
      label: s.key === 'mesh' && noMesh ? 'mesh (sidecar proxies): none seen' : s.label,
      color: s.color,
    })),
    values: values.map((v) => idx.map((i) => v[i])),
    mode: 'stacked',
    valueLabel: 'mean time per request',
    format: tickMs,
    tip: (c, s, v) => `${c.label}: ${s.label} ${fmtMs(v)}`,
    alt: `Mean request time split into application, kernel and network, and mesh, for ${drawable.length} row(s)`,
    data: { rows: drawable.length, mesh: noMesh ? 'none' : 'seen' },
  });
}

/** The kernel and mesh parts alone, on their own scale: what the path adds. */
export function addedChart(rows: OverheadRow[]): Html | '' {
  const split = rows.filter((r) => r.application !== null && (r.kernel !== null || r.mesh !== null));
  if (split.length === 0 || split.every((r) => (r.kernel ?? 0) + (r.mesh ?? 0) <= 0)) return '';
  const noMesh = split.every((r) => r.sidecar === 'none');
  return hbarChart({
    chart: 'overhead-added',
    title: 'What the path adds',
    subtitle: 'kernel, network and mesh only, mean per request',
    categories: split.map((r) => {
      const added = (r.kernel ?? 0) + (r.mesh ?? 0);
      return { key: r.key, label: r.label, note: `${fmtMs(added)}${r.total ? ` (${fmtPct(added / r.total)})` : ''}` };
    }),
    series: [
      { key: 'kernel', label: 'kernel and network', color: OVERHEAD_COLOR.kernel },
      {
        key: 'mesh',
        label: noMesh ? 'mesh (sidecar proxies): none seen' : 'mesh (sidecar proxies)',
        color: OVERHEAD_COLOR.mesh,
      },
    ],
    values: split.map((r) => [r.kernel, r.mesh ?? 0]),
    mode: 'stacked',
    valueLabel: 'mean time added per request',
    format: tickMs,
    tip: (c, s, v) => `${c.label}: ${s.label} ${fmtMs(v)}`,
    alt: 'Mean time the kernel, the network and sidecars add per request',
    data: { rows: split.length },
  });
}

/** The proxies seen, with the columns their entries have. */
function proxiesTable(proxies: Obj[]): Html {
  const cols: { field: string; head: string; cell: (p: Obj) => string; num?: boolean }[] = [
    { field: 'comm', head: 'proxy', cell: (p) => str(p.comm) ?? '' },
    { field: 'pid', head: 'pid', cell: (p) => str(p.pid) ?? '', num: true },
    { field: 'netns', head: 'netns', cell: (p) => str(p.netns) ?? '', num: true },
    { field: 'ports', head: 'ports', cell: (p) => arr(p.ports).map(String).join(', ') },
    { field: 'requests', head: 'requests', cell: (p) => fmtCount(num(p.requests)), num: true },
    {
      field: 'upstream_requests',
      head: 'upstream requests',
      cell: (p) => fmtCount(num(p.upstream_requests)),
      num: true,
    },
    { field: 'downstream_ms', head: 'downstream (mean)', cell: (p) => fmtMs(num(p.downstream_ms)), num: true },
    { field: 'upstream_ms', head: 'upstream (mean)', cell: (p) => fmtMs(num(p.upstream_ms)), num: true },
    { field: 'processing_ms', head: 'inside the proxy', cell: (p) => fmtMs(num(p.processing_ms)), num: true },
  ];
  return table(
    'proxies',
    cols.filter((c) => proxies.some((p) => p[c.field] !== undefined && p[c.field] !== null)),
    proxies,
    'Sidecar proxies seen',
  );
}

export function overheadSection(inputs: ReportInputs): Section | undefined {
  const src = overheadSource(inputs);
  if (!src) return undefined;
  const { oa } = src;
  const rows = overheadRows(oa);
  const all = rows[0];
  const proxies = arr(oa.proxies).filter(isObj);
  // reports before the network view measured the path carry the srtt alone
  const net = num(oa.network_ms);
  const srtt = num(oa.network_srtt_ms);
  const unpaired = num(oa.requests_unpaired);
  const lead =
    all.total !== null && all.application !== null
      ? html`<p class="lead">Of a mean ${fmtMs(all.total)} per request, the servers spent ${fmtMs(all.application)} (${fmtPct(all.application / all.total)}); the kernel and network took ${fmtMs(all.kernel)}${all.sidecar === 'seen' ? html` and sidecars ${fmtMs(all.mesh)}` : ''}.</p>`
      : '';
  return section(
    'overhead',
    'Overhead breakdown',
    lead,
    grid(overheadChart(rows), addedChart(rows)),
    all.sidecar === 'none'
      ? note('No sidecar seen: no mesh proxy carried the measured requests, so the mesh part is 0.', 'info', {
          'no-sidecar': 'true',
        })
      : '',
    all.application === null && all.total !== null
      ? note(
          'No server view: the servers are not on this host (or outside the filter), so the total cannot be split.',
          'info',
        )
      : '',
    unpaired !== null && unpaired > 0
      ? note(`${fmtCount(unpaired)} client requests went to servers not on this host: they are in no split.`, 'info')
      : '',
    net !== null
      ? note(
          `The network's round trip (the kernel's minimum RTT, p50 ${fmtMs(net)}) is part of the kernel and network share; the smoothed RTT${srtt !== null ? ` (p50 ${fmtMs(srtt)})` : ''} also counts the time an ACK waits for the answer, so it is not used.`,
          'info',
        )
      : srtt !== null
        ? note(
            `The kernel's smoothed TCP round-trip time (p50 ${fmtMs(srtt)}) is shown for reference; it is not one of the parts.`,
            'info',
          )
        : '',
    proxies.length ? proxiesTable(proxies) : '',
    rows.length > 1
      ? table(
          'overhead',
          [
            { head: 'service', cell: (r) => r.label },
            { head: 'requests', cell: (r) => fmtCount(r.requests), num: true },
            { head: 'total', cell: (r) => fmtMs(r.total), num: true },
            { head: 'application', cell: (r) => fmtMs(r.application), num: true },
            { head: 'kernel + network', cell: (r) => fmtMs(r.kernel), num: true },
            { head: 'mesh', cell: (r) => (r.sidecar === 'none' ? 'no sidecar seen' : fmtMs(r.mesh)), num: true },
            ...(rows.some((r) => r.path.length)
              ? [{ head: 'path', cell: (r: OverheadRow) => (r.path.length ? r.path.join(' → ') : '–') }]
              : []),
          ],
          rows,
        )
      : '',
    str(oa.method) ? html`<p class="method"><b>Method.</b> ${str(oa.method)}</p>` : '',
  );
}
