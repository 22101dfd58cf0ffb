/**
 * Errors with stable codes. Every failure the user can act on becomes one
 * MeshprobeError: a one-line message that says what to do, a code, and the
 * exit status of the command line.
 */
export const EXIT_RUNTIME = 1;
export const EXIT_USAGE = 2;
export const EXIT_PRIVILEGE = 3;
export const EXIT_KERNEL = 4;

export class MeshprobeError extends Error {
  readonly code: string;
  readonly exitCode: number;
  readonly detail?: string;
  constructor(code: string, message: string, exitCode = EXIT_RUNTIME, detail?: string) {
    super(message);
    this.name = 'MeshprobeError';
    this.code = code;
    this.exitCode = exitCode;
    this.detail = detail;
  }
}

export function usageError(message: string): MeshprobeError {
  return new MeshprobeError('MP_USAGE', message, EXIT_USAGE);
}

/** The code an addon or system error carries, if any. */
export function errorCode(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}
