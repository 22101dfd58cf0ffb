// CPU per request: what each probe (and the simplest bpftrace peer,
// bench/peer.bt) adds to a loopback HTTP load at *fixed* request rates below
// the machine's maximum, plus the saturation ratio of bench/overhead.ts, all
// in one run.
//
// Cost at fixed rates: test/tools/mpload's client paces requests
// (`--rate`, keep-alive connections) against an mpload server. The server,
// every client and the probe run in a cgroup v2 of this bench's own
// (`<cgroup2 mount>/meshprobe-cpu-cost-<pid>/{load,probe}`, removed at the
// end), so their CPU time is cpu.stat's usage_usec; the kernel's softirq
// threads (ksoftirqd/N, /proc/<pid>/stat) are added, since loopback's
// receive path may run there. Each round runs every mode once, without a
// probe and with each of them, in an order that rotates from round to round
// (bench/lib.ts alternateRounds with more than two arms), so the VM's
// drifting speed weighs on every mode alike; a probe's added CPU per request
// is the median over rounds of (with - without) of the same round.
//
// The added CPU is split into (a) the kernel programs: run_time_ns of the
// probe's programs (their fds' /proc/<pid>/fdinfo) per request, in a separate
// pass with kernel.bpf_stats_enabled (which costs time itself, so it is not
// on during the rounds); (b) the probe's user space: its cgroup's usage;
// (c) the rest: the added kernel work in the client and the server that is
// not the programs themselves (the difference).
//
// Saturation: wrk -t1 -c32 against nginx `return 200` as fast as it goes,
// the ratio of requests/s with each probe to the same round's without.
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT, fdinfos, freePort, startNginx, startProbe, withBpfStats, wrk, type ProbeName } from './lib.js';
import { onProcessExit } from '../test/helpers/netns.js';
import { buildTools, runClient, startServer } from '../test/helpers/workload.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
// 2-vCPU VM: mpload with 8 connections and no pacing tops out at 51-58 k req/s here, so
// 20 k and 50 k are not both below saturation; 10 k and 25 k are (BENCH_RATES to change)
const RATES = (process.env.BENCH_RATES ?? '10000,25000').split(',').map(Number);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const SATURATION_ROUNDS = Number(process.env.BENCH_SATURATION_ROUNDS ?? 5);
const SATURATION_SECONDS = Number(process.env.BENCH_SATURATION_SECONDS ?? 3);
const WRK_CONNECTIONS = 32;
/** a paced window that finishes later than this share of its rate fell behind: the rate is not below saturation */
const HELD = 0.97;

const PEER = 'bpftrace';
type Mode = ProbeName | typeof PEER;
const ALL_MODES: Mode[] = ['latency-probe', 'connection-tracker', 'packet-drop-probe', PEER];
// BENCH_MODES=latency-probe,bpftrace: only those
const MODES = (process.env.BENCH_MODES?.split(',') ?? ALL_MODES).map((m) => {
  const mode = ALL_MODES.find((x) => x === m);
  if (!mode) throw new Error(`BENCH_MODES: ${m} is none of ${ALL_MODES.join(', ')}`);
  return mode;
});
const PEER_SCRIPT = path.join(ROOT, 'bench', 'peer.bt');

for (const r of RATES) if (!(r > 0)) throw new Error(`BENCH_RATES: ${String(r)} is not a rate in requests/s`);

// ---------------------------------------------------------------- cgroup v2

function cgroup2Mount(): string {
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, dir, type] = line.split(' ');
    if (type === 'cgroup2') return dir;
  }
  throw new Error('no cgroup2 mount in /proc/self/mounts: the bench measures CPU with a cgroup v2 of its own');
}

const cgroup = path.join(cgroup2Mount(), `meshprobe-cpu-cost-${String(process.pid)}`);
const loadGroup = path.join(cgroup, 'load');
const probeGroup = path.join(cgroup, 'probe');

/** CPU time (ns) the processes of a cgroup used, the exited ones included. */
function cgroupNs(dir: string): number {
  const m = /^usage_usec (\d+)$/m.exec(readFileSync(path.join(dir, 'cpu.stat'), 'utf8'));
  if (!m) throw new Error(`${dir}/cpu.stat has no usage_usec`);
  return Number(m[1]) * 1000;
}

/** A command prefix that moves the process into dir's cgroup, then execs the rest. */
function entering(dir: string): string[] {
  return ['sh', '-c', 'echo $$ > "$0" && exec "$@"', path.join(dir, 'cgroup.procs')];
}

