/**
 * Parsing and checking of the options every probe shares. Each parser throws
 * a usage error (exit 2) with a one-line message naming the fix.
 */
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { usageError } from '../errors.js';

const UNITS: Record<string, number> = { ms: 1e-3, s: 1, m: 60, h: 3600 };

/** "60", "60s", "500ms", "1m", "1.5h" -> seconds */
export function parseDuration(s: string, what = 'duration'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(s);
  if (!m) throw usageError(`invalid ${what} "${s}": use a number of seconds or 500ms, 10s, 1m, 2h`);
  const v = Number(m[1]) * UNITS[m[2] ?? 's'];
  if (!(v > 0) || !Number.isFinite(v)) throw usageError(`invalid ${what} "${s}": it must be greater than zero`);
  return v;
}

export function parsePositiveInt(s: string, what: string, max = 2 ** 31 - 1): number {
  if (!/^\d+$/.test(s.trim())) throw usageError(`invalid ${what} "${s}": use a whole number`);
  const v = Number(s);
  if (v < 1 || v > max) throw usageError(`invalid ${what} "${s}": use a number from 1 to ${max}`);
  return v;
}

/** Fails now, before anything is attached, if the report could not be written there. */
export function checkWritable(file: string): void {
  if (file === '-' || file === '/dev/stdout') return;
  const abs = path.resolve(file);
  if (existsSync(abs)) {
    if (statSync(abs).isDirectory()) throw usageError(`cannot write the report to ${file}: it is a directory`);
    try {
      accessSync(abs, constants.W_OK);
    } catch {
      throw usageError(`cannot write the report to ${file}: permission denied; choose another --output`);
    }
    return;
  }
  const dir = path.dirname(abs);
  if (!existsSync(dir)) throw usageError(`cannot write the report to ${file}: directory ${dir} does not exist`);
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    throw usageError(`cannot write the report to ${file}: directory ${dir} is not writable; choose another --output`);
  }
}
