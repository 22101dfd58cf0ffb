// TLS handshake time (bpf/tls.bpf.c, linked alone as build/bpf/tls_dev.bpf.o),
// against real TLS peers on loopback:
//   curl -> nginx (TLS 1.3, then 1.2): every handshake caught once per side by
//     the socket-level source and by the libssl uprobes; the client-side p50
//     compared with curl's own timings;
//   openssl s_client -> s_server (1.3 and 1.2): caught by the socket-level
//     source (s_client's handshake runs inside SSL_read/SSL_write); also
//     through proxies that cut the streams into 7-byte segments, or cut the
//     ServerHello inside its extensions;
//   s_client (IPv4) -> a dual-stack node TLS server: the server's socket is
//     AF_INET6 with the IPv4-mapped address, as the socket says.
//
// About curl's reference: time_appconnect - time_connect also holds what
// curl does between the TCP connect and its ClientHello (SSL_CTX_new, CA
// store, SSL_new: over 1 ms here, about as long as the handshake) and after
// the handshake (certificate checks), which no observer of the ClientHello
// can see. So each version runs curl twice RUNS times: plain, as the issue
// says (counts; the p50s printed; our handshake must lie inside curl's
// connect -> appconnect in every run), and traced (-v --trace-time), where
// curl logs its own ClientHello (OUT) and the end of its handshake
// ("Finished (20)", OUT in TLS 1.3, IN in 1.2, from OpenSSL's message
// callback): our client-side p50 must be within max(10%, 200 µs) of the
// p50 of that interval.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { addon, type BpfObject, type PerfReader } from '../src/native.js';
import { bpfObjectPath } from '../src/paths.js';
import { elfDynamicFunctions, findLibssl, inspectLibssl, LIBSSL_PROBES, parseLdconfig } from '../src/kernel/libssl.js';
import { near, needsRoot, programsAfterExit, tempDir } from './helpers/probe.js';
import { freePort } from './helpers/servers.js';
import { onProcessExit } from './helpers/netns.js';
import {
  median,
  us,
  runAsync,
  spawnServer,
  waitListening,
  CurlRun,
  curlOnce,
  chunkingProxy,
  tlsNginx,
} from './helpers/tls.js';

import {
  AF_INET,
  HDR_FAMILY,
  HDR_KIND,
  HDR_ROLE,
  HDR_TGID,
  MEAS_AT_NS,
  MEAS_DETAIL,
  MEAS_LPORT,
  MEAS_METRIC,
  MEAS_NETNS,
  MEAS_RADDR,
  MEAS_RESULT,
  MEAS_RPORT,
  MEAS_VALUE,
  METRIC_TLS,
  METRIC_TLS_LIBSSL,
  PERF_HDR_SIZE,
  PERF_LOST_LOST_OFF,
  PERF_RECORD_LOST,
  PERF_RECORD_SAMPLE,
  PERF_SAMPLE_RAW_OFF,
  PERF_SIZE_OFF,
  PERF_TYPE_OFF,
  REC_MEASURE,
  ROLE_CLIENT,
  ROLE_SERVER,
  STAT__COUNT,
  STAT_NAMES,
} from '../src/records.js';

const CGROUP_ROOT = '/sys/fs/cgroup/unified';
const RUNS = 60;

interface Measure {
  role: number;
  family: number;
  tgid: number;
  valueNs: number;
  atNs: bigint;
  netns: number;
  lport: number;
  rport: number;
  metric: number;
  result: number;
  detail: number;
  /** remote address: IPv4 in the first 4 bytes */
  raddr: string;
}

/** v, which the caller knows is there */
function defined(v: number | undefined, what: string): number {
  assert.ok(v !== undefined, `${what} missing`);
  return v;
}

function addrText(b: Uint8Array, family: number): string {
  if (family === AF_INET) return [...b.subarray(0, 4)].join('.');
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((b[i] << 8) | b[i + 1]).toString(16));
  return words.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
}

/** The dev object loaded and attached: cgroup_skb on the cgroup v2 root, uprobes on libssl. */
class TlsDevProbe {
  readonly obj: BpfObject;
  private readonly reader: PerfReader;
  private readonly buf = new Uint8Array(4 << 20);
  lost = 0;

