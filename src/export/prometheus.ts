/**
 * Prometheus exporter: the text exposition format 0.0.4 (renderPrometheus,
 * pure) and a small node:http server that answers GET /metrics with it
 * (PrometheusExporter).
 *
 * Metric names (every one starts with METRIC_PREFIX, "meshprobe_"):
 * - HistogramSeries "x"  → family `meshprobe_x_seconds`, TYPE histogram:
 *   `_bucket{…,le}` (cumulative, increasing le, always ending with le="+Inf"
 *   equal to `_count`), `_sum` (seconds), `_count`.
 * - counter "x"          → `meshprobe_x_total`, TYPE counter.
 * - gauge "x"            → `meshprobe_x`, TYPE gauge.
 * - always `meshprobe_build_info{host,nodejs,probe,version} 1`, TYPE gauge.
 * Names are sanitized: camelCase → snake_case, lower case, anything outside
 * [a-z0-9_] → "_" (":" too: it is reserved for recording rules); a redundant
 * "meshprobe_" prefix, a histogram's "_seconds" and a counter's "_total"
 * suffix are not doubled. Label names are sanitized the same way (a leading
 * "__", reserved by Prometheus, becomes "_"; a histogram's own "le" label
 * becomes "exported_le"); labels with an empty value are left out (Prometheus
 * treats "" as absent). Labels are sorted by name, "le" last, as client_golang
 * does. Series of one family whose labels end up equal are merged
 * (histograms merged, counters added, gauges: the last one wins).
 *
 * Bucket mapping. Our histograms have fine log-linear buckets (64 per power
 * of two, exact below 128 ns); the exposition has a few coarse bounds `le`
 * (seconds). Each fine bucket is counted, whole, in the first exposition
 * bucket whose bound is ≥ the fine bucket's midpoint (bucketMid). Values of
 * a fine bucket that straddles a bound can thus land on the wrong side of it
 * by at most half a fine bucket: at most 1/128 (0.78 %) of the bound, and
 * less than 1/256 (0.39 %) for bounds in the upper half of a power of two.
 * The overflow bucket (≥ 2^36 ns ≈ 68.7 s) only counts in +Inf.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { gzipSync } from 'node:zlib';
import { bucketMid, merge, type HistogramSnapshot } from '../histogram.js';
import { MeshprobeError, EXIT_USAGE, usageError, errorCode } from '../errors.js';
import { log } from '../log.js';
import { METRIC_PREFIX, type Labels, type MetricSet } from './model.js';

/**
 * Default exposition bounds in seconds (finite ones: +Inf is always added by
 * renderPrometheus): service latencies from tens of µs to a minute.
 */
export const DEFAULT_LE_SECONDS: number[] = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const BUCKETS_EXAMPLE = '--buckets 0.001,0.005,0.01,0.05,0.1,0.5,1';

/**
 * Parses the value of `--buckets` (seconds, comma separated, strictly
 * increasing, positive; a trailing "+Inf" is accepted and dropped). Throws a
 * usage error (exit 2) saying what to write instead.
 */
