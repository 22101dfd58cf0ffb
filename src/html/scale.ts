/**
 * Scales from data to pixels, and their ticks: linear ("nice" steps of 1, 2,
 * 5 x 10^k) and logarithmic (decades, with 2 and 5 in between when the axis
 * spans few of them).
 */

export interface Scale {
  kind: 'linear' | 'log';
  /** data domain, after nice rounding */
  domain: [number, number];
  range: [number, number];
  /** data -> pixel (clamped into the domain; a log scale clamps values <= 0 to its lower end) */
  (v: number): number;
  ticks: number[];
}

/** 1, 2, 5 x 10^k at or above x */
export function niceStep(x: number): number {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  const m = x / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

/** A linear scale whose domain is widened to round ticks (about `count` of them). */
export function linearScale(
  lo: number,
  hi: number,
  range: [number, number],
  count = 5,
  opts: { zero?: boolean; nice?: boolean } = {},
): Scale {
  let a = Number.isFinite(lo) ? lo : 0;
  let b = Number.isFinite(hi) ? hi : 1;
  if (opts.zero !== false) {
    a = Math.min(0, a);
    b = Math.max(0, b);
  }
  if (a === b) b = a === 0 ? 1 : a + Math.abs(a);
  const step = niceStep((b - a) / Math.max(1, count));
  if (opts.nice !== false) {
    a = Math.floor(a / step + 1e-9) * step;
    b = Math.ceil(b / step - 1e-9) * step;
  }
  const ticks: number[] = [];
  for (let t = Math.ceil(a / step - 1e-9) * step; t <= b + step * 1e-9; t += step)
    ticks.push(Math.round(t / step) * step + 0); // + 0: no -0
  const [r0, r1] = range;
  const f = ((v: number) => {
    const c = Math.min(b, Math.max(a, v));
    return r0 + ((c - a) / (b - a)) * (r1 - r0);
  }) as Scale;
  return Object.assign(f, { kind: 'linear' as const, domain: [a, b] as [number, number], range, ticks });
}

/**
 * A log10 scale over [lo, hi] (both > 0), widened to whole decades when
 * the span is wide, or to 1-2-5 steps when it is narrow.
 */
export function logScale(lo: number, hi: number, range: [number, number]): Scale {
  let a = lo > 0 && Number.isFinite(lo) ? lo : 1e-3;
  let b = hi > 0 && Number.isFinite(hi) ? hi : a * 10;
  if (b <= a) b = a * 10;
  const decades = Math.log10(b) - Math.log10(a);
  const steps = decades > 5 ? [1] : decades > 2.2 ? [1, 3] : [1, 2, 5];
  const down = (x: number) => {
    const p = 10 ** Math.floor(Math.log10(x) + 1e-9);
    let best = p;
    for (const s of steps) if (s * p <= x * (1 + 1e-9)) best = s * p;
    return best;
  };
  const up = (x: number) => {
    const p = 10 ** Math.floor(Math.log10(x) + 1e-9);
    for (const s of [...steps, 10]) if (s * p >= x * (1 - 1e-9)) return s * p;
    return 10 * p;
  };
  a = down(a);
  b = up(b);
  const ticks: number[] = [];
  for (let p = Math.floor(Math.log10(a) + 1e-9); p <= Math.ceil(Math.log10(b)); p++) {
    for (const s of steps) {
      const t = Number((s * 10 ** p).toPrecision(12));
      if (t >= a * (1 - 1e-9) && t <= b * (1 + 1e-9)) ticks.push(t);
    }
  }
  const la = Math.log10(a),
    lb = Math.log10(b);
  const [r0, r1] = range;
  const f = ((v: number) => {
    const c = Math.min(lb, Math.max(la, v > 0 ? Math.log10(v) : la));
    return r0 + ((c - la) / (lb - la)) * (r1 - r0);
  }) as Scale;
  return Object.assign(f, { kind: 'log' as const, domain: [a, b] as [number, number], range, ticks });
}

/** Log when positive values span more than `ratio` (a factor of 20 by default), else linear from zero. */
export function autoScale(values: readonly number[], range: [number, number], ratio = 20): Scale {
  const pos = values.filter((v) => v > 0 && Number.isFinite(v));
  if (pos.length === 0) return linearScale(0, 1, range);
  const lo = Math.min(...pos),
    hi = Math.max(...pos);
  return hi / lo > ratio ? logScale(lo, hi, range) : linearScale(0, hi, range);
}

/**
 * The percentile ("tail") scale of a CDF's y axis: y = -log10(1 - q), so
 * p50, p90, p99 and p99.9 are evenly spaced; q = 1 sits just past p99.9.
 */
export function tailScale(range: [number, number], maxNines = 3): Scale {
  const t = (q: number) => -Math.log10(Math.max(1 - q, 10 ** -(maxNines + 0.3)));
  const hiT = maxNines + 0.3;
  const [r0, r1] = range;
  const f = ((q: number) => r0 + (Math.min(hiT, Math.max(0, t(q))) / hiT) * (r1 - r0)) as Scale;
  const ticks = [0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999].slice(0, maxNines + 1);
  return Object.assign(f, { kind: 'log' as const, domain: [0, 1] as [number, number], range, ticks });
}
