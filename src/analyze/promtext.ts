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
        const [, , family, given = ''] = m;
        const type = given.trim().toLowerCase();
        if (!/^(counter|gauge|histogram|gaugehistogram|summary|untyped|unknown|info|stateset)$/.test(type)) {
          throw new ExpositionError(lineNo, `unknown metric type "${given}" in # TYPE`);
        }
        types.set(unquote(family), type);
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

/** One sample line: the metric name, its label set, the value, a timestamp, an OpenMetrics exemplar (ignored). */
export function parseSampleLine(line: string, lineNo = 1): Sample {
  const sc = new LineScanner(line, lineNo);
  sc.skipSpace();
  let name = '';
  if (sc.peek() !== '{') {
    name = sc.readName(NAME_START, NAME_CHAR);
    const after = sc.i;
    sc.skipSpace();
    if (sc.peek() !== '{') sc.i = after;
  }
  const labels: Record<string, string> = {};
  if (sc.peek() === '{') name = readLabelSet(sc, labels, name);
  if (!name) sc.fail('no metric name');
  if (sc.peek() !== ' ' && sc.peek() !== '\t') sc.fail('expected a space before the value');
  sc.skipSpace();
  const value = readNumber(
    sc,
    () => true,
    (text) => (text === '' ? 'no value' : `value "${text}" is not a number`),
  );
  sc.skipSpace();
  let timestamp: number | undefined;
  if (!sc.atEnd() && sc.peek() !== '#') {
    timestamp = readNumber(sc, Number.isFinite, (text) => `timestamp "${text}" is not a number`);
    sc.skipSpace();
  }
  // only an OpenMetrics exemplar may follow: # {labels} value [timestamp]
  if (!sc.atEnd() && !/^#\s*\{/.test(sc.rest())) sc.fail(`unexpected "${sc.rest().slice(0, 20)}" after the value`);
  return { name, labels, value, ...(timestamp !== undefined ? { timestamp } : {}), line: lineNo };
}

/**
 * The label set, from its `{` to its `}`, into `labels`. Returns the metric
 * name: `name`, or one quoted inside the braces (Prometheus 3 UTF-8 names).
 */
function readLabelSet(sc: LineScanner, labels: Record<string, string>, name: string): string {
  sc.i++;
  for (;;) {
    sc.skipSpace();
    if (sc.peek() === '}') {
      sc.i++;
      return name;
    }
    let key: string;
    if (sc.peek() === '"') {
      const q = sc.readQuoted();
      sc.skipSpace();
      if (sc.peek() !== '=') {
        // a quoted metric name inside the braces
        if (name) sc.fail('a second metric name');
        name = q;
        if (sc.peek() === ',') sc.i++;
        continue;
      }
      key = q;
    } else {
      key = sc.readName(LABEL_START, LABEL_CHAR);
      sc.skipSpace();
    }
    if (sc.peek() !== '=') sc.fail(`expected = after label ${key}`);
    sc.i++;
    sc.skipSpace();
    if (sc.peek() !== '"') sc.fail(`expected a quoted value for label ${key}`);
    const value = sc.readQuoted();
    if (key in labels) sc.fail(`label ${key} given twice`);
    if (value !== '') labels[key] = value;
    sc.skipSpace();
    if (sc.peek() === ',') {
      sc.i++;
      continue;
    }
    if (sc.peek() === '}') {
      sc.i++;
      return name;
    }
    sc.fail('expected , or } in the label set');
  }
}

/** A number up to the next space or tab (Go's ParseFloat syntax); `bad` says why the text is not one that is `ok`. */
function readNumber(sc: LineScanner, ok: (v: number) => boolean, bad: (text: string) => string): number {
  const start = sc.i;
  while (!sc.atEnd() && sc.peek() !== ' ' && sc.peek() !== '\t') sc.i++;
  const text = sc.line.slice(start, sc.i);
  const v = parseGoFloat(text);
  if (v === undefined || !ok(v)) {
    sc.i = start;
    sc.fail(bad(text));
  }
  return v;
}

/** A position in one line; its errors name the line and the column. */
class LineScanner {
  i = 0;

  constructor(
    readonly line: string,
    readonly lineNo: number,
  ) {}

  /** the character at the position ('' at the end) */
  peek(): string {
    return this.line.charAt(this.i);
  }

  atEnd(): boolean {
    return this.i >= this.line.length;
  }

  rest(): string {
    return this.line.slice(this.i);
  }

  fail(why: string): never {
    throw new ExpositionError(this.lineNo, `${why} at column ${this.i + 1}`);
  }

  skipSpace(): void {
    while (this.i < this.line.length && (this.line[this.i] === ' ' || this.line[this.i] === '\t')) this.i++;
  }

  readName(start: RegExp, rest: RegExp): string {
    const s = this.i;
    if (!start.test(this.peek())) this.fail('expected a name');
    this.i++;
    while (this.i < this.line.length && rest.test(this.line[this.i])) this.i++;
    return this.line.slice(s, this.i);
  }

  /** A quoted string, at its opening quote; \\, \" and \n escapes (any other pair kept as written). */
  readQuoted(): string {
    this.i++;
    let out = '';
    for (;;) {
      if (this.i >= this.line.length) this.fail('unterminated quoted string');
      const c = this.line[this.i++];
      if (c === '"') return out;
      if (c === '\\') {
        if (this.i >= this.line.length) this.fail('unterminated quoted string');
        const e = this.line[this.i++];
        out += e === 'n' ? '\n' : e === '\\' || e === '"' ? e : '\\' + e;
      } else out += c;
    }
  }
}
