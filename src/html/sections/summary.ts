/**
 * The top of the page: the headline figures of every input in one table,
 * and a note for each input not given (what it would add, how to get it).
 */
import { html, type Html } from '../html.js';
import { counts, get, num, num0, obj, quantiles, str } from '../read.js';
import { fmtCount, fmtMs, fmtPct } from '../format.js';
import { givenInputs, note, section, type ReportInputs, type Section } from '../section.js';
import { INPUT_OPTION, type InputKind } from '../inputs.js';
import { latencySource, VIEW_LABEL, VIEWS } from './latency.js';
import { overheadSource } from './overhead.js';

export interface SummaryRow {
  key: string;
  label: string;
  value: Html | string;
  href: string;
}

export function summaryRows(inputs: ReportInputs): SummaryRow[] {
  return [
    ...latencyRows(inputs),
    ...overheadRows(inputs),
    ...dropRows(inputs),
    ...connectionRows(inputs),
    ...compareRows(inputs),
  ];
}

function latencyRows(inputs: ReportInputs): SummaryRow[] {
  const lat = latencySource(inputs);
  if (!lat) return [];
  const m = lat.metrics;
  const est = num(m.total_requests_estimated);
  const client = num0(get(m, 'client', 'total_requests')),
    server = num0(get(m, 'server', 'total_requests'));
  const rows: SummaryRow[] = [
    {
      key: 'requests',
      label: 'requests measured',
      href: '#latency',
      value: `${fmtCount(client)} client view, ${fmtCount(server)} server view${est !== null && est > Math.max(client, server) ? ` (~${fmtCount(est)} with sampling)` : ''}`,
    },
  ];
  for (const v of VIEWS) {
    const q = quantiles(get(m, v, 'percentiles'));
    if (num0(get(m, v, 'total_requests')) > 0 && q)
      rows.push({
        key: `latency-${v}`,
        label: `${VIEW_LABEL[v]} p50 / p99`,
        href: '#latency',
        value: `${fmtMs(q.p50)} / ${fmtMs(q.p99)}`,
      });
  }
  return rows;
}

function overheadRows(inputs: ReportInputs): SummaryRow[] {
  const oh = overheadSource(inputs);
  if (!oh) return [];
  const total = num(oh.oa.total_ms),
    mesh = num(oh.oa.mesh_processing_ms),
    kernel = num(oh.oa.kernel_processing_ms);
  return [
    {
      key: 'overhead',
      label: 'mean per request',
      href: '#overhead',
      value: `${fmtMs(total)}: kernel and network ${fmtMs(kernel)}, mesh ${mesh === null ? 'none (no sidecar seen)' : fmtMs(mesh)}`,
    },
  ];
}

function dropRows(inputs: ReportInputs): SummaryRow[] {
  if (!inputs.drops) return [];
  const d = obj(inputs.drops.report.drops);
  const top = counts(d.by_reason)
    .filter(([, v]) => v > 0)
    .slice(0, 2);
  return [
    {
      key: 'drops',
      label: 'packets dropped',
      href: '#drops',
      value: `${fmtCount(num(d.total))} (${fmtCount(num(d.rate_per_s))}/s)${top.length ? `: ${top.map(([r, v]) => `${r} ${fmtCount(v)}`).join(', ')}` : ''}`,
    },
  ];
}

function connectionRows(inputs: ReportInputs): SummaryRow[] {
  if (!inputs.connections) return [];
  const c = obj(inputs.connections.report.connections);
  const failed = num(get(c, 'failed', 'total'));
  const rows: SummaryRow[] = [
    {
      key: 'connections',
      label: 'connections opened / failed',
      href: '#connections',
      value: `${fmtCount(num(c.opened))} / ${fmtCount(failed)}; reused requests ${fmtPct(num(get(c, 'reuse', 'reused_request_ratio')))}`,
    },
  ];
  const setup = quantiles(c.setup_ms);
  if (setup)
    rows.push({
      key: 'setup',
      label: 'TCP set-up p50 / p99 (client)',
      href: '#connections',
      value: `${fmtMs(setup.p50)} / ${fmtMs(setup.p99)}`,
    });
  const tls = quantiles(c.tls_handshake_ms);
  rows.push({
    key: 'tls',
    label: 'TLS handshake p50 (client)',
    href: '#connections',
    value: tls
      ? `${fmtMs(tls.p50)} (${fmtCount(num(get(c, 'tls_handshakes', 'client')))} handshakes)`
      : 'no TLS handshake seen',
  });
  return rows;
}

function compareRows(inputs: ReportInputs): SummaryRow[] {
  if (!inputs.compare) return [];
  const svcs = (inputs.compare.report.services as unknown[] | undefined) ?? [];
  return [
    {
      key: 'compare',
      label: 'services compared with the mesh',
      href: '#compare',
      value: fmtCount(Array.isArray(svcs) ? svcs.length : 0),
    },
  ];
}

const HOW: Record<InputKind, (borrowed: boolean) => Html> = {
  latency: (borrowed) =>
    html`No latency-probe report${borrowed ? html` (the latency figures come from the connection-tracker report)` : ''}: run <code>sudo npx latency-probe --duration 60 --output results/ebpf-latency.json</code> and give it with <code>${INPUT_OPTION.latency}</code>.`,
  drops: () =>
    html`No packet-drop report: run <code>sudo npx packet-drop-probe --duration 60 --output drops.json</code> and give it with <code>${INPUT_OPTION.drops} drops.json</code>.`,
  connections: () =>
    html`No connection report (set-up and TLS times): run <code>sudo npx connection-tracker --duration 60 --output conns.json</code> and give it with <code>${INPUT_OPTION.connections} conns.json</code>.`,
  compare: () =>
    html`No mesh comparison: run <code>analyze-latency</code> with <code>--json</code> on the eBPF report and the mesh's metrics, and give its output with <code>${INPUT_OPTION.compare} analysis.json</code>.`,
};

export function missingNotes(inputs: ReportInputs): Html[] {
  const borrowed = !inputs.latency && !!latencySource(inputs);
  return (['latency', 'connections', 'drops', 'compare'] as InputKind[])
    .filter((k) => !inputs[k])
    .map((k) => note(HOW[k](borrowed), 'missing', { missing: k }));
}

export function summarySection(inputs: ReportInputs): Section {
  const rows = summaryRows(inputs);
  return section(
    'summary',
    'Summary',
    html`<table class="summary"><tbody>${rows.map((r) => html`<tr data-key="${r.key}"><th><a href="${r.href}">${r.label}</a></th><td>${r.value}</td></tr>`)}</tbody></table>`,
    missingNotes(inputs),
  );
}

/** The probes' hosts, when they differ: figures from several hosts side by side. */
export function hostsOf(inputs: ReportInputs): string[] {
  return [
    ...new Set(
      givenInputs(inputs)
        .map((i) => str(i.report.host))
        .filter((h): h is string => !!h),
    ),
  ];
}
