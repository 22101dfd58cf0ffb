// The Grafana dashboard (deploy/grafana/meshprobe.json) against real data: a
// real Prometheus (Debian's) scrapes latency-probe, connection-tracker and
// packet-drop-probe while this test makes loopback traffic (requests on new
// connections, TLS handshakes, a refused connect, UDP to a closed port for a
// NO_SOCKET drop); then every panel's query, its variables substituted as
// Grafana would (each query variable resolved from its own label_values
// query), runs against Prometheus' HTTP API and must return series with a
// value. As root (BPF).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { repoRoot, runClient, startTestServer } from './helpers/workload.js';
import { needsRoot, startProbe, tempDir } from './helpers/probe.js';
import { startPrometheus, type PrometheusServer } from './helpers/prometheus-server.js';
import { freePort } from './helpers/servers.js';
import { makeCert } from './helpers/tls.js';

interface Target {
  expr: string;
  refId: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
}
interface Variable {
  name: string;
  type: string;
  query?: string | { query: string };
  includeAll?: boolean;
  allValue?: string;
}
interface Dashboard {
  schemaVersion: number;
  uid: string;
  panels: Panel[];
  templating: { list: Variable[] };
}

const dashboard = JSON.parse(readFileSync(join(repoRoot, 'deploy', 'grafana', 'meshprobe.json'), 'utf8')) as Dashboard;
const DS = { type: 'prometheus', uid: '${DS_PROMETHEUS}' };
const queryPanels = () => dashboard.panels.filter((p) => p.type !== 'row');

/** Grafana's built-in interval variables, as a 15 s scrape interval would make them. */
const BUILTINS: Partial<Record<string, string>> = { __rate_interval: '1m', __interval: '15s', __range: '5m' };

/** A Grafana query for Prometheus with $var / ${var} / [[var]] replaced. */
function substitute(expr: string, vars: Partial<Record<string, string>>): string {
  return expr.replace(/\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]/g, (whole, a?: string, b?: string, c?: string) => {
    const name = a ?? b ?? c ?? '';
    const v = vars[name] ?? BUILTINS[name];
    assert.ok(v !== undefined, `unknown variable ${whole} in ${expr}`);
    return v;
  });
}

/** Grafana's regex form of selected values for =~ (escaped, alternatives in a group). */
const regexOf = (values: string[]) =>
  values.length === 1
    ? values[0].replace(/[\\^$.|?*+()[\]{}]/g, '\\$&')
    : `(${values.map((v) => v.replace(/[\\^$.|?*+()[\]{}]/g, '\\$&')).join('|')})`;

/** label_values(selector, label) against Prometheus' series API, as Grafana's query variable runs it. */
async function labelValues(prom: PrometheusServer, q: string): Promise<string[]> {
  const m = /^label_values\((.+),\s*(\w+)\)$/.exec(q.trim());
  assert.ok(m, `variable query ${q}: label_values(selector, label) expected`);
  const params = new URLSearchParams({ 'match[]': m[1], start: String(Date.now() / 1000 - 600) });
  const r = await fetch(`${prom.url}/api/v1/series?${params}`, { signal: AbortSignal.timeout(10_000) });
  const body = (await r.json()) as { status: string; error?: string; data?: Partial<Record<string, string>>[] };
  assert.equal(body.status, 'success', `${q}: ${body.error ?? ''}`);
  return [...new Set((body.data ?? []).map((s) => s[m[2]]).filter((v): v is string => v !== undefined))].sort();
}

test('the dashboard: schema 39, a Prometheus datasource variable used by every panel, label_values variables', () => {
  assert.equal(dashboard.schemaVersion, 39);
  assert.equal(dashboard.uid, 'meshprobe');
  const vars = dashboard.templating.list;
  assert.deepEqual(
    vars.map((v) => v.name),
    ['DS_PROMETHEUS', 'instance', 'namespace', 'pod', 'service'],
  );
  assert.equal(vars[0].type, 'datasource');
  assert.equal(vars[0].query, 'prometheus');
  for (const v of vars.slice(1)) {
    assert.equal(v.type, 'query');
    assert.ok(v.includeAll && v.allValue === '.*', `${v.name}: All is .* (matches series without the label too)`);
  }
  const panels = queryPanels();
  assert.ok(panels.length >= 15, `${panels.length} panels`);
  for (const p of panels) {
    assert.deepEqual(p.datasource, DS, `${p.title}: datasource`);
    assert.ok(p.targets && p.targets.length > 0, `${p.title}: no query`);
    for (const t of p.targets) assert.deepEqual(t.datasource, DS, `${p.title} ${t.refId}: datasource`);
  }
});

