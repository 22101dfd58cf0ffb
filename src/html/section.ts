/** What each part of the page is: a titled section, and the inputs it draws from. */
import { html, type Html, type Part } from './html.js';
import type { InputKind, LoadedInput } from './inputs.js';

export type ReportInputs = Partial<Record<InputKind, LoadedInput>>;

/** The inputs given, in their order (a kind's key may be there with no input). */
export function givenInputs(inputs: ReportInputs): LoadedInput[] {
  return (Object.values(inputs) as (LoadedInput | undefined)[]).filter((i): i is LoadedInput => i !== undefined);
}

export interface Section {
  /** element id, also the table of contents' anchor */
  id: string;
  title: string;
  body: Html;
}

export function section(id: string, title: string, ...parts: Part[]): Section {
  return { id, title, body: html`${parts}` };
}

/** A remark under a chart or in place of one. kind: info (default), missing (an input not given), warn. */
export function note(text: Part, kind: 'info' | 'missing' | 'warn' = 'info', data: Record<string, string> = {}): Html {
  const attrs = Object.entries(data).map(([k, v]) => html` data-${k}="${v}"`);
  return html`<p class="note ${kind}"${attrs}>${text}</p>`;
}

/** A grid of chart cards (two columns on a wide screen). */
export function grid(...cards: Part[]): Html {
  return html`<div class="grid">${cards}</div>`;
}

export interface Column<T> {
  head: string;
  cell: (row: T) => Part;
  /** right-aligned (numbers) */
  num?: boolean;
}

/** A plain table; cells go through the html tag (escaped). */
export function table<T>(cls: string, cols: Column<T>[], rows: readonly T[], caption?: Part): Html {
  return html`<div class="table-wrap"><table class="${cls}">${caption ? html`<caption>${caption}</caption>` : ''}
<thead><tr>${cols.map((c) => html`<th${c.num ? html` class="num"` : ''}>${c.head}</th>`)}</tr></thead>
<tbody>${rows.map((r) => html`<tr>${cols.map((c) => html`<td${c.num ? html` class="num"` : ''}>${c.cell(r)}</td>`)}</tr>`)}</tbody></table></div>`;
}

/** A small set of headline figures. */
export function stats(items: [string, Part][]): Html {
  return html`<dl class="stats">${items.map(([k, v]) => html`<div><dt>${k}</dt><dd>${v}</dd></div>`)}</dl>`;
}
