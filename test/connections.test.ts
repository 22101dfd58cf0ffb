// connection-tracker against real traffic: reuse (a keep-alive client
// against a new connection per request, ratios exact), set-up time against
// the client's own timing of connect(), failed connects classified by cause
// (a closed port: refused; SYNs dropped by an iptables rule inside a
// namespace the test made: timed out), and the same figures in Prometheus.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConnectionReport } from '../src/report/connections.js';
import { buildTools, runClient, startServer, type ClientResult, type RunningServer } from './helpers/workload.js';
import { createVethPair, ip, ipBin } from './helpers/netns.js';
import { near, needsRoot, reportDuring, startProbe, tempDir } from './helpers/probe.js';
import { curlOnce, median, runAsync, spawnServer, tlsNginx, waitListening, type CurlRun } from './helpers/tls.js';
import { freePort, type AfterHook } from './helpers/servers.js';

async function server(t: AfterHook, opts: { addr?: string; netns?: string } = {}): Promise<RunningServer> {
  await buildTools();
  const s = await startServer({ addr: opts.addr ?? '127.0.0.1', netns: opts.netns });
  t.after(() => s.stop().catch(() => undefined));
  return s;
}

const tracked = (t: AfterHook, args: string[], traffic: () => Promise<unknown>) =>
  reportDuring<ConnectionReport>(t, 'connection-tracker', args, traffic);

/** connections.failed: a count per cause of FAILURE_CAUSES (the report's type spells out only `total`) and the total. */
const failedOf = (rep: ConnectionReport): Record<string, number> => rep.connections.failed;

test('keep-alive against a new connection per request: requests per connection and reuse ratios exact', async (t) => {
  if (!needsRoot(t)) return;
  const s = await server(t);
  const keep = await tracked(t, ['--filter', `port=${s.port}`], () =>
    runClient({ addr: s.addr, port: s.port, requests: 500, concurrency: 1 }),
  );
  let c = keep.connections;
  assert.equal(keep.probe, 'connection-tracker');
  assert.deepEqual(c.opened_by_side, { client: 1, server: 1 });
  assert.deepEqual(c.closed_by_side, { client: 1, server: 1 });
  assert.equal(c.reuse.reused_request_ratio, 499 / 500);
  const perConn = c.reuse.requests_per_connection;
  assert.ok(perConn, 'requests per connection measured');
  assert.ok(near(perConn.p50, 500, 0.01, 0), `requests per connection ${perConn.p50}`);
  assert.equal(perConn.mean, 500);
  assert.ok(near(c.reuse.requests_per_s * keep.duration_seconds, 500, 0.001, 1));
  assert.ok(c.idle_gap_ms !== null && c.idle_gap_ms.p50 > 0, 'idle gaps measured between exchanges');
  assert.ok(c.lifetime_ms !== null && c.lifetime_ms.p50 > 0);

  const fresh = await tracked(t, ['--filter', `port=${s.port}`], () =>
    runClient({ addr: s.addr, port: s.port, requests: 300, concurrency: 2, newConn: true }),
  );
  c = fresh.connections;
  assert.deepEqual(c.opened_by_side, { client: 300, server: 300 });
  assert.deepEqual(c.closed_by_side, { client: 300, server: 300 });
  assert.equal(c.reuse.reused_request_ratio, 0);
  assert.equal(c.reuse.requests_per_connection?.p99, 1);
  assert.ok(near(c.reuse.new_connections_per_s * fresh.duration_seconds, 300, 0.001, 1));
  assert.equal(c.failed.total, 0);
  const svc = c.by_service.find((x) => x.role === 'client');
  assert.ok(svc, 'a client service');
  assert.equal(svc.service, `mpload:${s.port}`);
  assert.equal(svc.opened, 300);
  const pool = svc.pool;
  assert.ok(
    pool && pool.connections_open_avg > 0 && pool.efficiency !== null && pool.efficiency > 0 && pool.efficiency <= 1,
    JSON.stringify(pool),
  );
});

test("set-up time against the client's own timing of connect(), across a veth pair", async (t) => {
  if (!needsRoot(t)) return;
  const pair = createVethPair();
  t.after(() => {
    pair.cleanup();
  });
  const s = await server(t, { addr: pair.addrB4, netns: pair.nsB });
  let client: ClientResult | undefined;
  const rep = await tracked(t, ['--filter', `port=${s.port}`], async () => {
    client = await runClient({
      addr: pair.addrB4,
      port: s.port,
      requests: 400,
      concurrency: 1,
      newConn: true,
      netns: pair.nsA,
    });
  });
  const ours = rep.connections.setup_ms_by_side.client;
  assert.ok(ours, 'client set-up times measured');
  const connectUs = client?.connect_us;
  assert.ok(connectUs, 'the client timed connect()');
  const truth = connectUs.p50 / 1000;
  t.diagnostic(
    `client set-up p50 ${ours.p50} ms p99 ${ours.p99} ms; connect() p50 ${truth} ms p99 ${connectUs.p99 / 1000} ms`,
  );
  // the client's clock also holds the syscall and its wake-up; ours runs from SYN_SENT to ESTABLISHED
  assert.ok(near(ours.p50, truth, 0.1, 0.05), `client set-up p50 ${ours.p50} ms vs connect() ${truth} ms`);
  assert.ok(ours.p50 > 0.001 && ours.p50 <= truth + 0.005, `inside what connect() saw: ${ours.p50} ms`);
  const srv = rep.connections.setup_ms_by_side.server;
  assert.ok(srv, 'server set-up times measured');
  // the server's SYN-ACK -> ACK is the client's SYN-ACK -> ACK leg of the same handshake: a part of the client's
  assert.ok(
    srv.p50 > 0.001 && srv.p50 <= ours.p50 + 0.002,
    `server set-up (SYN-ACK -> ACK) ${srv.p50} ms vs client ${ours.p50} ms`,
  );
  assert.deepEqual(rep.connections.opened_by_side, { client: 400, server: 400 });
});