test('every panel query returns series from a real Prometheus scraping the three probes under load', async (t) => {
  if (!needsRoot(t)) return;
  const [lport, cport, dport] = [await freePort(), await freePort(), await freePort()];
  const probes = [
    startProbe('latency-probe', ['--format', 'prometheus', '--port', String(lport)]),
    startProbe('connection-tracker', ['--format', 'prometheus', '--port', String(cport)]),
    startProbe('packet-drop-probe', ['--format', 'prometheus', '--port', String(dport)]),
  ];
  t.after(async () => {
    await Promise.all(probes.map((p) => p.stop('SIGINT')));
  });
  await Promise.all(probes.map((p) => p.ready));
  const prom = await startPrometheus(t, {
    targets: [lport, cport, dport].map((p) => `127.0.0.1:${p}`),
    scrapeInterval: '1s',
  });

  // load: requests on new connections, TLS handshakes, a refused connect, UDP to a closed port
  const server = await startTestServer(t);
  const service = `mpload:${server.port}`;
  // in two rounds: a series first appears with the counts it already has, and rate() needs it to grow after that
  const load = async (requests: number) => {
    const client = await runClient({
      addr: '127.0.0.1',
      port: server.port,
      requests,
      concurrency: 2,
      newConn: true,
      sleeps: [0, 200],
      rate: 300,
    });
    assert.equal(client.requests, requests);
  };
  await load(500);
  await prom.waitFor(`meshprobe_service_connection_setup_duration_seconds_count{service="${service}", role="server"}`);
  await load(1000);
  const dir = tempDir();
  const { cert, key } = makeCert(dir);
  const tlsServer = createTlsServer({ cert: readFileSync(cert), key: readFileSync(key) }, (s) => {
    s.end('ok');
  });
  await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
  t.after(
    () =>
      new Promise<void>((resolve) =>
        tlsServer.close(() => {
          resolve();
        }),
      ),
  );
  const tlsAddr = tlsServer.address();
  assert.ok(tlsAddr && typeof tlsAddr === 'object');
  for (let i = 0; i < 20; i++) {
    await new Promise<void>((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port: tlsAddr.port, ca: readFileSync(cert) }, () => {
        s.on('data', () => undefined);
        s.on('end', () => {
          s.end();
          resolve();
        });
      });
      s.on('error', reject);
    });
  }
  const closed = await freePort();
  const refused = await new Promise<string>((resolve) => {
    const s = tcpConnect({ host: '127.0.0.1', port: closed });
    s.on('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      resolve(e.code ?? e.message);
    });
  });
  assert.equal(refused, 'ECONNREFUSED');
  const udp = createSocket('udp4');
  for (let i = 0; i < 20; i++)
    await new Promise<void>((resolve) => {
      udp.send('x', closed, '127.0.0.1', () => {
        resolve();
      });
    });
  udp.close();

  // scraped: the last of what was made is in Prometheus, then a few more scrapes for rate()
  await prom.waitFor(`meshprobe_drops_total{reason="NO_SOCKET", service="${closed}/udp"} >= 20`, undefined, 20_000);
  await prom.waitFor('meshprobe_connections_failed_total{cause="refused"} >= 1', undefined, 20_000);
  await prom.waitFor('sum(meshprobe_tls_handshake_duration_seconds_count) >= 20', undefined, 20_000);
  await sleep(4000);

  // each variable as Grafana resolves it, in order (later ones use earlier ones): All, and each with a value
  const vars = dashboard.templating.list.filter((v) => v.type === 'query');
  const all: Record<string, string> = {};
  const values: Record<string, string[]> = {};
  for (const v of vars) {
    const q = typeof v.query === 'string' ? v.query : (v.query?.query ?? '');
    values[v.name] = await labelValues(prom, substitute(q, all));
    all[v.name] = v.allValue ?? '.*';
  }
  t.diagnostic(`variables: ${JSON.stringify(values)}`);
  assert.equal(values.instance.length, 3, 'the three probes are instances');
  assert.ok(values.service.includes(service), `the service variable lists ${service}`);
  const choices: [string, Record<string, string>][] = [
    ['All', all],
    [`service=${service}`, { ...all, service: regexOf([service]) }],
  ];
  const failures: string[] = [];
  let queries = 0;
  for (const [label, chosen] of choices) {
    for (const p of queryPanels()) {
      for (const target of p.targets ?? []) {
        const expr = substitute(target.expr, chosen);
        queries++;
        try {
          const r = await prom.query(expr);
          const finite = r.filter((s) => Number.isFinite(Number(s.value[1])));
          if (r.length === 0 || finite.length === 0)
            failures.push(
              `[${label}] ${p.title} ${target.refId}: ${r.length} series, ${finite.length} with a value: ${expr}`,
            );
        } catch (err) {
          failures.push(`[${label}] ${p.title} ${target.refId}: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
    }
  }
  t.diagnostic(`${queries} queries run`);
  assert.deepEqual(failures, [], failures.join('\n'));
});
