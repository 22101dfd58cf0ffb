/**
 * Reading the files the commands take, the same way for analyze-latency and
 * generate-report: the text of a file (readInput), a probe's report from its
 * JSON or json-stream output (parseReportText: the one json-stream reader),
 * and JSON errors that name the line (jsonError). Every problem is one usage
 * error (exit 2); the reader of a report leaves its wording to the command,
 * which knows what to ask for instead. A probe's --format msgpack file
 * (src/export/msgpack.ts) is read here too (readReportInput, readRecords):
 * it is told from text by its first bytes, whatever its name.
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync, type Stats } from 'node:fs';
import { Unpackr } from 'msgpackr';
import { usageError, type MeshprobeError } from './errors.js';
import { RECORDS_HEADER, RECORDS_HEADER_V1, RECORDS_MAGIC, RECORD_OPTIONS } from './export/msgpack.js';
import { log } from './log.js';

/** Input files larger than this are refused (a report is a few MB at most). */
const MAX_INPUT_BYTES = 512 * 1024 * 1024;

/**
 * The text of `file`, given with `option`, or a usage error saying why it
 * cannot be read. `source` (what writes the file, e.g. "latency-probe") makes
 * the error say what to give instead.
 */
export function readInput(file: string, option: string, source?: string): string {
  return readBytes(file, option, source).toString('utf8');
}

/**
 * A probe's recorded run as given with `option`: a --format msgpack file
 * (told by its header, src/export/msgpack.ts, whatever the file's name) is
 * decoded into its records; any other file is text (JSON, json-stream), as
 * readInput gives it. Both go to parseReportText. A msgpack file cut short
 * (the probe was killed while writing a record) gives its complete records,
 * and a warning says how many bytes were left out.
 */
