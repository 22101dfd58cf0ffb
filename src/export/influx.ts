/**
 * InfluxDB exporter: MetricSets as InfluxDB line protocol, written through
 * @influxdata/influxdb-client to InfluxDB 2.x (/api/v2/write, --org/--bucket/
 * --token), InfluxDB 1.x (/write, --db) or anything that speaks either
 * (VictoriaMetrics accepts both paths).
 *
 * Schema (prefix "meshprobe_" by default; tags of every point: the series'
 * labels plus host=<MetricSet.host> and probe=<MetricSet.probe>, empty values
 * left out, keys sorted; timestamp: MetricSet.end in ns; an Influx MetricSet
 * normally covers one interval (cumulative=false), so counts are per interval):
 *
 *   histogram series <name>:
 *     meshprobe_<name>  count=<n>i,sum_seconds=<f>,mean_seconds=<f>,
 *                       p50_seconds=<f>,p90_seconds=<f>,p99_seconds=<f>,
 *                       p999_seconds=<f>,min_seconds=<f>,max_seconds=<f>
 *       (an empty histogram: count=0i,sum_seconds=0 only)
 *     meshprobe_<name>_bucket,le=<upper bound in s>  count=<n>i,lower_seconds=<f>
 *       one point per non-empty fine bucket of the log-linear histogram;
 *       count is that bucket's own count (NOT cumulative over le), so buckets
 *       add up across hosts and intervals and sum to the summary's count.
 *       le is the bucket's exclusive upper bound as an exact decimal string
 *       ("0.000000128", "0.001015808"), "+Inf" for the overflow bucket;
 *       lower_seconds its inclusive lower bound.
 *   counter series <name> (name without "_total"):
 *     meshprobe_<name>  value=<n>i   (a float when the value is not integral)
 *   gauge series <name>:
 *     meshprobe_<name>  value=<f>    (always a float: a field's type must not
 *                                     change between points, and a gauge may
 *                                     be integral one time and not the next)
 *
 * VictoriaMetrics stores `m f=v` as metric m_f, so these become e.g.
 * meshprobe_request_duration_p99_seconds{host,probe,...} and
 * meshprobe_request_duration_bucket_count{le,...}.
 *
 * Delivery: @influxdata/influxdb-client's WriteApi sends and retries: its HTTP transport
 * (timeout, gzip, headers), its retry buffer and its delays (exponential backoff from
 * minRetryDelayMs to maxRetryDelayMs plus random jitter), up to maxRetries; its writeSuccess / writeFailed / writeRetrySkipped hooks do the accounting. A
 * failure that can pass (network error, timeout, HTTP 408/429/5xx) is retried, then the batch is
 * dropped and counted; any other HTTP error (400 bad line, 401, 404 unknown database, ...) drops
 * the batch at once. What this file adds, because the client does not do it:
 *  - the bound: write() only queues lines here (at most maxBufferLines with those waiting for a
 *    retry; past that the oldest are dropped and counted) and the client gets one batch at a time.
 *    Given every line at once, the client would start a request for each full batch (a server
 *    that is down or hangs would collect any number of them in flight, outside any bound, and
 *    retried out of order), and its retry buffer drops whole batches (down to 70 % of its
 *    limit), not the oldest lines;
 *  - which failures can pass (the client retries any HTTP status from 429 up, and not 408), and
 *    no Retry-After (the client reads it as milliseconds, see forRetry());
 *  - close() with a deadline and hurry(): the client's close() sends no retry and has no deadline.
 * So every line is accounted for exactly once: written (writeSuccess), dropped (buffer full,
 * retries exhausted, rejected, unsent at close), or still pending.
 */
import http from 'node:http';
import https from 'node:https';
import { HttpError, InfluxDB, escape, setLogger, type Transport, type WriteApi } from '@influxdata/influxdb-client';
import { EXIT_USAGE, MeshprobeError, errorCode, usageError } from '../errors.js';
import { bucketLower, bucketUpper, mean, overflowIndex, percentile } from '../histogram.js';
import { log } from '../log.js';
import { METRIC_PREFIX, type Labels, type MetricSet } from './model.js';

