/**
 * commander plumbing shared by every command: options common to all probes,
 * usage errors as one line with exit code 2, and the top-level error handler.
 */
import { Command, CommanderError, Option } from 'commander';
import { EXIT_USAGE, MeshprobeError } from '../errors.js';
import { LOG_LEVELS, log, setLogLevel, type LogLevel } from '../log.js';
import { DEFAULT_PIPELINE, MIN_RING_PAGES, type PipelineOptions } from '../pipeline/session.js';
import { parseDuration, parsePositiveInt } from './options.js';

export const VERSION = '0.1.0';

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
export function addProbeOptions(cmd: Command, defaultOutput: string): Command {
  return cmd
    .option('-d, --duration <time>', 'how long to measure: 60, 60s, 500ms, 2m (default: until SIGINT/SIGTERM)')
    .option('-o, --output <file>', 'where the JSON report goes (- for stdout)', defaultOutput)
    .option('--format <format>', 'report format: json', 'json')
    .option('--filter <expr...>', 'only matching traffic; repeat to combine: port=80')
    .option('--check', 'print what this kernel offers and the hooks that would be used, then exit')
    .option('--workers <n>', 'decoding worker threads', String(DEFAULT_PIPELINE.workers))
    .option('--max-connections <n>', 'connections tracked with their own histogram', String(DEFAULT_PIPELINE.connCapacity))
    .option('--max-services <n>', 'services tracked with their own histogram', String(DEFAULT_PIPELINE.serviceCapacity))
    .option('--ring-pages <n>', 'perf ring pages per CPU (power of two)', String(DEFAULT_PIPELINE.pagesPerCpu))
    .option('-q, --quiet', 'no summary on stderr');
}

export interface CommonProbeFlags {
  duration?: string;
  output: string;
  format: string;
  filter?: string[];
  check?: boolean;
  workers: string;
  maxConnections: string;
  maxServices: string;
  ringPages: string;
  quiet?: boolean;
  logLevel?: LogLevel;
}

export const FORMATS = ['json'];

export function pipelineFrom(f: CommonProbeFlags): PipelineOptions {
  const pages = parsePositiveInt(f.ringPages, '--ring-pages', 65536);
  if ((pages & (pages - 1)) !== 0 || pages < MIN_RING_PAGES) {
    throw new MeshprobeError('MP_USAGE', `invalid --ring-pages "${f.ringPages}": use a power of two, at least ${MIN_RING_PAGES}`, EXIT_USAGE);
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
  if (!FORMATS.includes(f.format)) {
    throw new MeshprobeError('MP_USAGE', `unknown --format "${f.format}": this version writes ${FORMATS.join(', ')}`, EXIT_USAGE);
  }
  if (f.duration !== undefined) parseDuration(f.duration, '--duration');
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
  const err = e as Error & { code?: string };
  process.stderr.write(`${name}: ${err.message ?? String(e)}${err.code ? ` [${err.code}]` : ''}\n`);
  log.debug(err.stack ?? '');
  return 1;
}