export function parseBuckets(s: string): number[] {
  const parts = s.split(',').map((p) => p.trim());
  if (parts.length && /^\+?inf$/i.test(parts[parts.length - 1]) && parts.length > 1) parts.pop();
  const out: number[] = [];
  for (const p of parts) {
    // Number('') is 0 and Number('0x10') is 16: accept decimal numbers only
    if (!/^(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(p)) {
      throw usageError(
        `--buckets ${JSON.stringify(s)}: ${p === '' ? 'an empty bound' : JSON.stringify(p) + ' is not a number of seconds'}: ` +
          `give strictly increasing positive bounds in seconds, e.g. ${BUCKETS_EXAMPLE}`,
      );
    }
    const v = Number(p);
    if (!(v > 0) || !Number.isFinite(v)) {
      throw usageError(`--buckets ${JSON.stringify(s)}: bound ${p} is not a positive number: e.g. ${BUCKETS_EXAMPLE}`);
    }
    if (out.length && v <= out[out.length - 1]) {
      throw usageError(
        `--buckets ${JSON.stringify(s)}: ${p} does not increase on ${out[out.length - 1]}: bounds must be strictly increasing, e.g. ${BUCKETS_EXAMPLE}`,
      );
    }
    out.push(v);
  }
  return out;
}

/** The finite bounds of `le` (a trailing Infinity is dropped), checked. */
function finiteBounds(le: readonly number[] | undefined): number[] {
  const b = le ? [...le] : DEFAULT_LE_SECONDS;
  if (b.length && b[b.length - 1] === Infinity) b.pop();
  for (let i = 0; i < b.length; i++) {
    if (!(b[i] > 0) || !Number.isFinite(b[i]) || (i > 0 && b[i] <= b[i - 1])) {
      throw new Error(`prometheus: bucket bounds must be strictly increasing positive seconds, got [${b.join(', ')}]`);
    }
  }
  return b;
}

/**
 * A float as client_golang writes it (prometheus/common expfmt writeFloat):
 * Go's strconv.FormatFloat(f, 'g', -1, 64), i.e. the shortest digits that
 * round-trip, in exponent form when the decimal exponent is < -4 or ≥ 6
 * ("5e-05", "0.0001", "0.005", "1", "100000", "1e+06"); "+Inf", "-Inf", "NaN".
 */
export function formatFloat(f: number): string {
  if (Number.isNaN(f)) return 'NaN';
  if (f === Infinity) return '+Inf';
  if (f === -Infinity) return '-Inf';
  if (f === 0) return '0';
  const neg = f < 0;
  const [mant, e] = Math.abs(f).toExponential().split('e');
  const digits = mant.replace('.', '');
  const exp = Number(e);
  const nd = digits.length;
  const dp = exp + 1;
  let s: string;
  if (exp < -4 || exp >= 6) {
    const ae = Math.abs(exp);
    s = `${digits[0]}${nd > 1 ? '.' + digits.slice(1) : ''}e${exp < 0 ? '-' : '+'}${ae < 10 ? '0' : ''}${ae}`;
  } else if (dp <= 0) {
    s = '0.' + '0'.repeat(-dp) + digits;
  } else if (dp >= nd) {
    s = digits + '0'.repeat(dp - nd);
  } else {
    s = digits.slice(0, dp) + '.' + digits.slice(dp);
  }
  return neg ? '-' + s : s;
}

/** An integer count (client_golang writes bucket counts and _count as uint64). */
function formatCount(n: number): string {
  return Number.isSafeInteger(n) && n >= 0 ? String(n) : formatFloat(n);
}

/** snake_case, lower case, [a-z0-9_] only. */
function snake(s: string): string {
  return s
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, '_');
}

function metricBase(name: string): string {
  let n = snake(name);
  if (n.startsWith(METRIC_PREFIX)) n = n.slice(METRIC_PREFIX.length);
  n = n.replace(/^_+/, '');
  return n || 'unnamed';
}

export function histogramFamilyName(name: string): string {
  const b = metricBase(name).replace(/_seconds$/, '');
  return `${METRIC_PREFIX}${b || 'unnamed'}_seconds`;
}

export function counterFamilyName(name: string): string {
  const b = metricBase(name).replace(/_total$/, '');
  return `${METRIC_PREFIX}${b || 'unnamed'}_total`;
}

export function gaugeFamilyName(name: string): string {
  return METRIC_PREFIX + metricBase(name);
}

/** A valid, non-reserved label name. */
export function sanitizeLabelName(name: string): string {
  let n = snake(name);
  if (n === '') n = 'label';
  if (/^[0-9]/.test(n)) n = '_' + n;
  if (n.startsWith('__')) n = n.replace(/^_+/, '_');
  return n;
}

export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** Sorted [name, value] pairs: sanitized names, empty values left out, name clashes suffixed. */
function labelPairs(labels: Labels, histogram: boolean): [string, string][] {
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(labels)) {
    if (v === '') continue;
    let n = sanitizeLabelName(k);
    if (histogram && n === 'le') n = 'exported_le';
    let unique = n;
    for (let i = 2; out.has(unique); i++) unique = `${n}_${i}`;
    out.set(unique, v);
  }
  return [...out.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

function renderLabels(pairs: readonly [string, string][]): string {
  if (pairs.length === 0) return '';
  return '{' + pairs.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',') + '}';
}

/**
 * The exposition buckets of a snapshot: [le seconds, cumulative count] in
 * increasing le, the last one le = +Inf holding every value (see the top of
 * this file for how a fine bucket is placed).
 */
