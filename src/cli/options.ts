/**
 * Parsing and checking of the options every probe shares. Each parser throws
 * a usage error (exit 2) with a one-line message naming the fix.
 */
import { accessSync, constants, statSync, statfsSync, type Stats } from 'node:fs';
import path from 'node:path';
import { isatty } from 'node:tty';
import { usageError } from '../errors.js';

const UNITS: Record<string, number> = { ms: 1e-3, s: 1, m: 60, h: 3600 };

/** "60", "60s", "500ms", "1m", "1.5h" -> seconds */
export function parseDuration(s: string, what = 'duration'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(s);
  if (!m) throw usageError(`invalid ${what} "${s}": use a number of seconds or 500ms, 10s, 1m, 2h`);
  const [, amount, unit = 's'] = m;
  const v = Number(amount) * UNITS[unit];
  if (!(v > 0) || !Number.isFinite(v)) throw usageError(`invalid ${what} "${s}": it must be greater than zero`);
  return v;
}

export function parsePositiveInt(s: string, what: string, max = 2 ** 31 - 1): number {
  if (!/^\d+$/.test(s.trim())) throw usageError(`invalid ${what} "${s}": use a whole number`);
  const v = Number(s);
  if (v < 1 || v > max) throw usageError(`invalid ${what} "${s}": use a number from 1 to ${max}`);
  return v;
}

/** Kernel file systems a report must not go to: writes there fail late, or do something else. */
const KERNEL_FS: Record<number, string> = {
  0x9fa0: 'proc',
  0x62656572: 'sysfs',
  0x64626720: 'debugfs',
  0x74726163: 'tracefs',
  0x63677270: 'cgroup2',
  0x27e0eb: 'cgroup',
  0xcafe4a11: 'bpf',
  0x73636673: 'securityfs',
  0x6e736673: 'nsfs',
};
/** The least free space a report is started with (a report with every connection runs to MBs). */
export const MIN_FREE_BYTES = 16 * 1024 * 1024;
/** Where the stream of standard output, a pipe or a terminal is meant: not refused. */
const STREAM =
  /^(-|\/dev\/(stdout|stderr|null|tty|console)|\/dev\/(pts\/|tty)\w+|\/dev\/fd\/\d+|\/proc\/self\/fd\/\d+)$/;

/**
 * --format msgpack writes binary records: never to a terminal. `-`, /dev/stdout and /dev/stderr
 * pass when they are a pipe or a file (`> run.mpk`, `| ssh ...`); a terminal device is refused.
 */
export function checkBinaryOutput(file: string, isTerminal: (fd: number) => boolean = (fd) => isatty(fd)): void {
  const fd =
    file === '-' || file === '/dev/stdout' || file === '/dev/fd/1' || file === '/proc/self/fd/1'
      ? 1
      : file === '/dev/stderr' || file === '/dev/fd/2' || file === '/proc/self/fd/2'
        ? 2
        : undefined;
  const terminal = fd !== undefined ? isTerminal(fd) : /^\/dev\/(tty\w*|pts\/\w+|console)$/.test(file);
  if (terminal) {
    throw usageError(
      `--format msgpack writes binary records, not to a terminal (${file}): give --output run.mpk, or redirect to a file or a pipe`,
    );
  }
}

function statOrUndefined(p: string): Stats | undefined {
  try {
    return statSync(p, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

/**
 * Fails now, before anything is attached, if the report could not be written there: a directory,
 * no permission, a missing directory, /proc, /sys and other kernel file systems, a device, or a
 * file system with less than 16 MB free. Standard output, /dev/null, a terminal and pipes (FIFOs,
 * /dev/fd/N) are the stream case and pass.
 */
export function checkWritable(file: string, minFree = MIN_FREE_BYTES): void {
  if (STREAM.test(file)) return;
  const abs = path.resolve(file);
  const cannot = (why: string) => usageError(`cannot write the report to ${file}: ${why}`);
  const st = statOrUndefined(abs);
  if (st?.isFIFO() || st?.isSocket()) return;
  if (st?.isDirectory()) throw cannot('it is a directory');
  if (st?.isCharacterDevice() || st?.isBlockDevice()) throw cannot('it is a device; choose a file --output');
  const dir = path.dirname(abs);
  const dst = statOrUndefined(dir);
  if (!dst) throw cannot(`directory ${dir} does not exist`);
  if (!dst.isDirectory()) throw cannot(`${dir} is not a directory`);
  const fs = statfsSync(dir);
  const kernel = KERNEL_FS[fs.type];
  if (kernel) throw cannot(`${dir} is on ${kernel}, a kernel file system; choose a file --output`);
  // the report is written beside the file, then renamed over it: both need the directory
  if (st) {
    try {
      accessSync(abs, constants.W_OK);
    } catch {
      throw cannot('permission denied; choose another --output');
    }
  }
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    throw cannot(`directory ${dir} is not writable; choose another --output`);
  }
  // root may use the blocks reserved for it; ramfs counts no blocks at all (nothing to check)
  const free = (process.getuid?.() === 0 ? fs.bfree : fs.bavail) * fs.bsize;
  if (fs.blocks > 0 && free < minFree) {
    throw cannot(
      `only ${Math.floor(free / 1024)} KB free on its file system (${Math.floor(minFree / 1048576)} MB needed); ` +
        'free some space or choose another --output',
    );
  }
}
