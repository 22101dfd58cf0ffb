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
  p.stdout?.on('data', (b: Buffer) => {
    out += b.toString();
  });
  p.stderr?.on('data', (b: Buffer) => {
    err += b.toString();
  });
  return new Promise((resolve) => {
    p.on('exit', (code) => {
      resolve({ code, out, err });
    });
  });
}

// The JSON the demo reads (the client's summary, latency-probe's report), checked field by field.
const SHOWN = ['p50', 'p90', 'p99'] as const;
type Shown = Record<(typeof SHOWN)[number], number>;

/** o[key], where `where` names o in the error when o is not an object holding key. */
function field(o: unknown, key: string, where: string): unknown {
  if (typeof o !== 'object' || o === null || !(key in o)) throw new Error(`${where}: no "${key}"`);
  return (o as Record<string, unknown>)[key];
}

function num(o: unknown, key: string, where: string): number {
  const v = field(o, key, where);
  if (typeof v !== 'number') throw new Error(`${where}: "${key}" is not a number`);
  return v;
}

/** The shown percentiles of o, each divided by `per`. */
function shown(o: unknown, where: string, per = 1): Shown {
  return { p50: num(o, 'p50', where) / per, p90: num(o, 'p90', where) / per, p99: num(o, 'p99', where) / per };
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
    probe.stderr.on('data', (b: Buffer) => {
      probeErr += b.toString();
      process.stderr.write(b);
    });
    const probeDone = new Promise<number | null>((r) => {
      probe.on('exit', r);
    });
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
    const own: unknown = JSON.parse(c.out);
    const code = await probeDone;
    if (code !== 0) throw new Error(`latency-probe exited with ${String(code)}`);
    const sent = num(own, 'requests', 'demo client');
    const ownMs = shown(field(own, 'latency_us', 'demo client'), 'demo client: latency_us', 1000);
    const m = field(JSON.parse(readFileSync(OUTPUT, 'utf8')) as unknown, 'metrics', OUTPUT);
    const at = (path: string) => `${OUTPUT}: metrics${path}`;
    const view = (v: 'client' | 'server' | 'network') => {
      const x = field(m, v, at(''));
      return {
        total: num(x, 'total_requests', at(`.${v}`)),
        p: shown(field(x, 'percentiles', at(`.${v}`)), at(`.${v}.percentiles`)),
      };
    };
    const [clientView, serverView, networkView] = [view('client'), view('server'), view('network')];
    const lost = num(field(m, 'events', at('')), 'lost', at('.events'));
    const row = (name: string, p: Shown) =>
      `  ${name.padEnd(28)} ${SHOWN.map((k) => `${k} ${p[k].toFixed(3)} ms`).join('  ')}`;
    console.log(
      `\ndemo: ${sent} requests sent; latency-probe counted ${clientView.total} (client view), ${serverView.total} (server view), lost ${lost}`,
    );
    console.log(row('client, as it timed itself', ownMs));
    console.log(row('client view (latency-probe)', clientView.p));
    console.log(row('server view (latency-probe)', serverView.p));
    console.log(row('network RTT (kernel min RTT)', networkView.p));
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
  (e: unknown) => {
    console.error(`demo: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  },
);
