// bench/load-test-report.sh, the documented benchmark integration, end to end:
// the three probes in the background around a load through two haproxy
// sidecars, then the combined HTML report.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { near, needsRoot, tempDir } from './helpers/probe.js';
import { repoRoot, buildTools, type ClientResult, type ServerSummary } from './helpers/workload.js';
import { haproxyMissing } from './helpers/haproxy.js';
import { ipBin } from './helpers/netns.js';
import type { LatencyReportRead } from './helpers/report-types.js';

test(
  'bench/load-test-report.sh: probes around a load through sidecars, then report.html',
  { timeout: 180_000 },
  async (t) => {
    if (!needsRoot(t)) return;
    const missing = haproxyMissing();
    if (missing) {
      if (process.env.CI === 'true') throw new Error(missing);
      t.skip(missing);
      return;
    }
    await buildTools();
    const out = tempDir();
    t.after(() => {
      rmSync(out, { recursive: true, force: true });
    });
    const before = spawnSync(ipBin(), ['netns', 'list'], { encoding: 'utf8' }).stdout;
    const r = spawnSync(
      'bash',
      [join(repoRoot, 'bench', 'load-test-report.sh'), '--out', out, '--requests', '800', '--concurrency', '2'],
      { encoding: 'utf8', timeout: 150_000 },
    );
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    for (const f of ['ebpf-latency.json', 'connections.json', 'drops.json', 'client.json', 'report.html'])
      assert.ok(existsSync(join(out, f)), f);
    const lat = JSON.parse(readFileSync(join(out, 'ebpf-latency.json'), 'utf8')) as LatencyReportRead;
    const client = JSON.parse(readFileSync(join(out, 'client.json'), 'utf8')) as ClientResult;
    const o = lat.metrics.overhead_analysis;
    assert.equal(client.errors, 0);
    // the server was stopped by the script (its summary is written on SIGTERM) and saw every request
    const server = JSON.parse(readFileSync(join(out, 'server.json'), 'utf8')) as ServerSummary;
    assert.equal(server.requests, 800);
    assert.equal(o.requests, 800);
    assert.equal(o.proxies.length, 2);
    assert.ok(o.total_ms !== null, 'overhead_analysis.total_ms');
    assert.ok(
      near(o.total_ms, client.latency_us.mean / 1000, 0.03, 0.05),
      `total ${o.total_ms} vs the client's ${client.latency_us.mean / 1000}`,
    );
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    for (const chart of ['latency-cdf', 'overhead']) assert.match(html, new RegExp(`data-chart="${chart}`), chart);
    assert.match(r.stdout, /overhead_analysis: total [\d.]+ ms = application/);
    // its namespaces are gone
    const after = spawnSync(ipBin(), ['netns', 'list'], { encoding: 'utf8' }).stdout;
    assert.equal(
      after.split('\n').filter((l) => l.startsWith('mpload-')).length,
      before.split('\n').filter((l) => l.startsWith('mpload-')).length,
    );
  },
);