export interface InfluxOptions {
  /** base URL, e.g. http://127.0.0.1:8086 */
  url: string;
  /** InfluxDB 2.x */
  org?: string;
  bucket?: string;
  token?: string;
  /** InfluxDB 1.x */
  db?: string;
  username?: string;
  password?: string;
  retentionPolicy?: string;
  /**
   * a write fails after this long without a byte from the server (the client's socket timeout),
   * the reachability check's requests after this long in all; default 10 000 ms for writes,
   * 3 000 ms for the check
   */
  timeoutMs?: number;
  /** lines kept while the server cannot take them, default 50 000 */
  maxBufferLines?: number;
  /** retries of a failed batch before its lines are dropped, default 10 */
  maxRetries?: number;
  /** first retry delay, default 1 000 ms (doubles each time; plus up to 20 % of it at random) */
  minRetryDelayMs?: number;
  /** longest retry delay, default 30 000 ms */
  maxRetryDelayMs?: number;
  /** lines per request, default 5 000 */
  batchSize?: number;
  /** measurement prefix, default "meshprobe_" */
  measurementPrefix?: string;
}

export interface InfluxStats {
  /** lines the server confirmed (HTTP 204) */
  points_written: number;
  /** lines given up: buffer overflow, retries exhausted, rejected by the server, unsent at close */
  points_dropped: number;
  /** failed write requests (each attempt counts) */
  write_errors: number;
  /** requests that were retries of a failed batch */
  retries: number;
  last_error?: string;
}

const DEFAULTS = {
  timeoutMs: 10_000,
  pingTimeoutMs: 3_000,
  maxBufferLines: 50_000,
  maxRetries: 10,
  minRetryDelayMs: 1_000,
  maxRetryDelayMs: 30_000,
  batchSize: 5_000,
};

// ---------------------------------------------------------------- options

type Target = { kind: 'v1'; url: URL; db: string } | { kind: 'v2'; url: URL };

/** Checks the flag combination; throws usageError (exit 2) with a one-line message. */
export function validateInfluxOptions(opts: InfluxOptions): Target {
  let url: URL;
  try {
    url = new URL(opts.url);
  } catch {
    throw usageError(`--url ${JSON.stringify(opts.url)} is not a URL: give e.g. --url http://127.0.0.1:8086`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw usageError(`--url ${opts.url}: InfluxDB needs an http:// or https:// URL`);
  }
  const db = opts.db ?? '';
  const v1 = db !== '';
  const v2 = opts.bucket !== undefined && opts.bucket !== '';
  if (v1 && v2) {
    throw usageError('InfluxDB: give either --db (InfluxDB 1.x) or --org/--bucket/--token (InfluxDB 2.x), not both');
  }
  if (!v1 && !v2) {
    throw usageError('InfluxDB: give --db (InfluxDB 1.x), or --org/--bucket/--token (InfluxDB 2.x)');
  }
  if (v2 && !opts.org) throw usageError('InfluxDB 2.x: --bucket needs --org (and --token)');
  if (v2 && opts.retentionPolicy)
    throw usageError('--retention-policy is for InfluxDB 1.x (--db); InfluxDB 2.x keeps it in the --bucket');
  if (v2 && opts.username) throw usageError('--username is for InfluxDB 1.x (--db); InfluxDB 2.x uses --token');
  for (const [k, v] of [
    ['timeoutMs', opts.timeoutMs],
    ['maxBufferLines', opts.maxBufferLines],
    ['maxRetries', opts.maxRetries],
    ['batchSize', opts.batchSize],
  ] as const) {
    if (v !== undefined && !(v >= 0 && Number.isFinite(v)))
      throw usageError(`InfluxDB: ${k} must be a number >= 0, not ${v}`);
  }
  return v1 ? { kind: 'v1', url, db } : { kind: 'v2', url };
}

/** The v1 write path: /write?db=&rp=&precision=ns (the credentials go in a header, never in the URL) */
function v1WritePath(db: string, opts: InfluxOptions): string {
  const q = new URLSearchParams({ db });
  if (opts.retentionPolicy) q.set('rp', opts.retentionPolicy);
  q.set('precision', 'ns');
  return `/write?${q.toString()}`;
}

/**
 * InfluxDB 1.x credentials as HTTP Basic authentication, which 1.x accepts
 * beside u=/p= in the query string: proxies and access logs record URLs,
 * not Authorization headers.
 */
export function v1AuthHeaders(opts: Pick<InfluxOptions, 'username' | 'password'>): Record<string, string> {
  if (!opts.username && !opts.password) return {};
  const basic = Buffer.from(`${opts.username ?? ''}:${opts.password ?? ''}`).toString('base64');
  return { Authorization: `Basic ${basic}` };
}

// ---------------------------------------------------------------- reachability

/** One HTTP request with a short timeout: its status and body (the first 4 KB), or the error that stopped it. */
function httpOnce(
  target: URL,
  method: string,
  headers: Record<string, string>,
  timeoutMs: number,
): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const mod = target.protocol === 'https:' ? https : http;
    let done = false;
    const finish = (r: { status: number; body: string } | { error: string }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(r);
    };
    const req = mod.request(target, { method, agent: false, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (body.length < 4096) body += chunk;
      });
      res.on('end', () => {
        finish({ status: res.statusCode ?? 0, body });
      });
      res.on('error', (e) => {
        finish({ error: errorCode(e) ?? e.message });
      });
    });
    const timer = setTimeout(() => {
      finish({ error: `no answer within ${timeoutMs} ms` });
      req.destroy();
    }, timeoutMs);
    req.on('error', (e) => {
      finish({ error: errorCode(e) ?? e.message });
    });
    req.end();
  });
}