/**
 * Connects `n` times to addr:port from inside `netns` (or here), returns the error codes; with
 * `giveUpMs`, the application gives up by itself after that long ('gave-up').
 */
async function connectMany(
  addr: string,
  port: number,
  n: number,
  netns?: string,
  giveUpMs = 0,
  hold = false,
): Promise<string[]> {
  const script =
    `const net=require('net');let left=${n};const codes=[];const done=(c)=>{codes.push(c);if(--left===0)console.log(JSON.stringify(codes))};` +
    `for(let i=0;i<${n};i++){const s=net.connect({host:'${addr}',port:${port}});let over=false;` +
    (giveUpMs
      ? `const t=setTimeout(()=>{over=true;s.destroy();done('gave-up')},${giveUpMs});s.on('close',()=>clearTimeout(t));`
      : '') +
    (hold
      ? `s.on('close',()=>{if(over)return;over=true;done('closed')});`
      : `s.on('connect',()=>{if(over)return;over=true;s.destroy();done('connected')});`) +
    `s.on('error',(e)=>{if(over)return;over=true;done(e.code)});}`;
  const argv = netns ? ['netns', 'exec', netns, process.execPath, '-e', script] : ['-e', script];
  // not spawnSync: a server in this process must go on answering meanwhile
  const r = await runAsync(netns ? ipBin() : process.execPath, argv, 60_000);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as string[];
}

test('failed connects by cause: a closed port is refused, dropped SYNs time out (iptables in a namespace the test made)', async (t) => {
  if (!needsRoot(t)) return;
  const closed = await freePort(); // nobody listens there
  const refused = await tracked(t, ['--filter', `port=${closed}`], async () => {
    assert.deepEqual(await connectMany('127.0.0.1', closed, 20), Array(20).fill('ECONNREFUSED'));
  });
  assert.equal(failedOf(refused).refused, 20);
  assert.equal(refused.connections.failed.total, 20);
  assert.equal(refused.connections.opened, 0);

  const pair = createVethPair();
  t.after(() => {
    pair.cleanup();
  });
  // the client gives up after one SYN retry (3 s) instead of six (127 s): a per-namespace setting
  ip('netns', 'exec', pair.nsA, 'sysctl', '-qw', 'net.ipv4.tcp_syn_retries=1');
  const port = 18080;
  const rule = [
    'netns',
    'exec',
    pair.nsB,
    'iptables',
    '-A',
    'INPUT',
    '-p',
    'tcp',
    '--dport',
    String(port),
    '-j',
    'DROP',
  ];
  ip(...rule); // the namespace and its rules go when the test deletes it
  const timedOut = await tracked(t, ['--filter', `port=${port}`], async () => {
    assert.deepEqual(await connectMany(pair.addrB4, port, 3, pair.nsA), Array(3).fill('ETIMEDOUT'));
  });
  const f = failedOf(timedOut);
  assert.deepEqual({ timeout: f.timeout, refused: f.refused, total: f.total }, { timeout: 3, refused: 0, total: 3 });

  // an application that gives up by itself (1.5 s: after the first SYN retry) while SYNs go unanswered: a time-out too
  const gaveUp = await tracked(t, ['--filter', `port=${port}`], async () => {
    assert.deepEqual(await connectMany(pair.addrB4, port, 4, pair.nsA, 1500), Array(4).fill('gave-up'));
  });
  assert.deepEqual(
    { timeout: failedOf(gaveUp).timeout, aborted: failedOf(gaveUp).aborted },
    { timeout: 4, aborted: 0 },
  );
});

test('failed connects by cause: a reset right after the handshake, before the application used the connection', async (t) => {
  if (!needsRoot(t)) return;
  // a server that answers every connection with a RST (SO_LINGER 0) as soon as it is accepted
  const srv = net.createServer((s) => s.resetAndDestroy());
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => srv.close());
  const port = (srv.address() as net.AddressInfo).port;
  const rep = await tracked(t, ['--filter', `port=${port}`], async () => {
    // the client holds the connection open, unused, until the reset ends it
    assert.deepEqual(await connectMany('127.0.0.1', port, 10, undefined, 0, true), Array(10).fill('ECONNRESET'));
  });
  const f = failedOf(rep);
  assert.equal(f.reset, 10, JSON.stringify(f));
  assert.equal(f.total, 10);
  assert.equal(rep.connections.opened_by_side.client, 10, 'set up, then reset');
});

