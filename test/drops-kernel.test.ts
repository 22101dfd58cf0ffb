// packet-drop-probe, kernel side (bpf/drops.bpf.c), loaded with the addon
// directly: real drops made inside a pair of network namespaces, read back
// with readPercpuHash and named through the kernel's BTF and /proc/kallsyms.
//   - UDP datagrams to a closed port in nsB: reason NO_SOCKET, exactly N;
//   - UDP datagrams to a port an iptables DROP rule in nsB covers: reason
//     NETFILTER_DROP, exactly N;
//   - the cgroup_skb egress program counts the sender's N datagrams on its
//     local port.
// Plus unit tests of src/kernel/btf-enum.ts and src/kernel/kallsyms.ts.
import { cgroup2Root } from '../src/filter/resolve.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { addon, type BpfObject } from '../src/native.js';
import { bpfObjectPath } from '../src/paths.js';
import { btfEnum } from '../src/kernel/btf-enum.js';
import { Kallsyms } from '../src/kernel/kallsyms.js';
import {
  DKEY_SIZE,
  DKEY_LOCATION,
  DKEY_REASON,
  DKEY_NETNS,
  DKEY_LPORT,
  DKEY_RPORT,
  DKEY_PROTOCOL,
  DKEY_FAMILY,
  DKEY_DIR,
  DKEY_LADDR,
  DKEY_RADDR,
  PKEY_SIZE,
  PKEY_NETNS,
  PKEY_LPORT,
  PKEY_PROTOCOL,
  DIR_INGRESS,
  AF_INET,
  STAT__COUNT,
  STAT_DROP_SEEN,
} from '../src/records.js';
import { needsRoot } from './helpers/probe.js';
import { createVethPair, ipBin } from './helpers/netns.js';

const CGROUP_ROOT = cgroup2Root() ?? '/sys/fs/cgroup';
const IPPROTO_UDP = 17;
const N = 40;

interface Drop {
  location: bigint;
  reason: number;
  netns: number;
  lport: number;
  rport: number;
  protocol: number;
  family: number;
  dir: number;
  laddr: string;
  raddr: string;
  packets: bigint;
  bytes: bigint;
}

function v4(b: Uint8Array): string {
  return [...b.subarray(0, 4)].join('.');
}

function decodeDrops(entries: [Uint8Array, BigUint64Array][]): Drop[] {
  return entries.map(([k, v]) => {
    assert.equal(k.length, DKEY_SIZE);
    const dv = new DataView(k.buffer, k.byteOffset, k.byteLength);
    return {
      location: dv.getBigUint64(DKEY_LOCATION, true),
      reason: dv.getUint32(DKEY_REASON, true),
      netns: dv.getUint32(DKEY_NETNS, true),
      lport: dv.getUint16(DKEY_LPORT, true),
      rport: dv.getUint16(DKEY_RPORT, true),
      protocol: k[DKEY_PROTOCOL],
      family: k[DKEY_FAMILY],
      dir: k[DKEY_DIR],
      laddr: v4(k.subarray(DKEY_LADDR, DKEY_LADDR + 16)),
      raddr: v4(k.subarray(DKEY_RADDR, DKEY_RADDR + 16)),
      packets: v[0],
      bytes: v[1],
    };
  });
}

