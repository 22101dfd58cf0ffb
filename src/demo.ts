/**
 * npm run demo: latency-probe on a built-in workload. A loopback server that
 * sleeps 0, 1, 5 or 20 ms per request (test/tools/mpload) and a client that
 * times every request itself run for about 10 s while latency-probe watches;
 * then the probe's figures are printed beside the client's own.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO_ROOT } from './paths.js';

const MPLOAD = path.join(REPO_ROOT, 'test', 'tools', 'bin', 'mpload');
const PROBE = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'latency-probe.js');
const OUTPUT = path.resolve(process.env.DEMO_OUTPUT ?? 'demo-latency-metrics.json');
const SECONDS = 10;

function collect(p: ChildProcess): Promise<{ code: number | null; out: string; err: string }> {
  let out = '';
  let err = '';
  p.stdout?.on('data', (b) => {
    out += b;
  });
  p.stderr?.on('data', (b) => {
    err += b;
  });
  return new Promise((resolve) => p.on('exit', (code) => resolve({ code, out, err })));
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.error('demo: latency-probe loads BPF programs: run it as root (sudo npm run demo)');
    return 3;
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'meshprobe-demo-'));
  const ready = path.join(dir, 'port');
  const server = spawn(MPLOAD, ['server', '--listen', '127.0.0.1', '--port', '0', '--ready-file', ready], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const serverDone = collect(server);
  try {
    let port = 0;
    for (let i = 0; i < 100 && !port; i++) {
      await sleep(50);
      try {
        port = Number(readFileSync(ready, 'utf8').trim());
      } catch {
        /* not listening yet */
      }
    }
    if (!port) throw new Error('the demo server did not start');
    console.log(
      `demo: server on 127.0.0.1:${port} sleeps 0/1/5/20 ms (30/30/28/12 %); latency-probe runs ${SECONDS} s`,
    );

    const probe = spawn(
      process.execPath,
      [PROBE, '--duration', `${SECONDS}`, '--output', OUTPUT, '--filter', `port=${port}`],
      { stdio: ['ignore', 'inherit', 'pipe'] },
    );
    let probeErr = '';
    probe.stderr!.on('data', (b) => {
      probeErr += b;
      process.stderr.write(b);
    });
    const probeDone = new Promise<number | null>((r) => probe.on('exit', r));
    while (!/measuring/.test(probeErr)) {
      if (probe.exitCode !== null) throw new Error('latency-probe did not start');
      await sleep(50);
    }
    // 8 s of load at 400 requests/s on 8 connections
    const client = spawn(
      MPLOAD,
      [
        'client',
        '--connect',
        '127.0.0.1',
        '--port',
        String(port),
        '--requests',
        '3200',
        '--concurrency',
        '8',
        '--rate',
        '400',
        '--sleeps',
        '0,1000,5000,20000',
        '--weights',
        '30,30,28,12',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const c = await collect(client);
    if (c.code !== 0) throw new Error(`demo client failed: ${c.err.trim()}`);
    const own = JSON.parse(c.out);
    const code = await probeDone;
    if (code !== 0) throw new Error(`latency-probe exited with ${code}`);
    const rep = JSON.parse(readFileSync(OUTPUT, 'utf8'));
    const m = rep.metrics;
    const row = (name: string, p: Record<string, number>) =>
      `  ${name.padEnd(28)} ${['p50', 'p90', 'p99'].map((k) => `${k} ${p[k].toFixed(3)} ms`).join('  ')}`;
    const ownMs = Object.fromEntries(Object.entries(own.latency_us).map(([k, v]) => [k, (v as number) / 1000]));
    console.log(
      `\ndemo: ${own.requests} requests sent; latency-probe counted ${m.client.total_requests} (client view), ${m.server.total_requests} (server view), lost ${m.events.lost}`,
    );
    console.log(row('client, as it timed itself', ownMs));
    console.log(row('client view (latency-probe)', m.client.percentiles));
    console.log(row('server view (latency-probe)', m.server.percentiles));
    console.log(row('network RTT (kernel srtt)', m.network.percentiles));
    console.log(`\ndemo: the JSON report is ${OUTPUT}`);
    return 0;
  } finally {
    if (server.exitCode === null) server.kill('SIGTERM');
    await serverDone;
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    console.error(`demo: ${(e as Error).message}`);
    process.exitCode = 1;
  },
);
