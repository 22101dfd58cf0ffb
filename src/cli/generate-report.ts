#!/usr/bin/env node
/**
 * generate-report: one self-contained HTML page (inline CSS and SVG, no
 * network) with the charts of the probes' reports: latency CDFs and
 * histograms, the overhead breakdown, drops, connection set-up and TLS
 * time, and the kernel against the mesh.
 */
import { Option } from 'commander';
import { main, newCommand } from './program.js';
import { checkWritable } from './options.js';
import { VERSION } from './version.js';
import { usageError } from '../errors.js';
import { setLogLevel, type LogLevel } from '../log.js';
import { loadInput, INPUT_OPTION, type InputKind } from '../html/inputs.js';
import { buildReport } from '../html/report.js';
import { writeTextAtomic } from '../report/write.js';
import type { ReportInputs } from '../html/section.js';
import { fmtBytes } from '../html/format.js';

interface Flags {
  includeEbpfMetrics?: string;
  connections?: string;
  drops?: string;
  compare?: string;
  output: string;
  title?: string;
  quiet?: boolean;
  logLevel?: LogLevel;
}

const cmd = newCommand(
  'generate-report',
  "Draws the probes' reports as one self-contained HTML page (it opens with no network).",
)
  .option(
    '--include-ebpf-metrics <file>',
    "latency-probe's report (JSON, or its json-stream output): latency CDFs, histograms, overhead",
  )
  .option('--connections <file>', "connection-tracker's report: set-up and TLS time, failures, reuse")
  .option('--drops <file>', "packet-drop-probe's report: drops by reason, layer and service")
  .option('--compare <file>', "analyze-latency --json output: the kernel's quantiles beside the mesh's, per service")
  .option('-o, --output <file>', 'the HTML page (- for stdout), written atomically', 'report.html')
  .addOption(new Option('--title <text>', 'the page title (default: meshprobe report · host)'))
  .option('-q, --quiet', 'no line on stderr about what was written')
  .action((f: Flags) => {
    if (f.logLevel) setLogLevel(f.logLevel);
    const given: [InputKind, string | undefined][] = [
      ['latency', f.includeEbpfMetrics],
      ['connections', f.connections],
      ['drops', f.drops],
      ['compare', f.compare],
    ];
    if (!given.some(([, v]) => v)) {
      throw usageError(
        `give at least one input: ${INPUT_OPTION.latency} <latency report>, ${INPUT_OPTION.connections}, ${INPUT_OPTION.drops} or ${INPUT_OPTION.compare}`,
      );
    }
    checkWritable(f.output);
    const inputs: ReportInputs = {};
    for (const [kind, file] of given) if (file) inputs[kind] = loadInput(file, kind);
    const html = buildReport(inputs, { version: VERSION, at: new Date().toISOString(), title: f.title });
    const where = writeTextAtomic(f.output, html);
    if (!f.quiet) {
      const charts = (html.match(/<svg class="chart"/g) ?? []).length;
      process.stderr.write(
        `generate-report: wrote ${where === 'stdout' ? 'the page to stdout' : where} (${fmtBytes(Buffer.byteLength(html))}, ${charts} charts)\n`,
      );
    }
  });

await main(cmd);