  constructor(libsslPath: string) {
    const a = addon();
    this.obj = new a.BpfObject(bpfObjectPath('tls_dev'));
    try {
      for (const p of this.obj.programs()) this.obj.setAutoload(p.name, p.name.startsWith('tls_'));
      this.obj.load();
      this.obj.attachCgroup('tls_skb_ingress', CGROUP_ROOT);
      this.obj.attachCgroup('tls_skb_egress', CGROUP_ROOT);
      for (const p of LIBSSL_PROBES) this.obj.attachUprobe(p.program, libsslPath, p.func, p.retprobe);
      const cpus = [...Array(a.possibleCpus()).keys()];
      this.reader = new a.PerfReader(this.obj.mapFd('events'), cpus, 64, 0);
    } catch (e) {
      this.obj.close();
      throw e;
    }
  }

  /** every record in the rings now */
  drain(): Measure[] {
    const out: Measure[] = [];
    const dv = new DataView(this.buf.buffer);
    for (;;) {
      const n = this.reader.drain(this.buf);
      if (n === 0) return out;
      for (let off = 0; off + PERF_HDR_SIZE <= n;) {
        const type = dv.getUint32(off + PERF_TYPE_OFF, true);
        const size = dv.getUint16(off + PERF_SIZE_OFF, true);
        if (size === 0) throw new Error('perf record of size 0');
        if (type === PERF_RECORD_LOST) this.lost += Number(dv.getBigUint64(off + PERF_LOST_LOST_OFF, true));
        const d = off + PERF_SAMPLE_RAW_OFF; // struct mp_measure_rec
        if (type === PERF_RECORD_SAMPLE && this.buf[d + HDR_KIND] === REC_MEASURE) {
          out.push({
            role: this.buf[d + HDR_ROLE],
            family: this.buf[d + HDR_FAMILY],
            tgid: dv.getUint32(d + HDR_TGID, true),
            valueNs: Number(dv.getBigUint64(d + MEAS_VALUE, true)),
            atNs: dv.getBigUint64(d + MEAS_AT_NS, true),
            netns: dv.getUint32(d + MEAS_NETNS, true),
            lport: dv.getUint16(d + MEAS_LPORT, true),
            rport: dv.getUint16(d + MEAS_RPORT, true),
            metric: this.buf[d + MEAS_METRIC],
            result: this.buf[d + MEAS_RESULT],
            detail: this.buf[d + MEAS_DETAIL],
            raddr: addrText(this.buf.subarray(d + MEAS_RADDR, d + MEAS_RADDR + 16), this.buf[d + HDR_FAMILY]),
          });
        }
        off += size;
      }
    }
  }

  /** the TLS counters of the stats map (MP_STAT_TLS_* in bpf/records.h), named without their "tls_" */
  stats(): Record<string, number> {
    const v = this.obj.readPercpuArray('stats', STAT__COUNT);
    return Object.fromEntries(
      STAT_NAMES.flatMap((name, i): [string, number][] =>
        name.startsWith('tls_') ? [[name.slice('tls_'.length), Number(v[i])]] : [],
      ),
    );
  }

  close(): void {
    this.reader.close();
    this.obj.close(); // destroys the links
  }
}

test('libssl: found through ldconfig, its handshake functions read from the ELF dynamic symbols', () => {
  const ld = `	libssl3.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl3.so
	libssl.so.3 (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl.so.3
	libssl.so.1.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libssl.so.1.1
	libssl.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl.so
	libssl.so.3 (libc6) => /lib/i386-linux-gnu/libssl.so.3`;
  // OpenSSL's sonames only (libssl3.so is NSS), this architecture, 3 before 1.1
  assert.deepEqual(parseLdconfig(ld), ['/lib/x86_64-linux-gnu/libssl.so.3', '/usr/lib/x86_64-linux-gnu/libssl.so.1.1']);
  assert.throws(() => elfDynamicFunctions(Buffer.from('#!/bin/sh\n'.padEnd(64, ' '))), /not an ELF/);
  const lib = findLibssl();
  assert.ok(lib, 'libssl.so.3 is installed here (libssl3, a dependency of curl and nginx)');
  assert.ok(lib.usable);
  assert.deepEqual(lib.missing, []);
  for (const p of LIBSSL_PROBES) assert.ok(lib.functions.includes(p.func), p.func);
  // a library without them (libc) is not taken
  const libc = inspectLibssl('/lib/x86_64-linux-gnu/libc.so.6');
  assert.equal(libc.usable, false);
  assert.equal(findLibssl(['/lib/x86_64-linux-gnu/libc.so.6', '/nonexistent/libssl.so.3']), undefined);
  assert.ok(elfDynamicFunctions(readFileSync('/lib/x86_64-linux-gnu/libc.so.6')).has('malloc'));
});

