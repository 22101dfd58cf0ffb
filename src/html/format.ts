/** Numbers as a person reads them: times with their unit, counts with separators. */

/** Three significant digits, no exponent, trailing zeros dropped. */
export function sig(x: number, digits = 3): string {
  if (!Number.isFinite(x)) return '–';
  if (x === 0) return '0';
  const mag = Math.floor(Math.log10(Math.abs(x)));
  const decimals = Math.max(0, digits - 1 - mag);
  return x
    .toFixed(Math.min(decimals, 6))
    .replace(/(\.\d*?)0+$/, '$1')
    .replace(/\.$/, '');
}

/** A time given in milliseconds, in the unit that suits it: 12.3 µs, 1.03 ms, 2.5 s. */
export function fmtMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  const a = Math.abs(ms);
  if (a === 0) return '0 ms';
  if (a < 1e-3) return `${sig(ms * 1e6)} ns`;
  if (a < 1) return `${sig(ms * 1e3)} µs`;
  if (a < 1000) return `${sig(ms)} ms`;
  return `${sig(ms / 1000)} s`;
}

/** Axis tick label of a time in ms: as short as it can be (1 µs, 10 µs, 1 ms, 2 s). */
export function tickMs(ms: number): string {
  return fmtMs(ms).replace(/\.0+ /, ' ');
}

/** A count: 1,234,567; fractions keep three significant digits. */
export function fmtCount(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  if (Number.isInteger(n)) return n.toLocaleString('en-US');
  return Math.abs(n) >= 1000 ? Math.round(n).toLocaleString('en-US') : sig(n);
}

/** Short counts for axis ticks: 950, 1.2k, 3M. */
export function tickCount(n: number): string {
  const a = Math.abs(n);
  if (a >= 1e9) return `${sig(n / 1e9, 2)}G`;
  if (a >= 1e6) return `${sig(n / 1e6, 2)}M`;
  if (a >= 1e4) return `${sig(n / 1e3, 2)}k`;
  return fmtCount(n);
}

/** A fraction as a percentage: 0.8246 -> 82.5 %. */
export function fmtPct(f: number | null | undefined, digits = 3): string {
  if (f === null || f === undefined || !Number.isFinite(f)) return '–';
  return `${sig(f * 100, digits)} %`;
}

/** Seconds as a duration: 10.1 s, 2 min 5 s, 1 h 2 min. */
export function fmtDuration(s: number | null | undefined): string {
  if (s === null || s === undefined || !Number.isFinite(s)) return '–';
  if (s < 60) return `${sig(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

/** An ISO timestamp as "2026-11-26 08:59:32 UTC" (the report's own instant, not the viewer's zone). */
export function fmtTime(iso: string | null | undefined): string {
  if (!iso) return '–';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** Bytes: 612 KB. */
export function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${sig(n / 1024)} KB`;
  return `${sig(n / 1024 / 1024)} MB`;
}
