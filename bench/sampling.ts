// --sample-rate at the machine's maximum loopback load: wrk against nginx,
// without the probe and with it at N = 1, 10, 100 and auto. Each round runs
// all five, in an order that rotates from round to round, so that the VM's
// drifting speed weighs on every mode alike. Prints per mode the overhead
// ratio (requests/s with / without, overall and the median of the rounds'
// ratios), the records lost, and the records the kernel sent (the event
// rate, which sampling divides by about N).
import { setTimeout as sleep } from 'node:timers/promises';
import { startNginx, startProbe, wrk, freePort } from './lib.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 6);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const RATES = (process.env.BENCH_RATES ?? '1,10,100,auto').split(',');

interface Tally {
  rps: number[];
  lost: number;
  records: number;
  seen: number;
  measured: number;
  finalRate: number;
}

const nginx = await startNginx(freePort());
const url = `http://127.0.0.1:${nginx.port}/`;
const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
try {
  wrk(url, 2, 1, CONNECTIONS); // warm-up
  const without: number[] = [];
  const tallies = new Map<string, Tally>(
    RATES.map((r) => [r, { rps: [], lost: 0, records: 0, seen: 0, measured: 0, finalRate: 0 }]),
  );
  const tally = (rate: string): Tally => {
    const t = tallies.get(rate);
    if (!t) throw new Error(`no tally for sample rate ${rate}`);
    return t;
  };
  const modes = ['without', ...RATES];
  for (let round = 0; round < ROUNDS; round++) {
    const order = modes.map((_, i) => modes[(i + round) % modes.length]);
    for (const mode of order) {
      if (mode === 'without') {
        without.push(wrk(url, SECONDS, 1, CONNECTIONS).rps);
        continue;
      }
      const t = tally(mode);
      const probe = await startProbe('latency-probe', ['--filter', `port=${nginx.port}`, '--sample-rate', mode]);
      await sleep(1000); // start-up settles (JIT, workers); auto has a second to find its rate
      t.rps.push(wrk(url, SECONDS, 1, CONNECTIONS).rps);
      const rep = await probe.stop();
      t.lost += rep.metrics.events.lost + rep.metrics.loss.perf_lost_samples;
      t.records += rep.pipeline.records_emitted;
      t.seen += rep.metrics.sampling.exchanges_seen;
      t.measured += rep.metrics.sampling.requests_measured;
      t.finalRate = rep.metrics.sampling.rate;
    }
  }
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  const rows = RATES.map((rate) => {
    const t = tally(rate);
    const ratios = t.rps.map((w, i) => w / without[i]).sort((a, b) => a - b);
    return {
      sample_rate: rate,
      final_rate: t.finalRate,
      rps_without: Math.round(sum(without) / ROUNDS),
      rps_with: Math.round(sum(t.rps) / ROUNDS),
      ratio: r3(sum(t.rps) / sum(without)),
      median_round_ratio: r3((ratios[(ROUNDS - 1) >> 1] + ratios[ROUNDS >> 1]) / 2),
      exchanges_seen: t.seen,
      measured: t.measured,
      records_emitted: t.records,
      lost: t.lost,
    };
  });
  for (const r of rows) console.log(JSON.stringify(r));
  console.log(`\n${ROUNDS} rounds of ${SECONDS} s, wrk -t1 -c${CONNECTIONS} against nginx on loopback`);
  console.log('sample rate | req/s without | req/s with | ratio (median of rounds) | measured / seen | lost');
  for (const r of rows) {
    console.log(
      `${r.sample_rate}${r.sample_rate === 'auto' ? ` (ended at ${r.final_rate})` : ''} | ${r.rps_without} | ${r.rps_with} | ` +
        `${r.ratio} (${r.median_round_ratio}) | ${r.measured} / ${r.exchanges_seen} | ${r.lost}`,
    );
  }
} finally {
  await nginx.stop();
}
