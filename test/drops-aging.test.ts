// packet-drop-probe's drop keys age (src/pipeline/map-aging.ts): with a
// small --max-drop-keys and a short idle period (MESHPROBE_DROP_KEY_IDLE_MS),
// UDP datagrams to a closed port from 200 distinct source ports, in waves
// with pauses longer than the idle period, are all in the breakdown (the
// ground truth is the test's own sends): idle keys leave the kernel map and
// the map never fills. With a store too small for the peers, the oldest
// keys are folded into one per local side (remote "*"), still exact by
// reason and service. The same traffic without expiry overflows the map.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DropReport } from '../src/report/drops.js';
import { createVethPair, ipBin, type VethPair } from './helpers/netns.js';
import { needsRoot, startProbe } from './helpers/probe.js';
import { runAsync } from './helpers/tls.js';
import type { AfterHook } from './helpers/servers.js';

const PORTS = 200;
const PER_PORT = 2;
const FIRST_SOURCE_PORT = 41000;

function pairWithCleanup(t: AfterHook): VethPair {
  const pair = createVethPair();
  t.after(() => {
    pair.cleanup();
  });
  return pair;
}

/** From nsA, `PER_PORT` datagrams to addr:port from each source port in [from, from + n), 1 ms apart. */
async function sendFromPorts(pair: VethPair, addr: string, port: number, from: number, n: number): Promise<void> {
  const script =
    `const dgram=require('dgram');let i=0;const next=()=>{if(i>=${n})return;const s=dgram.createSocket('udp4');` +
    `s.bind(${from}+i++,()=>{let k=0;const f=()=>{if(k++>=${PER_PORT}){s.close(next);return}` +
    `s.send(Buffer.from('x'),${port},'${addr}',()=>setTimeout(f,1))};f()})};next()`;
  const r = await runAsync(ipBin(), ['netns', 'exec', pair.nsA, process.execPath, '-e', script], 60_000);
  assert.equal(r.status, 0, r.stderr);
}

/** The probe around `waves` waves of PORTS / waves source ports each, `pauseMs` after each; the report. */
async function dropsInWaves(
  t: AfterHook,
  opts: { port: number; maxKeys: number; idleMs: number; waves: number; pauseMs: number },
): Promise<DropReport> {
  const pair = pairWithCleanup(t);
  const probe = startProbe<DropReport>(
    'packet-drop-probe',
    ['--filter', `port=${String(opts.port)}`, '--max-drop-keys', String(opts.maxKeys)],
    { env: { MESHPROBE_DROP_KEY_IDLE_MS: String(opts.idleMs) } },
  );
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  const perWave = PORTS / opts.waves;
  for (let w = 0; w < opts.waves; w++) {
    await sendFromPorts(pair, pair.addrB4, opts.port, FIRST_SOURCE_PORT + w * perWave, perWave);
    await sleep(opts.pauseMs);
  }
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(exit.report, `no report: ${exit.stderr}`);
  return exit.report;
}

test('idle drop keys leave the kernel map: 200 peers through 64 keys, every drop in the breakdown', async (t) => {
  if (!needsRoot(t)) return;
  // 4 waves of 50 peers, 2.5 s apart: each wave's keys idle for 1 s expire before the next
  const rep = await dropsInWaves(t, { port: 17101, maxKeys: 64, idleMs: 1000, waves: 4, pauseMs: 2500 });
  const d = rep.drops;
  const sent = PORTS * PER_PORT;
  t.diagnostic(`total ${String(d.total)}, breakdown ${JSON.stringify(d.breakdown)}`);
  assert.equal(d.total, sent, JSON.stringify(d.breakdown));
  assert.deepEqual(d.by_reason, { NO_SOCKET: sent });
  assert.equal(d.breakdown.counted, sent);
  assert.equal(d.breakdown.unattributed, 0);
  assert.equal(d.kernel.drop_table_full, 0, 'the kernel map never filled');
  assert.equal(d.breakdown.table_full, 0);
  // the last wave may still be in the kernel map at stop
  assert.ok(d.breakdown.keys_expired >= 150, `keys_expired ${String(d.breakdown.keys_expired)}`);
  assert.ok(d.breakdown.keys_expired <= PORTS);
  assert.equal(d.breakdown.keys_coarsened, 0, '256 keys kept at most: room for all 200');
  assert.equal(d.by_service[0].service, '17101/udp');
  assert.equal(d.by_service[0].drops, sent);
  for (const f of d.top_flows) assert.equal(f.drops, PER_PORT, `flow ${f.remote}: one peer's drops`);
});

test('a store too small for the peers folds the oldest into one key per local side, still exact', async (t) => {
  if (!needsRoot(t)) return;
  // 16 kernel keys, 64 kept; 20 waves of 10 peers, 0.7 s apart with an idle period of 0.3 s
  const rep = await dropsInWaves(t, { port: 17102, maxKeys: 16, idleMs: 300, waves: 20, pauseMs: 700 });
  const d = rep.drops;
  const sent = PORTS * PER_PORT;
  t.diagnostic(`total ${String(d.total)}, breakdown ${JSON.stringify(d.breakdown)}`);
  assert.equal(d.total, sent, JSON.stringify(d.breakdown));
  assert.deepEqual(d.by_reason, { NO_SOCKET: sent });
  assert.equal(d.breakdown.counted, sent);
  assert.equal(d.kernel.drop_table_full, 0);
  assert.ok(d.breakdown.keys_expired >= 190, `keys_expired ${String(d.breakdown.keys_expired)}`);
  // at most 64 kept (one of them the coarse key): all but 63 of the expired keys folded
  assert.ok(
    d.breakdown.keys_coarsened >= d.breakdown.keys_expired - 63,
    `keys_coarsened ${String(d.breakdown.keys_coarsened)} of ${String(d.breakdown.keys_expired)} expired`,
  );
  assert.equal(d.by_service[0].drops, sent);
  const folded = d.top_flows.find((f) => f.remote === '*');
  assert.ok(folded, `no folded flow in ${JSON.stringify(d.top_flows.map((f) => f.remote))}`);
  assert.equal(folded.drops, d.breakdown.keys_coarsened * PER_PORT, 'the folded peers, all their drops');
  assert.match(folded.local, /:17102$/);
  assert.equal(folded.service, '17102/udp');
});

test('without expiry (idle 1 h) the same traffic fills the 64 keys: drops past them are unattributed', async (t) => {
  if (!needsRoot(t)) return;
  const rep = await dropsInWaves(t, { port: 17103, maxKeys: 64, idleMs: 3_600_000, waves: 4, pauseMs: 300 });
  const d = rep.drops;
  const sent = PORTS * PER_PORT;
  t.diagnostic(`total ${String(d.total)}, breakdown ${JSON.stringify(d.breakdown)}`);
  assert.equal(d.total, sent);
  assert.equal(d.breakdown.keys_expired, 0);
  assert.equal(d.breakdown.counted, 64 * PER_PORT, 'the first 64 peers');
  assert.equal(d.kernel.drop_table_full, sent - 64 * PER_PORT);
  assert.equal(d.breakdown.unattributed, sent - 64 * PER_PORT);
});
