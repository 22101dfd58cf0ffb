// The per-connection table through the real CLI: --max-connections N holds N
// connections open at once, closed connections give their rows back (so
// many more connections than rows pass through it with nothing refused), and
// what does not fit is counted in connections, not records.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needsRoot, reportDuring } from './helpers/probe.js';
import { runClient, startTestServer } from './helpers/workload.js';
import type { LatencyReportRead } from './helpers/report-types.js';

test('1,500 short connections (3,000 ends) and 16 held open pass through 160 rows: none refused, every request counted', async (t) => {
  if (!needsRoot(t)) return;
  const server = await startTestServer(t);
  const churn = 1500;
  const held = 16;
  const heldRequests = 1600;
  const rows = 160;
  const rep = await reportDuring<LatencyReportRead>(
    t,
    'latency-probe',
    ['--max-connections', String(rows), '--filter', `port=${server.port}`, '--format', 'json'],
    async () => {
      // 16 connections open for the whole churn (paced), the churn at 100 new connections/s: about
      // 0.7 x 100 rows hold the closed ones until they are folded (src/pipeline/aging.ts), 32 the open ones
      await Promise.all([
        runClient({ addr: '127.0.0.1', port: server.port, requests: heldRequests, concurrency: held, rate: 100 }),
        runClient({ addr: '127.0.0.1', port: server.port, requests: churn, newConn: true, rate: 100 }),
      ]);
    },
  );
  const m = rep.metrics;
  assert.equal(m.client.total_requests, churn + heldRequests);
  assert.equal(m.server.total_requests, churn + heldRequests);
  assert.equal(m.loss.connections_not_tracked, 0);
  assert.equal(m.loss.connection_table_full, 0);
  const aged = m.connections_aged;
  assert.equal(aged.table_rows, rows);
  assert.ok(aged.connections >= 2 * churn - rows, `${aged.connections} ends aged out`);
  assert.ok(m.connections.length <= rows);
  // every request is in a listed connection or an aged one, client side and server side
  const listed = m.connections.reduce((a, c) => a + c.requests, 0);
  assert.equal(listed + aged.requests, 2 * (churn + heldRequests));
  // the 16 held connections were never refused: each is listed, both ends, with its requests
  const heldClients = m.connections.filter((c) => c.role === 'client' && c.requests > 1);
  assert.equal(heldClients.length, held);
  assert.equal(
    heldClients.reduce((a, c) => a + c.requests, 0),
    heldRequests,
  );
});

test('more connections open at once than rows: the rest are counted once each as not tracked, their requests still in the views', async (t) => {
  if (!needsRoot(t)) return;
  const server = await startTestServer(t);
  const open = 12;
  const requests = 1200;
  const rep = await reportDuring<LatencyReportRead>(
    t,
    'latency-probe',
    ['--max-connections', '8', '--filter', `port=${server.port}`, '--format', 'json'],
    () => runClient({ addr: '127.0.0.1', port: server.port, requests, concurrency: open, rate: 400 }),
  );
  const m = rep.metrics;
  assert.equal(m.client.total_requests, requests);
  assert.equal(m.server.total_requests, requests);
  // 12 connections, 24 ends, 8 rows: the connections are concurrent, none closes before all opened
  assert.equal(m.connections.length, 8);
  assert.equal(m.loss.connections_not_tracked, 2 * open - 8);
  assert.ok(m.loss.connection_table_full > 0);
});
