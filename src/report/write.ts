/** Writing a report so that a failure never loses it. */
import { writeFileSync, renameSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Writes JSON atomically (temp file + rename); '-' or /dev/stdout writes to stdout. */
export function writeJson(file: string, value: unknown): string {
  const text = JSON.stringify(value, null, 2) + '\n';
  if (file === '-' || file === '/dev/stdout') {
    process.stdout.write(text);
    return 'stdout';
  }
  const abs = path.resolve(file);
  const tmp = `${abs}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, text);
    renameSync(tmp, abs);
    return abs;
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* it may not exist */ }
    // keep what was measured: fall back to the temporary directory
    const fallback = path.join(os.tmpdir(), `meshprobe-report-${process.pid}.json`);
    writeFileSync(fallback, text);
    const err = e as Error;
    throw Object.assign(new Error(`cannot write ${abs} (${err.message}); the report was saved to ${fallback}`), { code: 'MP_REPORT_WRITE', fallback });
  }
}
