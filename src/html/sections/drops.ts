/**
 * Packet drops: by reason, by layer, by service (stacked by reason), and the
 * top functions and flows, from packet-drop-probe's report.
 */
import { html, type Html } from '../html.js';
import { arr, counts, isObj, num, num0, obj, str, type Obj } from '../read.js';
import { hbarChart } from '../charts/bars.js';
import { emptyChart } from '../charts/frame.js';
import { fmtCount, fmtDuration, tickCount } from '../format.js';
import { seriesColor, SERIES } from '../palette.js';
import { grid, note, section, stats, table, type ReportInputs, type Section } from '../section.js';

/** Rows past this many go into "other" in the charts (the tables list them all). */
export const MAX_ROWS = 12;

export function topRows(rows: [string, number][], max = MAX_ROWS): [string, number][] {
  const nz = rows.filter(([, v]) => v > 0);
  if (nz.length <= max) return nz;
  const kept = nz.slice(0, max - 1);
  const rest = nz.slice(max - 1).reduce((a, [, v]) => a + v, 0);
  return [...kept, [`other (${nz.length - kept.length})`, rest]];
}

/** A colour per name, in order of first appearance (reasons keep theirs across charts). */
export class ColorMap {
  private m = new Map<string, string>();
  constructor(private offset = 0) {}
  get(name: string): string {
    let color = this.m.get(name);
    if (color === undefined) {
      color = seriesColor(this.m.size + this.offset);
      this.m.set(name, color);
    }
    return color;
  }
}

const share = (v: number, total: number) => (total > 0 ? ` (${Math.round((v / total) * 1000) / 10} %)` : '');

/** One bar per name, each in its name's colour (a stacked chart with one part per row). */
export function countsChart(
  chart: string,
  title: string,
  rows: [string, number][],
  colors: ColorMap,
  what: string,
  total: number,
  unit = 'packets dropped',
): Html {
  const shown = topRows(rows);
  if (shown.length === 0) return emptyChart(chart, title, 'No drops.');
  return hbarChart({
    chart,
    title,
    categories: shown.map(([k, v]) => ({ key: k, label: k, note: `${fmtCount(v)}${share(v, total)}` })),
    series: shown.map(([k]) => ({ key: k, label: k, color: colors.get(k) })),
    values: shown.map(([, v], i) => shown.map((_, j) => (i === j ? v : null))),
    mode: 'stacked',
    valueLabel: unit,
    format: tickCount,
    tip: (c, _s, v) => `${c.label}: ${fmtCount(v)} ${unit.split(' ')[0]}${share(v, total)}`,
    legend: false,
    alt: `Packet drops by ${what}`,
    data: { categories: shown.length },
  });
}

/** Drops per service, each bar split by reason. */
function byServiceChart(services: Obj[], colors: ColorMap, total: number): Html {
  if (services.length === 0)
    return emptyChart('drops-by-service', 'Drops by service', 'No drops were attributed to a service.');
  const shown = services.slice(0, MAX_ROWS);
  const reasons = [...new Set(shown.flatMap((s) => counts(s.by_reason).map(([r]) => r)))];
  const single = reasons.length === 0;
  return hbarChart({
    chart: 'drops-by-service',
    title: 'Drops by service',
    subtitle: single ? undefined : 'split by reason',
    categories: shown.map((s) => {
      const name = str(s.service) ?? '?';
      const per1000 = num(s.per_1000_packets);
      return {
        key: name,
        label: name,
        note: `${fmtCount(num0(s.drops))}${share(num0(s.drops), total)}${per1000 !== null && num0(s.packets) > 0 ? ` · ${per1000}‰ of its packets` : ''}`,
      };
    }),
    series: single
      ? [{ key: 'drops', label: 'drops', color: SERIES[3] }]
      : reasons.map((r) => ({ key: r, label: r, color: colors.get(r) })),
    values: shown.map((s) => (single ? [num0(s.drops)] : reasons.map((r) => num(obj(s.by_reason)[r])))),
    mode: 'stacked',
    valueLabel: 'packets dropped',
    format: tickCount,
    tip: (c, s, v) => `${c.label}: ${fmtCount(v)} ${s.label === 'drops' ? 'packets' : `packets for ${s.label}`}`,
    legend: !single,
    alt: `Packet drops of ${shown.length} services`,
    caption:
      services.length > shown.length
        ? `The ${shown.length} services with most drops of ${services.length}.`
        : undefined,
  });
}

