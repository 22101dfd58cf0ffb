/**
 * --sample-rate auto: raises and lowers the kernel's sample rate so that the
 * records the probe asks the kernel to write stay within a budget the
 * pipeline sustains, and loss stays at zero. The kernel counts every
 * exchange, measured or not, so the demand is known exactly whatever the
 * current rate.
 *
 * Every tick (1 s), with demand = exchanges seen per second:
 *   records lost       -> the ring took less than demand/rate records/s: the
 *                         budget drops to half of that, and rate = max(rate x 4, needed)
 *   demand/rate > budget -> rate = needed = ceil(demand / budget)
 *   needed <= rate / 2 for 5 ticks in a row -> rate halves (not below needed)
 * A budget lowered by a loss recovers by 5 % a tick towards --max-event-rate,
 * so the rate does not fall straight back to the one that lost records.
 */
export interface SamplingTick {
  /** exchanges finished in the tick, measured or not */
  seen: number;
  /** records lost in the tick (ring full) */
  lost: number;
  seconds: number;
}

export interface RateChange {
  at_s: number;
  from: number;
  to: number;
  reason: string;
}

export const MAX_SAMPLE_RATE = 1 << 20;
/** changes kept for the report (the first ones, then the latest) */
export const MAX_CHANGES_KEPT = 1000;
const MIN_BUDGET = 100;

export class AutoSampler {
  rate: number;
  /** the budget in force: --max-event-rate, or less after a loss */
  budget: number;
  readonly changes: RateChange[] = [];
  changeCount = 0;
  private calm = 0;

  constructor(
    readonly maxBudget: number,
    initial = 1,
  ) {
    this.rate = initial;
    this.budget = maxBudget;
  }

  /** Feeds one tick; returns the new rate when it changed. */
  tick(t: SamplingTick, atS: number): number | undefined {
    const demand = t.seconds > 0 ? t.seen / t.seconds : 0;
    const needed = () => Math.min(MAX_SAMPLE_RATE, Math.max(1, Math.ceil(demand / this.budget)));
    let next = this.rate;
    let reason = '';
    if (t.lost > 0) {
      this.budget = Math.max(MIN_BUDGET, Math.min(this.budget, demand / this.rate / 2));
      next = Math.min(MAX_SAMPLE_RATE, Math.max(this.rate * 4, needed()));
      reason = `${t.lost} records lost at ${Math.round(demand)} exchanges/s; budget now ${Math.round(this.budget)}/s`;
      this.calm = 0;
    } else {
      this.budget = Math.min(this.maxBudget, this.budget * 1.05);
      const n = needed();
      if (n > this.rate) {
        next = n;
        reason = `${Math.round(demand)} exchanges/s is over the budget of ${Math.round(this.budget)}/s`;
        this.calm = 0;
      } else if (n <= this.rate / 2) {
        if (++this.calm >= 5) {
          next = Math.max(n, Math.floor(this.rate / 2));
          reason = `${Math.round(demand)} exchanges/s fits a lower rate`;
          this.calm = 0;
        }
      } else {
        this.calm = 0;
      }
    }
    if (next === this.rate) return undefined;
    this.changeCount++;
    const change = { at_s: Math.round(atS * 10) / 10, from: this.rate, to: next, reason };
    if (this.changes.length >= MAX_CHANGES_KEPT) this.changes.splice(MAX_CHANGES_KEPT / 2, 1); // keep the first half, slide the rest
    this.changes.push(change);
    this.rate = next;
    return next;
  }
}