/** Sends `n` UDP datagrams from inside `ns` to host:port, one after the other; returns the sender's local port. */
function sendUdp(ns: string, host: string, port: number, n: number): number {
  const script =
    `const s=require('dgram').createSocket('udp4');s.bind(0,()=>{let i=0;const go=()=>{if(i===${n}){console.log(s.address().port);s.close();return;}` +
    `s.send(Buffer.alloc(32,1),${port},'${host}',(e)=>{if(e)throw e;i++;go();});};go();});`;
  const r = spawnSync(ipBin(), ['netns', 'exec', ns, process.execPath, '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, `sender failed: ${r.stderr}`);
  return Number(r.stdout.trim());
}

function netnsInode(ns: string): number {
  return statSync(`/run/netns/${ns}`).ino;
}

test('btfEnum reads enum skb_drop_reason from the kernel BTF', () => {
  const reasons = btfEnum('skb_drop_reason');
  assert.equal(reasons.get(2), 'SKB_DROP_REASON_NOT_SPECIFIED');
  const names = new Set(reasons.values());
  for (const n of ['SKB_DROP_REASON_NO_SOCKET', 'SKB_DROP_REASON_NETFILTER_DROP', 'SKB_DROP_REASON_MAX'])
    assert.ok(names.has(n), n);
  // the tracepoint's own table agrees (its names lack the prefix)
  const fmt = spawnSync('cat', ['/sys/kernel/tracing/events/skb/kfree_skb/format'], { encoding: 'utf8' }).stdout;
  const m = /\{ (\d+), "NO_SOCKET" \}/.exec(fmt);
  if (m) assert.equal(reasons.get(Number(m[1])), 'SKB_DROP_REASON_NO_SOCKET');
  assert.throws(() => btfEnum('no_such_enum_meshprobe'), /no enum/);
  assert.equal(btfEnum('skb_drop_reason'), reasons, 'cached');
});

test('Kallsyms: a known symbol round-trips; offsets inside it', (t) => {
  if (!needsRoot(t)) return;
  const k = new Kallsyms();
  assert.equal(k.restricted, false, 'root reads real addresses');
  assert.ok(k.size > 1000);
  const a = k.address('udp_rcv');
  assert.ok(a, 'udp_rcv in /proc/kallsyms');
  assert.deepEqual(k.lookup(a), { name: 'udp_rcv', offset: 0 });
  assert.equal(k.lookup(a + 5n)?.name, 'udp_rcv');
  assert.equal(k.lookup(a + 5n)?.offset, 5);
  assert.equal(k.lookup(1n), undefined);
});

test('drops.bpf.o: NO_SOCKET and NETFILTER_DROP drops in a netns, exact counts, named reasons and locations', async (t) => {
  if (!needsRoot(t)) return;
  const reasons = btfEnum('skb_drop_reason');
  const syms = new Kallsyms();
  const pair = createVethPair();
  let obj: BpfObject | undefined;
  try {
    const nsB = netnsInode(pair.nsB);
    const nsA = netnsInode(pair.nsA);
    const closedPort = 40001;
    const fwPort = 40002;
    const ipt = spawnSync(
      ipBin(),
      ['netns', 'exec', pair.nsB, 'iptables', '-A', 'INPUT', '-p', 'udp', '--dport', String(fwPort), '-j', 'DROP'],
      { encoding: 'utf8' },
    );
    assert.equal(ipt.status, 0, `iptables: ${ipt.stderr}`);

    obj = new (addon().BpfObject)(bpfObjectPath('drops'));
    obj.setMapMaxEntries('drops', 4096);
    obj.load();
    obj.attach('drops_kfree_skb');
    obj.attachCgroup('drops_pkt_in', CGROUP_ROOT);
    obj.attachCgroup('drops_pkt_out', CGROUP_ROOT);

    // neighbour resolution first, so that no datagram waits on ARP
    sendUdp(pair.nsA, pair.addrB4, 40000, 1);
    await sleep(200);
    const senderClosed = sendUdp(pair.nsA, pair.addrB4, closedPort, N);
    const senderFw = sendUdp(pair.nsA, pair.addrB4, fwPort, N);
    await sleep(500);

    const drops = decodeDrops(obj.readPercpuHash('drops'));
    const inB = drops.filter((d) => d.netns === nsB);
    const sum = (ds: Drop[]): bigint => ds.reduce((s, d) => s + d.packets, 0n);

    const closed = inB.filter((d) => d.lport === closedPort);
    assert.equal(
      sum(closed),
      BigInt(N),
      `drops to the closed port: ${JSON.stringify(closed, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`,
    );
    for (const d of closed) {
      assert.equal(reasons.get(d.reason), 'SKB_DROP_REASON_NO_SOCKET');
      assert.equal(d.protocol, IPPROTO_UDP);
      assert.equal(d.family, AF_INET);
      assert.equal(d.dir, DIR_INGRESS);
      assert.equal(d.laddr, pair.addrB4);
      assert.equal(d.raddr, pair.addrA4);
      assert.equal(d.rport, senderClosed);
      assert.ok(d.bytes >= d.packets * 40n, 'bytes: UDP header and payload at least');
      const s = syms.lookup(d.location);
      assert.ok(s, `location ${d.location.toString(16)} symbolizes`);
      assert.match(s.name, /udp|ip/i, `NO_SOCKET drop at ${s.name}+${s.offset}`);
    }

    const fw = inB.filter((d) => d.lport === fwPort);
    assert.equal(sum(fw), BigInt(N), 'drops by the iptables rule');
    for (const d of fw) {
      assert.equal(reasons.get(d.reason), 'SKB_DROP_REASON_NETFILTER_DROP');
      assert.equal(d.protocol, IPPROTO_UDP);
      assert.equal(d.rport, senderFw);
      const s = syms.lookup(d.location);
      assert.ok(s, 'location symbolizes');
      assert.match(s.name, /nf_hook|ip|nft/i, `NETFILTER_DROP at ${s.name}+${s.offset}`);
    }

    // the sender's datagrams, counted on its local port by the egress program
    const pkts = obj.readPercpuHash('pkts').map(([k, v]) => {
      assert.equal(k.length, PKEY_SIZE);
      const dv = new DataView(k.buffer, k.byteOffset, k.byteLength);
      return {
        netns: dv.getUint32(PKEY_NETNS, true),
        lport: dv.getUint16(PKEY_LPORT, true),
        protocol: k[PKEY_PROTOCOL],
        packets: v[0],
        bytes: v[1],
      };
    });
    const sent = pkts.find((p) => p.netns === nsA && p.lport === senderClosed && p.protocol === IPPROTO_UDP);
    assert.ok(sent, 'sender socket counted in pkts');
    assert.equal(sent.packets, BigInt(N));
    assert.equal(sent.bytes, BigInt(N * (20 + 8 + 32)));

    const stats = obj.readPercpuArray('stats', STAT__COUNT);
    assert.ok(stats[STAT_DROP_SEEN] >= BigInt(2 * N));
  } finally {
    obj?.close();
    pair.cleanup();
  }
});
