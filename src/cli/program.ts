/**
 * commander plumbing shared by every command: options common to all probes,
 * usage errors as one line with exit code 2, and the top-level error handler.
 */
import { Command, CommanderError, Option } from 'commander';
import { EXIT_USAGE, MeshprobeError, usageError } from '../errors.js';
import { LOG_LEVELS, log, setLogLevel, type LogLevel } from '../log.js';
import { DEFAULT_PIPELINE, MIN_RING_PAGES, type PipelineOptions, type ProbeDefinition } from '../pipeline/session.js';
import { checkBinaryOutput, checkWritable, parseDuration, parsePositiveInt } from './options.js';
import { FORMATS, printCheck, runProbe, type Format, type OutputOptions, type RunOptions } from './run-probe.js';
import { VERSION } from './version.js';
import { parseBuckets } from '../export/prometheus.js';
import { validateInfluxOptions, type InfluxOptions } from '../export/influx.js';
import { parseFilters } from '../filter/parse.js';
import { defaultResolveEnv, resolveFilters, type ResolvedFilter } from '../filter/resolve.js';
import { loadServices, type ServiceDef } from '../filter/services.js';

export { VERSION };

/** --format prometheus without --port: not 9090, which Prometheus itself takes */
export const DEFAULT_METRICS_PORT = 9435;

export function newCommand(name: string, description: string): Command {
  const cmd = new Command(name)
    .description(description)
    .version(VERSION)
    .addOption(new Option('--log-level <level>', 'error, warn, info or debug (or MESHPROBE_LOG)').choices(LOG_LEVELS))
    .exitOverride()
    .configureOutput({
      writeErr: (s) => process.stderr.write(s.replace(/^error: /, `${name}: `)),
    })
    .showSuggestionAfterError(true);
  return cmd;
}

/** Options of the decoding pipeline, shared by the three probes. */
export function addProbeOptions(cmd: Command, defaultOutput: string, defaults: Partial<PipelineOptions> = {}): Command {
  const d = { ...DEFAULT_PIPELINE, ...defaults };
  return cmd
    .option('-d, --duration <time>', 'how long to measure: 60, 60s, 500ms, 2m (default: until SIGINT/SIGTERM)')
    .option('-o, --output <file>', 'where the report goes (- for stdout); --format msgpack: required', defaultOutput)
    .option('--format <format>', `output: ${FORMATS.join(', ')}`, 'json')
    .option('--aggregate-interval <time>', 'interval of json-stream lines and InfluxDB writes: 500ms, 10s, 1m', '10s')
    .option(
      '--filter <expr...>',
      'only matching traffic: port=, pid=, comm=, service=, netns=, namespace=, cgroup= ' +
        '(repeat: all must hold; a,b: any of them)',
    )
    .option('--services <file>', 'service names: name -> ports, comm, cgroup, netns (JSON or lines)')
    .option('--sample-rate <n>', 'measure 1 request in N, or auto (keeps ring loss at zero)', '1')
    .option(
      '--max-event-rate <n>',
      'with --sample-rate auto: records per second (measured exchanges, both sides) to stay under (default 100000)',
    )
    .option('--port <n>', `--format prometheus: port of /metrics (default ${DEFAULT_METRICS_PORT})`)
    .option('--listen <addr>', '--format prometheus: address to listen on (default 127.0.0.1)')
    .option('--buckets <seconds>', '--format prometheus: histogram bounds, e.g. 0.001,0.01,0.1,1')
    .option('--url <url>', '--format influx: InfluxDB base URL, e.g. http://influxdb:8086')
    .option('--org <org>', '--format influx (InfluxDB 2): organization')
    .option('--bucket <bucket>', '--format influx (InfluxDB 2): bucket')
    .option('--token <token>', '--format influx (InfluxDB 2): API token (or INFLUX_TOKEN)')
    .option('--db <database>', '--format influx (InfluxDB 1): database')
    .option('--username <user>', '--format influx (InfluxDB 1): user')
    .option('--password <password>', '--format influx (InfluxDB 1): password (or INFLUX_PASSWORD)')
    .option('--retention-policy <rp>', '--format influx (InfluxDB 1): retention policy')
    .option('--no-progress', 'no live progress line on a terminal')
    .option('--check', 'print what this kernel offers and the hooks that would be used, then exit')
    .option('--workers <n>', 'decoding worker threads', String(DEFAULT_PIPELINE.workers))
    .option(
      '--max-connections <n>',
      'connections open at once tracked with their own histogram (closed ones give their rows back)',
      String(DEFAULT_PIPELINE.connCapacity),
    )
    .option('--max-services <n>', 'services tracked with their own histogram', String(d.serviceCapacity))
    .option('--ring-pages <n>', 'perf ring pages per CPU (power of two)', String(DEFAULT_PIPELINE.pagesPerCpu))
    .option('-q, --quiet', 'no summary on stderr')
    .hook('preAction', (c) => {
      // binary records under the JSON report's default name would mislead: the file is named by the user
      const o = c.opts<Partial<CommonProbeFlags>>();
      if (o.format === 'msgpack' && !o.check && c.getOptionValueSource('output') === 'default') {
        throw usageError('--format msgpack needs --output: the file of binary records, e.g. --output run.mpk');
      }
    });
}