export function cumulativeBuckets(h: HistogramSnapshot, le?: readonly number[]): [number, number][] {
  const bounds = finiteBounds(le);
  const counts = new Array<number>(bounds.length + 1).fill(0);
  let j = 0;
  // h.buckets ascend by index, so their midpoints ascend: one pass
  for (const [idx, c] of h.buckets) {
    // mid/1e9 and the bound literal are both the double nearest their exact
    // values, and rounding is monotonic: mid ≤ le (exactly) ⇒ mid/1e9 ≤ le here
    const midS = bucketMid(idx) / 1e9;
    while (j < bounds.length && !(midS <= bounds[j])) j++;
    counts[j] += c;
  }
  let cum = 0;
  return counts.map((c, i) => [i < bounds.length ? bounds[i] : Infinity, (cum += c)]);
}

type Family =
  | {
      kind: 'histogram';
      name: string;
      help: string;
      series: Map<string, { labels: [string, string][]; hist: HistogramSnapshot }>;
    }
  | {
      kind: 'counter' | 'gauge';
      name: string;
      help: string;
      series: Map<string, { labels: [string, string][]; value: number }>;
    };

export interface RenderOptions {
  /** exposition bounds in seconds (default DEFAULT_LE_SECONDS); +Inf is always added */
  le?: number[];
  /** the build_info version label (default "unknown") */
  version?: string;
}

/**
 * The text exposition (format 0.0.4) of a cumulative MetricSet. Pure. Throws
 * (a programming error of the probe, not the user's) when `m` holds interval
 * counts (cumulative: false) or when two families end up with the same
 * sample names.
 */