/** Removes the bench's cgroup, once the processes in it have exited. */
function removeCgroup(): void {
  for (const dir of [loadGroup, probeGroup, cgroup]) {
    try {
      rmdirSync(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
}

// ------------------------------------------------------- other CPU accounts

const TICK_NS = 1e9 / Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim());
if (!Number.isFinite(TICK_NS)) throw new Error('getconf CLK_TCK gave no clock tick');

/** utime + stime of a process (ns; the kernel counts them in clock ticks). */
function processNs(pid: number): number {
  const stat = readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from the 3rd on
  return (Number(fields[11]) + Number(fields[12])) * TICK_NS; // utime, stime: the 14th and 15th
}

const ksoftirqd = readdirSync('/proc')
  .filter((d) => /^\d+$/.test(d))
  .filter((d) => {
    try {
      return readFileSync(`/proc/${d}/comm`, 'utf8').startsWith('ksoftirqd/');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false; // exited meanwhile
      throw e;
    }
  })
  .map(Number);

/** run_time_ns and run_cnt summed over the BPF programs a process holds (each program once). */
function programStats(pid: number): { ns: number; runs: number } {
  const seen = new Set<string>();
  let ns = 0,
    runs = 0;
  for (const info of fdinfos(pid)) {
    const id = /^prog_id:\s*(\d+)$/m.exec(info)?.[1];
    const time = /^run_time_ns:\s*(\d+)$/m.exec(info)?.[1];
    const count = /^run_cnt:\s*(\d+)$/m.exec(info)?.[1];
    if (id === undefined || time === undefined || count === undefined || seen.has(id)) continue;
    seen.add(id);
    ns += Number(time);
    runs += Number(count);
  }
  return { ns, runs };
}

// ------------------------------------------------------------- the attached

interface Attached {
  pid: number;
  /** detaches; lost: records the probe says it lost (0 for the peer, which keeps no records) */
  stop(): Promise<{ lost: number }>;
}

/** The port in network byte order, as peer.bt compares it with skc_dport. */
function networkOrder(port: number): number {
  return ((port & 0xff) << 8) | (port >> 8);
}

async function startPeer(port: number, wrap: string[]): Promise<Attached> {
  const [file, ...args] = [...wrap, 'bpftrace', PEER_SCRIPT, String(networkOrder(port))];
  const proc = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = proc.pid;
  if (pid === undefined) throw new Error('bpftrace: spawn failed, no PID');
  const unregister = onProcessExit(() => {
    if (proc.exitCode === null && proc.signalCode === null) process.kill(pid, 'SIGKILL');
  });
  let out = '',
    err = '';
  proc.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<number | null>((resolve) => proc.on('close', resolve));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      process.kill(pid, 'SIGKILL');
      reject(new Error(`bpftrace did not attach within 30 s: ${err}`));
    }, 30_000);
    proc.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('Attaching')) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      const why = code === 127 ? 'not installed (scripts/setup.sh installs it)' : `exited ${String(code)}`;
      reject(new Error(`bpftrace ${why} before attaching: ${err}`));
    });
  });
  return {
    pid,
    async stop() {
      process.kill(pid, 'SIGINT');
      const code = await exited;
      unregister();
      // bpftrace prints the histogram on exit: none means it measured nothing
      if (code !== 0 || !out.includes('@us:')) throw new Error(`bpftrace exited ${String(code)}: ${err}${out}`);
      return { lost: 0 };
    },
  };
}

async function attach(mode: Mode, port: number): Promise<Attached> {
  const wrap = entering(probeGroup);
  if (mode === PEER) return startPeer(port, wrap);
  const probe = await startProbe(mode, [], { wrap });
  return {
    pid: probe.pid,
    async stop() {
      const rep = await probe.stop();
      return { lost: 'metrics' in rep ? rep.metrics.events.lost : 0 }; // packet-drop-probe keeps no records
    },
  };
}

// ------------------------------------------------------- paced load windows

interface Window {
  requests: number;
  held: boolean;
  /** CPU of the server, the client, the probe and ksoftirqd (ns) */
  total: number;
  /** of which the probe's (ns) */
  probe: number;
  /** of which ksoftirqd's (ns) */
  softirq: number;
  /** the probe's programs in the kernel (ns; only with bpf_stats on) */
  programs: number;
  runs: number;
}

const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
const median = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  return (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2;
};

/**
 * Runs every mode once per round, the order rotating from round to round
 * (as bench/sampling.ts does), so that each mode has a neighbouring
 * measurement without a probe in every round.
 */
