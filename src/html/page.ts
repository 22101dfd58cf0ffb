/**
 * The HTML document around the sections: inline CSS, a table of contents,
 * and a few lines of inline script (legend clicks hide or show a series).
 * Nothing is loaded from anywhere: no external stylesheet, script, font or
 * image, so the page opens the same with no network.
 */
import { html, raw, type Html } from './html.js';
import type { Section } from './section.js';

const CSS = `
:root { --ink: #2b2b2b; --muted: #6b6b6b; --line: #e3e3e3; --bg: #ffffff; --panel: #fafafa; --accent: #4e79a7; }
* { box-sizing: border-box; }
html { background: var(--bg); }
body { margin: 0; color: var(--ink); font: 14px/1.45 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
header.top { padding: 18px 28px 10px; border-bottom: 1px solid var(--line); }
header.top h1 { margin: 0 0 2px; font-size: 22px; font-weight: 600; }
header.top .sub { color: var(--muted); }
nav.toc { display: flex; flex-wrap: wrap; gap: 6px 16px; padding: 8px 28px; border-bottom: 1px solid var(--line); background: var(--panel); font-size: 13px; }
nav.toc a { color: var(--accent); text-decoration: none; }
main { padding: 4px 28px 40px; max-width: 1500px; }
section { margin-top: 22px; }
h2 { font-size: 18px; font-weight: 600; margin: 0 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--accent); display: inline-block; }
h3 { font-size: 15px; font-weight: 600; margin: 18px 0 6px; }
p.lead { margin: 4px 0 10px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(540px, 1fr)); gap: 14px; margin: 10px 0; align-items: start; }
.grid.one { grid-template-columns: minmax(540px, 1fr); }
.card { border: 1px solid var(--line); border-radius: 6px; background: #fff; padding: 10px 12px 8px; margin: 0; }
figure figcaption { margin-bottom: 4px; }
.chart-title { font-weight: 600; font-size: 14px; }
.chart-sub { color: var(--muted); font-size: 12px; }
svg.chart { display: block; max-width: 100%; height: auto; overflow: visible; }
svg.chart text { font-family: "DejaVu Sans", Arial, sans-serif; }
svg.chart .series.hidden, svg.chart [data-quantile].hidden { display: none; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; color: var(--ink); margin: 4px 0 0 4px; }
.legend-item { cursor: pointer; user-select: none; white-space: nowrap; }
.legend-item.off { opacity: 0.35; }
.legend .sw { display: inline-block; width: 12px; height: 12px; margin-right: 5px; vertical-align: -1px; background: var(--c); border-radius: 2px; }
.legend .sw.line { height: 3px; width: 16px; vertical-align: 3px; border-radius: 0; }
.legend .sw.dash { height: 0; width: 16px; vertical-align: 3px; background: none; border-top: 2px dashed var(--c); border-radius: 0; }
.legend .sw.dot { border-radius: 50%; width: 10px; height: 10px; }
p.caption { color: var(--muted); font-size: 12px; margin: 6px 2px 0; }
p.note { margin: 6px 0; padding: 6px 10px; border-left: 3px solid #9ab; background: #f5f8fa; font-size: 13px; }
p.note.missing { border-left-color: #bbb; background: #f6f6f6; color: #444; }
p.note.warn { border-left-color: #e0a030; background: #fdf6e9; }
figure.empty p.note { margin: 10px 0; }
.table-wrap { overflow-x: auto; margin: 10px 0; }
table { border-collapse: collapse; font-size: 13px; }
caption { text-align: left; color: var(--muted); font-size: 12px; padding: 0 0 4px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { font-weight: 600; background: var(--panel); white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.summary th { font-weight: 400; color: var(--muted); white-space: nowrap; }
table.summary th a { color: inherit; text-decoration: none; border-bottom: 1px dotted #aaa; }
table.summary td { font-weight: 600; }
dl.stats { display: flex; flex-wrap: wrap; gap: 8px 28px; margin: 6px 0 10px; }
dl.stats div { min-width: 110px; }
dl.stats dt { color: var(--muted); font-size: 12px; }
dl.stats dd { margin: 0; font-size: 16px; font-weight: 600; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 12px; background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
p.method, p.generator { color: var(--muted); font-size: 12px; max-width: 1000px; }
ul.notes { margin: 4px 0; padding-left: 20px; }
table.differences td:last-child { min-width: 320px; max-width: 640px; }
@media print { nav.toc { display: none; } .card { break-inside: avoid; } }
`;

/** Legend items toggle their series (and percentile markers) in the same figure. Charts draw without it. */
const SCRIPT = `
document.addEventListener('click', function (e) {
  var item = e.target.closest && e.target.closest('.legend-item');
  if (!item) return;
  var fig = item.closest('figure');
  var key = item.getAttribute('data-series');
  var off = item.classList.toggle('off');
  fig.querySelectorAll('svg.chart [data-series], svg.chart [data-quantile]').forEach(function (el) {
    if (el.getAttribute('data-series') === key || el.getAttribute('data-quantile') === key) el.classList.toggle('hidden', off);
  });
});
`;

export interface PageSpec {
  title: string;
  subtitle: string;
  sections: Section[];
}

export function page(spec: PageSpec): Html {
  return html`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="meshprobe generate-report">
<title>${spec.title}</title>
<style>${raw(CSS)}</style>
</head>
<body>
<header class="top"><h1>${spec.title}</h1><div class="sub">${spec.subtitle}</div></header>
<nav class="toc">${spec.sections.map((s) => html`<a href="#${s.id}">${s.title}</a>`)}</nav>
<main>
${spec.sections.map(
  (s) => html`<section id="${s.id}">
<h2>${s.title}</h2>
${s.body}
</section>
`,
)}
</main>
<script>${raw(SCRIPT)}</script>
</body>
</html>
`;
}