/** InfluxDB's own words from an error body ({"error": "..."} or {"message": "..."}), else the body. */
function influxSays(body: string): string {
  try {
    const j = JSON.parse(body) as { error?: unknown; message?: unknown };
    const m = j.error ?? j.message;
    if (typeof m === 'string') return m;
  } catch {
    // not JSON: the text itself
  }
  return body.trim().slice(0, 200);
}

/**
 * Before anything loads: GET /ping (InfluxDB 1.x, 2.x and VictoriaMetrics all answer it with 204),
 * then an empty write to the database or bucket the points will go to, with the same credentials:
 * InfluxDB checks both before it looks at the (empty) body (1.x answers 204, 2.x 400 "writing
 * requires points"), so a missing database or bucket, or
 * refused credentials, stop the run here rather than dropping every point for its whole duration.
 * Rejects with MeshprobeError MP_INFLUX_UNREACHABLE, MP_INFLUX_NO_DB or MP_INFLUX_AUTH (exit 2);
 * with MP_USAGE for a wrong flag combination.
 */
export async function checkInfluxReachable(opts: InfluxOptions): Promise<void> {
  const target = validateInfluxOptions(opts);
  const timeoutMs = Math.min(opts.timeoutMs ?? DEFAULTS.pingTimeoutMs, DEFAULTS.pingTimeoutMs * 2);
  const base = opts.url.replace(/\/+$/, '');
  const ping = await httpOnce(new URL(base + '/ping'), 'GET', {}, timeoutMs);
  const unreachable = (why: string) =>
    new MeshprobeError(
      'MP_INFLUX_UNREACHABLE',
      `cannot reach InfluxDB at ${base} (${why}): check --url, or start the server`,
      EXIT_USAGE,
    );
  if ('error' in ping) throw unreachable(ping.error);
  if (ping.status < 200 || ping.status >= 300) throw unreachable(`HTTP ${ping.status} on /ping`);

  let write: URL;
  let headers: Record<string, string> = {};
  let where: string;
  if (target.kind === 'v1') {
    write = new URL(base + v1WritePath(target.db, opts));
    headers = v1AuthHeaders(opts);
    where = `database ${JSON.stringify(target.db)}`;
  } else {
    const q = new URLSearchParams({ org: opts.org ?? '', bucket: opts.bucket ?? '', precision: 'ns' });
    write = new URL(`${base}/api/v2/write?${q.toString()}`);
    if (opts.token) headers = { Authorization: `Token ${opts.token}` };
    where = `bucket ${JSON.stringify(opts.bucket)} of org ${JSON.stringify(opts.org)}`;
  }
  const w = await httpOnce(write, 'POST', { ...headers, 'Content-Type': 'text/plain; charset=utf-8' }, timeoutMs);
  if ('error' in w) throw unreachable(`${w.error} on an empty write`);
  if (w.status >= 200 && w.status < 300) return;
  const said = influxSays(w.body);
  // InfluxDB 2.x checks the token, the bucket and the permission before the body, then refuses an
  // empty one ("writing requires points"): a 400 here says the rest was accepted
  if (w.status === 400) return;
  if (w.status === 404) {
    throw new MeshprobeError(
      'MP_INFLUX_NO_DB',
      `InfluxDB at ${base} has no ${where} (${said}): create it` +
        (target.kind === 'v1' ? ` (CREATE DATABASE ${target.db})` : ' (influx bucket create)') +
        ', or give another ' +
        (target.kind === 'v1' ? '--db' : '--bucket/--org'),
      EXIT_USAGE,
    );
  }
  if (w.status === 401 || w.status === 403) {
    throw new MeshprobeError(
      'MP_INFLUX_AUTH',
      `InfluxDB at ${base} refused to let us write to its ${where} (HTTP ${w.status}: ${said}): check ` +
        (target.kind === 'v1' ? '--username/--password' : '--token'),
      EXIT_USAGE,
    );
  }
  throw unreachable(`HTTP ${w.status} on an empty write to its ${where}: ${said}`);
}

