// packet-drop-probe against real drops made inside network namespaces the
// test creates (a veth pair), with counts exact where the test knows how
// many packets it sent: UDP to a closed port (NO_SOCKET), an iptables DROP
// rule (NETFILTER_DROP, layer netfilter, with the service of the bound
// socket), a TC program returning TC_ACT_SHOT (layer tc), TCP SYNs to a
// closed port, a listen backlog overflow, and generic-mode XDP dropping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DropReport } from '../src/report/drops.js';
import { createVethPair, ip, ipBin, onProcessExit, type VethPair } from './helpers/netns.js';
import { needsRoot, reportDuring, startProbe } from './helpers/probe.js';
import { repoRoot } from './helpers/workload.js';
import { runAsync } from './helpers/tls.js';
import { freePort, type AfterHook } from './helpers/servers.js';
import { statSync } from 'node:fs';

const netnsInode = (name: string) => statSync(`/run/netns/${name}`).ino;

const DROP_ALL = path.join(repoRoot, 'build', 'bpf', 'drop_all.bpf.o');

/** Sends `n` UDP datagrams from nsA to addr:port, 1 ms apart. */
async function sendUdp(pair: VethPair, addr: string, port: number, n: number): Promise<void> {
  const script =
    `const d=require('dgram').createSocket('udp4');let i=0;const f=()=>{if(i++>=${n}){d.close();return}` +
    `d.send(Buffer.from('x'),${port},'${addr}',()=>setTimeout(f,1))};f()`;
  const r = await runAsync(ipBin(), ['netns', 'exec', pair.nsA, process.execPath, '-e', script], 60_000);
  assert.equal(r.status, 0, r.stderr);
}

/** Runs `n` TCP connects from nsA (each one SYN, not retried: the peer answers or drops once and the client gives up at 300 ms). */
async function tcpConnects(pair: VethPair, addr: string, port: number, n: number): Promise<void> {
  const script =
    `const net=require('net');let left=${n};for(let i=0;i<${n};i++){const s=net.connect({host:'${addr}',port:${port}});` +
    `const t=setTimeout(()=>s.destroy(),300);s.on('error',()=>{});s.on('close',()=>{clearTimeout(t);if(--left===0)process.exit(0)});}`;
  const r = await runAsync(ipBin(), ['netns', 'exec', pair.nsA, process.execPath, '-e', script], 60_000);
  assert.equal(r.status, 0, r.stderr);
}

/** A process in `ns` (ended by its PID at test end). */
function inNs(t: AfterHook, ns: string, argv: string[]): { pid: number } {
  const p = spawn(ipBin(), ['netns', 'exec', ns, ...argv], { stdio: 'ignore' });
  const pid = p.pid;
  assert.ok(pid !== undefined, `${argv[0]} in ${ns}: spawn failed, no PID`);
  const kill = () => {
    if (p.exitCode === null && p.signalCode === null) process.kill(pid, 'SIGKILL');
  };
  const unregister = onProcessExit(kill);
  t.after(() => {
    kill();
    unregister();
  });
  return { pid };
}

const dropsDuring = (t: AfterHook, args: string[], traffic: () => Promise<void>) =>
  reportDuring<DropReport>(t, 'packet-drop-probe', args, traffic);

function pairWithCleanup(t: AfterHook): VethPair {
  const pair = createVethPair();
  t.after(() => {
    pair.cleanup(); // the namespaces take their veth, tc filters, XDP programs and iptables rules with them
  });
  return pair;
}

test('UDP to a closed port: NO_SOCKET, layer udp, exact count, the flow and the function', async (t) => {
  if (!needsRoot(t)) return;
  const pair = pairWithCleanup(t);
  const port = 17001;
  const rep = await dropsDuring(t, ['--filter', `port=${port}`], () => sendUdp(pair, pair.addrB4, port, 200));
  const d = rep.drops;
  assert.equal(d.total, 200, JSON.stringify(d.by_reason));
  assert.deepEqual(d.by_reason, { NO_SOCKET: 200 });
  assert.deepEqual(d.by_layer, { udp: 200 });
  assert.equal(d.by_service[0].service, `${port}/udp`);
  assert.equal(d.by_service[0].drops, 200);
  assert.match(d.top_functions[0].function, /udp/);
  assert.equal(d.top_flows[0].local, `${pair.addrB4}:${port}`);
  assert.equal(d.top_flows[0].remote.split(':')[0], pair.addrA4);
});

