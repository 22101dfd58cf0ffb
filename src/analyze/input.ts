/** Reading input files: one-line errors that name the file (and the line, for JSON). */
import { readFileSync, statSync } from 'node:fs';
import { usageError, type MeshprobeError } from '../errors.js';

/** The text of `file`, or a usage error (exit 2) saying why it cannot be read. */
export function readInput(file: string, option: string): string {
  let st;
  try {
    st = statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw usageError(`${option} ${file}: ${code === 'ENOENT' ? 'no such file' : (code ?? (e as Error).message)}`);
  }
  if (st.isDirectory()) throw usageError(`${option} ${file} is a directory: give the file`);
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw usageError(
      `${option} ${file}: cannot read it (${code === 'EACCES' ? 'permission denied' : (code ?? (e as Error).message)})`,
    );
  }
}

/** Line and column of a character offset. */
export function lineOf(text: string, pos: number): { line: number; column: number } {
  let line = 1;
  let last = -1;
  for (let i = 0; i < pos && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      last = i;
    }
  }
  return { line, column: pos - last };
}

/** JSON.parse with an error that says where: "FILE line 3: Unexpected token ...". */
export function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw jsonError(e as Error, text, what);
  }
}

export function jsonError(e: Error, text: string, what: string): MeshprobeError {
  const msg = e.message.replace(/\s+/g, ' ');
  const m = /position (\d+)/.exec(msg);
  const pos = m ? Number(m[1]) : errorPosition(text);
  const where = pos !== undefined && text.trim() !== '' ? ` line ${lineOf(text, pos).line}` : '';
  const short = msg.replace(/ (?:in JSON )?at position \d+.*$/, '').replace(/, ".*" is not valid JSON$/, '');
  return usageError(`${what}${where}: not valid JSON (${text.trim() === '' ? 'the file is empty' : short})`);
}

/**
 * Where JSON.parse fails when its message does not say (V8 gives no position
 * for "Unexpected token"): the shortest prefix that fails for a reason other
 * than ending too soon, found by bisection (a prefix before the error only
 * ever ends too soon; one past it always fails).
 */
function errorPosition(text: string): number | undefined {
  const hard = (len: number): boolean => {
    try {
      JSON.parse(text.slice(0, len));
      return false;
    } catch (e) {
      const msg = (e as Error).message;
      if (/end of JSON input/.test(msg)) return false;
      const m = /position (\d+)/.exec(msg);
      return !(m && Number(m[1]) >= len - 1); // cut inside a number or string: not the error
    }
  };
  if (!hard(text.length)) return undefined;
  let lo = 0;
  let hi = text.length; // hard(hi)
  while (lo + 1 < hi) {
    const mid = (lo + hi) >> 1;
    if (hard(mid)) hi = mid;
    else lo = mid;
  }
  return hi - 1;
}