// ---------------------------------------------------------------- line protocol

const escMeasurement = escape.measurement;
const escTag = escape.tag;

/** Exact decimal seconds of an integer count of ns: 128 → "0.000000128", 1e9 → "1". */
export function nsToSecondsString(ns: number): string {
  if (!Number.isFinite(ns)) return ns > 0 ? '+Inf' : '-Inf';
  if (!Number.isSafeInteger(ns)) return String(ns / 1e9);
  const neg = ns < 0;
  const a = BigInt(Math.abs(ns));
  const whole = a / 1_000_000_000n;
  const frac = (a % 1_000_000_000n).toString().padStart(9, '0').replace(/0+$/, '');
  return (neg ? '-' : '') + whole.toString() + (frac ? '.' + frac : '');
}

function float(x: number): string | undefined {
  return Number.isFinite(x) ? String(x) : undefined;
}

function tagString(labels: Labels, extra: Labels): string {
  const all: Labels = { ...labels, ...extra };
  let s = '';
  for (const k of Object.keys(all).sort()) {
    const v = all[k];
    if (k === '' || v === '') continue;
    s += ',' + escTag(k) + '=' + escTag(v);
  }
  return s;
}

function fieldString(fields: [string, string | undefined][]): string {
  return fields
    .filter((f): f is [string, string] => f[1] !== undefined)
    .map(([k, v]) => `${escTag(k)}=${v}`)
    .join(',');
}

/** MetricSet.end as a line protocol timestamp in ns. */
function nsTimestamp(d: Date): string {
  const ms = d.getTime();
  if (!Number.isFinite(ms)) throw new Error('MetricSet.end is not a valid date');
  return (BigInt(Math.trunc(ms)) * 1_000_000n).toString();
}

/**
 * The lines of one MetricSet (schema at the top of this file). Pure: same
 * input, same output.
 */
