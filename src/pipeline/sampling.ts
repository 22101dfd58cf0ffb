/**
 * --sample-rate auto: raises and lowers the kernel's sample rate so that the
 * records the probe asks the kernel to write stay within a budget the
 * pipeline sustains with no loss, and jumps up at once when a perf ring
 * overflowed. The kernel counts every exchange, measured or not, so the
 * demand is known exactly whatever the current rate.
 *
 * Every tick (1 s): demand = exchanges seen per second.
 *   loss in the last tick          -> rate = max(rate * 4, needed)
 *   demand / rate > budget         -> rate = needed = ceil(demand / budget)
 *   needed <= rate / 2 for 5 ticks -> rate = needed (back down, slowly)
 */
export interface SamplingTick {
  /** exchanges finished in the tick, measured or not */
  seen: number;
  /** records lost in the tick (ring full) */
  lost: number;
  seconds: number;
}

export interface RateChange { at_s: number; from: number; to: number; reason: string }

export const MAX_SAMPLE_RATE = 1 << 20;

export class AutoSampler {
  rate: number;
  readonly changes: RateChange[] = [];
  private calm = 0;

  constructor(readonly budgetPerS: number, initial = 1) {
    this.rate = initial;
  }

  /** Feeds one tick; returns the new rate when it changed. */
  tick(t: SamplingTick, atS: number): number | undefined {
    const demand = t.seconds > 0 ? t.seen / t.seconds : 0;
    const needed = Math.min(MAX_SAMPLE_RATE, Math.max(1, Math.ceil(demand / this.budgetPerS)));
    let next = this.rate;
    let reason = '';
    if (t.lost > 0) {
      next = Math.min(MAX_SAMPLE_RATE, Math.max(this.rate * 4, needed));
      reason = `${t.lost} records lost at ${Math.round(demand)} exchanges/s`;
      this.calm = 0;
    } else if (needed > this.rate) {
      next = needed;
      reason = `${Math.round(demand)} exchanges/s is over the budget of ${this.budgetPerS}/s`;
      this.calm = 0;
    } else if (needed <= this.rate / 2) {
      if (++this.calm >= 5) {
        next = needed;
        reason = `${Math.round(demand)} exchanges/s fits a lower rate`;
        this.calm = 0;
      }
    } else {
      this.calm = 0;
    }
    if (next === this.rate) return undefined;
    this.changes.push({ at_s: Math.round(atS * 10) / 10, from: this.rate, to: next, reason });
    this.rate = next;
    return next;
  }
}