export function dropsSection(inputs: ReportInputs): Section | undefined {
  const input = inputs.drops;
  if (!input) return undefined;
  const d = obj(input.report.drops);
  return section(
    'drops',
    'Packet drops',
    ...dropsOverview(input.report, d),
    ...kernelFunctions(arr(d.top_functions).filter(isObj)),
    ...topFlows(arr(d.top_flows).filter(isObj)),
    ...listenQueues(arr(d.listen_queue_overflows).filter(isObj)),
  );
}

/** The figures, the charts by reason, layer and service, and what the breakdown leaves out. */
function dropsOverview(rep: Obj, d: Obj): (Html | string)[] {
  const total = num0(d.total);
  const reasons = counts(d.by_reason);
  const layers = counts(d.by_layer);
  const services = arr(d.by_service)
    .filter(isObj)
    .sort((a, b) => num0(b.drops) - num0(a.drops));
  const breakdown = obj(d.breakdown);
  const reasonColors = new ColorMap(3);
  const layerColors = new ColorMap(0);
  const unattributed = num0(breakdown.unattributed);
  const scale = num(breakdown.scale);
  const body: (Html | string)[] = [
    stats([
      ['dropped packets', fmtCount(total)],
      ['per second', fmtCount(num(d.rate_per_s))],
      ['over', fmtDuration(num(rep.duration_seconds))],
      ['reasons', String(reasons.filter(([, v]) => v > 0).length)],
    ]),
  ];
  if (total === 0) {
    body.push(note('No packet was dropped while the probe ran.', 'info', { 'no-drops': 'true' }));
  } else {
    body.push(
      grid(
        countsChart('drops-by-reason', 'Drops by reason', reasons, reasonColors, 'reason', total),
        countsChart('drops-by-layer', 'Drops by layer', layers, layerColors, 'layer', total),
        byServiceChart(services, reasonColors, total),
      ),
    );
  }
  if (unattributed > 0)
    body.push(
      note(
        `${fmtCount(unattributed)} drops are in the total but not in the breakdown (the kernel's table was full): raise --max-drop-keys.`,
        'warn',
      ),
    );
  if (scale !== null && scale > 1)
    body.push(note(`Sampled: the breakdown counted 1 drop in ${scale} and was scaled up; the total is exact.`, 'info'));
  return body;
}

function kernelFunctions(fns: Obj[]): Html[] {
  if (!fns.length) return [];
  return [
    html`<h3>Where in the kernel</h3>`,
    table(
      'functions',
      [
        { head: 'function', cell: (f) => html`<code>${str(f.function) ?? ''}</code>` },
        { head: 'layer', cell: (f) => str(f.layer) ?? '' },
        { head: 'drops', cell: (f) => fmtCount(num(f.drops)), num: true },
        {
          head: 'reasons',
          cell: (f) =>
            counts(f.by_reason)
              .map(([r, n]) => `${r} ${fmtCount(n)}`)
              .join(', '),
        },
      ],
      fns,
    ),
  ];
}

function topFlows(flows: Obj[]): Html[] {
  if (!flows.length) return [];
  return [
    html`<h3>Top flows</h3>`,
    table(
      'flows',
      [
        { head: 'protocol', cell: (f) => str(f.protocol) ?? '' },
        { head: 'direction', cell: (f) => str(f.direction) ?? '' },
        { head: 'local', cell: (f) => str(f.local) ?? '' },
        { head: 'remote', cell: (f) => str(f.remote) ?? '' },
        { head: 'service', cell: (f) => str(f.service) ?? '' },
        { head: 'reason', cell: (f) => str(f.reason) ?? '' },
        { head: 'function', cell: (f) => html`<code>${str(f.function) ?? ''}</code>` },
        { head: 'drops', cell: (f) => fmtCount(num(f.drops)), num: true },
      ],
      flows,
    ),
  ];
}

/** Listeners whose accept queue overflowed: the kernel's own counters, whatever columns they have. */
function listenQueues(listen: Obj[]): Html[] {
  if (!listen.length) return [];
  return [
    html`<h3>Full accept queues</h3>`,
    note(
      "Connections dropped because a listener's accept queue was full (the kernel's own counters; these are not in the total above).",
      'info',
    ),
    table(
      'listen',
      Object.keys(listen[0]).map((k) => ({
        head: k.replace(/_/g, ' '),
        cell: (r: Obj) => str(r[k]) ?? '',
        num: typeof listen[0][k] === 'number',
      })),
      listen,
    ),
  ];
}
