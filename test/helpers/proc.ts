// The host's process table from /proc, for tests that must find and end
// what they started (by PID, never by name).
import { readdirSync, readFileSync } from 'node:fs';

export interface ProcEntry {
  pid: number;
  /** R, S, D, Z (exited, not yet reaped), X, ... */
  state: string;
  ppid: number;
  pgrp: number;
}

/** Every process now (one that ends while it is read is left out). */
export function processes(): ProcEntry[] {
  const out: ProcEntry[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // it ended meanwhile
    }
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // "pid (comm) state ppid pgrp ..."
    out.push({ pid: Number(name), state: rest[0], ppid: Number(rest[1]), pgrp: Number(rest[2]) });
  }
  return out;
}