export function toLineProtocol(m: MetricSet, opts: { measurementPrefix?: string } = {}): string[] {
  const prefix = opts.measurementPrefix ?? METRIC_PREFIX;
  const ts = nsTimestamp(m.end);
  const base: Labels = { host: m.host, probe: m.probe };
  const lines: string[] = [];
  const ovf = overflowIndex();

  for (const s of m.histograms) {
    const h = s.hist;
    const meas = escMeasurement(prefix + s.name);
    const tags = tagString(s.labels, base);
    const count = Math.max(0, Math.round(h.count));
    const fields: [string, string | undefined][] = [
      ['count', `${count}i`],
      ['sum_seconds', float(h.sum_ns / 1e9)],
    ];
    if (count > 0) {
      fields.push(
        ['mean_seconds', float(mean(h) / 1e9)],
        ['p50_seconds', float(percentile(h, 0.5) / 1e9)],
        ['p90_seconds', float(percentile(h, 0.9) / 1e9)],
        ['p99_seconds', float(percentile(h, 0.99) / 1e9)],
        ['p999_seconds', float(percentile(h, 0.999) / 1e9)],
        ['min_seconds', float(h.min_ns / 1e9)],
        ['max_seconds', float(h.max_ns / 1e9)],
      );
    }
    lines.push(`${meas}${tags} ${fieldString(fields)} ${ts}`);

    const bmeas = escMeasurement(prefix + s.name + '_bucket');
    for (const [idx, c] of h.buckets) {
      if (!(c > 0)) continue;
      const le = idx >= ovf ? '+Inf' : nsToSecondsString(bucketUpper(idx));
      const btags = tagString(s.labels, { ...base, le });
      lines.push(`${bmeas}${btags} count=${Math.round(c)}i,lower_seconds=${bucketLower(idx) / 1e9} ${ts}`);
    }
  }
  for (const s of m.counters) {
    if (!Number.isFinite(s.value)) continue;
    const v = Number.isSafeInteger(s.value) ? `${s.value}i` : String(s.value);
    lines.push(`${escMeasurement(prefix + s.name)}${tagString(s.labels, base)} value=${v} ${ts}`);
  }
  for (const s of m.gauges) {
    if (!Number.isFinite(s.value)) continue;
    lines.push(`${escMeasurement(prefix + s.name)}${tagString(s.labels, base)} value=${String(s.value)} ${ts}`);
  }
  return lines;
}

// ---------------------------------------------------------------- exporter

let clientLoggerSet = false;
/** The client logs every failed request to the console: route it to our debug level. */
function quietClientLogger(): void {
  if (clientLoggerSet) return;
  clientLoggerSet = true;
  setLogger({
    error: (msg: string, err?: unknown) => {
      log.debug(`influxdb-client: ${msg}`, err ? { error: describeError(err) } : undefined);
    },
    warn: (msg: string, err?: unknown) => {
      log.debug(`influxdb-client: ${msg}`, err ? { error: describeError(err) } : undefined);
    },
  });
}

/** A short description of a write failure: "ECONNREFUSED", "HTTP 404: database not found: \"x\"". */
function describeError(err: unknown): string {
  if (err instanceof HttpError) {
    // InfluxDB 1.x answers {"error":"..."}, 2.x {"code":"...","message":"..."}, VictoriaMetrics text
    let msg = err.body ?? '';
    try {
      const j = JSON.parse(msg) as { error?: unknown; message?: unknown };
      if (typeof j.error === 'string') msg = j.error;
      else if (typeof j.message === 'string') msg = j.message;
    } catch {
      /* not JSON */
    }
    if (!msg) msg = err.statusMessage ?? '';
    msg = msg.replace(/\s+/g, ' ').trim();
    if (msg.length > 200) msg = msg.slice(0, 200) + '…';
    return `HTTP ${err.statusCode}${msg ? ': ' + msg : ''}`;
  }
  const code = errorCode(err);
  const msg = err instanceof Error ? err.message : String(err);
  return code && !msg.includes(code) ? `${code}: ${msg}` : (code ?? msg);
}

/**
 * Whether trying the same lines again later can succeed: network errors, timeouts, HTTP 429 and
 * 5xx (and 408, which the transport below hands on as a network error). The client itself retries
 * every error but an HTTP status below 429, a superset: where this says yes, it retries.
 */
function retriable(err: unknown): boolean {
  if (err instanceof HttpError) return err.statusCode === 429 || err.statusCode >= 500;
  return true;
}

/**
 * A failure as the client's retry logic is to see it: HTTP 408 (a proxy's or load balancer's
 * timeout, which can pass) as a network error, since the client retries only statuses from 429
 * up; and without Retry-After, which the client reads as milliseconds where a server means
 * seconds: it would retry a server that asks for a pause almost at once, the backoff applies.
 */
function forRetry(e: Error): Error {
  if (!(e instanceof HttpError)) return e;
  if (e.statusCode === 408) return new Error(describeError(e));
  if (e.retryAfter() > 0) {
    return new HttpError(e.statusCode, e.statusMessage, e.body, undefined, e.contentType, undefined, e.headers);
  }
  return e;
}