test('TLS handshake time: socket-level records and libssl uprobes against curl/nginx and openssl s_client/s_server', async (t) => {
  if (!needsRoot(t)) return;
  for (const bin of ['nginx', 'curl', 'openssl']) {
    assert.equal(spawnSync('sh', ['-c', `command -v ${bin}`]).status, 0, `${bin} is missing: run scripts/setup.sh`);
  }
  assert.ok(existsSync(CGROUP_ROOT), `no cgroup v2 at ${CGROUP_ROOT}`);
  const libssl = findLibssl();
  assert.ok(libssl, 'no OpenSSL libssl with SSL_do_handshake/SSL_connect/SSL_accept found');

  const dir = tempDir();
  const { cert, port, nginx } = await tlsNginx(t, dir, await freePort());

  const probe = new TlsDevProbe(libssl.path);
  let closed = false;
  const closeProbe = () => {
    if (!closed) {
      closed = true;
      probe.close();
    }
  };
  t.after(closeProbe);
  const unregister = onProcessExit(closeProbe);
  t.after(unregister);

  for (const version of [3, 2] as const) {
    await t.test(`curl -> nginx, TLS 1.${version}: ${RUNS} plain runs, ${RUNS} traced`, async () => {
      probe.drain(); // whatever came before
      const plain: CurlRun[] = [];
      const traced: CurlRun[] = [];
      for (let i = 0; i < RUNS; i++) plain.push(curlOnce(port, version, false));
      for (let i = 0; i < RUNS; i++) traced.push(curlOnce(port, version, true));
      await sleep(300); // nginx finishes its side (libssl returns after the client's Finished)
      const recs = probe.drain();
      const runs = [...plain, ...traced];
      const n = runs.length;
      const lports = new Set(runs.map((r) => r.lport));
      const pids = new Set(runs.map((r) => r.pid));

      // socket level: one record per run and side, on the run's own socket, version seen
      const cli = recs.filter((r) => r.metric === METRIC_TLS && r.rport === port && lports.has(r.lport));
      const srv = recs.filter((r) => r.metric === METRIC_TLS && r.lport === port && lports.has(r.rport));
      assert.equal(cli.filter((r) => r.role === ROLE_CLIENT).length, n, 'client-side socket records');
      assert.equal(srv.filter((r) => r.role === ROLE_SERVER).length, n, 'server-side socket records');
      assert.equal(cli.length + srv.length, 2 * n, 'no record with a wrong role');
      for (const r of [...cli, ...srv]) {
        assert.equal(r.detail, version, 'TLS version');
        assert.equal(r.family, 2);
        assert.equal(r.result, version, 'result: the TLS minor version too');
        assert.equal(r.tgid, 0);
        assert.equal(r.raddr, '127.0.0.1');
        assert.ok(r.netns > 0);
        assert.ok(r.valueNs > 0 && r.valueNs < 1e9, `value ${r.valueNs}`);
      }
      // one record per socket: loopback reuses a TIME_WAIT port at once (tcp_tw_reuse=2), so two runs can share a
      // local port; the runs are sequential, so the records of one port, in time order, are its runs in order
      const ofRun = new Map<CurlRun, Measure>();
      const queue = new Map<number, Measure[]>();
      for (const r of [...cli].sort((a, b) => (a.atNs < b.atNs ? -1 : 1)))
        queue.set(r.lport, [...(queue.get(r.lport) ?? []), r]);
      for (const run of runs) {
        const rec = queue.get(run.lport)?.shift();
        assert.ok(rec, `a client record for the run on port ${run.lport}`);
        ofRun.set(run, rec);
      }
      assert.equal(ofRun.size, n, 'one client record per curl socket');
      const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
      assert.deepEqual(
        sorted(srv.map((r) => r.rport)),
        sorted(runs.map((r) => r.lport)),
        'one server record per nginx socket',
      );

      // libssl: curl's SSL_connect (client, its PID), nginx's SSL_do_handshake (server, after SSL_set_accept_state)
      const sslCli = recs.filter((r) => r.metric === METRIC_TLS_LIBSSL && pids.has(r.tgid));
      assert.equal(sslCli.length, n, 'libssl records of curl');
      assert.ok(
        sslCli.every((r) => r.role === ROLE_CLIENT),
        'curl is the client',
      );
      assert.equal(new Set(sslCli.map((r) => r.tgid)).size, n, 'one per curl process');
      const sslSrv = recs.filter((r) => r.metric === METRIC_TLS_LIBSSL && r.tgid === nginx.pid);
      assert.equal(sslSrv.length, n, 'libssl records of nginx');
      assert.ok(
        sslSrv.every((r) => r.role === ROLE_SERVER),
        'nginx is the server',
      );

      const ourNs = (r: CurlRun): number => {
        const m = ofRun.get(r);
        assert.ok(m, 'a client record for every curl run');
        return m.valueNs;
      };
      const ours = (rs: CurlRun[]) => rs.map(ourNs);
      const oursPlain = median(ours(plain));
      const curlPlain = median(plain.map((r) => r.appMinusConnectNs));
      const oursTraced = median(ours(traced));
      const curlHello = median(traced.map((r) => defined(r.helloToEndNs, "curl's ClientHello->end")));
      const setup = median(traced.map((r) => defined(r.connectToHelloNs, "curl's connect->ClientHello")));
      // what curl's appconnect - connect holds besides the handshake itself
      const rest = plain.map((r) => r.appMinusConnectNs - ourNs(r));
      t.diagnostic(
        `TLS 1.${version} client p50: ours ${us(oursPlain)} vs curl appconnect-connect ${us(curlPlain)} ` +
          `(plain runs; the difference, p50 ${us(median(rest))}, min ${us(Math.min(...rest))}, is curl's own work before its ClientHello ` +
          `and after the handshake); traced runs: ours ${us(oursTraced)} vs curl's ClientHello->end ${us(curlHello)}, ` +
          `curl's connect->ClientHello ${us(setup)}; server p50 ${us(median(srv.map((r) => r.valueNs)))}; ` +
          `libssl p50: curl ${us(median(sslCli.map((r) => r.valueNs)))}, nginx ${us(median(sslSrv.map((r) => r.valueNs)))}`,
      );
      if (version === 3) {
        assert.ok(
          near(oursTraced, curlHello, 0.1, 200_000),
          `client p50 ${us(oursTraced)} vs curl's ClientHello->end p50 ${us(curlHello)}`,
        );
      } else {
        // TLS 1.2: the client's end is the server's Finished, which we stamp when it reaches the socket and curl
        // logs once it has read and processed the server's last flight (150-260 µs later here): never after curl's
        assert.ok(
          oursTraced <= curlHello + 50_000 && oursTraced >= curlHello * 0.8,
          `client p50 ${us(oursTraced)} vs curl's ClientHello->end p50 ${us(curlHello)} (ours stamps the Finished on arrival)`,
        );
      }
      // the handshake lies inside curl's connect -> appconnect, every time
      assert.ok(
        rest.every((x) => x > 0),
        `ours longer than curl's appconnect-connect: ${String(rest.filter((x) => x <= 0).map(us))}`,
      );
    });
  }

  await t.test('curl -> nginx over IPv6 (::1), TLS 1.3 and 1.2', async () => {
    probe.drain();
    for (const version of [3, 2] as const) {
      const runs: CurlRun[] = [];
      for (let i = 0; i < 10; i++) runs.push(curlOnce(port, version, false, '[::1]'));
      await sleep(200);
      const lports = new Set(runs.map((r) => r.lport));
      const recs = probe.drain().filter((r) => r.metric === METRIC_TLS);
      const cli = recs.filter((r) => r.role === ROLE_CLIENT && r.rport === port && lports.has(r.lport));
      const srv = recs.filter((r) => r.role === ROLE_SERVER && r.lport === port && lports.has(r.rport));
      assert.equal(cli.length, runs.length, `TLS 1.${version} client records`);
      assert.equal(srv.length, runs.length, `TLS 1.${version} server records`);
      for (const r of [...cli, ...srv]) {
        assert.equal(r.family, 10);
        assert.equal(r.raddr, '::1');
        assert.equal(r.detail, version);
        assert.equal(r.result, version);
      }
    }
  });

  await t.test('openssl s_client -> s_server, TLS 1.3 and 1.2, full and resumed: socket level', async () => {
    const sport = await freePort();
    const server = spawnServer('openssl', [
      's_server',
      '-accept',
      `127.0.0.1:${sport}`,
      '-cert',
      cert.cert,
      '-key',
      cert.key,
      '-www',
    ]);
    try {
      await waitListening(sport, server);
      await sleep(100);
      probe.drain();
      const per = 5;
      const clients: number[] = [];
      const sess = join(dir, 'session.pem');
      for (const version of [3, 2] as const) {
        for (let i = 0; i < per; i++) {
          const r = spawnSync('openssl', ['s_client', '-connect', `127.0.0.1:${sport}`, `-tls1_${version}`, '-brief'], {
            encoding: 'utf8',
            input: '',
            timeout: 20_000,
          });
          assert.match(
            r.stderr,
            new RegExp(`CONNECTION ESTABLISHED[\\s\\S]*Protocol version: TLSv1\\.${version}`),
            r.stderr,
          );
          clients.push(r.pid);
        }
        // and a resumed (abbreviated) handshake: the first run keeps its session
        // (stdin stays open a moment so that a TLS 1.3 ticket arrives), the second offers it
        for (const arg of ['-sess_out', '-sess_in']) {
          const r = spawnSync(
            'sh',
            ['-c', `sleep 0.2 | openssl s_client -connect 127.0.0.1:${sport} -tls1_${version} ${arg} ${sess}`],
            { encoding: 'utf8', timeout: 20_000 },
          );
          assert.match(
            r.stdout,
            new RegExp(`^${arg === '-sess_out' ? 'New' : 'Reused'}, TLSv1\\.${version}`, 'm'),
            r.stdout + r.stderr,
          );
        }
        const total = per + 2;
        await sleep(200);
        const all = probe.drain();
        const recs = all.filter((r) => r.metric === METRIC_TLS);
        // libssl: s_client's handshake runs inside SSL_read/SSL_write (no SSL_connect/SSL_do_handshake)
        const ssl = all.filter((r) => r.metric === METRIC_TLS_LIBSSL);
        t.diagnostic(
          `TLS 1.${version} libssl records: s_client ${ssl.filter((r) => clients.includes(r.tgid)).length}, ` +
            `s_server ${ssl.filter((r) => r.tgid === server.pid).length}`,
        );
        const byTime = (a: Measure, b: Measure) => (a.atNs < b.atNs ? -1 : a.atNs > b.atNs ? 1 : 0);
        const cli = recs.filter((r) => r.rport === sport && r.role === ROLE_CLIENT).sort(byTime);
        const srv = recs.filter((r) => r.lport === sport && r.role === ROLE_SERVER).sort(byTime);
        assert.equal(cli.length, total, `TLS 1.${version} s_client records`);
        assert.equal(srv.length, total, `TLS 1.${version} s_server records`);
        assert.ok(
          [...cli, ...srv].every((r) => r.detail === version && r.result === version),
          `TLS 1.${version} version`,
        );
        t.diagnostic(
          `s_client TLS 1.${version} p50 ${us(median(cli.map((r) => r.valueNs)))}, s_server ${us(median(srv.map((r) => r.valueNs)))}; ` +
            `resumed: client ${us(cli[cli.length - 1].valueNs)}, server ${us(srv[srv.length - 1].valueNs)}`,
        );
      }

      // through a proxy that cuts every direction it forwards into 7-byte segments
      const proxy = await chunkingProxy(sport, 7);
      try {
        const before = probe.stats();
        for (const version of [3, 2] as const) {
          // not spawnSync: the proxy runs on this event loop
          const r = await runAsync('openssl', [
            's_client',
            '-connect',
            `127.0.0.1:${proxy.port}`,
            `-tls1_${version}`,
            '-brief',
          ]);
          assert.match(
            r.stderr,
            new RegExp(`CONNECTION ESTABLISHED[\\s\\S]*Protocol version: TLSv1\\.${version}`),
            r.stderr,
          );
          await sleep(300);
          const recs = probe.drain().filter((x) => x.metric === METRIC_TLS);
          // s_client -> proxy, and proxy -> s_server: a client and a server record on each leg
          const legs = [
            recs.filter((x) => x.role === ROLE_CLIENT && x.rport === proxy.port),
            recs.filter((x) => x.role === ROLE_SERVER && x.lport === proxy.port),
            recs.filter((x) => x.role === ROLE_CLIENT && x.rport === sport),
            recs.filter((x) => x.role === ROLE_SERVER && x.lport === sport),
          ];
          assert.deepEqual(
            legs.map((l) => l.length),
            [1, 1, 1, 1],
            `TLS 1.${version} through the proxy`,
          );
          assert.ok(
            legs.every((l) => l[0].detail === version && l[0].result === version),
            `TLS 1.${version} version, from record behaviour`,
          );
          t.diagnostic(
            `TLS 1.${version} in 7-byte segments: ${legs.map((l) => us(l[0].valueNs)).join(', ')} (client, proxy, proxy, server)`,
          );
        }
        const after = probe.stats();
        const d = (k: string) => after[k] - before[k];
        assert.ok(d('split_hdr') > 0, 'split record headers reassembled');
        assert.equal(d('lost_sync'), 0, 'no walk lost');
        assert.equal(d('no_version'), 4, 'ServerHellos longer than a segment: version from record behaviour');
      } finally {
        await proxy.close();
      }

      // through a proxy that cuts the ServerHello inside its extensions (before supported_versions is whole):
      // the version is unknown there (not legacy_version's 1.2, which would leave a TLS 1.3 handshake unfinished)
      // and comes from record behaviour
      const cut = await serverHelloCutProxy(sport);
      try {
        const before = probe.stats();
        for (const version of [3, 2] as const) {
          const r = await runAsync('openssl', [
            's_client',
            '-connect',
            `127.0.0.1:${cut.port}`,
            `-tls1_${version}`,
            '-brief',
          ]);
          assert.match(
            r.stderr,
            new RegExp(`CONNECTION ESTABLISHED[\\s\\S]*Protocol version: TLSv1\\.${version}`),
            r.stderr,
          );
          await sleep(300);
          const recs = probe.drain().filter((x) => x.metric === METRIC_TLS);
          const legs = [
            recs.filter((x) => x.role === ROLE_CLIENT && x.rport === cut.port),
            recs.filter((x) => x.role === ROLE_SERVER && x.lport === cut.port),
            recs.filter((x) => x.role === ROLE_CLIENT && x.rport === sport),
            recs.filter((x) => x.role === ROLE_SERVER && x.lport === sport),
          ];
          assert.deepEqual(
            legs.map((l) => l.length),
            [1, 1, 1, 1],
            `TLS 1.${version} through the cutting proxy`,
          );
          assert.ok(
            legs.every((l) => l[0].detail === version && l[0].result === version),
            `TLS 1.${version} version`,
          );
        }
        assert.equal(cut.cuts(), 2, 'both ServerHellos cut inside their extensions');
        const after = probe.stats();
        const d = (k: string) => after[k] - before[k];
        assert.equal(d('lost_sync'), 0, 'no walk lost');
        // both ends of the cut leg (s_client's socket and the proxy's), twice; the other leg parsed
        assert.equal(d('no_version'), 4, 'ServerHellos cut in their extensions: version from record behaviour');
      } finally {
        await cut.close();
      }
    } finally {
      await server.stop();
    }
  });

  await t.test(
    'IPv4 client -> dual-stack TLS server: the server socket is AF_INET6, IPv4-mapped, as the socket says',
    async () => {
      const key = readFileSync(cert.key);
      const crt = readFileSync(cert.cert);
      const server = createTlsServer({ key, cert: crt }, (s) => {
        s.on('error', () => {});
        s.end();
      });
      await new Promise<void>((resolve) => server.listen(0, '::', resolve));
      const mport = (server.address() as { port: number }).port;
      try {
        probe.drain();
        for (const version of [3, 2] as const) {
          const r = await runAsync('openssl', [
            's_client',
            '-connect',
            `127.0.0.1:${mport}`,
            `-tls1_${version}`,
            '-brief',
          ]);
          assert.match(
            r.stderr,
            new RegExp(`CONNECTION ESTABLISHED[\\s\\S]*Protocol version: TLSv1\\.${version}`),
            r.stderr,
          );
        }
        await sleep(200);
        // the per-CPU rings come in any order: by time, 1.3 then 1.2
        const recs = probe
          .drain()
          .filter((r) => r.metric === METRIC_TLS)
          .sort((a, b) => (a.atNs < b.atNs ? -1 : a.atNs > b.atNs ? 1 : 0));
        const cli = recs.filter((r) => r.role === ROLE_CLIENT && r.rport === mport);
        const srv = recs.filter((r) => r.role === ROLE_SERVER && r.lport === mport);
        assert.deepEqual(
          cli.map((r) => [r.family, r.raddr, r.detail, r.result]),
          [
            [2, '127.0.0.1', 3, 3],
            [2, '127.0.0.1', 2, 2],
          ],
        );
        assert.deepEqual(
          srv.map((r) => [r.family, r.raddr, r.detail, r.result]),
          [
            [10, '::ffff:7f00:1', 3, 3],
            [10, '::ffff:7f00:1', 2, 2],
          ],
        );
        assert.deepEqual(
          srv.map((r) => r.rport).sort(),
          cli.map((r) => r.lport).sort(),
          'the server records name the client ports',
        );
      } finally {
        await new Promise<void>((resolve) =>
          server.close(() => {
            resolve();
          }),
        );
      }
    },
  );

  await t.test('counters, and nothing left attached', async () => {
    const s = probe.stats();
    t.diagnostic(`TLS counters ${JSON.stringify(s)}; perf lost ${probe.lost}`);
    assert.equal(s.lost_sync, 0, 'no record walk lost on loopback');
    assert.equal(s.no_version, 8, 'every ServerHello parsed but those cut by the proxies');
    assert.ok(s.hello >= 2 * (4 * RUNS + 20 + 14 + 4 + 4 + 2), 'every ClientHello seen, on both sides');
    assert.equal(probe.lost, 0);
    closeProbe();
    assert.deepEqual(await programsAfterExit('tls_'), [], 'programs gone once the object is closed');
  });
});