test('--format prometheus carries the connection figures', async (t) => {
  if (!needsRoot(t)) return;
  const s = await server(t);
  const port = await freePort();
  const probe = startProbe<ConnectionReport>('connection-tracker', [
    '--filter',
    `port=${s.port}`,
    '--format',
    'prometheus',
    '--port',
    String(port),
  ]);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  await runClient({ addr: s.addr, port: s.port, requests: 100, newConn: true });
  await sleep(300);
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  const value = (re: RegExp) => Number(re.exec(text)?.[1]);
  assert.equal(value(/^meshprobe_connections_opened_total\{side="client"\} (\d+)/m), 100);
  assert.equal(value(/^meshprobe_connection_setup_duration_seconds_count\{side="client"\} (\d+)/m), 100);
  assert.equal(value(/^meshprobe_connections_failed_total\{cause="refused"\} (\d+)/m), 0);
  assert.match(
    text,
    /^meshprobe_service_connection_setup_duration_seconds_bucket\{.*role="client".*service="mpload:\d+".*\} 100$/m,
  );
  assert.ok(exit.report, 'a report');
  assert.equal(exit.report.connections.opened_by_side.client, 100);
});

test("TLS: curl against nginx (1.3 and 1.2), openssl s_client against s_server; against curl's own appconnect - connect", async (t) => {
  if (!needsRoot(t)) return;
  const { cert, port } = await tlsNginx(t, tempDir(), await freePort());
  const sport = await freePort();
  const runs = 40;
  const curls: Record<number, CurlRun[]> = { 2: [], 3: [] };
  // the processes, not the ports: libssl handshakes have no socket, so only process conditions select them
  const rep = await tracked(t, ['--filter', 'comm=curl,nginx,openssl'], async () => {
    for (const v of [3, 2] as const) for (let i = 0; i < runs; i++) curls[v].push(curlOnce(port, v, false));
    // openssl s_client never calls SSL_connect or SSL_do_handshake: only the TLS records show its handshakes
    const server = spawnServer('openssl', [
      's_server',
      '-accept',
      `127.0.0.1:${sport}`,
      '-cert',
      cert.cert,
      '-key',
      cert.key,
      '-www',
      '-quiet',
    ]);
    try {
      await waitListening(sport, server);
      for (const v of ['-tls1_3', '-tls1_2']) {
        const r = await runAsync('sh', [
          '-c',
          `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | openssl s_client -connect 127.0.0.1:${sport} ${v} -quiet -no_ign_eof`,
        ]);
        assert.equal(r.status, 0, r.stderr);
      }
    } finally {
      await server.stop();
    }
  });
  const c = rep.connections;
  const all = [...curls[2], ...curls[3]];
  // every handshake once per side: 80 curl + 2 s_client (the readiness probe above is plain TCP, no TLS)
  assert.deepEqual(c.tls_handshakes, { client: all.length + 2, server: all.length + 2 });
  // the libssl uprobes see curl's (SSL_connect) and nginx's (SSL_do_handshake), not s_client's nor s_server -www's
  assert.equal(c.tls_handshake_libssl_ms.count, 2 * all.length);
  assert.deepEqual(c.tls_versions, { 'TLS 1.2': 2 * (runs + 1), 'TLS 1.3': 2 * (runs + 1), unknown: 0 });
  const curlMs = median(all.map((r) => r.appMinusConnectNs)) / 1e6;
  const tlsClient = c.tls_handshake_ms_by_side.client;
  const tlsServer = c.tls_handshake_ms_by_side.server;
  const libsslClient = c.tls_handshake_libssl_ms.client;
  assert.ok(c.tls_after_connect_ms.client && tlsClient && tlsServer && libsslClient, 'TLS times measured');
  const ours = c.tls_after_connect_ms.client.p50;
  t.diagnostic(
    `TLS client: connected -> done p50 ${ours} ms vs curl appconnect - connect p50 ${curlMs.toFixed(4)} ms; ` +
      `ClientHello -> done p50 ${tlsClient.p50} ms; server ${tlsServer.p50} ms; ` +
      `libssl client ${libsslClient.p50} ms`,
  );
  assert.ok(near(ours, curlMs, 0.1, 0.2), `TLS after connect p50 ${ours} ms vs curl's ${curlMs} ms`);
  assert.ok(tlsClient.p50 < ours, 'the handshake proper is a part of it');
  const svc = c.by_service.find((x) => x.role === 'client' && x.port === port);
  assert.ok(svc, 'the client service');
  assert.ok(
    svc.tls_handshake_ms !== null &&
      svc.tls_handshake_ms.p50 > 0 &&
      svc.tls_after_connect_ms !== null &&
      svc.tls_after_connect_ms.p50 > 0,
    'per service',
  );
});
