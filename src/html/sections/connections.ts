/**
 * Connections: TCP set-up and TLS handshake times (per side, per service),
 * failed connects by cause, TLS versions, reuse and pools, from
 * connection-tracker's report.
 */
import { html, type Html } from '../html.js';
import { arr, counts, get, isObj, num, num0, obj, quantiles, str, type Obj, type Quantiles } from '../read.js';
import { ladderChart, type LadderRow } from '../charts/ladder.js';
import { hbarChart } from '../charts/bars.js';
import { emptyChart } from '../charts/frame.js';
import { fmtCount, fmtMs, fmtPct, tickCount } from '../format.js';
import { SIDE_COLOR, seriesColor } from '../palette.js';
import { grid, section, stats, table, type ReportInputs, type Section } from '../section.js';
import { ColorMap, countsChart, MAX_ROWS } from './drops.js';

const SIDES = ['client', 'server'] as const;

/** The measures of the timing chart: [field of the report, label]. */
const SETUP_MEASURES: [string, string][] = [
  ['setup_ms_by_side', 'TCP set-up'],
  ['tls_handshake_ms_by_side', 'TLS handshake'],
  ['tls_handshake_libssl_ms', 'TLS handshake (libssl)'],
  ['tls_after_connect_ms', 'connected → TLS done'],
];
const LIFE_MEASURES: [string, string][] = [
  ['lifetime_ms_by_side', 'lifetime'],
  ['idle_gap_ms_by_side', 'idle gap between requests'],
];

function sideRows(c: Obj, measures: [string, string][]): LadderRow[] {
  const rows: LadderRow[] = [];
  for (const [field, label] of measures) {
    for (const side of SIDES) {
      const q = quantiles(get(c, field, side));
      if (!q) continue;
      rows.push({ key: `${field}:${side}`, label: `${label} · ${side}`, color: SIDE_COLOR[side], q });
    }
  }
  return rows;
}

export function timingChart(c: Obj): Html {
  const rows = sideRows(c, SETUP_MEASURES);
  if (rows.length === 0)
    return emptyChart(
      'connection-timing',
      'Connection set-up and TLS time',
      'No connection was set up while the probe ran.',
    );
  return ladderChart({
    chart: 'connection-timing',
    title: 'Connection set-up and TLS time',
    subtitle: 'bar: p50 to p99',
    rows,
    caption:
      'TCP set-up: client, SYN sent to SYN-ACK received; server, SYN-ACK sent to the final ACK. TLS handshake: ClientHello to the handshake done on that side, from the TLS records on the socket; libssl: from uprobes on the library. Connected → TLS done: what the application waits for after connect().',
    alt: 'Percentiles of TCP set-up and TLS handshake times per side',
  });
}

function lifecycleChart(c: Obj): Html | '' {
  const rows = sideRows(c, LIFE_MEASURES);
  if (rows.length === 0) return '';
  return ladderChart({
    chart: 'connection-lifecycle',
    title: 'Connection lifetime and idle gaps',
    subtitle: 'bar: p50 to p99',
    rows,
    caption:
      'Lifetime of the connections that closed; idle gap: from the end of an exchange to the next request on the same connection.',
    alt: 'Percentiles of connection lifetime and idle gaps per side',
  });
}

function serviceTimingChart(services: Obj[]): Html | '' {
  const rows: LadderRow[] = [];
  services.forEach((s, i) => {
    const name = `${str(s.service) ?? '?'} (${str(s.role) ?? '?'})`;
    const setup = quantiles(s.setup_ms);
    const tls = quantiles(s.tls_handshake_ms);
    if (setup)
      rows.push({
        key: `${name}:setup`,
        label: `${name} · TCP`,
        color: seriesColor(i),
        q: setup,
        note: `${fmtCount(num(s.opened))} opened`,
      });
    if (tls) rows.push({ key: `${name}:tls`, label: `${name} · TLS`, color: seriesColor(i), q: tls });
  });
  if (rows.length === 0) return '';
  const shown = rows.slice(0, 2 * MAX_ROWS);
  return ladderChart({
    chart: 'connection-setup-by-service',
    title: 'Set-up and TLS time per service',
    subtitle: 'bar: p50 to p99',
    rows: shown,
    caption:
      rows.length > shown.length
        ? `The first ${shown.length} of ${rows.length} rows (services with most connections first).`
        : undefined,
    alt: `TCP set-up and TLS handshake percentiles of ${services.length} services`,
  });
}

