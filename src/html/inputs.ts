/**
 * The report's inputs: read, parsed and checked before anything is drawn.
 * Each is a JSON report (the probes' --format json, analyze-latency --json)
 * or a probe's --format json-stream output (NDJSON: its last
 * {"type":"summary"} line is the report; its {"type":"interval"} lines give
 * the time series). Every problem is one usage error (exit 2) naming what to
 * give instead.
 */
import { readFileSync, statSync } from 'node:fs';
import { usageError } from '../errors.js';
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
  format: 'json' | 'json-stream';
  /** the report (a json-stream's summary line, without its "type") */
  report: Obj;
  /** a json-stream's interval lines, in order */
  intervals: Obj[];
}

/** Input files larger than this are refused (a report is a few MB at most). */
export const MAX_INPUT_BYTES = 512 * 1024 * 1024;

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

function readText(file: string, kind: InputKind): string {
  const opt = INPUT_OPTION[kind];
  let st;
  try {
    st = statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR')
      throw usageError(`${opt} ${file}: no such file; give the report ${INPUT_SOURCE[kind]} wrote (its --output)`);
    if (code === 'EACCES') throw usageError(`${opt} ${file}: permission denied; make it readable or run as its owner`);
    throw usageError(`${opt} ${file}: cannot read it (${code ?? (e as Error).message})`);
  }
  if (st.isDirectory()) throw usageError(`${opt} ${file} is a directory: give the file ${INPUT_SOURCE[kind]} wrote`);
  const size = st.size;
  if (size > MAX_INPUT_BYTES)
    throw usageError(
      `${opt} ${file} is ${Math.round(size / 1048576)} MB: not a report (at most ${MAX_INPUT_BYTES / 1048576} MB)`,
    );
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES') throw usageError(`${opt} ${file}: permission denied; make it readable or run as its owner`);
    throw usageError(`${opt} ${file}: cannot read it (${code ?? (e as Error).message})`);
  }
}

/** JSON, or else NDJSON; null when it is neither. */
function parse(text: string): { docs: unknown[]; stream: boolean; error?: string } {
  try {
    return { docs: [JSON.parse(text)], stream: false };
  } catch (e) {
    const whole = (e as Error).message;
    const lines = text.split('\n');
    const docs: unknown[] = [];
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i].trim();
      if (!line) continue;
      try {
        docs.push(JSON.parse(line));
      } catch (le) {
        // the last line of a stream cut short is the only one allowed to be partial
        if (i >= lines.length - 2 && docs.length > 1) continue;
        return { docs: [], stream: false, error: docs.length > 0 ? `line ${i + 1}: ${(le as Error).message}` : whole };
      }
    }
    return { docs, stream: true };
  }
}

/** Reads, parses and checks one input. */
export function loadInput(file: string, kind: InputKind): LoadedInput {
  const opt = INPUT_OPTION[kind];
  const text = readText(file, kind);
  if (text.trim() === '')
    throw usageError(`${opt} ${file} is empty: the probe did not finish writing it; run it again`);
  const { docs, stream, error } = parse(text);
  if (error !== undefined)
    throw usageError(
      `${opt} ${file} is not JSON (${error}): give the JSON report of ${INPUT_SOURCE[kind]} (or its --format json-stream output)`,
    );
  let report: Obj | undefined;
  const intervals: Obj[] = [];
  const typed = docs.filter(isObj);
  if (typed.length !== docs.length)
    throw usageError(
      `${opt} ${file} is ${stream ? 'NDJSON with lines that are not objects' : 'JSON but not an object'}: not a meshprobe report`,
    );
  if (typed.some((d) => d.type === 'summary' || d.type === 'interval')) {
    for (const d of typed) {
      if (d.type === 'interval') intervals.push(d);
      else if (d.type === 'summary') report = d;
    }
    if (!report) {
      throw usageError(
        `${opt} ${file} is a json-stream with ${intervals.length} interval line(s) and no summary line: the probe was stopped before the end; run it again (its summary comes at SIGINT/SIGTERM too)`,
      );
    }
    const { type: _t, ...rest } = report;
    report = rest;
  } else if (typed.length === 1) {
    report = typed[0];
  } else {
    throw usageError(
      `${opt} ${file} holds ${typed.length} JSON documents and none is a json-stream summary line: give one report`,
    );
  }
  const found = kindOf(report);
  if (found !== kind) {
    const hint = found
      ? `; give it with ${INPUT_OPTION[found]}`
      : `; ${opt} takes the report ${INPUT_SOURCE[kind]} writes`;
    throw usageError(`${opt} ${file} is ${describe(report)}, not a ${INPUT_SOURCE[kind]} report${hint}`);
  }
  if (kind === 'compare' && report.report_version !== undefined && report.report_version !== 1) {
    throw usageError(
      `${opt} ${file} is an analysis report of version ${str(report.report_version)}; this generate-report reads version 1: use the analyze-latency of the same release`,
    );
  }
  return {
    kind,
    file,
    format: stream || intervals.length > 0 ? 'json-stream' : 'json',
    report,
    // a stream holds one probe's lines; any other probe's are left out
    intervals: intervals.filter((i) => i.probe === undefined || kindOf(i) === kind),
  };
}