/** InfluxDB Enterprise's "hinted handoff queue not empty": the client counts that write as a success. */
function hintedHandoff(err: unknown): boolean {
  const e = err instanceof HttpError ? (err.json as { error?: unknown } | undefined)?.error : undefined;
  return typeof e === 'string' && e.includes('hinted handoff queue not empty');
}

/**
 * The batch the client holds (never more than one): its request is under way (`sending`, `count`
 * lines), or it waits in the client's retry buffer for its delay (`lines`: the client's own array,
 * which it sends again as it is then).
 */
type Held = { sending: true; count: number } | { sending: false; lines: string[] };

type State = 'ok' | 'failing' | 'rejecting';

/**
 * Non-blocking writer: write() queues, the client sends and retries. Never throws out of
 * write(), never leaves a promise rejection unhandled.
 */
export class InfluxExporter {
  private readonly prefix: string;
  private readonly maxBufferLines: number;
  private readonly maxRetries: number;
  private readonly batchSize: number;
  private readonly agent: http.Agent;
  private readonly api: WriteApi;

  // lines not yet given to the client: queue[head..]
  private queue: string[] = [];
  private head = 0;
  private held: Held | undefined;

  private st: InfluxStats = { points_written: 0, points_dropped: 0, write_errors: 0, retries: 0 };
  private state: State = 'ok';
  private overflowing = false;
  private scheduled = false;
  private closed = false;
  private finalized = false;
  private deadline = Infinity;
  /** ends close()'s wait for the last writes */
  private wake: (() => void) | undefined;
  private closing: Promise<InfluxStats> | undefined;

  constructor(opts: InfluxOptions) {
    const target = validateInfluxOptions(opts);
    this.prefix = opts.measurementPrefix ?? METRIC_PREFIX;
    this.maxBufferLines = Math.floor(opts.maxBufferLines ?? DEFAULTS.maxBufferLines);
    this.maxRetries = Math.floor(opts.maxRetries ?? DEFAULTS.maxRetries);
    this.batchSize = Math.max(1, Math.floor(opts.batchSize ?? DEFAULTS.batchSize));
    const minRetryDelay = Math.max(1, opts.minRetryDelayMs ?? DEFAULTS.minRetryDelayMs);
    quietClientLogger();
    // our own agent: close() destroys its sockets, so nothing outlives the exporter
    this.agent =
      target.url.protocol === 'https:' ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
    const transport = new InfluxDB({
      url: opts.url,
      token: opts.token || undefined,
      timeout: opts.timeoutMs && opts.timeoutMs > 0 ? opts.timeoutMs : DEFAULTS.timeoutMs,
      transportOptions: { agent: this.agent },
      ...(target.kind === 'v1' ? { headers: v1AuthHeaders(opts) } : {}),
    }).transport;
    const client = new InfluxDB({ url: opts.url, transport: this.watched(transport) });
    this.api = client.getWriteApi(opts.org ?? '-', opts.bucket ?? '-', 'ns', {
      // handOver() gives the client one batch and flushes it: one request, never split
      batchSize: this.batchSize,
      maxBatchBytes: Number.MAX_SAFE_INTEGER,
      flushInterval: 0,
      // retries: minRetryDelay * 2^(attempt - 1) up to maxRetryDelay, plus up to 20 % of
      // minRetryDelay at random; maxRetries decides, not the time spent
      maxRetries: this.maxRetries,
      minRetryDelay,
      maxRetryDelay: Math.max(minRetryDelay, opts.maxRetryDelayMs ?? DEFAULTS.maxRetryDelayMs),
      exponentialBase: 2,
      randomRetry: false,
      retryJitter: Math.round(minRetryDelay * 0.2),
      // never reached: failed() counts on the client retrying every failure it lets pass
      maxRetryTime: Number.MAX_SAFE_INTEGER,
      maxBufferLines: Math.max(1, this.maxBufferLines),
      writeSuccess: (lines) => {
        this.written(lines);
      },
      writeFailed: (err, lines, attempt) => this.failed(err, lines, attempt),
      writeRetrySkipped: (entry) => {
        this.skipped(entry.lines);
      },
    });
    if (target.kind === 'v1') this.api.path = v1WritePath(target.db, opts);
  }

