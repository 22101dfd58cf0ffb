// packet-drop-probe under a flood of drops: a sender in one network
// namespace sends UDP datagrams as fast as it can to a closed port in
// another (each one dropped with NO_SOCKET), in alternating rounds without
// and with the probe, in one run. Prints datagrams/s (= drops/s) with and
// without (the ratio), the drops the probe counted against those sent,
// and the kernel cost per kfree_skb hit (kernel.bpf_stats_enabled), for the
// BTF-typed raw tracepoint the probe uses and for the classic tracepoint it
// falls back to (MESHPROBE_DISABLE_HOOKS=tp_btf), in alternating passes.
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { alternateRounds, startProbe, withBpfStats } from './lib.js';
import { createVethPair, ipBin } from '../test/helpers/netns.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 8);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const PORT = 17999;
const COST_PASSES = Number(process.env.BENCH_COST_PASSES ?? 3);

const pair = createVethPair();
// a C-speed sender is not needed: one node process sends a few hundred thousand datagrams a second here
const SENDER =
  `const d=require('dgram').createSocket('udp4');const b=Buffer.alloc(16);let n=0;const end=Date.now()+${SECONDS * 1000};` +
  `const f=()=>{for(let i=0;i<256;i++){d.send(b,${PORT},'${pair.addrB4}');n++}if(Date.now()<end)setImmediate(f);else setTimeout(()=>{console.log(n);d.close()},200)};f()`;

function flood(): Promise<number> {
  return new Promise((resolve, reject) => {
    const p = spawn(ipBin(), ['netns', 'exec', pair.nsA, process.execPath, '-e', SENDER], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (b: Buffer) => {
      out += b.toString();
    });
    p.on('close', (code) => {
      if (code === 0) resolve(Number(out.trim()) / SECONDS);
      else reject(new Error(`sender exited ${String(code)}`));
    });
  });
}

try {
  await flood(); // warm-up
  let sent = 0,
    counted = 0;
  const { ratio, median, without, withProbe } = await alternateRounds(ROUNDS, flood, async () => {
    const probe = await startProbe('packet-drop-probe', ['--filter', `port=${PORT}`]);
    await sleep(500);
    const rate = await flood();
    await sleep(200);
    const rep = await probe.stop();
    sent += rate * SECONDS;
    counted += rep.drops.breakdown.counted; // what the kernel map holds, not the total
    return rate;
  });
  // kernel cost per kfree_skb hit, each way of hooking it, alternating (bpf_stats adds ~20-40 ns to every run)
  const hookCost = async (disable: string) => {
    process.env.MESHPROBE_DISABLE_HOOKS = disable;
    try {
      return await withBpfStats(async () => {
        const probe = await startProbe('packet-drop-probe', ['--filter', `port=${PORT}`]);
        await flood();
        const rep = await probe.stop();
        return rep.pipeline.programs;
      });
    } finally {
      delete process.env.MESHPROBE_DISABLE_HOOKS;
    }
  };
  const perHook: Record<string, number[]> = { tp_btf: [], tracepoint: [] };
  let costs: Awaited<ReturnType<typeof hookCost>> = [];
  for (let i = 0; i < COST_PASSES; i++) {
    costs = await hookCost('');
    const btf = costs.find((c) => c.name === 'drops_kfree_skb_btf')?.ns_per_run;
    const tp = (await hookCost('tp_btf')).find((c) => c.name === 'drops_kfree_skb')?.ns_per_run;
    if (btf == null || tp == null) throw new Error('a kfree_skb program did not run in the cost pass');
    perHook.tp_btf.push(btf);
    perHook.tracepoint.push(tp);
  }
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];
  const avg = (a: number[]) => Math.round(a.reduce((x, y) => x + y, 0) / a.length);
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  const result = {
    bench: 'packet-drop-probe under a flood of drops (UDP to a closed port across a veth pair)',
    rounds: ROUNDS,
    drops_per_s_without: avg(without),
    drops_per_s_with: avg(withProbe),
    ratio: r3(ratio),
    median_round_ratio: r3(median),
    sent: Math.round(sent),
    counted,
    kernel_ns_per_run: Object.fromEntries(costs.map((c) => [c.name, c.ns_per_run])),
    kfree_skb_ns_per_run: { tp_btf: med(perHook.tp_btf), tracepoint: med(perHook.tracepoint), passes: perHook },
  };
  console.log(JSON.stringify(result));
  console.log(
    `drop flood: ${result.drops_per_s_with} drops/s with packet-drop-probe / ${result.drops_per_s_without} without = ${result.ratio} ` +
      `(median of rounds ${result.median_round_ratio}); counted ${counted} of ${result.sent} sent; kernel cost per run: ` +
      costs.map((c) => `${c.name} ${String(c.ns_per_run)} ns`).join(', '),
  );
  console.log(
    `kfree_skb per drop (median of ${String(COST_PASSES)} alternating passes): tp_btf ${String(result.kfree_skb_ns_per_run.tp_btf)} ns, ` +
      `tracepoint ${String(result.kfree_skb_ns_per_run.tracepoint)} ns`,
  );
} finally {
  pair.cleanup();
}