function byServiceChart(services: Obj[]): Html | '' {
  const shown = services.filter((s) => num0(s.opened) + num0(s.failed) + num0(s.closed) > 0).slice(0, MAX_ROWS);
  if (shown.length === 0) return '';
  const series = [
    { key: 'opened', label: 'opened', color: seriesColor(0) },
    { key: 'failed', label: 'failed connects', color: seriesColor(3) },
  ];
  return hbarChart({
    chart: 'connections-by-service',
    title: 'Connections per service',
    categories: shown.map((s) => {
      const name = `${str(s.service) ?? '?'} (${str(s.role) ?? '?'})`;
      return { key: name, label: name };
    }),
    series,
    values: shown.map((s) => [num(s.opened), num(s.failed)]),
    mode: 'grouped',
    valueLabel: 'connections',
    format: tickCount,
    tip: (c, s, v) => `${c.label}: ${fmtCount(v)} ${s.label}`,
    alt: `Connections opened and failed for ${shown.length} services`,
  });
}

const q = (x: Quantiles | null, n: keyof Quantiles) => fmtMs(x?.[n] ?? null);

function servicesTable(services: Obj[]): Html {
  return table(
    'connection-services',
    [
      { head: 'service', cell: (s) => html`<span class="name">${str(s.service) ?? ''}</span>` },
      { head: 'role', cell: (s) => str(s.role) ?? '' },
      { head: 'opened', cell: (s) => fmtCount(num(s.opened)), num: true },
      { head: 'closed', cell: (s) => fmtCount(num(s.closed)), num: true },
      { head: 'failed', cell: (s) => fmtCount(num(s.failed)), num: true },
      { head: 'set-up p50', cell: (s) => q(quantiles(s.setup_ms), 'p50'), num: true },
      { head: 'set-up p99', cell: (s) => q(quantiles(s.setup_ms), 'p99'), num: true },
      { head: 'TLS p50', cell: (s) => q(quantiles(s.tls_handshake_ms), 'p50'), num: true },
      { head: 'requests / conn.', cell: (s) => fmtCount(num(get(s, 'requests_per_connection', 'mean'))), num: true },
      { head: 'reused', cell: (s) => fmtPct(num(s.reused_request_ratio)), num: true },
      { head: 'pool busy / open', cell: (s) => (isObj(s.pool) ? fmtPct(num(s.pool.efficiency)) : ''), num: true },
    ],
    services,
  );
}

export function connectionsSection(inputs: ReportInputs): Section | undefined {
  const input = inputs.connections;
  if (!input) return undefined;
  const c = obj(input.report.connections);
  const failed = counts(c.failed).filter(([k]) => k !== 'total');
  const failedTotal = num(get(c, 'failed', 'total')) ?? failed.reduce((a, [, v]) => a + v, 0);
  const versions = counts(c.tls_versions);
  const reuse = obj(c.reuse);
  const services = arr(c.by_service).filter(isObj);
  const tlsTotal = num0(get(c, 'tls_handshakes', 'client')) + num0(get(c, 'tls_handshakes', 'server'));
  const body: (Html | string)[] = [
    stats([
      [
        'opened',
        `${fmtCount(num(c.opened))} (client ${fmtCount(num(get(c, 'opened_by_side', 'client')))}, server ${fmtCount(num(get(c, 'opened_by_side', 'server')))})`,
      ],
      ['failed connects', fmtCount(failedTotal)],
      ['set-up p50 / p99', `${q(quantiles(c.setup_ms), 'p50')} / ${q(quantiles(c.setup_ms), 'p99')}`],
      ['TLS handshake p50', q(quantiles(c.tls_handshake_ms), 'p50')],
      ['reused requests', fmtPct(num(reuse.reused_request_ratio))],
      ['requests / connection', fmtCount(num(get(reuse, 'requests_per_connection', 'mean')))],
      ['new connections / s', fmtCount(num(reuse.new_connections_per_s))],
    ]),
    grid(timingChart(c), lifecycleChart(c)),
  ];
  const failColors = new ColorMap(3);
  const verColors = new ColorMap(4);
  body.push(
    grid(
      failedTotal > 0
        ? countsChart(
            'connection-failures',
            'Failed connects by cause',
            failed,
            failColors,
            'cause',
            failedTotal,
            'connects failed',
          )
        : emptyChart('connection-failures', 'Failed connects by cause', 'No connect failed.'),
      tlsTotal > 0 || versions.some(([, v]) => v > 0)
        ? countsChart(
            'tls-versions',
            'TLS handshakes by version',
            versions,
            verColors,
            'TLS version',
            versions.reduce((a, [, v]) => a + v, 0),
            'handshakes',
          )
        : emptyChart('tls-versions', 'TLS handshakes by version', 'No TLS handshake was seen.'),
    ),
  );
  if (services.length) {
    body.push(
      html`<h3>Per service</h3>`,
      grid(serviceTimingChart(services), byServiceChart(services)),
      servicesTable(services),
    );
  }
  return section('connections', 'Connections and TLS', ...body);
}
