// Five minutes of the soak benchmark (bench/soak.ts, an hour by default): keep-alive load plus
// connection churn, /metrics scraped every 15 s, InfluxDB written every 10 s. Counts exact against
// the load generator's and no record lost. RSS is sampled and reported, not held to the bench's
// target (flat within 5 % after the warm-up; docs/benchmarks.md has the hour's figure). The churn is
// the hour's: 100 new connections/s, 30,000 connections and 60,000 rows (one per side) through the
// default table of 4,096 rows, which only holds because closed connections give their rows back
// (src/pipeline/aging.ts): nothing may be refused, and most connections must have aged out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needsRoot } from './helpers/probe.js';
import { soak, soakFailures } from '../bench/soak.js';

test(
  'soak, 5 minutes: counts exact in the last scrape, the InfluxDB points and both reports; nothing lost',
  { timeout: 12 * 60_000 },
  async (t) => {
    if (!needsRoot(t)) return;
    const r = await soak(t, { minutes: 5, rate: 2000, connections: 8, churnRate: 100, warmupS: 60 }, (line) => {
      t.diagnostic(line);
    });
    assert.ok(r.sent.churn > 0 && r.sent.keepalive > 0, 'both loads ran');
    assert.deepEqual(soakFailures(r, { rss: false }), []);
    for (const rep of [r.prometheus.report, r.influx.report]) {
      const aged = rep.metrics.connections_aged;
      assert.ok(aged.connections > r.sent.connections, `${aged.connections} connection ends aged out`);
      assert.equal(rep.metrics.loss.connections_not_tracked, 0);
    }
    for (const [name, s] of Object.entries(r.rss)) {
      t.diagnostic(`RSS ${name}: spread ${(s.spread * 100).toFixed(1)} % after the warm-up (target 5 %)`);
    }
  },
);