export function readReportInput(file: string, option: string, source?: string): ReportSource {
  const at = `${option} ${file}`;
  const bytes = readBytes(file, option, source);
  if (isRecordFile(bytes)) {
    const run = readRecords(bytes, at);
    if (run.cutBytes > 0) {
      log.warn(
        `${at}: its last ${run.cutBytes} bytes are not a complete record (the probe was stopped while writing it): ` +
          `read ${run.records.length} complete records, left them out`,
      );
    }
    return run;
  }
  if (
    /\.(mpk|msgpack)$/i.test(file) &&
    bytes.length > 0 &&
    !/^\s*[{[]/.test(bytes.subarray(0, 64).toString('latin1'))
  ) {
    throw usageError(
      `${at} is neither JSON nor a meshprobe msgpack record file (which starts with the string "${RECORDS_MAGIC}"): give the file a probe wrote with --format msgpack`,
    );
  }
  return bytes.toString('utf8');
}

function readBytes(file: string, option: string, source: string | undefined): Buffer {
  const at = `${option} ${file}`;
  let st: Stats;
  try {
    st = statSync(file);
  } catch (e) {
    throw unreadable(e, at, source);
  }
  if (st.isDirectory()) throw usageError(`${at} is a directory: give the file${source ? ` ${source} wrote` : ''}`);
  if (st.size > MAX_INPUT_BYTES) {
    throw usageError(
      `${at} is ${Math.round(st.size / 1048576)} MB: ${source ? 'not a report' : 'too large'} (at most ${MAX_INPUT_BYTES / 1048576} MB)`,
    );
  }
  try {
    return readFileSync(file);
  } catch (e) {
    throw unreadable(e, at, source);
  }
}

/** A --format msgpack file, decoded (readRecords). */
export interface RecordedRun {
  kind: 'msgpack';
  /** the records after the header, in order: what the json-stream's lines would hold */
  records: unknown[];
  /** bytes at the end that hold no complete record (the writer was stopped inside one); 0 when none */
  cutBytes: number;
  /** the file's size */
  bytes: number;
}

/** What parseReportText reads: the text of a JSON or json-stream file, or a msgpack file's records. */
export type ReportSource = string | RecordedRun;

/** True when `bytes` start with the header of a --format msgpack file (version 2, or version 1: see src/export/msgpack.ts). */
export function isRecordFile(bytes: Uint8Array): boolean {
  return recordVersion(bytes) !== undefined;
}

/** The version of a --format msgpack file's header (2: compact bucket lists; 1: plain), undefined for other bytes. */
export function recordVersion(bytes: Uint8Array): 1 | 2 | undefined {
  const starts = (header: Buffer) => bytes.length >= header.length && header.every((b, i) => bytes[i] === b);
  return starts(RECORDS_HEADER) ? 2 : starts(RECORDS_HEADER_V1) ? 1 : undefined;
}

/**
 * The records of a --format msgpack file (src/export/msgpack.ts; version 2
 * or 1: both headers have the same length, and version 1 simply holds no
 * compact bucket lists), read from the start (each record may use shapes
 * defined by those before it). An end
 * cut short inside a record is not an error: the complete records are
 * returned and `cutBytes` says what was left out. Anything else that is not
 * msgpack is a usage error naming `at` and the record.
 */
export function readRecords(bytes: Uint8Array, at = 'the file'): RecordedRun {
  if (!isRecordFile(bytes)) {
    throw usageError(`${at} is not a meshprobe msgpack record file (it does not start with "${RECORDS_MAGIC}")`);
  }
  const body = bytes.subarray(RECORDS_HEADER.length);
  const records: unknown[] = [];
  let end = 0;
  if (body.length > 0) {
    try {
      new Unpackr({ ...RECORD_OPTIONS }).unpackMultiple(body, (value: unknown, _start?: number, stop?: number) => {
        assert.ok(stop !== undefined, 'msgpackr gives the end of each value it reads');
        records.push(value);
        end = stop;
      });
    } catch (e) {
      const err = e as Error & { incomplete?: boolean };
      if (!err.incomplete) {
        throw usageError(
          `${at}: record ${records.length + 1} (byte ${RECORDS_HEADER.length + end}) is not valid msgpack (${err.message})`,
        );
      }
    }
  }
  return { kind: 'msgpack', records, cutBytes: body.length - end, bytes: bytes.length };
}

/** The records of a run as the json-stream it stands for: one JSON line each (the converter's output). */
export function recordsToNdjson(run: RecordedRun): string {
  return run.records.map((r) => JSON.stringify(r) + '\n').join('');
}

function unreadable(e: unknown, at: string, source: string | undefined): MeshprobeError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR')
    return usageError(`${at}: no such file${source ? `; give the report ${source} wrote (its --output)` : ''}`);
  if (code === 'EACCES')
    return usageError(`${at}: cannot read it (permission denied); make it readable or run as its owner`);
  return usageError(`${at}: cannot read it (${code ?? (e as Error).message})`);
}

export type Obj = Record<string, unknown>;

/** A probe's report as read from its JSON or json-stream output. */
export interface ReportText {
  format: 'json' | 'json-stream' | 'msgpack';
  /** the report: the JSON document, or a json-stream's last summary line without its "type" */
  report: Obj;
  /** a json-stream's interval lines, in order */
  intervals: Obj[];
  /** the summary's line, when the text has one document per line (NDJSON); a msgpack file's: its record (from 1) */
  summaryLine?: number;
}

/** Why a text is not a report; the caller words it (see parseReportText). */
export type ReportTextProblem =
  | { kind: 'empty' }
  /** `line`: the line that is not JSON; absent: the text as a whole is not (`error` says where) */
  | { kind: 'not-json'; error: Error; line?: number }
  /** `line`: the line that holds no object; absent: the text as a whole */
  | { kind: 'not-object'; line?: number }
  /** a json-stream without its summary line: the probe was stopped before it wrote it */
  | { kind: 'no-summary'; intervals: number }
  /** several documents, none of them a json-stream line */
  | { kind: 'several-documents'; documents: number };

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStreamLine = (o: Obj) => o.type === 'summary' || o.type === 'interval';

interface Doc {
  value: Obj;
  /** 1-based, when the text was read a line at a time */
  line?: number;
}

/**
 * A probe's report from its `--format json` output (one JSON document) or
 * its `--format json-stream` output (src/export/stream.ts: NDJSON, one
 * {"type":"interval"} line per aggregation interval, then
 * {"type":"summary", ...the whole report}). The rules:
 * - a text that parses as JSON is one document, else each non-blank line is one;
 *   every document is a JSON object;
 * - only the last line of a json-stream may be cut short (the probe was
 *   killed as it wrote it): it is left out; any other line that is not JSON is
 *   an error;
 * - when some document is a summary or interval line, the report is the last
 *   summary line; otherwise the text must hold one document, the report.
 * A text that breaks a rule is thrown as `explain(problem)`.
 */
export function parseReportText(text: ReportSource, explain: (problem: ReportTextProblem) => Error): ReportText {
  const { docs, perLine } = typeof text === 'string' ? textDocuments(text, explain) : recordDocuments(text, explain);
  const format = typeof text !== 'string' ? 'msgpack' : perLine ? 'json-stream' : 'json';
  const stream = docs.filter((d) => isStreamLine(d.value));
  if (stream.length === 0) {
    if (docs.length !== 1) throw explain({ kind: 'several-documents', documents: docs.length });
    return { format, report: docs[0].value, intervals: [] };
  }
  const intervals = stream.filter((d) => d.value.type === 'interval').map((d) => d.value);
  const summary = stream.filter((d) => d.value.type === 'summary').pop();
  if (!summary) throw explain({ kind: 'no-summary', intervals: intervals.length });
  const report = { ...summary.value };
  delete report.type;
  return {
    format,
    report,
    intervals,
    ...(summary.line !== undefined ? { summaryLine: summary.line } : {}),
  };
}

/** A msgpack file's records as documents (`line`: the record's number, from 1); every one must be an object. */
function recordDocuments(
  run: RecordedRun,
  explain: (problem: ReportTextProblem) => Error,
): { docs: Doc[]; perLine: boolean } {
  if (run.records.length === 0) throw explain({ kind: 'empty' });
  const docs: Doc[] = [];
  for (let i = 0; i < run.records.length; i++) {
    const value = run.records[i];
    if (!isObj(value)) throw explain({ kind: 'not-object', line: i + 1 });
    docs.push({ value, line: i + 1 });
  }
  return { docs, perLine: true };
}

/** The text's documents: the whole text as one, or else one per non-blank line. */
function textDocuments(
  text: string,
  explain: (problem: ReportTextProblem) => Error,
): { docs: Doc[]; perLine: boolean } {
  if (text.trim() === '') throw explain({ kind: 'empty' });
  let whole: unknown;
  try {
    whole = JSON.parse(text);
  } catch (e) {
    return { docs: lineDocuments(text, e as Error, explain), perLine: true };
  }
  if (!isObj(whole)) throw explain({ kind: 'not-object' });
  return { docs: [{ value: whole }], perLine: false };
}

function lineDocuments(text: string, wholeError: Error, explain: (problem: ReportTextProblem) => Error): Doc[] {
  const lines = text.split('\n');
  let last = lines.length - 1;
  while (lines[last].trim() === '') last--;
  const values: { value: unknown; line: number }[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    try {
      values.push({ value: JSON.parse(line), line: i + 1 });
    } catch (e) {
      if (i === last && values.some((v) => isObj(v.value) && isStreamLine(v.value))) continue; // the stream's last line, cut short
      // before any line was read, the text may be one JSON document with an error: say where
      throw explain(
        values.length ? { kind: 'not-json', error: e as Error, line: i + 1 } : { kind: 'not-json', error: wholeError },
      );
    }
  }
  const notObject = values.find((v) => !isObj(v.value));
  if (notObject) throw explain({ kind: 'not-object', line: notObject.line });
  return values as Doc[];
}

/** Line and column of a character offset. */
function lineOf(text: string, pos: number): { line: number; column: number } {
  let line = 1;
  let last = -1;
  for (let i = 0; i < pos && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      last = i;
    }
  }
  return { line, column: pos - last };
}

