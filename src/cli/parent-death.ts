/**
 * A probe must not outlive the command the user started. `npx latency-probe` runs
 * npm → sh → node: a signal to npm ends npm and sh, and node, re-parented, would go on with
 * its programs attached. So, unless the probe leads its own process group (a shell job, a
 * systemd service, `setsid`: there it is the command, and a shell's exit is SIGHUP's business),
 * it asks the kernel for SIGHUP when its parent exits (PR_SET_PDEATHSIG): the orderly stop, report
 * written (run-probe.ts hears SIGHUP apart from the user's SIGINT/SIGTERM, so it never counts as
 * a second or third one).
 */
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { addon } from '../native.js';

/** The parent when this module was loaded (the launcher's, if it ran first: closer to exec). */
const START_PARENT = process.ppid;

export type ParentDeath =
  { armed: false; why: string } | { armed: true; parent: number } | { armed: true; parent: number; gone: true };

/** The fields of /proc/<pid>/stat after the command name (which may hold spaces): state, ppid, pgrp, ... */
function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** Process group of this process, from /proc/self/stat (field 5). */
export function ownProcessGroup(stat = readFileSync('/proc/self/stat', 'utf8')): number {
  const fields = statFields(stat);
  const pgrp = Number(fields[2]);
  if (!Number.isInteger(pgrp)) throw new Error(`unreadable /proc/self/stat: ${stat.slice(0, 80)}`);
  return pgrp;
}

/**
 * Arms the parent-death signal. `gone: true` says the parent died before it could be armed:
 * the caller stops at once.
 */
export function endWithParent(): ParentDeath {
  if (ownProcessGroup() === process.pid) return { armed: false, why: 'leads its own process group' };
  if (process.ppid === 0) return { armed: false, why: 'its parent is outside this PID namespace' };
  const launched = (globalThis as Record<symbol, unknown>)[Symbol.for('meshprobe.launchParent')];
  const expected = typeof launched === 'number' ? launched : START_PARENT;
  const r = addon().setParentDeathSignal(constants.signals.SIGHUP, expected);
  return r.alive ? { armed: true, parent: r.parent } : { armed: true, parent: expected, gone: true };
}

/** The parent of process `pid` (0 when unreadable or gone). */
function parentOf(pid: number): number {
  try {
    return Number(statFields(readFileSync(`/proc/${String(pid)}/stat`, 'utf8'))[1]);
  } catch {
    return 0;
  }
}

/**
 * The parent-death signal covers the parent only. Under npx the probe's parent is npm's `sh -c`,
 * and a SIGKILL to npm (the command the user started) leaves that shell waiting for the probe,
 * re-parented. So the probe also watches its parent's parent, once a second, and calls `onGone`
 * when the parent has been re-parented (the command above it has ended) or has gone. Returns the
 * function that stops the watch; nothing when there is no such chain to watch (the probe leads
 * its own process group, or its parent is init or outside this PID namespace).
 */
export function watchParentChain(onGone: (why: string) => void, everyMs = 1000): (() => void) | undefined {
  if (ownProcessGroup() === process.pid) return undefined;
  const parent = process.ppid;
  const grandparent = parent > 1 ? parentOf(parent) : 0;
  if (grandparent === 0) return undefined;
  const timer = setInterval(() => {
    const now = parentOf(parent);
    if (process.ppid !== parent || now !== grandparent) {
      clearInterval(timer);
      onGone(
        now === 0
          ? `its parent (PID ${String(parent)}) has gone`
          : `the command above it (PID ${String(grandparent)}) has ended`,
      );
    }
  }, everyMs);
  timer.unref();
  return () => {
    clearInterval(timer);
  };
}
