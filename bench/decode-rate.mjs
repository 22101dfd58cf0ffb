#!/usr/bin/env node
// Decode+histogram rate of build/meshprobe.wasm: synthetic perf pages of
// latency records (~2000 connections, ~20 services), decoded repeatedly from
// each worker's staging area for ~3 s, with 1 worker, then 2 workers sharing
// one WebAssembly.Memory. Needs `npx asc ... --target release` and `npx tsc -p .`.
//   node bench/decode-rate.mjs [--seconds 3] [--workers 2] [--staging 262144]
// Prints one JSON line, then a human line.
import { Worker, isMainThread, workerData, parentPort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { readFileSync } from 'node:fs';
import { setTimeout } from 'node:timers';

// CPU seconds used by the calling thread (Linux), to tell a slow decoder from
// a busy machine: fields 14/15 of /proc/thread-self/stat, in clock ticks.
function threadCpuSeconds() {
  try {
    const st = readFileSync('/proc/thread-self/stat', 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

const here = new URL('.', import.meta.url);
const W = await import(new URL('../dist/src/wasm.js', here).href);

if (!isMainThread) {
  // worker: attach, wait for the start signal, decode for `seconds`
  const { memory, index, len, seconds, signal } = workerData;
  const st = W.attachState(memory);
  const ptr = st.stagingPtr(index);
  const decode = st.exports.decode;
  const recs = workerData.recordsPerPass;
  const sig = new Int32Array(signal);
  decode(ptr, len); // warm-up pass (counted below via passes)
  let passes = 1;
  Atomics.add(sig, 1, 1);
  Atomics.wait(sig, 0, 0);
  const c0 = threadCpuSeconds();
  const t0 = performance.now();
  const tEnd = t0 + seconds * 1000;
  let t = t0;
  let timed = 0;
  while (t < tEnd) {
    for (let k = 0; k < 16; k++) {
      if (decode(ptr, len) !== len) throw new Error('short decode');
    }
    timed += 16;
    t = performance.now();
  }
  passes += timed;
  const cpu = threadCpuSeconds() - c0;
  parentPort.postMessage({ records: timed * recs, ms: t - t0, cpu, totalRecords: passes * recs });
} else {
  // the constants, and the builders of synthetic records
  const R = {
    ...(await import(new URL('../dist/src/records.js', here).href)),
    ...(await import(new URL('../dist/test/helpers/records.js', here).href)),
  };
  const args = process.argv.slice(2);
  const opt = (name, def) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? Number(args[i + 1]) : def;
  };
  const seconds = opt('seconds', 3);
  const poolSize = opt('workers', 2);
  const stagingBytes = opt('staging', 256 * 1024);
  // Share of a worker's records that belong to connections mostly seen by the
  // other workers. A socket's records come from the CPUs that run its
  // reads/writes, so each worker (= set of CPUs) mostly sees its own
  // connections: default 0.1; --cross 1 = every worker sees all connections.
  const cross = opt('cross', 0.1);

  // deterministic PRNG
  let seed = 0x12345678;
  const rnd = () => {
    seed ^= seed << 13;
    seed >>>= 0;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    seed >>>= 0;
    return seed / 4294967296;
  };
  // ~20 services: 10 server ports on this host, 10 remote client destinations
  // Each service has its own median latency (log-uniform 100 µs .. 30 ms);
  // a record is lognormal around it (sigma 0.5), 1% are 10x slower.
  const median = () => 100_000 * Math.exp(rnd() * Math.log(300));
  const services = [];
  for (let i = 0; i < 10; i++) services.push({ role: R.ROLE_SERVER, lport: 8000 + i, median: median() });
  for (let i = 0; i < 10; i++)
    services.push({ role: R.ROLE_CLIENT, raddr: `10.1.${i}.${10 + i}`, rport: 443 + i, median: median() });
  const conns = [];
  for (let i = 0; i < 2000; i++) {
    const s = services[Math.floor(rnd() * services.length)];
    conns.push({
      conn_id: BigInt(1_000_000 + i * 7919),
      role: s.role,
      tgid: 1000 + (i % 50),
      lport: s.role === R.ROLE_SERVER ? s.lport : 30000 + i,
      rport: s.role === R.ROLE_SERVER ? 40000 + i : s.rport,
      raddr: s.role === R.ROLE_SERVER ? `10.2.${i >> 8}.${i & 255}` : s.raddr,
      srtt: 50 + Math.floor(rnd() * 2000),
      median: s.median,
    });
  }
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  const latency = (c) => Math.max(1, Math.floor(c.median * Math.exp(0.5 * gauss()) * (rnd() < 0.01 ? 10 : 1)));
  const buildPage = (w) => {
    const parts = [];
    let n = 0,
      bytes = 0;
    const own = conns.filter((_, i) => i % poolSize === w);
    for (;;) {
      const c = rnd() < cross ? conns[Math.floor(rnd() * conns.length)] : own[Math.floor(rnd() * own.length)];
      const rec = R.perfSample(
        R.encodeLatency({
          conn_id: c.conn_id,
          role: c.role,
          tgid: c.tgid,
          latency_ns: latency(c),
          end_ns: BigInt(n) * 1000n,
          srtt_us: c.srtt,
          lport: c.lport,
          rport: c.rport,
          raddr: c.raddr,
          seq: n + 1,
          req_bytes: 200,
        }),
      );
      if (bytes + rec.length > stagingBytes) break;
      parts.push(rec);
      bytes += rec.length;
      n++;
    }
    return { bytes: R.concatBytes(parts), records: n };
  };

  const st = W.createState({ connCapacity: 4096, serviceCapacity: 64, workers: poolSize, stagingBytes });
  const pages = [];
  for (let i = 0; i < poolSize; i++) {
    const p = buildPage(i);
    W.stagingView(st, i).set(p.bytes);
    pages.push(p);
  }

  const run = async (nWorkers) => {
    const signal = new SharedArrayBuffer(8);
    const sig = new Int32Array(signal);
    const workers = [];
    const results = [];
    for (let i = 0; i < nWorkers; i++) {
      const w = new Worker(new URL(import.meta.url), {
        workerData: {
          memory: st.memory,
          index: i,
          len: pages[i].bytes.length,
          recordsPerPass: pages[i].records,
          seconds,
          signal,
        },
      });
      results.push(
        new Promise((res, rej) => {
          w.once('message', res);
          w.once('error', rej);
        }),
      );
      workers.push(w);
    }
    while (Atomics.load(sig, 1) < nWorkers) await new Promise((r) => setTimeout(r, 5));
    Atomics.store(sig, 0, 1);
    Atomics.notify(sig, 0);
    const rs = await Promise.all(results);
    await Promise.all(workers.map((w) => w.terminate()));
    const records = rs.reduce((a, r) => a + r.records, 0);
    const ms = Math.max(...rs.map((r) => r.ms));
    const cpu = rs.reduce((a, r) => a + r.cpu, 0);
    return {
      records,
      totalRecords: rs.reduce((a, r) => a + r.totalRecords, 0),
      ms,
      rate: records / (ms / 1000),
      // share of the wall time the workers were on a CPU (< 1: the machine was busy with something else)
      cpuShare: cpu / nWorkers / (ms / 1000),
      perCpuRate: records / cpu,
    };
  };

  const before = W.readCounters(st).latency_records;
  const one = await run(1);
  const two = await run(poolSize);
  const c = W.readCounters(st);
  const expected = before + one.totalRecords + two.totalRecords;
  if (c.latency_records !== expected) {
    console.error(`count mismatch: latency_records=${c.latency_records} expected=${expected}`);
    process.exitCode = 1;
  }
  const conns2 = W.readConnTable(st, { histograms: false }).length;
  const svcs = W.readSvcTable(st, { histograms: false }).length;
  const out = {
    bench: 'decode-rate',
    seconds,
    cross,
    staging_bytes: stagingBytes,
    records_per_page: pages[0].records,
    connections: conns2,
    services: svcs,
    w1_rec_per_s: Math.round(one.rate),
    [`w${poolSize}_rec_per_s`]: Math.round(two.rate),
    ratio: Number((two.rate / one.rate).toFixed(2)),
    w1_cpu_share: Number(one.cpuShare.toFixed(2)),
    [`w${poolSize}_cpu_share`]: Number(two.cpuShare.toFixed(2)),
    w1_rec_per_cpu_s: Math.round(one.perCpuRate),
    [`w${poolSize}_rec_per_cpu_s`]: Math.round(two.perCpuRate),
    conn_table_full: c.conn_table_full,
    svc_table_full: c.svc_table_full,
    counts_ok: c.latency_records === expected,
  };
  console.log(JSON.stringify(out));
  console.log(
    `decode: 1 worker ${(one.rate / 1e6).toFixed(1)} M rec/s, ${poolSize} workers ${(two.rate / 1e6).toFixed(1)} M rec/s (ratio ${(two.rate / one.rate).toFixed(2)})` +
      `; per worker-CPU-second ${(one.perCpuRate / 1e6).toFixed(1)} / ${(two.perCpuRate / 1e6).toFixed(1)} M` +
      `, on-CPU share ${one.cpuShare.toFixed(2)} / ${two.cpuShare.toFixed(2)}`,
  );
}