/** The --format influx options: InfluxOptions' connection settings, as given on the command line. */
const INFLUX_FLAGS = ['url', 'org', 'bucket', 'token', 'db', 'username', 'password', 'retentionPolicy'] as const;

export interface CommonProbeFlags extends Partial<Pick<InfluxOptions, (typeof INFLUX_FLAGS)[number]>> {
  duration?: string;
  output: string;
  format: string;
  aggregateInterval: string;
  filter?: string[];
  services?: string;
  sampleRate: string;
  maxEventRate?: string;
  port?: string;
  listen?: string;
  buckets?: string;
  progress: boolean;
  check?: boolean;
  workers: string;
  maxConnections: string;
  maxServices: string;
  ringPages: string;
  quiet?: boolean;
  logLevel?: LogLevel;
}

export function pipelineFrom(f: CommonProbeFlags): PipelineOptions {
  const pages = parsePositiveInt(f.ringPages, '--ring-pages', 65536);
  if ((pages & (pages - 1)) !== 0 || pages < MIN_RING_PAGES) {
    throw new MeshprobeError(
      'MP_USAGE',
      `invalid --ring-pages "${f.ringPages}": use a power of two, at least ${MIN_RING_PAGES}`,
      EXIT_USAGE,
    );
  }
  return {
    ...DEFAULT_PIPELINE,
    workers: parsePositiveInt(f.workers, '--workers', 64),
    connCapacity: parsePositiveInt(f.maxConnections, '--max-connections', 65536),
    serviceCapacity: parsePositiveInt(f.maxServices, '--max-services', 65536),
    pagesPerCpu: pages,
  };
}

export function applyCommon(f: CommonProbeFlags): void {
  if (f.logLevel) setLogLevel(f.logLevel);
  if (!FORMATS.includes(f.format as Format)) {
    throw new MeshprobeError(
      'MP_USAGE',
      `unknown --format "${f.format}": use one of ${FORMATS.join(', ')}`,
      EXIT_USAGE,
    );
  }
  if (f.duration !== undefined) parseDuration(f.duration, '--duration');
}

/** --filter and --services, resolved into what the kernel compares. */
export function filtersFrom(f: CommonProbeFlags): { filter: ResolvedFilter; services: ServiceDef[] } {
  const services = f.services ? loadServices(f.services) : [];
  const filter = resolveFilters(parseFilters(f.filter ?? []), services, defaultResolveEnv());
  return { filter, services };
}

