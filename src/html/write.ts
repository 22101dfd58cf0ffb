/** Writing the page: atomically (temp file + rename) so a reader never sees half of it; '-' is stdout. */
import { renameSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { MeshprobeError, EXIT_RUNTIME } from '../errors.js';

/** Writes text to file atomically, or to stdout for '-' and /dev/stdout; returns where it went. */
export function writeTextAtomic(file: string, text: string): string {
  if (file === '-' || file === '/dev/stdout') {
    process.stdout.write(text);
    return 'stdout';
  }
  const abs = path.resolve(file);
  const tmp = path.join(path.dirname(abs), `.${path.basename(abs)}.tmp-${process.pid}`);
  try {
    writeFileSync(tmp, text, { mode: 0o644 });
    renameSync(tmp, abs);
    return abs;
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* it may not exist */ }
    const err = e as NodeJS.ErrnoException;
    throw new MeshprobeError('MP_REPORT_WRITE', `cannot write ${abs} (${err.code ?? err.message}); choose another --output`, EXIT_RUNTIME);
  }
}