  /** Queues the lines of m; returns at once. Never throws. */
  write(m: MetricSet): void {
    let lines: string[];
    try {
      lines = toLineProtocol(m, { measurementPrefix: this.prefix });
    } catch (e) {
      this.st.last_error = `cannot convert metrics to line protocol: ${describeError(e)}`;
      log.warn(`InfluxDB: ${this.st.last_error}`);
      return;
    }
    this.writeLines(lines);
  }

  /** Queues ready-made line protocol lines (as write() does). Never throws. */
  writeLines(lines: readonly string[]): void {
    if (lines.length === 0) return;
    if (this.closed) {
      this.st.points_dropped += lines.length;
      return;
    }
    for (const l of lines) this.queue.push(l);
    this.trim();
    this.schedule();
  }

  stats(): InfluxStats {
    return { ...this.st };
  }

  /** Lines queued or waiting for a retry (not counting a request in flight). */
  pendingLines(): number {
    return this.queue.length - this.head + (this.held && !this.held.sending ? this.held.lines.length : 0);
  }

  /**
   * Stops taking lines, sends what it can within timeoutMs (a batch waiting for its retry delay
   * is sent at once, later retries keep the client's delays), then counts whatever is left
   * (including a request still in flight) as dropped, and frees every socket. Resolves with the
   * final stats; never rejects. Calling it again returns the same promise.
   */
  close(timeoutMs = 5_000): Promise<InfluxStats> {
    this.closing ??= this.doClose(timeoutMs);
    return this.closing;
  }

  /** A close() waiting for its last writes stops waiting now; what is not written is counted dropped. */
  hurry(): void {
    this.deadline = Date.now();
    this.wake?.();
  }