test('an iptables DROP rule: NETFILTER_DROP, layer netfilter, the service of the socket bound there, per 1,000 packets', async (t) => {
  if (!needsRoot(t)) return;
  const pair = pairWithCleanup(t);
  const port = 17002;
  inNs(t, pair.nsB, [
    process.execPath,
    '-e',
    `require('dgram').createSocket('udp4').bind(${port}, '${pair.addrB4}'); setInterval(() => {}, 1000)`,
  ]);
  ip('netns', 'exec', pair.nsB, 'iptables', '-A', 'INPUT', '-p', 'udp', '--dport', String(port), '-j', 'DROP');
  await sleep(300);
  const rep = await dropsDuring(t, ['--filter', `port=${port}`], () => sendUdp(pair, pair.addrB4, port, 150));
  const d = rep.drops;
  assert.deepEqual(d.by_reason, { NETFILTER_DROP: 150 });
  assert.deepEqual(d.by_layer, { netfilter: 150 });
  const svc = d.by_service[0];
  assert.equal(svc.service, `node:${port}`);
  assert.equal(svc.drops, 150);
  assert.equal(svc.per_1000_packets, 1000, 'every packet of the service was dropped');
  assert.equal(svc.packets, 0);
  assert.match(d.top_functions[0].function, /nf_hook|nft|ipt/);
});

test('a TC program returning TC_ACT_SHOT: layer tc; TCP SYNs to a closed port: NO_SOCKET, layer tcp', async (t) => {
  if (!needsRoot(t)) return;
  const pair = pairWithCleanup(t);
  ip('-n', pair.nsB, 'link', 'set', pair.ifB, 'up');
  const tcPort = 17003;
  spawnOk('tc', ['-n', pair.nsB, 'qdisc', 'add', 'dev', pair.ifB, 'clsact']);
  spawnOk('tc', [
    '-n',
    pair.nsB,
    'filter',
    'add',
    'dev',
    pair.ifB,
    'ingress',
    'protocol',
    'ip',
    'prio',
    '1',
    'bpf',
    'da',
    'obj',
    DROP_ALL,
    'sec',
    'tc',
  ]);
  const shot = await dropsDuring(t, ['--filter', `port=${tcPort}`], () => sendUdp(pair, pair.addrB4, tcPort, 120));
  assert.deepEqual(shot.drops.by_reason, { TC_INGRESS: 120 });
  assert.deepEqual(shot.drops.by_layer, { tc: 120 });
  spawnOk('tc', ['-n', pair.nsB, 'qdisc', 'del', 'dev', pair.ifB, 'clsact']);

  const closed = 17004;
  const syn = await dropsDuring(t, ['--filter', `port=${closed}`], () => tcpConnects(pair, pair.addrB4, closed, 40));
  assert.equal(syn.drops.by_reason.NO_SOCKET, 40, JSON.stringify(syn.drops.by_reason));
  assert.equal(syn.drops.by_layer.tcp, 40);
});

test('a listen backlog overflow, and generic-mode XDP dropping', async (t) => {
  if (!needsRoot(t)) return;
  const pair = pairWithCleanup(t);
  const port = 17005;
  // a server that listens with a backlog of 1 and never accepts
  inNs(t, pair.nsB, [
    'python3',
    '-c',
    `import socket,time;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('${pair.addrB4}',${port}));s.listen(1);time.sleep(60)`,
  ]);
  await sleep(500);
  const over = await dropsDuring(t, ['--filter', `port=${port}`], () => tcpConnects(pair, pair.addrB4, port, 30));
  // the SYNs a full accept queue refuses are freed with consume_skb: kfree_skb does not see them, the kernel's counters do
  // (a final ACK that finds the queue full may show as TCP_LISTEN_OVERFLOW, depending on timing)
  const ns = over.drops.listen_queue_overflows.find((c) => c.netns === netnsInode(pair.nsB));
  t.diagnostic(
    `backlog overflow: kfree_skb reasons ${JSON.stringify(over.drops.by_reason)}; listen counters ${JSON.stringify(ns)}`,
  );
  assert.ok(ns && ns.drops > 0 && ns.overflows > 0, JSON.stringify(over.drops.listen_queue_overflows));

  // XDP drops ARP too: the neighbour must be known before the program goes in
  const mac = (JSON.parse(ip('-j', '-n', pair.nsB, 'link', 'show', 'dev', pair.ifB)) as { address: string }[])[0]
    .address;
  ip('-n', pair.nsA, 'neigh', 'replace', pair.addrB4, 'lladdr', mac, 'dev', pair.ifA, 'nud', 'permanent');
  const xdpPort = 17006;
  ip('-n', pair.nsB, 'link', 'set', 'dev', pair.ifB, 'xdpgeneric', 'obj', DROP_ALL, 'sec', 'xdp');
  const x = await dropsDuring(t, ['--filter', `port=${xdpPort}`], () => sendUdp(pair, pair.addrB4, xdpPort, 100));
  ip('-n', pair.nsB, 'link', 'set', 'dev', pair.ifB, 'xdpgeneric', 'off');
  t.diagnostic(`generic XDP: ${JSON.stringify(x.drops.by_reason)} ${JSON.stringify(x.drops.by_layer)}`);
  // this kernel frees generic-XDP drops with no reason (NOT_SPECIFIED): the function tells the layer
  assert.equal(x.drops.total, 100);
  assert.deepEqual(x.drops.by_layer, { xdp: 100 });
  assert.match(x.drops.top_functions[0].function, /xdp/);
});