/** JSON.parse's error as one line that says where: "WHAT line 3: not valid JSON (Unexpected token ...)". */
export function jsonError(e: Error, source: ReportSource, what: string): MeshprobeError {
  if (typeof source !== 'string') return usageError(`${what}: ${e.message}`); // records are never JSON text
  const text = source;
  const msg = e.message.replace(/\s+/g, ' ');
  const m = /position (\d+)/.exec(msg);
  const pos = m ? Number(m[1]) : errorPosition(text);
  const where = pos !== undefined && text.trim() !== '' ? ` line ${lineOf(text, pos).line}` : '';
  const short = msg.replace(/ (?:in JSON )?at position \d+.*$/, '').replace(/, ".*" is not valid JSON$/, '');
  return usageError(`${what}${where}: not valid JSON (${text.trim() === '' ? 'the file is empty' : short})`);
}

/**
 * Where JSON.parse fails when its message does not say (V8 gives no position
 * for "Unexpected token"): the shortest prefix that fails for a reason other
 * than ending too soon, found by bisection (a prefix before the error only
 * ever ends too soon; one past it always fails).
 */
function errorPosition(text: string): number | undefined {
  const hard = (len: number): boolean => {
    try {
      JSON.parse(text.slice(0, len));
      return false;
    } catch (e) {
      const msg = (e as Error).message;
      if (/end of JSON input/.test(msg)) return false;
      const m = /position (\d+)/.exec(msg);
      return !(m && Number(m[1]) >= len - 1); // cut inside a number or string: not the error
    }
  };
  if (!hard(text.length)) return undefined;
  let lo = 0;
  let hi = text.length; // hard(hi)
  while (lo + 1 < hi) {
    const mid = (lo + hi) >> 1;
    if (hard(mid)) hi = mid;
    else lo = mid;
  }
  return hi - 1;
}
