// The network view measures the path, not the server's think time. On request/response traffic
// the kernel's smoothed RTT (srtt) takes in the time an ACK waits for the answer (delayed ACK), so
// with a server that sleeps it reads milliseconds on loopback; the windowed minimum RTT (what
// `ss -i` calls minrtt) does not. Ground truth: the client's own fastest request (a server that
// answers at once, timed by the client around write() and read()) is one loopback round trip plus
// two system calls and the server's work: the path's RTT can only be below it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needsRoot, reportDuring } from './helpers/probe.js';
import { runClient, startTestServer, type ClientResult } from './helpers/workload.js';
import type { LatencyReportRead } from './helpers/report-types.js';

test('network view on loopback: below the fastest request the client timed itself; srtt, with delayed ACKs, apart', async (t) => {
  if (!needsRoot(t)) return;
  const server = await startTestServer(t);
  let own: ClientResult | undefined;
  const rep = await reportDuring<LatencyReportRead>(
    t,
    'latency-probe',
    ['--filter', `port=${server.port}`, '--format', 'json'],
    async () => {
      // half answered at once, half after 20 ms (long enough for the client's ACK to be delayed)
      own = await runClient({
        addr: '127.0.0.1',
        port: server.port,
        requests: 800,
        concurrency: 4,
        sleeps: [0, 20_000],
      });
    },
  );
  assert.ok(own);
  const m = rep.metrics;
  const fastestOwnMs = own.latency_us.min / 1000;
  assert.ok(m.network.total_requests > 0, 'network samples');
  t.diagnostic(
    `network (min RTT) p50 ${m.network.percentiles.p50} ms p99 ${m.network.percentiles.p99} ms; ` +
      `srtt p50 ${m.network_srtt.percentiles.p50} ms; the client's fastest request ${fastestOwnMs} ms`,
  );
  assert.ok(
    m.network.percentiles.p99 <= fastestOwnMs,
    `network p99 ${m.network.percentiles.p99} ms above the fastest whole request ${fastestOwnMs} ms`,
  );
  assert.ok(m.network.percentiles.p99 < 0.5, 'a loopback round trip is well under 0.5 ms');
  assert.ok(m.network_srtt.total_requests > 0);
  assert.ok(m.network_srtt.percentiles.p50 >= m.network.percentiles.p50, 'srtt is never below the minimum');
  // per connection too, and in the analysis
  for (const c of m.connections) assert.ok(c.min_rtt_ms <= fastestOwnMs, `connection ${c.conn_id}: ${c.min_rtt_ms} ms`);
  assert.equal(m.overhead_analysis.network_ms, m.network.percentiles.p50);
  assert.equal(m.overhead_analysis.network_srtt_ms, m.network_srtt.percentiles.p50);
});