/** Runs a command (tc) to completion; fails the test with its stderr. */
function spawnOk(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

test('--format prometheus: meshprobe_drops_total{reason,layer,service}', async (t) => {
  if (!needsRoot(t)) return;
  const pair = pairWithCleanup(t);
  const port = 17007;
  const mport = await freePort();
  const probe = startProbe<DropReport>('packet-drop-probe', [
    '--filter',
    `port=${port}`,
    '--format',
    'prometheus',
    '--port',
    String(mport),
  ]);
  t.after(() => probe.stop('SIGKILL'));
  await probe.ready;
  await sendUdp(pair, pair.addrB4, port, 50);
  await sleep(200);
  const text = await (await fetch(`http://127.0.0.1:${mport}/metrics`)).text();
  const exit = await probe.stop('SIGINT');
  assert.equal(exit.code, 0, exit.stderr);
  assert.match(
    text,
    new RegExp(`^meshprobe_drops_total\\{layer="udp",reason="NO_SOCKET",service="${port}/udp"\\} 50$`, 'm'),
    text,
  );
  assert.ok(exit.report, 'a report');
  assert.equal(exit.report.drops.total, 50);
});

test('--sample-rate 10: the total stays exact, the breakdown holds 1 in 10 drops, scaled by 10', async (t) => {
  if (!needsRoot(t)) return;
  const pair = pairWithCleanup(t);
  const port = 17008;
  const rep = await dropsDuring(t, ['--filter', `port=${port}`, '--sample-rate', '10'], () =>
    sendUdp(pair, pair.addrB4, port, 400),
  );
  const d = rep.drops;
  assert.equal(d.total, 400);
  // binomial(400, 0.1): mean 40, sd 6; 5 sd either side
  assert.ok(Math.abs(d.breakdown.counted - 40) <= 30, `counted ${d.breakdown.counted}`);
  // the breakdown is an estimate: the sampled drops times the rate (a fixed factor, so exported counters never go down)
  assert.equal(d.by_reason.NO_SOCKET, d.breakdown.counted * 10);
  assert.equal(d.breakdown.scale, 10);
});

test('a full receive buffer: SOCKET_RCVBUFF, layer socket, drops = sent - received (the reader tells)', async (t) => {
  if (!needsRoot(t)) return;
  const pair = pairWithCleanup(t);
  const port = 17009;
  // a reader with a tiny buffer that reads nothing for 3 s, then drains what the socket kept and says how much
  const reader =
    `import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,2048)\n` +
    `s.bind(('${pair.addrB4}',${port}))\nprint('ready',flush=True)\ntime.sleep(3)\ns.setblocking(False)\nn=0\n` +
    `while True:\n  try:\n    s.recv(64); n+=1\n  except BlockingIOError:\n    break\nprint(n)\n`;
  let received = -1;
  const rep = await dropsDuring(t, ['--filter', `port=${port}`], async () => {
    const p = spawn(ipBin(), ['netns', 'exec', pair.nsB, 'python3', '-c', reader], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const pid = p.pid;
    assert.ok(pid !== undefined, 'the reader: spawn failed, no PID');
    t.after(() => {
      if (p.exitCode === null) process.kill(pid, 'SIGKILL');
    });
    let out = '';
    p.stdout.on('data', (b: Buffer) => {
      out += b.toString();
    });
    for (let i = 0; !out.includes('ready'); i++) {
      if (i > 250 || p.exitCode !== null) throw new Error(`the reader did not start: ${out}`);
      await sleep(20);
    }
    await sendUdp(pair, pair.addrB4, port, 200);
    await new Promise((r) => p.on('close', r));
    received = Number(out.trim().split('\n').pop());
  });
  assert.ok(received > 0 && received < 200, `received ${received}`);
  assert.deepEqual(rep.drops.by_reason, { SOCKET_RCVBUFF: 200 - received });
  assert.deepEqual(rep.drops.by_layer, { socket: 200 - received });
  assert.equal(rep.drops.by_service[0].service, `python3:${port}`);
});
