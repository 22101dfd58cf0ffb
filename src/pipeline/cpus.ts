/** Online CPUs, and how the per-CPU perf rings are shared out among workers. */
import { readFileSync } from 'node:fs';

export function parseCpuList(s: string): number[] {
  const out: number[] = [];
  for (const part of s.trim().split(',')) {
    if (!part) continue;
    const [a, b = a] = part.split('-').map((x) => Number.parseInt(x, 10));
    for (let c = a; c <= b; c++) out.push(c);
  }
  return out;
}

export function onlineCpus(): number[] {
  return parseCpuList(readFileSync('/sys/devices/system/cpu/online', 'utf8'));
}

/** Round-robin: worker i reads the rings of cpus i, i+n, i+2n, ... */
export function assignCpus(cpus: number[], workers: number): number[][] {
  const out: number[][] = Array.from({ length: Math.min(workers, cpus.length) }, () => []);
  cpus.forEach((c, i) => out[i % out.length].push(c));
  return out;
}
