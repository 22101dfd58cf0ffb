/**
 * Colours: one per series, distinct on screen and in print, and fixed for
 * the things that recur (a view, a side, a part of the overhead) so that a
 * colour means the same thing in every chart of the page.
 */

/** Tableau 10, reordered: blue, orange, green, red, purple, brown, pink, olive, cyan, grey. */
export const SERIES = [
  '#4e79a7',
  '#f28e2b',
  '#59a14f',
  '#e15759',
  '#b07aa1',
  '#9c755f',
  '#ff9da7',
  '#bab0ac',
  '#76b7b2',
  '#edc948',
];

export function seriesColor(i: number): string {
  return SERIES[((i % SERIES.length) + SERIES.length) % SERIES.length];
}

export const VIEW_COLOR: Record<string, string> = {
  client: '#4e79a7',
  server: '#f28e2b',
  network: '#59a14f',
};

export const SIDE_COLOR: Record<string, string> = { client: '#4e79a7', server: '#f28e2b' };

export const OVERHEAD_COLOR = {
  application: '#4e79a7',
  kernel: '#59a14f',
  mesh: '#e15759',
  other: '#bab0ac',
  total: '#7f7f7f',
};

/** Percentile markers of the timing charts. */
export const QUANTILE_COLOR: Record<string, string> = {
  p50: '#4e79a7',
  p90: '#59a14f',
  p99: '#f28e2b',
  p999: '#e15759',
};

/** eBPF views in blues, mesh views in warm colours. */
export const EBPF_COLORS = ['#4e79a7', '#76b7b2', '#2f4b7c'];
export const MESH_COLORS = ['#e15759', '#f28e2b', '#b07aa1', '#9c755f'];

/** A colour mixed with white: 0 keeps it, 1 is white. */
export function tint(hex: string, amount: number): string {
  const c = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return `#${c
    .map((v) =>
      Math.round(v + (255 - v) * amount)
        .toString(16)
        .padStart(2, '0'),
    )
    .join('')}`;
}

export const INK = '#2b2b2b';
export const MUTED = '#6b6b6b';
export const GRID = '#e6e6e6';
export const AXIS = '#9a9a9a';
