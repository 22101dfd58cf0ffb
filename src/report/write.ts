/** Writing a report or a page so that a failure never loses it and a reader never sees half of it. */
import { writeFileSync, renameSync, statSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MeshprobeError, EXIT_RUNTIME } from '../errors.js';

/**
 * Writes text atomically (a temporary file beside it, then rename); '-' or
 * /dev/stdout writes to stdout. Returns where it went. On failure: with
 * `fallback` (a file name), what was measured is saved in the temporary
 * directory under that name and the error (code MP_REPORT_WRITE) names it;
 * without, a MeshprobeError asking for another --output.
 */
export function writeTextAtomic(file: string, text: string, opts: { fallback?: string } = {}): string {
  if (file === '-' || file === '/dev/stdout') {
    process.stdout.write(text);
    return 'stdout';
  }
  const abs = path.resolve(file);
  const tmp = path.join(path.dirname(abs), `.${path.basename(abs)}.tmp-${process.pid}`);
  // a device or a pipe (/dev/null, a FIFO) is written in place: renaming over it would replace it
  const special = (() => {
    try {
      return !statSync(abs).isFile();
    } catch {
      return false;
    }
  })();
  try {
    if (special) {
      writeFileSync(abs, text);
      return abs;
    }
    writeFileSync(tmp, text, { mode: 0o644 });
    renameSync(tmp, abs);
    return abs;
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      /* it may not exist */
    }
    const err = e as NodeJS.ErrnoException;
    if (!opts.fallback) {
      throw new MeshprobeError(
        'MP_REPORT_WRITE',
        `cannot write ${abs} (${err.code ?? err.message}); choose another --output`,
        EXIT_RUNTIME,
      );
    }
    // keep what was measured: fall back to the temporary directory
    const fallback = path.join(os.tmpdir(), opts.fallback);
    try {
      writeFileSync(fallback, text);
    } catch (e2) {
      // nowhere: no half-written file left behind, and every place tried named
      try {
        unlinkSync(fallback);
      } catch {
        /* it may not exist */
      }
      const err2 = e2 as NodeJS.ErrnoException;
      throw new MeshprobeError(
        'MP_REPORT_WRITE',
        `cannot write the report to ${abs} (${err.code ?? err.message}) nor to ${fallback} ` +
          `(${err2.code ?? err2.message}): free some space, or choose another --output`,
        EXIT_RUNTIME,
      );
    }
    throw Object.assign(new Error(`cannot write ${abs} (${err.message}); the report was saved to ${fallback}`), {
      code: 'MP_REPORT_WRITE',
      fallback,
    });
  }
}

/** A probe's JSON report: atomically, saved to the temporary directory if --output cannot be written. */
export function writeJson(file: string, value: unknown): string {
  return writeTextAtomic(file, JSON.stringify(value, null, 2) + '\n', {
    fallback: `meshprobe-report-${process.pid}.json`,
  });
}