/**
 * A proxy to upstreamPort that sends the first ServerHello of each connection
 * in two segments, cut 3 bytes into its extensions (inside the first one's
 * header), and forwards everything else as it comes.
 */
async function serverHelloCutProxy(
  upstreamPort: number,
): Promise<{ port: number; cuts(): number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let cuts = 0;
  const server = createServer((down) => {
    const up = connect(upstreamPort, '127.0.0.1');
    for (const x of [down, up]) {
      x.setNoDelay(true);
      sockets.add(x);
      x.on('close', () => sockets.delete(x));
      x.on('error', () => {
        down.destroy();
        up.destroy();
      });
    }
    down.pipe(up);
    let head: Buffer | null = Buffer.alloc(0);
    let chain = Promise.resolve();
    up.on('data', (d: Buffer) => {
      if (head === null) {
        chain = chain.then(() => {
          if (!down.destroyed) down.write(d);
        });
        return;
      }
      head = Buffer.concat([head, d]);
      // record(5) type(1) len(3) legacy_version(2) random(32) session id length(1)
      if (head.length < 44) return;
      const b = head;
      head = null;
      let at = b.length;
      if (b[0] === 0x16 && b[5] === 2) {
        const ext = 44 + b[43] + 2 + 1 + 2; // session id, cipher suite, compression, extensions' length
        if (b.length > ext + 3) {
          at = ext + 3;
          cuts++;
        }
      }
      chain = chain.then(async () => {
        down.write(b.subarray(0, at));
        await sleep(20);
        if (at < b.length && !down.destroyed) down.write(b.subarray(at));
      });
    });
    up.on('end', () => {
      void chain.then(() => down.end());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : 0,
    cuts: () => cuts,
    close: () => {
      for (const x of sockets) x.destroy();
      return new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
    },
  };
}