/** Where and how the figures go: --format and its options, --aggregate-interval, --sample-rate. */
export function outputFrom(f: CommonProbeFlags): OutputOptions {
  const format = f.format as Format;
  const intervalS = parseDuration(f.aggregateInterval, '--aggregate-interval');
  if (intervalS < 0.1 || intervalS > 3600) {
    throw new MeshprobeError(
      'MP_USAGE',
      `--aggregate-interval ${f.aggregateInterval} is out of range: use 100ms to 1h`,
      EXIT_USAGE,
    );
  }
  let sampleRate: number | 'auto';
  if (f.sampleRate.trim() === 'auto') sampleRate = 'auto';
  else sampleRate = parsePositiveInt(f.sampleRate, '--sample-rate (a whole number, or auto)', 1 << 20);
  const out: OutputOptions = {
    format,
    output: f.output,
    intervalS,
    sampleRate,
    maxEventRate: parsePositiveInt(f.maxEventRate ?? '100000', '--max-event-rate', 1e9),
    progress: f.progress ? undefined : false,
  };
  const given = (names: (keyof CommonProbeFlags)[]) => names.filter((n) => f[n] !== undefined);
  if (f.maxEventRate !== undefined && sampleRate !== 'auto') {
    throw new MeshprobeError('MP_USAGE', '--max-event-rate is for --sample-rate auto', EXIT_USAGE);
  }
  if (format !== 'prometheus') {
    const stray = given(['port', 'listen', 'buckets']);
    if (stray.length)
      throw new MeshprobeError(
        'MP_USAGE',
        `--${kebab(stray[0])} is for --format prometheus (the format is ${format})`,
        EXIT_USAGE,
      );
  }
  if (format !== 'influx') {
    const stray = given([...INFLUX_FLAGS]);
    if (stray.length)
      throw new MeshprobeError(
        'MP_USAGE',
        `--${kebab(stray[0])} is for --format influx (the format is ${format})`,
        EXIT_USAGE,
      );
  }
  if (format === 'influx') {
    if (!f.url)
      throw new MeshprobeError('MP_USAGE', '--format influx needs --url, e.g. --url http://influxdb:8086', EXIT_USAGE);
    const influx: InfluxOptions = {
      url: f.url,
      org: f.org,
      bucket: f.bucket,
      token: f.token ?? process.env.INFLUX_TOKEN,
      db: f.db,
      username: f.username,
      password: f.password ?? process.env.INFLUX_PASSWORD,
      retentionPolicy: f.retentionPolicy,
    };
    validateInfluxOptions(influx);
    out.influx = influx;
  }
  if (format === 'msgpack') checkBinaryOutput(f.output);
  if (format === 'prometheus') {
    out.prometheus = {
      port: parsePositiveInt(f.port ?? String(DEFAULT_METRICS_PORT), '--port', 65535),
      host: f.listen ?? '127.0.0.1',
      le: f.buckets ? parseBuckets(f.buckets) : undefined,
    };
  }
  return out;
}

const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** --check: prints what this kernel offers the probe, exit 0 (or 4: the probe cannot run here); true when it was asked. */
export function checkRequested<O>(f: CommonProbeFlags, def: ProbeDefinition<O>, options: O): boolean {
  if (!f.check) return false;
  process.exitCode = printCheck(def, options) ? 0 : 4;
  return true;
}

/** What a probe command measures with, and how it reports. */
export interface ProbeCommandRun<O, F, R> {
  def: ProbeDefinition<O>;
  options: O;
  /** the command's own pipeline settings, over the ones from the command line */
  pipeline?: Partial<PipelineOptions>;
  /** its outputs and report, made once the options are known to be good, right before the run */
  reporting(): Pick<RunOptions<O, F, R>, 'outputs' | 'buildReport' | 'summary'>;
}

/** The run of a probe command: the pipeline options, a writable --output, then the probe until --duration or a signal. */
export async function runProbeCommand<O, F, R>(
  f: CommonProbeFlags,
  out: OutputOptions,
  run: ProbeCommandRun<O, F, R>,
): Promise<void> {
  const pipeline = pipelineFrom(f);
  checkWritable(f.output);
  await runProbe({
    def: run.def,
    probeOptions: run.options,
    pipeline: { ...pipeline, ...run.pipeline },
    durationS: f.duration !== undefined ? parseDuration(f.duration, '--duration') : undefined,
    out,
    quiet: f.quiet,
    ...run.reporting(),
  });
}

/** Runs a command's main; errors become one line on stderr and an exit code. */
export async function main(cmd: Command, argv = process.argv): Promise<void> {
  try {
    await cmd.parseAsync(argv);
  } catch (e) {
    process.exitCode = exitCodeOf(e, cmd.name());
  }
}

function exitCodeOf(e: unknown, name: string): number {
  if (e instanceof CommanderError) {
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.exitCode === 0) return 0;
    return EXIT_USAGE; // commander already printed its one line
  }
  if (e instanceof MeshprobeError) {
    process.stderr.write(`${name}: ${e.message}\n`);
    if (e.detail) log.debug(`detail:\n${e.detail}`);
    return e.exitCode;
  }
  const err = e as Partial<Error> & { code?: string }; // anything can be thrown
  process.stderr.write(`${name}: ${err.message ?? String(e)}${err.code ? ` [${err.code}]` : ''}\n`);
  log.debug(err.stack ?? '');
  return 1;
}
