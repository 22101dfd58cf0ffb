import { statSync } from 'node:fs';

/**
 * Does `path` exist? By stat(2), not fs.existsSync: that is access(2), which checks the real UID
 * and, for a user other than root, no capabilities at all, so a probe run as a service user with
 * CAP_DAC_READ_SEARCH would be told that tracefs (mode 0700) has no tracepoints.
 */
export function exists(path: string): boolean {
  try {
    return statSync(path, { throwIfNoEntry: false }) !== undefined;
  } catch {
    return false; // EACCES, ENOTDIR: not there for us
  }
}
