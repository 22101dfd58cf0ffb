// haproxy as a sidecar proxy in a network namespace, for the mesh-overhead
// test: HTTP mode, one frontend -> one server, keep-alive on both sides, one
// thread, its log on stdout with its own timers (Ta, Tr, ... in ms), and an
// optional delay the test controls (a Lua action that sleeps in every
// request, as a slow sidecar would).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ipBin } from './netns.js';
import { spawnGroup } from './probe.js';

type AfterHook = { after(fn: () => unknown): void };

export function haproxyMissing(): string | undefined {
  const r = spawnSync('haproxy', ['-v'], { encoding: 'utf8' });
  return r.status === 0 ? undefined : 'haproxy is not installed (apt-get install haproxy; scripts/setup.sh does it)';
}

/** One request as haproxy logged it (ms, its own timers). */
export interface HaproxyLogLine {
  /** active time: first byte of the request to the last byte of the response */
  Ta: number;
  /** server response time: request sent (connection ready) to response headers received */
  Tr: number;
  status: number;
}

export interface Sidecar {
  pid: number;
  /** the log lines so far */
  lines(): HaproxyLogLine[];
  output(): string;
}

export async function startSidecar(
  t: AfterHook,
  opts: { netns: string; name: string; bind: string; server: string; delayMs?: number; uid?: number },
): Promise<Sidecar> {
  const dir = mkdtempSync(join(tmpdir(), `meshprobe-${opts.name}-`));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const lua = join(dir, 'delay.lua');
  writeFileSync(
    lua,
    `core.register_action("sidecar_delay", { "http-req" }, function(txn) core.msleep(${opts.delayMs ?? 0}) end)\n`,
  );
  const cfg = join(dir, 'haproxy.cfg');
  writeFileSync(
    cfg,
    [
      'global',
      '  log stdout format raw local0',
      '  nbthread 1',
      `  lua-load ${lua}`,
      // as Istio's istio-proxy user (1337), which its iptables capture leaves alone
      ...(opts.uid !== undefined ? [`  uid ${opts.uid}`, `  gid ${opts.uid}`] : []),
      'defaults',
      '  mode http',
      '  log global',
      '  log-format "mp %Ta %Tr %ST"',
      '  timeout connect 5s',
      '  timeout client 60s',
      '  timeout server 60s',
      `frontend ${opts.name}`,
      `  bind ${opts.bind}`,
      ...(opts.delayMs ? ['  http-request lua.sidecar_delay'] : []),
      '  default_backend upstream',
      'backend upstream',
      '  http-reuse always',
      `  server up ${opts.server}`,
      '',
    ].join('\n'),
  );
  // `ip netns exec` execs haproxy: the child's PID is haproxy's (-db: foreground, no daemon, no master)
  const child = spawnGroup(t, ipBin(), ['netns', 'exec', opts.netns, 'haproxy', '-db', '-f', cfg]);
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const port = opts.bind.slice(opts.bind.lastIndexOf(':') + 1);
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`haproxy ${opts.name} exited ${child.exitCode}: ${out}`);
    const ss = spawnSync(ipBin(), ['netns', 'exec', opts.netns, 'ss', '-Hltn', `sport = :${port}`], {
      encoding: 'utf8',
    });
    if (ss.stdout.trim()) break;
    if (i > 100) throw new Error(`haproxy ${opts.name} does not listen on ${opts.bind}: ${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(child.pid !== undefined); // spawnGroup checked it
  return {
    pid: child.pid,
    output: () => out,
    lines: () =>
      out
        .split('\n')
        .filter((l) => l.startsWith('mp '))
        .map((l) => {
          const [, ta, tr, st] = l.split(' ');
          return { Ta: Number(ta), Tr: Number(tr), status: Number(st) };
        }),
  };
}
