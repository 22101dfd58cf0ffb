// Real TLS peers for the tests: a self-signed certificate, nginx with TLS,
// curl with its own timings, and a proxy that cuts streams into small
// segments. Every process is ended by its PID.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { onProcessExit } from './netns.js';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

export const us = (ns: number) => `${(ns / 1000).toFixed(0)} µs`;

export function run(cmd: string, args: string[], input?: string) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input, timeout: 20_000 });
  if (r.error) throw r.error;
  return r;
}

/** Runs a command to completion without blocking the event loop; stdin is closed at once. */
export function runAsync(
  cmd: string,
  args: string[],
  timeoutMs = 20_000,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    p.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', reject);
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/** A self-signed P-256 certificate for 127.0.0.1, made with openssl. */
export function makeCert(dir: string): { cert: string; key: string } {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  const r = run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '1',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
  ]);
  assert.equal(r.status, 0, `openssl req failed: ${r.stderr}`);
  return { cert, key };
}

export interface Proc {
  proc: ChildProcess;
  pid: number;
  output(): string;
  stop(): Promise<void>;
}

/** Spawns a server, ends it by its PID (SIGTERM, then SIGKILL) on stop() or at exit. */
export function spawnServer(cmd: string, args: string[]): Proc {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = proc.pid;
  assert.ok(pid !== undefined, `${cmd}: spawn failed, no PID`);
  let out = '';
  proc.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  proc.stderr.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  const alive = () => proc.exitCode === null && proc.signalCode === null;
  const exited = new Promise<void>((r) =>
    proc.once('exit', () => {
      r();
    }),
  );
  const unregister = onProcessExit(() => {
    if (alive()) process.kill(pid, 'SIGKILL');
  });
  return {
    proc,
    pid,
    output: () => out,
    async stop() {
      if (alive()) {
        process.kill(pid, 'SIGTERM');
        const timer = setTimeout(() => {
          if (alive()) process.kill(pid, 'SIGKILL');
        }, 5000);
        await exited;
        clearTimeout(timer);
      }
      unregister();
    },
  };
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port. */
export async function waitListening(port: number, p: Proc): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (p.proc.exitCode !== null) throw new Error(`server exited: ${p.output()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => {
        resolve(false);
      });
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on ${port}: ${p.output()}`);
}

/** nginx as one process (no master/worker split: its PID is the one that handshakes), TLS on 127.0.0.1:port. */
export function startNginx(dir: string, port: number, cert: { cert: string; key: string }): Proc {
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `
master_process off;
daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  server {
    listen 127.0.0.1:${port} ssl;
    listen [::1]:${port} ssl;
    ssl_certificate ${cert.cert};
    ssl_certificate_key ${cert.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { return 200 "ok\\n"; }
  }
}
`,
  );
  return spawnServer('nginx', ['-c', conf, '-p', dir]);
}

export interface CurlRun {
  pid: number;
  lport: number;
  /** curl's time_appconnect - time_connect */
  appMinusConnectNs: number;
  /** traced runs: curl's own ClientHello (OUT) -> end of its handshake, from OpenSSL's message callback */
  helloToEndNs?: number;
  /** traced runs: "Connected to" -> ClientHello (OUT): SSL_CTX_new, CA store, SSL_new... */
  connectToHelloNs?: number;
}

export function traceTimeNs(line: string): number {
  const m = /^(\d\d):(\d\d):(\d\d)\.(\d{6}) /.exec(line);
  if (!m) throw new Error(`no --trace-time stamp: ${line}`);
  return ((Number(m[1]) * 60 + Number(m[2])) * 60 + Number(m[3])) * 1e9 + Number(m[4]) * 1e3;
}

/**
 * One curl handshake with its own timings (-w); traced: with -v --trace-time
 * too, for the times of its ClientHello and of the end of its handshake.
 */
export function curlOnce(port: number, version: 2 | 3, traced: boolean, host = '127.0.0.1'): CurlRun {
  const vargs = version === 3 ? ['--tlsv1.3'] : ['--tlsv1.2', '--tls-max', '1.2'];
  const r = run('curl', [
    '-sk',
    ...(traced ? ['-v', '--trace-time'] : []),
    '-o',
    '/dev/null',
    '-w',
    '%{time_connect} %{time_appconnect} %{local_port}',
    ...vargs,
    `https://${host}:${port}/`,
  ]);
  assert.equal(r.status, 0, `curl failed: ${r.stderr}`);
  const [connect, appconnect, lport] = r.stdout.trim().split(' ').map(Number);
  const out: CurlRun = { pid: r.pid, lport, appMinusConnectNs: Math.round((appconnect - connect) * 1e9) };
  if (!traced) return out;
  const lines = r.stderr.split('\n');
  const at = (re: RegExp) => {
    const l = lines.find((x) => re.test(x));
    if (!l) throw new Error(`curl trace lacks ${String(re)}: ${r.stderr}`);
    return traceTimeNs(l);
  };
  const connected = at(/\* Connected to /);
  const hello = at(/\(OUT\), TLS handshake, Client hello \(1\)/);
  // the client's end: TLS 1.3, it sends its Finished; 1.2 (full handshake), it receives the server's
  const end = at(version === 3 ? /\(OUT\), TLS handshake, Finished \(20\)/ : /\(IN\), TLS handshake, Finished \(20\)/);
  return { ...out, helloToEndNs: end - hello, connectToHelloNs: hello - connected };
}

/**
 * A TCP proxy on loopback that forwards each direction in `chunk`-byte
 * segments a millisecond apart: TLS record headers cut across segments,
 * and a ServerHello too long for one segment.
 */
export async function chunkingProxy(
  upstreamPort: number,
  chunk: number,
): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const pump = (from: Socket, to: Socket) => {
    let queue = Buffer.alloc(0);
    let busy = false;
    let ended = false;
    const run = async () => {
      busy = true;
      while (queue.length > 0 && !to.destroyed) {
        const c = queue.subarray(0, chunk);
        queue = queue.subarray(chunk);
        to.write(c);
        await sleep(1);
      }
      busy = false;
      if (ended) to.end();
    };
    from.on('data', (d: Buffer) => {
      queue = Buffer.concat([queue, d]);
      if (!busy) void run();
    });
    from.on('end', () => {
      ended = true;
      if (!busy) to.end();
    });
    from.on('error', () => to.destroy());
  };
  const server = createServer((down) => {
    const up = connect(upstreamPort, '127.0.0.1');
    for (const x of [down, up]) {
      x.setNoDelay(true);
      sockets.add(x);
      x.on('close', () => sockets.delete(x));
    }
    pump(down, up);
    pump(up, down);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : 0,
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

/** A self-signed certificate and nginx serving TLS with it on a free loopback port, stopped at the test's end. */
export async function tlsNginx(
  t: { after(fn: () => unknown): void },
  dir: string,
  port: number,
): Promise<{ cert: { cert: string; key: string }; port: number; nginx: Proc }> {
  const cert = makeCert(dir);
  const nginx = startNginx(dir, port, cert);
  t.after(() => nginx.stop());
  await waitListening(port, nginx);
  return { cert, port, nginx };
}
