/**
 * A reader of the Prometheus text exposition format (0.0.4) and of
 * OpenMetrics text, as scraped from Envoy (:15090/stats/prometheus), the
 * Istio agent (:15020), Hubble (:9965) or a Prometheus /federate.
 *
 * What it accepts, as Prometheus's own parsers do:
 * - `# HELP`, `# TYPE`, `# UNIT` and other comments; `# EOF` ends one
 *   OpenMetrics exposition (several scrapes concatenated in one file are read
 *   one after the other);
 * - `name{label="value",...} value [timestamp]`, spaces or tabs between the
 *   parts, an optional trailing comma in the label set, CRLF line ends;
 * - label values with `\\`, `\"` and `\n` escapes (any other backslash pair is
 *   kept as written, as Prometheus does); quoted (UTF-8) label and metric names
 *   inside the braces (`{"my.metric", "a.b"="c"}`);
 * - values and timestamps as Go's ParseFloat reads them (`1e+06`, `+Inf`, `NaN`);
 * - OpenMetrics exemplars after the value (`# {trace_id="..."} 1.0 [ts]`), ignored.
 *
 * Labels with an empty value are dropped, as Prometheus does when it stores a
 * sample, so a series reads the same from a scrape and from Prometheus's API.
 * An unreadable line is an error naming the line.
 */
import { parseGoFloat } from './quantile.js';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
  /** milliseconds (0.0.4) or seconds (OpenMetrics) as written; undefined when absent */
  timestamp?: number;
  /** 1-based line in the input */
  line: number;
}

export interface Exposition {
  samples: Sample[];
  /** # TYPE of each family */
  types: Map<string, string>;
  /** 'openmetrics' when a # EOF line was seen */
  format: 'text' | 'openmetrics';
  /** # EOF lines seen (more than one: concatenated scrapes) */
  eofs: number;
}

export class ExpositionError extends Error {
  readonly line: number;
  constructor(line: number, message: string) {
    super(message);
    this.name = 'ExpositionError';
    this.line = line;
  }
}

const NAME_START = /[a-zA-Z_:]/;
const NAME_CHAR = /[a-zA-Z0-9_:]/;
const LABEL_START = /[a-zA-Z_]/;
const LABEL_CHAR = /[a-zA-Z0-9_]/;

/** Parses a whole exposition; throws ExpositionError on the first unreadable line. */
export function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  let eofs = 0;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const line = lines[i].endsWith('\r') ? lines[i].slice(0, -1) : lines[i];
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      if (/^#\s*EOF\s*$/.test(line)) {
        eofs++;
        continue;
      }
      const m = /^#\s+(HELP|TYPE|UNIT)\s+(\S+)(?:\s+(.*))?$/.exec(line);
      if (m && m[1] === 'TYPE') {
        const type = (m[3] ?? '').trim().toLowerCase();
        if (!/^(counter|gauge|histogram|gaugehistogram|summary|untyped|unknown|info|stateset)$/.test(type)) {
          throw new ExpositionError(lineNo, `unknown metric type "${m[3] ?? ''}" in # TYPE`);
        }
        types.set(unquote(m[2]), type);
      }
      continue; // HELP, UNIT and plain comments carry nothing we need
    }
    samples.push(parseSampleLine(line, lineNo));
  }
  return { samples, types, format: eofs > 0 ? 'openmetrics' : 'text', eofs };
}

function unquote(s: string): string {
  return s.startsWith('"') && s.endsWith('"') && s.length >= 2 ? unescape(s.slice(1, -1)) : s;
}

function unescape(s: string): string {
  return s.replace(/\\(.)/g, (all, c: string) => (c === 'n' ? '\n' : c === '\\' || c === '"' ? c : all));
}

/** One sample line. */
export function parseSampleLine(line: string, lineNo = 1): Sample {
  let i = 0;
  const fail = (why: string): never => {
    throw new ExpositionError(lineNo, `${why} at column ${i + 1}`);
  };
  const skipSpace = () => {
    while (i < line.length && (line[i] === ' ' || line[i] === '\t')) i++;
  };
  const readName = (start: RegExp, rest: RegExp): string => {
    const s = i;
    if (!start.test(line[i] ?? '')) fail('expected a name');
    i++;
    while (i < line.length && rest.test(line[i])) i++;
    return line.slice(s, i);
  };
  const readQuoted = (): string => {
    // at the opening quote
    i++;
    let out = '';
    for (;;) {
      if (i >= line.length) fail('unterminated quoted string');
      const c = line[i++];
      if (c === '"') return out;
      if (c === '\\') {
        if (i >= line.length) fail('unterminated quoted string');
        const e = line[i++];
        out += e === 'n' ? '\n' : e === '\\' || e === '"' ? e : '\\' + e;
      } else out += c;
    }
  };

  skipSpace();
  let name = '';
  if (line[i] !== '{') {
    name = readName(NAME_START, NAME_CHAR);
    const after = i;
    skipSpace();
    if (line[i] !== '{') i = after;
  }
  const labels: Record<string, string> = {};
  if (line[i] === '{') {
    i++;
    for (;;) {
      skipSpace();
      if (line[i] === '}') {
        i++;
        break;
      }
      let key: string;
      if (line[i] === '"') {
        const q = readQuoted();
        skipSpace();
        if (line[i] !== '=') {
          // a quoted metric name inside the braces (Prometheus 3 UTF-8 names)
          if (name) fail('a second metric name');
          name = q;
          if (line[i] === ',') i++;
          continue;
        }
        key = q;
      } else {
        key = readName(LABEL_START, LABEL_CHAR);
        skipSpace();
      }
      if (line[i] !== '=') fail(`expected = after label ${key}`);
      i++;
      skipSpace();
      if (line[i] !== '"') fail(`expected a quoted value for label ${key}`);
      const value = readQuoted();
      if (key in labels) fail(`label ${key} given twice`);
      if (value !== '') labels[key] = value;
      skipSpace();
      if (line[i] === ',') {
        i++;
        continue;
      }
      if (line[i] === '}') {
        i++;
        break;
      }
      fail('expected , or } in the label set');
    }
  }
  if (!name) fail('no metric name');
  if (line[i] !== ' ' && line[i] !== '\t') fail('expected a space before the value');
  skipSpace();
  const vStart = i;
  while (i < line.length && line[i] !== ' ' && line[i] !== '\t') i++;
  const vText = line.slice(vStart, i);
  const value = parseGoFloat(vText);
  if (value === undefined) {
    i = vStart;
    fail(vText === '' ? 'no value' : `value "${vText}" is not a number`);
  }
  skipSpace();
  let timestamp: number | undefined;
  if (i < line.length && line[i] !== '#') {
    const tStart = i;
    while (i < line.length && line[i] !== ' ' && line[i] !== '\t') i++;
    const tText = line.slice(tStart, i);
    const t = parseGoFloat(tText);
    if (t === undefined || !Number.isFinite(t)) {
      i = tStart;
      fail(`timestamp "${tText}" is not a number`);
    }
    timestamp = t;
    skipSpace();
  }
  if (i < line.length) {
    // only an OpenMetrics exemplar may follow: # {labels} value [timestamp]
    if (!/^#\s*\{/.test(line.slice(i))) fail(`unexpected "${line.slice(i, i + 20)}" after the value`);
  }
  return { name, labels, value: value as number, ...(timestamp !== undefined ? { timestamp } : {}), line: lineNo };
}
