/**
 * A small leveled logger on stderr. The level comes from --log-level or the
 * MESHPROBE_LOG environment variable (error, warn, info, debug).
 */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
const ORDER: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };
export const LOG_LEVELS = Object.keys(ORDER) as LogLevel[];

let current: LogLevel = parseLevel(process.env.MESHPROBE_LOG) ?? 'info';

export function parseLevel(s: string | undefined): LogLevel | undefined {
  return s && s in ORDER ? (s as LogLevel) : undefined;
}

export function setLogLevel(level: LogLevel): void {
  current = level;
}

export function logLevel(): LogLevel {
  return current;
}

/** Something drawn on stderr's current line (the live progress line): cleared before a log line. */
let statusLine = false;
export function setStatusLine(on: boolean): void {
  statusLine = on;
}

function emit(level: LogLevel, msg: string, fields?: Record<string, unknown>): void {
  if (ORDER[level] > ORDER[current]) return;
  const extra = fields ? ' ' + JSON.stringify(fields) : '';
  process.stderr.write(`${statusLine ? '\r\x1b[K' : ''}[meshprobe ${level}] ${msg}${extra}\n`);
}

export const log = {
  error: (m: string, f?: Record<string, unknown>): void => {
    emit('error', m, f);
  },
  warn: (m: string, f?: Record<string, unknown>): void => {
    emit('warn', m, f);
  },
  info: (m: string, f?: Record<string, unknown>): void => {
    emit('info', m, f);
  },
  debug: (m: string, f?: Record<string, unknown>): void => {
    emit('debug', m, f);
  },
  enabled: (level: LogLevel) => ORDER[level] <= ORDER[current],
};