async function rotatingRounds(rounds: number, run: (mode: Mode | 'without') => Promise<void>): Promise<void> {
  const modes: (Mode | 'without')[] = ['without', ...MODES];
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < modes.length; i++) await run(modes[(i + round) % modes.length]);
  }
}

mkdirSync(cgroup);
mkdirSync(loadGroup);
mkdirSync(probeGroup);
const tools = mkdtempSync(path.join(tmpdir(), 'meshprobe-cpu-cost-'));
// on an early exit (an error, Ctrl-C): our processes are killed by PID by their own exit hooks
const unregisterCleanUp = onProcessExit(() => {
  rmSync(tools, { recursive: true, force: true });
  try {
    removeCgroup();
  } catch (e) {
    console.error(`cpu-cost: ${cgroup} is left behind (remove it with rmdir): ${String(e)}`);
  }
});
const mpload = await buildTools();
// the client enters the load cgroup before it execs mpload (runClient runs `bin` with mpload's arguments)
const client = path.join(tools, 'mpload-in-cgroup');
writeFileSync(
  client,
  `#!/bin/sh\necho $$ > '${path.join(loadGroup, 'cgroup.procs')}' || exit 97\nexec '${mpload}' "$@"\n`,
);
chmodSync(client, 0o755);

const server = await startServer({ addr: '127.0.0.1', http: true });
try {
  writeFileSync(path.join(loadGroup, 'cgroup.procs'), String(server.pid)); // before its first connection thread

  const paced = async (rate: number, probePid?: number): Promise<Window> => {
    const requests = Math.round(rate * SECONDS);
    const usage = () => {
      const progs = probePid === undefined ? { ns: 0, runs: 0 } : programStats(probePid);
      return {
        load: cgroupNs(loadGroup),
        probe: cgroupNs(probeGroup),
        softirq: sum(ksoftirqd.map(processNs)),
        ...progs,
      };
    };
    const a = usage();
    const r = await runClient({
      addr: '127.0.0.1',
      port: server.port,
      requests,
      concurrency: CONCURRENCY,
      rate,
      http: true,
      bin: client,
    });
    const b = usage();
    return {
      requests: r.requests,
      held: r.rps >= HELD * rate,
      total: b.load - a.load + (b.probe - a.probe) + (b.softirq - a.softirq),
      probe: b.probe - a.probe,
      softirq: b.softirq - a.softirq,
      programs: b.ns - a.ns,
      runs: b.runs - a.runs,
    };
  };

  // warm-up: the server's threads, the page cache of the probes' files
  for (const rate of RATES) await paced(rate);

  // 1. CPU per request at fixed rates: windows[mode][rate index] = one Window per round
  const windows = new Map<Mode | 'without', Window[][]>(
    ['without' as const, ...MODES].map((m) => [m, RATES.map((): Window[] => [])]),
  );
  const lost = new Map<Mode, number>(MODES.map((m) => [m, 0]));
  const windowsOf = (mode: Mode | 'without'): Window[][] => {
    const w = windows.get(mode);
    if (!w) throw new Error(`no windows for ${mode}`);
    return w;
  };
  await rotatingRounds(ROUNDS, async (mode) => {
    const w = windowsOf(mode);
    if (mode === 'without') {
      for (const [i, rate] of RATES.entries()) w[i].push(await paced(rate));
      return;
    }
    const a = await attach(mode, server.port);
    await sleep(1000); // start-up settles (JIT, worker threads) before measuring
    for (const [i, rate] of RATES.entries()) w[i].push(await paced(rate));
    const { lost: l } = await a.stop();
    lost.set(mode, (lost.get(mode) ?? 0) + l);
  });

  // 2. the kernel programs' share, bpf_stats on: one pass per mode, not part of the rounds
  const programs = await withBpfStats(async () => {
    const out = new Map<Mode, Window[]>();
    for (const mode of MODES) {
      const a = await attach(mode, server.port);
      await sleep(1000);
      const w: Window[] = [];
      for (const rate of RATES) w.push(await paced(rate, a.pid));
      await a.stop();
      out.set(mode, w);
    }
    return out;
  });

  // 3. saturation, as bench/overhead.ts: wrk against nginx as fast as it goes
  const nginx = await startNginx(freePort());
  const url = `http://127.0.0.1:${String(nginx.port)}/`;
  const rps = new Map<Mode | 'without', number[]>(['without' as const, ...MODES].map((m) => [m, []]));
  try {
    wrk(url, 2, 1, WRK_CONNECTIONS); // warm-up
    await rotatingRounds(SATURATION_ROUNDS, async (mode) => {
      const list = rps.get(mode);
      if (!list) throw new Error(`no list for ${mode}`);
      if (mode === 'without') {
        list.push(wrk(url, SATURATION_SECONDS, 1, WRK_CONNECTIONS).rps);
        return;
      }
      const a = await attach(mode, nginx.port);
      await sleep(1000);
      list.push(wrk(url, SATURATION_SECONDS, 1, WRK_CONNECTIONS).rps);
      await a.stop();
    });
  } finally {
    await nginx.stop();
  }

  // ------------------------------------------------------------- the table
  const perRequest = (ns: number, w: Window) => ns / w.requests;
  const base = windowsOf('without');
  const rpsWithout = rps.get('without') ?? [];
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  const results = MODES.map((mode) => {
    const w = windowsOf(mode);
    const p = programs.get(mode);
    if (!p) throw new Error(`no bpf_stats pass for ${mode}`);
    const satWith = rps.get(mode) ?? [];
    return {
      attached: mode,
      rates: RATES.map((rate, i) => {
        const added = median(
          w[i].map((x, round) => perRequest(x.total, x) - perRequest(base[i][round].total, base[i][round])),
        );
        const user = median(w[i].map((x) => perRequest(x.probe, x)));
        const kernel = perRequest(p[i].programs, p[i]);
        return {
          rate,
          held: w[i].every((x) => x.held) && base[i].every((x) => x.held) && p[i].held,
          base_ns: Math.round(median(base[i].map((x) => perRequest(x.total, x)))),
          added_ns: Math.round(added),
          kernel_programs_ns: Math.round(kernel),
          program_runs_per_request: Math.round((p[i].runs / p[i].requests) * 10) / 10,
          probe_user_space_ns: Math.round(user),
          rest_ns: Math.round(added - kernel - user),
          added_by_round_ns: w[i].map((x, round) =>
            Math.round(perRequest(x.total, x) - perRequest(base[i][round].total, base[i][round])),
          ),
          softirq_thread_share: r3(sum(w[i].map((x) => x.softirq)) / sum(w[i].map((x) => x.total))),
        };
      }),
      lost: lost.get(mode) ?? 0,
      saturation_rps_with: Math.round(sum(satWith) / satWith.length),
      saturation_rps_without: Math.round(sum(rpsWithout) / rpsWithout.length),
      saturation_ratio: r3(sum(satWith) / sum(rpsWithout)),
      saturation_median_round_ratio: r3(median(satWith.map((x, i) => x / rpsWithout[i]))),
    };
  });
  for (const r of results) console.log(JSON.stringify(r));

  const k = (rate: number) => (rate % 1000 === 0 ? `${String(rate / 1000)}k` : String(rate));
  const n = (x: number) => x.toLocaleString('en');
  console.log(
    `\nCPU per request (ns): mpload --rate, ${String(CONCURRENCY)} keep-alive connections, HTTP on loopback, ` +
      `${String(ROUNDS)} rotating rounds of ${String(SECONDS)} s, medians; "without" is client + server + ksoftirqd ` +
      `with no probe; added = kernel programs (a bpf_stats pass, runs per request in brackets) + the probe's user ` +
      `space + the rest (the difference); the added figure's range over the rounds in brackets.\n` +
      `Saturation: wrk -t1 -c${String(WRK_CONNECTIONS)} against nginx, ${String(SATURATION_ROUNDS)} rotating rounds ` +
      `of ${String(SATURATION_SECONDS)} s, requests/s with / without: ratio of the sums (median of the rounds).\n`,
  );
  console.log(
    '| attached | rate | without | added (rounds) | kernel programs (runs) | probe user space | rest | saturation ratio (median) |',
  );
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of results) {
    for (const [i, x] of r.rates.entries()) {
      const range = `${n(Math.min(...x.added_by_round_ns))}..${n(Math.max(...x.added_by_round_ns))}`;
      console.log(
        `| ${i === 0 ? r.attached : ''} | ${k(x.rate)}/s${x.held ? '' : ' (not held)'} | ${n(x.base_ns)} | ` +
          `**${n(x.added_ns)}** (${range}) | ${n(x.kernel_programs_ns)} (${String(x.program_runs_per_request)}) | ` +
          `${n(x.probe_user_space_ns)} | ${n(x.rest_ns)} | ` +
          (i === 0 ? `${String(r.saturation_ratio)} (${String(r.saturation_median_round_ratio)})` : '') +
          ' |',
      );
    }
  }
} finally {
  await server.stop();
  unregisterCleanUp();
  removeCgroup();
  rmSync(tools, { recursive: true, force: true });
}
