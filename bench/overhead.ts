// Overhead of latency-probe on a loopback HTTP load at the machine's maximum:
// wrk against nginx, rounds alternating without and with the probe attached,
// in one run. Prints requests/s with / without, the probe's loss, and each
// BPF program's kernel cost per run (a separate pass with bpf_stats_enabled,
// which itself costs time, so it is not part of the ratio).
import { setTimeout as sleep } from 'node:timers/promises';
import { alternateRounds, startNginx, startProbe, withBpfStats, wrk, freePort } from './lib.js';

// The machine is a shared 2-vCPU VM whose speed drifts by 10-15 % over
// seconds: many short rounds, alternating which half goes first, and the
// median of the per-round ratios beside the ratio of the sums.
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 12);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
// BENCH_PROBE=connection-tracker: the same with connection-tracker (its TLS programs see every packet)
const PROBE = probeToMeasure(process.env.BENCH_PROBE ?? 'latency-probe');

function probeToMeasure(name: string): 'latency-probe' | 'connection-tracker' {
  if (name !== 'latency-probe' && name !== 'connection-tracker')
    throw new Error(`BENCH_PROBE=${name}: give latency-probe or connection-tracker`);
  return name;
}

const nginx = await startNginx(freePort());
const url = `http://127.0.0.1:${nginx.port}/`;
try {
  wrk(url, 2, 1, CONNECTIONS); // warm-up
  let lost = 0;
  let measured = 0;
  const attached = async () => {
    const probe = await startProbe(PROBE, []);
    await sleep(1000); // let the probe's start-up (JIT, worker threads) settle before measuring
    const rps = wrk(url, SECONDS, 1, CONNECTIONS).rps;
    const rep = await probe.stop();
    lost += rep.metrics.events.lost;
    measured += rep.metrics.server.total_requests;
    return rps;
  };
  const { without, withProbe, ratio, median } = await alternateRounds(
    ROUNDS,
    () => wrk(url, SECONDS, 1, CONNECTIONS).rps,
    attached,
  );
  const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
  const costs = await withBpfStats(async () => {
    const probe = await startProbe(PROBE, []);
    wrk(url, SECONDS, 1, CONNECTIONS);
    const rep = await probe.stop();
    return rep.pipeline.programs;
  });
  const result = {
    bench: `${PROBE} overhead (wrk -t1 -c${CONNECTIONS} against nginx, loopback)`,
    rounds: ROUNDS,
    seconds: SECONDS,
    rps_without: without.map(Math.round),
    rps_with: withProbe.map(Math.round),
    ratio: Math.round(ratio * 1000) / 1000,
    median_round_ratio: Math.round(median * 1000) / 1000,
    requests_measured: measured,
    lost,
    kernel_ns_per_run: Object.fromEntries(costs.map((c) => [c.name, c.ns_per_run])),
  };
  console.log(JSON.stringify(result));
  console.log(
    `overhead: ${Math.round(sum(withProbe) / ROUNDS)} req/s with the probe / ${Math.round(sum(without) / ROUNDS)} without = ${result.ratio} (median of rounds ${result.median_round_ratio}) ` +
      `(lost ${lost} of ${measured}); kernel cost per run: ${costs.map((c) => `${c.name} ${String(c.ns_per_run)} ns`).join(', ')}`,
  );
} finally {
  await nginx.stop();
}
