/**
 * The report's inputs: read, parsed and checked before anything is drawn.
 * Each is a JSON report (the probes' --format json, analyze-latency --json)
 * or a probe's --format json-stream output (NDJSON: its last
 * {"type":"summary"} line is the report; its {"type":"interval"} lines give
 * the time series). Every problem is one usage error (exit 2) naming what to
 * give instead.
 */
import { usageError, type MeshprobeError } from '../errors.js';
import { parseReportText, readReportInput, type ReportTextProblem } from '../input.js';
import { isObj, str, type Obj } from './read.js';

export type InputKind = 'latency' | 'connections' | 'drops' | 'compare';

/** The option that takes each input. */
export const INPUT_OPTION: Record<InputKind, string> = {
  latency: '--include-ebpf-metrics',
  connections: '--connections',
  drops: '--drops',
  compare: '--compare',
};

/** What writes each input. */
export const INPUT_SOURCE: Record<InputKind, string> = {
  latency: 'latency-probe',
  connections: 'connection-tracker',
  drops: 'packet-drop-probe',
  compare: 'analyze-latency --json',
};

export interface LoadedInput {
  kind: InputKind;
  file: string;
  format: 'json' | 'json-stream' | 'msgpack';
  /** the report (a json-stream's summary line, without its "type") */
  report: Obj;
  /** a json-stream's interval lines, in order */
  intervals: Obj[];
}

/** The kind of a parsed document, if it is one of the four. */
export function kindOf(doc: Obj): InputKind | undefined {
  if (doc.tool === 'analyze-latency') return 'compare';
  switch (doc.probe) {
    case 'latency-probe':
      return 'latency';
    case 'connection-tracker':
      return 'connections';
    case 'packet-drop-probe':
      return 'drops';
  }
  // a latency report from before "probe" was written (the original's shape): metrics with percentiles
  if (
    doc.probe === undefined &&
    isObj(doc.metrics) &&
    (isObj(doc.metrics.percentiles) || isObj(doc.metrics.latency_histogram))
  )
    return 'latency';
  return undefined;
}

function describe(doc: Obj): string {
  const k = kindOf(doc);
  if (k) return `a ${INPUT_SOURCE[k]} report`;
  if (typeof doc.probe === 'string') return `a report of "${doc.probe}", which generate-report does not read`;
  return 'not a meshprobe report';
}

/** Reads, parses and checks one input. */
export function loadInput(file: string, kind: InputKind): LoadedInput {
  const opt = INPUT_OPTION[kind];
  const at = `${opt} ${file}`;
  const { format, report, intervals } = parseReportText(readReportInput(file, opt, INPUT_SOURCE[kind]), (problem) =>
    inputTextError(problem, at, kind),
  );
  const found = kindOf(report);
  if (found !== kind) {
    const hint = found
      ? `; give it with ${INPUT_OPTION[found]}`
      : `; ${opt} takes the report ${INPUT_SOURCE[kind]} writes`;
    throw usageError(`${at} is ${describe(report)}, not a ${INPUT_SOURCE[kind]} report${hint}`);
  }
  if (kind === 'compare' && report.report_version !== undefined && report.report_version !== 1) {
    throw usageError(
      `${at} is an analysis report of version ${String(str(report.report_version))}; this generate-report reads version 1: use the analyze-latency of the same release`,
    );
  }
  return {
    kind,
    file,
    format,
    report,
    // a stream holds one probe's lines; any other probe's are left out
    intervals: intervals.filter((i) => i.probe === undefined || kindOf(i) === kind),
  };
}

/** What is wrong with an input's text, as generate-report says it. */
function inputTextError(problem: ReportTextProblem, at: string, kind: InputKind): MeshprobeError {
  switch (problem.kind) {
    case 'empty':
      return usageError(`${at} is empty: the probe did not finish writing it; run it again`);
    case 'not-json': {
      const why = problem.line === undefined ? problem.error.message : `line ${problem.line}: ${problem.error.message}`;
      return usageError(
        `${at} is not JSON (${why}): give the JSON report of ${INPUT_SOURCE[kind]} (or its --format json-stream output)`,
      );
    }
    case 'not-object':
      return usageError(
        `${at} is ${problem.line === undefined ? 'JSON but not an object' : 'NDJSON with lines that are not objects'}: not a meshprobe report`,
      );
    case 'no-summary':
      return usageError(
        `${at} is a json-stream with ${problem.intervals} interval line(s) and no summary line: the probe was stopped before the end; run it again (its summary comes at SIGINT/SIGTERM too)`,
      );
    case 'several-documents':
      return usageError(
        `${at} holds ${problem.documents} JSON documents and none is a json-stream summary line: give one report`,
      );
  }
}
