#!/usr/bin/env node
/**
 * generate-report: one self-contained HTML page (inline CSS and SVG, no
 * network) with the charts of the probes' reports: latency CDFs and
 * histograms, the overhead breakdown, drops, connection set-up and TLS
 * time, and the kernel against the mesh. With --to-ndjson it draws nothing:
 * it converts a recorded run (--format msgpack) back to json-stream's NDJSON.
 */
import { Option, type Command } from 'commander';
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
import { readReportInput, recordsToNdjson } from '../input.js';

interface Flags {
  includeEbpfMetrics?: string;
  connections?: string;
  drops?: string;
  compare?: string;
  output: string;
  toNdjson?: string;
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
    "latency-probe's report (JSON, or its json-stream or msgpack output): latency CDFs, histograms, overhead",
  )
  .option('--connections <file>', "connection-tracker's report: set-up and TLS time, failures, reuse")
  .option('--drops <file>', "packet-drop-probe's report: drops by reason, layer and service")
  .option('--compare <file>', "analyze-latency --json output: the kernel's quantiles beside the mesh's, per service")
  .option('-o, --output <file>', 'the HTML page (- for stdout), written atomically', 'report.html')
  .addOption(new Option('--title <text>', 'the page title (default: meshprobe report · host)'))
  .option(
    '--to-ndjson <file>',
    "no page: a probe's --format msgpack file as the json-stream it stands for (NDJSON) on stdout, or to --output",
  )
  .option('-q, --quiet', 'no line on stderr about what was written')
  .action((f: Flags, c: Command) => {
    if (f.logLevel) setLogLevel(f.logLevel);
    if (f.toNdjson !== undefined) {
      toNdjson(f.toNdjson, c.getOptionValueSource('output') === 'default' ? '-' : f.output, f);
      return;
    }
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

/** --to-ndjson: the records of a msgpack run as NDJSON lines (a json-stream or JSON file is refused: nothing to convert). */
function toNdjson(file: string, output: string, f: Flags): void {
  const inputs = [f.includeEbpfMetrics, f.connections, f.drops, f.compare, f.title].filter((v) => v !== undefined);
  if (inputs.length) throw usageError('--to-ndjson converts one file and draws no page: give it alone (with --output)');
  checkWritable(output);
  const run = readReportInput(file, '--to-ndjson');
  if (typeof run === 'string') {
    throw usageError(
      `--to-ndjson ${file} is text (JSON or NDJSON) already: give a file a probe wrote with --format msgpack`,
    );
  }
  const where = writeTextAtomic(output, recordsToNdjson(run));
  if (!f.quiet) {
    process.stderr.write(
      `generate-report: ${run.records.length} records of ${file} as NDJSON to ${where === 'stdout' ? 'stdout' : where}\n`,
    );
  }
}

await main(cmd);
