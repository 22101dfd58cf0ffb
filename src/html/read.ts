/**
 * Reading figures out of reports without trusting their shape: reports of
 * other versions, hand-edited files and fields that are null when nothing
 * was measured must never throw while the page is built. Every accessor
 * returns a value of the asked type or a neutral one (null, [], {}).
 */

export type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function obj(v: unknown): Obj {
  return isObj(v) ? v : {};
}

export function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

/** A finite number, else null. */
export function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/** A finite number, else 0. */
export function num0(v: unknown): number {
  return num(v) ?? 0;
}

export function str(v: unknown): string | null {
  return typeof v === 'string' ? v : typeof v === 'number' ? String(v) : null;
}

/** A path of keys into nested objects: get(rep, 'metrics', 'client'). */
export function get(v: unknown, ...keys: string[]): unknown {
  let cur = v;
  for (const k of keys) cur = isObj(cur) ? cur[k] : undefined;
  return cur;
}

/** {name: count} objects (by_reason, by_layer, failed ...), as [name, count] sorted by count. */
export function counts(v: unknown): [string, number][] {
  return Object.entries(obj(v))
    .map(([k, c]) => [k, num0(c)] as [string, number])
    .sort((a, b) => b[1] - a[1]);
}

/** Percentiles objects ({p50, p75, p90, p95, p99, p999} in ms), or null when absent. */
export type Quantiles = Partial<Record<'p50' | 'p75' | 'p90' | 'p95' | 'p99' | 'p999', number>>;
export const QUANTILE_NAMES = ['p50', 'p75', 'p90', 'p95', 'p99', 'p999'] as const;
export const QUANTILE_Q: Record<(typeof QUANTILE_NAMES)[number], number> = {
  p50: 0.5,
  p75: 0.75,
  p90: 0.9,
  p95: 0.95,
  p99: 0.99,
  p999: 0.999,
};
export const QUANTILE_LABEL: Record<(typeof QUANTILE_NAMES)[number], string> = {
  p50: 'p50',
  p75: 'p75',
  p90: 'p90',
  p95: 'p95',
  p99: 'p99',
  p999: 'p99.9',
};

export function quantiles(v: unknown): Quantiles | null {
  if (!isObj(v)) return null;
  const out: Quantiles = {};
  let any = false;
  for (const n of QUANTILE_NAMES) {
    const x = num(v[n]);
    if (x !== null) {
      out[n] = x;
      any = true;
    }
  }
  return any ? out : null;
}