  private async doClose(timeoutMs: number): Promise<InfluxStats> {
    this.closed = true;
    this.deadline = Date.now() + Math.max(0, timeoutMs);
    if (this.held && !this.held.sending) {
      // flush(true) sends the client's retry buffer now; the outcome comes through the hooks
      void this.api.flush(true).catch(countedByTheHooks);
    }
    this.schedule();
    if (!this.isIdle()) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((r) => {
        this.wake = r;
        timer = setTimeout(r, Math.max(0, this.deadline - Date.now()));
      });
      clearTimeout(timer);
    }
    this.finalized = true; // the hooks count nothing from here on
    const lost = this.pendingLines() + (this.held?.sending ? this.held.count : 0);
    this.held = undefined;
    this.queue = [];
    this.head = 0;
    if (lost > 0) {
      this.st.points_dropped += lost;
      log.warn(
        `InfluxDB: ${lost} points could not be written before exit`,
        this.st.last_error ? { last_error: this.st.last_error } : undefined,
      );
    }
    this.api.dispose(); // the client's retry buffer and its timer: nothing is sent after this
    this.agent.destroy(); // ends a request still in flight
    return this.stats();
  }

  private isIdle(): boolean {
    return !this.held && this.head === this.queue.length;
  }

  /**
   * Keeps queued + retry lines within maxBufferLines by dropping the oldest. Those may be the
   * first lines of the batch waiting in the client's retry buffer: the client keeps the very
   * array its writeFailed hook was given and sends what is left of it at the retry, so that
   * array is cut in place (the client's own limit drops whole batches, down to 70 %, and it only
   * ever holds one batch here, so its line count, which this does not update, never matters).
   */
  private trim(): void {
    let over = this.pendingLines() - this.maxBufferLines;
    if (over <= 0) return;
    this.st.points_dropped += over;
    if (this.held && !this.held.sending) {
      const n = Math.min(over, this.held.lines.length);
      this.held.lines.splice(0, n);
      over -= n;
      // an empty array: the client's retry finds nothing to send and sends nothing
      if (this.held.lines.length === 0) this.batchDone();
    }
    if (over > 0) {
      this.head += over;
      this.compact();
    }
    if (!this.overflowing) {
      this.overflowing = true;
      log.warn(`InfluxDB: buffer full (${this.maxBufferLines} lines): dropping the oldest points`);
    }
  }

  private compact(): void {
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  private schedule(): void {
    if (this.scheduled || this.finalized) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.handOver();
    });
  }

  /**
   * Gives the client the next batch once it holds none: one request at a time, in order, and the
   * lines not yet sent stay here, where trim() can count and drop them.
   */
  private handOver(): void {
    if (this.finalized || this.held || this.isIdle()) return;
    if (this.closed && Date.now() >= this.deadline) return; // close() counts the rest
    const lines = this.queue.slice(this.head, this.head + this.batchSize);
    this.head += lines.length;
    this.compact();
    this.held = { sending: true, count: lines.length };
    this.api.writeRecords(lines);
    // a rejection means the client has scheduled a retry or given up, which the hooks have counted
    void this.api.flush().catch(countedByTheHooks);
  }

  /** The held batch is written, dropped or emptied: the next one, or close() may end. */
  private batchDone(): void {
    this.held = undefined;
    if (this.isIdle()) this.wake?.();
    else this.schedule();
  }

  /** The client's transport, which also tells which request is a retry, and shows failures as forRetry() does. */
  private watched(inner: Transport): Transport {
    return {
      chunkCombiner: inner.chunkCombiner,
      request: inner.request.bind(inner),
      iterate: inner.iterate.bind(inner),
      send: (path, body, options, callbacks) => {
        if (this.held && !this.held.sending) {
          this.st.retries++;
          this.held = { sending: true, count: this.held.lines.length };
        }
        const error = callbacks?.error;
        const onError = (e: Error) => {
          error?.call(callbacks, forRetry(e));
        };
        inner.send(path, body, options, callbacks && { ...callbacks, error: onError });
      },
    };
  }

  /** writeSuccess: the server took the lines. */
  private written(lines: string[]): void {
    if (this.finalized) return; // in flight at the deadline: counted as dropped
    this.st.points_written += lines.length;
    this.overflowing = false;
    this.setState('ok');
    this.batchDone();
  }

  /**
   * writeFailed, at every failed attempt: undefined lets the client retry (it keeps `lines` in its
   * retry buffer), a promise takes over, here to count the lines as dropped.
   */
  private failed(err: Error, lines: string[], attempt: number): Promise<void> | undefined {
    if (this.finalized) return Promise.resolve(); // counted as dropped at close
    if (hintedHandoff(err)) return undefined; // the client calls writeSuccess next
    this.st.write_errors++;
    const why = describeError(err);
    this.st.last_error = why;
    // the client does not end a request that timed out, and a hung server never would: the only
    // request in flight must not keep its socket
    for (const list of Object.values(this.agent.sockets)) for (const sock of list ?? []) sock.destroy();
    // the client retries exactly when this holds: attempt <= maxRetries is its retries left > 0
    if (retriable(err) && attempt <= this.maxRetries) {
      this.setState('failing', why);
      this.held = { sending: false, lines };
      this.trim(); // while this batch was in flight, the bound did not count it
      return undefined;
    }
    this.st.points_dropped += lines.length;
    if (retriable(err)) log.debug(`InfluxDB: ${lines.length} points dropped after ${attempt} attempts`);
    else this.setState('rejecting', why, lines.length);
    this.batchDone();
    return Promise.resolve();
  }

  /**
   * writeRetrySkipped: the client's retry buffer gave up lines to stay within maxBufferLines. It
   * holds one batch at most here, so this can only be a batch trim() emptied (nothing to count);
   * should it ever be more, the lines are counted, not lost.
   */
  private skipped(lines: string[]): void {
    if (this.finalized || lines.length === 0) return;
    this.st.points_dropped += lines.length;
    if (this.held && !this.held.sending && this.held.lines === lines) this.batchDone();
  }

  private setState(next: State, why?: string, lines?: number): void {
    if (next === this.state) return;
    const prev = this.state;
    this.state = next;
    if (next === 'failing') log.warn(`InfluxDB write failed (${why ?? 'no reason given'}): retrying`);
    else if (next === 'rejecting')
      log.warn(`InfluxDB rejected a write (${why ?? 'no reason given'}): ${lines ?? 'its'} points dropped`);
    else if (prev !== 'ok') log.warn('InfluxDB writes work again');
  }
}

/** The end of a flush() whose outcome the writeSuccess/writeFailed hooks have counted already. */
function countedByTheHooks(): void {
  /* nothing left to do: see InfluxExporter.failed */
}