export function renderPrometheus(m: MetricSet, opts: RenderOptions = {}): string {
  if (!m.cumulative) {
    throw new Error(
      `prometheus: the ${m.probe} figures are interval counts (cumulative: false); Prometheus needs counts since start`,
    );
  }
  const bounds = finiteBounds(opts.le);
  const families = new Map<string, Family>();
  const sampleOwner = new Map<string, string>(); // sample name → family name

  function family(kind: Family['kind'], name: string, help: string): Family {
    let f = families.get(name);
    if (f) {
      if (f.kind !== kind) throw new Error(`prometheus: metric family ${name} is both a ${f.kind} and a ${kind}`);
      return f;
    }
    const samples = kind === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name];
    for (const s of samples) {
      const owner = sampleOwner.get(s);
      if (owner !== undefined) throw new Error(`prometheus: sample name ${s} of ${name} clashes with family ${owner}`);
    }
    for (const s of samples) sampleOwner.set(s, name);
    const h = help.trim() || name.replace(METRIC_PREFIX, '').replace(/_/g, ' ');
    f = kind === 'histogram' ? { kind, name, help: h, series: new Map() } : { kind, name, help: h, series: new Map() };
    families.set(name, f);
    return f;
  }

  for (const s of m.histograms) {
    const f = family('histogram', histogramFamilyName(s.name), s.help);
    if (f.kind !== 'histogram') continue;
    const labels = labelPairs(s.labels, true);
    const key = renderLabels(labels);
    const prev = f.series.get(key);
    f.series.set(key, { labels, hist: prev ? merge(prev.hist, s.hist) : s.hist });
  }
  for (const [kind, list] of [
    ['counter', m.counters],
    ['gauge', m.gauges],
  ] as const) {
    for (const s of list) {
      const f = family(kind, kind === 'counter' ? counterFamilyName(s.name) : gaugeFamilyName(s.name), s.help);
      if (f.kind === 'histogram') continue;
      const labels = labelPairs(s.labels, false);
      const key = renderLabels(labels);
      const prev = f.series.get(key);
      f.series.set(key, { labels, value: prev && kind === 'counter' ? prev.value + s.value : s.value });
    }
  }
  const info = family('gauge', `${METRIC_PREFIX}build_info`, 'meshprobe build and probe information (always 1)');
  if (info.kind === 'gauge') {
    const labels = labelPairs(
      { host: m.host, nodejs: process.version, probe: m.probe, version: opts.version || 'unknown' },
      false,
    );
    info.series.set(renderLabels(labels), { labels, value: 1 });
  }

  const out: string[] = [];
  for (const f of families.values()) {
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.kind}`);
    if (f.kind === 'histogram') {
      for (const { labels, hist } of f.series.values()) {
        const cum = cumulativeBuckets(hist, bounds);
        const total = cum[cum.length - 1][1];
        for (const [le, c] of cum) {
          out.push(`${f.name}_bucket${renderLabels([...labels, ['le', formatFloat(le)]])} ${formatCount(c)}`);
        }
        const l = renderLabels(labels);
        out.push(`${f.name}_sum${l} ${formatFloat(hist.sum_ns / 1e9)}`, `${f.name}_count${l} ${formatCount(total)}`);
      }
    } else {
      for (const { labels, value } of f.series.values())
        out.push(`${f.name}${renderLabels(labels)} ${formatFloat(value)}`);
    }
  }
  return out.join('\n') + '\n';
}

export interface PrometheusExporterOptions {
  port: number;
  /** listen address (default 127.0.0.1: loopback only) */
  host?: string;
  /** the figures since start, asked at every scrape */
  collect: () => MetricSet | Promise<MetricSet>;
  le?: number[];
  version?: string;
  /**
   * A rendering serves every scrape for this long (default 1000 ms), and scrapes that arrive
   * while one renders wait for it: 50 scrapers cost one rendering, not 50.
   */
  renderEveryMs?: number;
}

export interface PrometheusExporterStats {
  /** GET/HEAD /metrics answered 200 */
  scrapes: number;
  /** /metrics requests that failed (collect or render threw: 500) */
  errors: number;
  /** times the figures were collected and rendered (at most one per renderEveryMs) */
  renders: number;
}

/** One rendering of /metrics, plain and gzipped (made on the first scraper that asks for it). */
interface Rendered {
  at: number;
  body: Buffer;
  gzipped?: Buffer;
}

/** The MeshprobeError for a listen() failure (exit 2 for what the user chose). */
export function listenError(err: unknown, host: string, port: number): Error {
  const code = errorCode(err);
  const where = host.includes(':') ? `[${host}]` : host;
  switch (code) {
    case 'EADDRINUSE':
      return new MeshprobeError(
        'MP_PORT_IN_USE',
        `--port ${port} is already in use on ${host}: choose another --port`,
        EXIT_USAGE,
      );
    case 'EACCES':
      return new MeshprobeError(
        'MP_PORT_DENIED',
        `--port ${port} on ${host} needs privileges (ports below 1024): choose a --port from 1024 to 65535`,
        EXIT_USAGE,
      );
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new MeshprobeError(
        'MP_LISTEN_ADDRESS',
        `--listen ${host} is not an address of this machine (${code}): choose a local one, e.g. --listen 127.0.0.1`,
        EXIT_USAGE,
      );
    default:
      return new MeshprobeError(
        'MP_LISTEN',
        `cannot listen on ${where}:${port}: ${err instanceof Error ? err.message : String(err)}`,
        undefined,
        code,
      );
  }
}

/** Whether an Accept-Encoding header allows gzip ("gzip", "gzip;q=0.5", "*"; not "gzip;q=0"). */
function acceptsGzip(header: string | string[] | undefined): boolean {
  const v = Array.isArray(header) ? header.join(',') : (header ?? '');
  return v.split(',').some((part) => {
    const [coding, ...params] = part.split(';').map((x) => x.trim().toLowerCase());
    if (coding !== 'gzip' && coding !== '*') return false;
    const q = params.find((p) => p.startsWith('q='));
    return q === undefined || Number(q.slice(2)) > 0;
  });
}

/**
 * Serves GET /metrics (renderPrometheus(collect())) on host:port; GET / is a
 * pointer to /metrics, anything else 404. gzip when the scraper accepts it.
 */
export class PrometheusExporter {
  /** as configured (0: any free port; address() tells the one bound) */
  readonly port: number;
  readonly host: string;
  private readonly collect: () => MetricSet | Promise<MetricSet>;
  private readonly le: number[];
  private readonly version: string | undefined;
  private server: Server | undefined;
  private closing: Promise<void> | undefined;
  private readonly counts: PrometheusExporterStats = { scrapes: 0, errors: 0, renders: 0 };
  private readonly renderEveryMs: number;
  private rendered: Rendered | undefined;
  private rendering: Promise<Rendered> | undefined;

  constructor(opts: PrometheusExporterOptions) {
    const { port, host = '127.0.0.1', collect, le, version, renderEveryMs = 1000 } = opts;
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw usageError(`--port ${port} is not a port number: choose a --port from 1 to 65535`);
    }
    this.port = port;
    this.host = host;
    this.collect = collect;
    this.le = finiteBounds(le);
    this.version = version;
    this.renderEveryMs = renderEveryMs;
  }

  /** The current rendering: the cached one while fresh, else one shared by every scrape waiting. */
  private current(): Promise<Rendered> {
    const now = performance.now();
    if (this.rendered && now - this.rendered.at < this.renderEveryMs) return Promise.resolve(this.rendered);
    if (!this.rendering) {
      // cleared once settled (not inside: a collect() that throws at once would settle before the assignment)
      const r = (async () => {
        const body = renderPrometheus(await this.collect(), { le: this.le, version: this.version });
        this.counts.renders++;
        this.rendered = { at: performance.now(), body: Buffer.from(body) };
        return this.rendered;
      })();
      this.rendering = r;
      r.then(
        () => (this.rendering = undefined),
        () => (this.rendering = undefined),
      );
    }
    return this.rendering;
  }

  start(): Promise<void> {
    if (this.server) return Promise.resolve();
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        log.warn('prometheus exporter: request failed', { error: String(err) });
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
    });
    server.keepAliveTimeout = 65_000; // longer than a scrape interval: one connection per scraper
    this.server = server;
    this.closing = undefined;
    return new Promise<void>((resolve, reject) => {
      const onError = (err: unknown) => {
        server.off('listening', onListening);
        this.server = undefined;
        server.close(() => {});
        reject(listenError(err, this.host, this.port));
      };
      const onListening = () => {
        server.off('error', onError);
        server.on('error', (err) => {
          log.warn('prometheus exporter: server error', { error: String(err) });
        });
        const a = this.address();
        log.debug('prometheus exporter listening', {
          url: `http://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}/metrics`,
        });
        resolve();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen({ port: this.port, host: this.host });
    });
  }

  /** The address listened on (after start()). */
  address(): { host: string; port: number; family: string } {
    const a = this.server?.address();
    if (!a || typeof a === 'string') throw new Error('prometheus exporter: not listening');
    const { address, port, family } = a;
    return { host: address, port, family };
  }

  stats(): PrometheusExporterStats {
    return { ...this.counts };
  }

  /** Stops listening and ends every connection (keep-alive ones too). */
  close(): Promise<void> {
    const server = this.server;
    if (!server) return this.closing ?? Promise.resolve();
    this.server = undefined;
    this.closing = new Promise<void>((resolve) => {
      server.close(() => {
        resolve();
      });
      server.closeAllConnections();
    });
    return this.closing;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const text = (status: number, body: string, headers: Record<string, string> = {}) => {
      res.writeHead(status, {
        'Content-Type': 'text/plain; charset=utf-8',
        'Content-Length': Buffer.byteLength(body),
        ...headers,
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      text(405, 'only GET and HEAD\n', { Allow: 'GET, HEAD' });
      return;
    }
    if (path === '/') {
      text(200, 'meshprobe Prometheus exporter\nmetrics: /metrics\n');
      return;
    }
    if (path !== '/metrics') {
      text(404, `${path} not found: the metrics are at /metrics\n`);
      return;
    }
    let rendered: Rendered;
    try {
      rendered = await this.current();
    } catch (err) {
      this.counts.errors++;
      log.warn('prometheus exporter: cannot render the metrics', {
        error: err instanceof Error ? err.message : String(err),
      });
      text(500, `cannot render the metrics: ${err instanceof Error ? err.message : String(err)}\n`);
      return;
    }
    this.counts.scrapes++;
    const gzip = acceptsGzip(req.headers['accept-encoding']);
    const payload = gzip ? (rendered.gzipped ??= gzipSync(rendered.body)) : rendered.body;
    res.writeHead(200, {
      'Content-Type': CONTENT_TYPE,
      'Content-Length': payload.length,
      ...(gzip ? { 'Content-Encoding': 'gzip' } : {}),
      Vary: 'Accept-Encoding',
    });
    res.end(req.method === 'HEAD' ? undefined : payload);
  }
}
