/**
 * The whole page from the inputs: summary, latency, overhead, connections,
 * drops, the mesh comparison, time series, and the run's metadata. Pure:
 * the same inputs and generator give the same bytes.
 */
import { str } from './read.js';
import { fmtTime } from './format.js';
import { page } from './page.js';
import { givenInputs, type ReportInputs, type Section } from './section.js';
import { summarySection, hostsOf } from './sections/summary.js';
import { latencySection } from './sections/latency.js';
import { overheadSection } from './sections/overhead.js';
import { connectionsSection } from './sections/connections.js';
import { dropsSection } from './sections/drops.js';
import { compareSection } from './sections/compare.js';
import { timeSeriesSection } from './sections/timeseries.js';
import { metaSection } from './sections/meta.js';

export interface GeneratorInfo {
  version: string;
  /** ISO time the page was made */
  at: string;
  title?: string;
}

export function buildReport(inputs: ReportInputs, gen: GeneratorInfo): string {
  const hosts = hostsOf(inputs);
  const first = givenInputs(inputs).find((i) => str(i.report.timestamp) || str(i.report.generated_at));
  const when = first ? fmtTime(str(first.report.timestamp) ?? str(first.report.generated_at)) : fmtTime(gen.at);
  const sections = [
    summarySection(inputs),
    latencySection(inputs),
    overheadSection(inputs),
    connectionsSection(inputs),
    dropsSection(inputs),
    compareSection(inputs),
    timeSeriesSection(inputs),
    metaSection(inputs, gen),
  ].filter((s): s is Section => !!s);
  const title = gen.title ?? `meshprobe report${hosts.length ? ` · ${hosts.join(', ')}` : ''}`;
  return page({
    title,
    subtitle: `Measured in the kernel on ${hosts.join(', ') || 'an unnamed host'}, ${when}`,
    sections,
  }).text;
}
