import { setStatusLine } from '../log.js';

/**
 * The live line on a terminal: elapsed and remaining time, requests seen,
 * p50 and p99 of the last second, loss, sample rate. Redrawn in place on
 * stderr once a second; only when stderr is a terminal (never in a pipe).
 */
export interface ProgressFigures {
  requests: number;
  lost: number;
  /** the last second */
  recent: { requests: number; p50_ms: number | null; p99_ms: number | null };
  rate: number;
}

const clock = (s: number) => {
  const t = Math.max(0, Math.round(s));
  const h = Math.floor(t / 3600),
    m = Math.floor((t % 3600) / 60),
    sec = t % 60;
  return (h ? `${h}:${String(m).padStart(2, '0')}` : `${m}`) + `:${String(sec).padStart(2, '0')}`;
};

export function progressLine(elapsedS: number, durationS: number | undefined, f: ProgressFigures): string {
  const time = durationS
    ? `${clock(elapsedS)} elapsed, ${clock(durationS - elapsedS)} left`
    : `${clock(elapsedS)} elapsed (Ctrl-C stops)`;
  const lat =
    f.recent.requests > 0 ? `p50 ${String(f.recent.p50_ms)} ms p99 ${String(f.recent.p99_ms)} ms` : 'p50 - p99 -';
  const rate = f.rate > 1 ? `  sampled 1/${f.rate}` : '';
  return `${time}  ${f.requests.toLocaleString('en-US')} requests (${f.recent.requests}/s)  ${lat}  lost ${f.lost}${rate}`;
}

export class Progress {
  private readonly t0 = Date.now();
  private drawn = false;

  constructor(
    private readonly durationS: number | undefined,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {}

  update(f: ProgressFigures): void {
    const line = progressLine((Date.now() - this.t0) / 1000, this.durationS, f);
    const width = this.out.columns || 160; // a pty without a size says 0
    this.out.write(`\r\x1b[K${line.slice(0, Math.max(20, width - 1))}`);
    this.drawn = true;
    setStatusLine(true);
  }

  /** Clears the line, so that what follows starts on a clean one. */
  end(): void {
    if (this.drawn) this.out.write('\r\x1b[K');
    this.drawn = false;
    setStatusLine(false);
  }
}
