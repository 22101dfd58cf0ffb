/** The run's metadata: each input's file, probe, version, host, kernel, time and duration (one column per input). */
import { html, type Html, type Part } from '../html.js';
import { get, isObj, num, str } from '../read.js';
import { fmtDuration, fmtTime } from '../format.js';
import { givenInputs, note, section, type ReportInputs, type Section } from '../section.js';
import { INPUT_OPTION, INPUT_SOURCE, type LoadedInput } from '../inputs.js';
import { hostsOf } from './summary.js';

function filters(i: LoadedInput): string {
  const f = get(i.report, 'pipeline', 'filters');
  if (Array.isArray(f)) return f.map(String).join(' ') || 'none';
  if (isObj(f))
    return (
      Object.entries(f)
        .map(([k, v]) => `${k}=${String(v)}`)
        .join(' ') || 'none'
    );
  return '–';
}

function sampling(i: LoadedInput): string {
  const s = get(i.report, 'metrics', 'sampling') ?? get(i.report, 'drops', 'breakdown');
  const rate = num(get(s, 'rate')) ?? num(get(s, 'scale'));
  const mode = str(get(s, 'mode'));
  if (rate === null) return '–';
  return rate === 1 && mode !== 'auto' ? 'every request' : `1 in ${rate}${mode ? ` (${mode})` : ''}`;
}

const ROWS: [string, (i: LoadedInput) => Part][] = [
  ['file', (i) => html`<code>${i.file}</code>`],
  [
    'written by',
    (i) =>
      `${str(i.report.probe) ?? str(i.report.tool) ?? INPUT_SOURCE[i.kind]}, report version ${str(i.report.report_version) ?? '?'}`,
  ],
  ['host', (i) => str(i.report.host) ?? '–'],
  ['kernel', (i) => str(i.report.kernel) ?? '–'],
  ['started', (i) => fmtTime(str(i.report.timestamp) ?? str(i.report.generated_at))],
  ['duration', (i) => fmtDuration(num(i.report.duration_seconds))],
  ['format', (i) => (i.format === 'json' ? 'json' : `${i.format}, ${i.intervals.length} intervals`)],
  ['filters', filters],
  ['sampling', sampling],
  [
    'hooks',
    (i) => {
      const h = get(i.report, 'pipeline', 'hooks');
      return isObj(h)
        ? html`${Object.entries(h).map(([k, v]) => html`<div>${k}: <code>${String(v)}</code></div>`)}`
        : '–';
    },
  ],
];

export function metaSection(inputs: ReportInputs, generator: { version: string; at: string }): Section {
  const list = givenInputs(inputs);
  const hosts = hostsOf(inputs);
  const notes: Html[] = [];
  if (hosts.length > 1)
    notes.push(
      note(
        `The inputs come from ${hosts.length} hosts (${hosts.join(', ')}): their figures are side by side, not merged.`,
        'warn',
      ),
    );
  return section(
    'meta',
    'About this run',
    html`<div class="table-wrap"><table class="meta"><thead><tr><th></th>${list.map((i) => html`<th><code>${INPUT_OPTION[i.kind]}</code></th>`)}</tr></thead>
<tbody>${ROWS.map(([label, cell]) => html`<tr><th>${label}</th>${list.map((i) => html`<td>${cell(i)}</td>`)}</tr>`)}</tbody></table></div>`,
    notes,
    html`<p class="generator">Made by meshprobe generate-report ${generator.version} on ${fmtTime(generator.at)} from ${list.length} input${list.length === 1 ? '' : 's'}.</p>`,
  );
}
