// connection-tracker under a connection storm: mpload opening a new
// connection per request, as fast as the machine allows (loopback, 8
// threads, no sleep), in alternating rounds without and with the probe, in
// one run. Prints connections/s with and without (the ratio), the figures
// the probe counted against the client's own, and the kernel cost per run
// of each program (kernel.bpf_stats_enabled, a separate pass): the
// connection events are latency_state (sock:inet_sock_set_state), which
// connection-tracker extends with set-up, failure, lifetime and request
// counts.
import { setTimeout as sleep } from 'node:timers/promises';
import { alternateRounds, startProbe, withBpfStats } from './lib.js';
import { buildTools, runClient, startServer } from '../test/helpers/workload.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 8);
const REQUESTS = Number(process.env.BENCH_CONNECTIONS_PER_ROUND ?? 40_000);
const THREADS = 8;

await buildTools();
const server = await startServer({ addr: '127.0.0.1' });
const storm = async () =>
  (await runClient({ addr: '127.0.0.1', port: server.port, requests: REQUESTS, concurrency: THREADS, newConn: true }))
    .rps;
try {
  await storm(); // warm-up (and TIME_WAIT reuse settles)
  let counted = 0,
    sent = 0,
    lost = 0;
  const { ratio, median, without, withProbe } = await alternateRounds(ROUNDS, storm, async () => {
    const probe = await startProbe('connection-tracker', ['--filter', `port=${server.port}`]);
    await sleep(1000);
    const rps = await storm();
    sent += REQUESTS;
    const rep = await probe.stop();
    counted += rep.connections.opened_by_side.client;
    lost += rep.metrics.events.lost;
    return rps;
  });
  const costs = await withBpfStats(async () => {
    const probe = await startProbe('connection-tracker', ['--filter', `port=${server.port}`]);
    await storm();
    const rep = await probe.stop();
    return rep.pipeline.programs;
  });
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  const avg = (a: number[]) => Math.round(a.reduce((x, y) => x + y, 0) / a.length);
  const result = {
    bench: `connection-tracker under a connection storm (mpload --new-conn, ${THREADS} threads, loopback)`,
    rounds: ROUNDS,
    connections_per_s_without: avg(without),
    connections_per_s_with: avg(withProbe),
    ratio: r3(ratio),
    median_round_ratio: r3(median),
    connections_sent: sent,
    connections_counted: counted,
    lost,
    kernel_ns_per_run: Object.fromEntries(costs.map((c) => [c.name, c.ns_per_run])),
    kernel_runs: Object.fromEntries(costs.map((c) => [c.name, c.run_count])),
  };
  console.log(JSON.stringify(result));
  console.log(
    `connection storm: ${result.connections_per_s_with} connections/s with connection-tracker / ${result.connections_per_s_without} without = ` +
      `${result.ratio} (median of rounds ${result.median_round_ratio}); counted ${counted} of ${sent}, lost ${lost}; kernel cost per run: ` +
      costs.map((c) => `${c.name} ${String(c.ns_per_run)} ns`).join(', '),
  );
} finally {
  await server.stop();
}
