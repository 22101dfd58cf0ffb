// Two network namespaces joined by a veth pair, for tests whose traffic must
// cross a real (virtual) link instead of loopback. Needs root (CAP_NET_ADMIN)
// and iproute2. Everything here is synchronous so that cleanup can run from a
// process 'exit' handler.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export interface VethPair {
  /** namespace names, unique per process (they include the pid) */
  nsA: string;
  nsB: string;
  /** interface names inside nsA / nsB */
  ifA: string;
  ifB: string;
  /** 10.200.X.1 / 10.200.X.2 (no prefix length) */
  addrA4: string;
  addrB4: string;
  /** fd00:200:X::1 / fd00:200:X::2 (no prefix length) */
  addrA6: string;
  addrB6: string;
  /** deletes both namespaces (and so the veth); safe to call more than once */
  cleanup(): void;
}

let ipPath: string | undefined;

/** Path of the `ip` binary (root's PATH normally has it; fall back to sbin dirs). */
export function ipBin(): string {
  if (ipPath) return ipPath;
  for (const p of ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip']) {
    if (existsSync(p)) return (ipPath = p);
  }
  return (ipPath = 'ip');
}

/** Runs `ip ARGS...` (no shell); throws with stderr on failure. */
export function ip(...args: string[]): string {
  const r = spawnSync(ipBin(), args, { encoding: 'utf8' });
  if (r.error) throw new Error(`ip ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) {
    throw new Error(`ip ${args.join(' ')} exited ${String(r.status)}: ${(r.stderr || '').trim()}`);
  }
  return r.stdout;
}

/**
 * Whether this process can create network namespaces. Returns a reason when
 * it cannot (not root, or iproute2 missing).
 */
export function netnsSupport(): { ok: true } | { ok: false; reason: string } {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    return { ok: false, reason: 'network namespaces need root (CAP_NET_ADMIN)' };
  }
  const r = spawnSync(ipBin(), ['-V'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    return { ok: false, reason: "iproute2 ('ip') is not installed" };
  }
  return { ok: true };
}

// Cleanups that must run however the process ends: normal exit, an uncaught
// error, or SIGINT/SIGTERM/SIGHUP (which skip 'exit' handlers). Shared with
// workload.ts, which kills the servers it started from here.
const exitCleanups = new Set<() => void>();
let hooksInstalled = false;

function runExitCleanups(): void {
  for (const fn of [...exitCleanups]) {
    exitCleanups.delete(fn);
    try {
      fn();
    } catch {
      /* best effort at exit */
    }
  }
}

/**
 * Runs fn (synchronously) when the process exits or dies of SIGINT/SIGTERM/
 * SIGHUP, unless the returned function is called first to unregister it.
 */
export function onProcessExit(fn: () => void): () => void {
  if (!hooksInstalled) {
    hooksInstalled = true;
    process.on('exit', runExitCleanups);
    // clean up, then let the signal do what it would have done had nobody
    // listened for it (unless some other code listens for it too)
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.once(sig, () => {
        runExitCleanups();
        if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
      });
    }
  }
  exitCleanups.add(fn);
  return () => {
    exitCleanups.delete(fn);
  };
}

let counter = 0;

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function nsExists(name: string): boolean {
  const r = spawnSync(ipBin(), ['netns', 'list'], { encoding: 'utf8' });
  if (r.status !== 0) return false;
  return r.stdout.split('\n').some((l) => l.split(' ')[0] === name);
}

/**
 * Makes namespaces nsA and nsB, a veth pair ifA (in nsA) <-> ifB (in nsB)
 * with 10.200.X.1/24, fd00:200:X::1/64 on ifA and .2 / ::2 on ifB (IPv6
 * without DAD, so usable at once), and lo up in both. The namespaces are
 * deleted by cleanup(), or at process exit if the test did not get there.
 */
export function createVethPair(): VethPair {
  const support = netnsSupport();
  if (!support.ok) throw new Error(`createVethPair: ${support.reason}`);
  const n = counter++;
  const tag = `${process.pid}-${n}`;
  const nsA = `mpA-${tag}`;
  const nsB = `mpB-${tag}`;
  const ifA = 'mpv0';
  const ifB = 'mpv1';
  // Each pair lives in its own namespaces, so subnets never clash; X varies
  // only to make captures from different pairs easy to tell apart.
  const x = ((process.pid + n) % 250) + 1;
  const addrA4 = `10.200.${x}.1`;
  const addrB4 = `10.200.${x}.2`;
  const addrA6 = `fd00:200:${x}::1`;
  const addrB6 = `fd00:200:${x}::2`;

  let done = false;
  const pair: VethPair = {
    nsA,
    nsB,
    ifA,
    ifB,
    addrA4,
    addrB4,
    addrA6,
    addrB6,
    cleanup(): void {
      if (done) return;
      done = true;
      unregister();
      const errors: string[] = [];
      for (const ns of [nsA, nsB]) {
        const r = spawnSync(ipBin(), ['netns', 'del', ns], { encoding: 'utf8' });
        if (r.status !== 0 && nsExists(ns)) errors.push(`${ns}: ${(r.stderr || '').trim()}`);
      }
      if (errors.length) throw new Error(`netns cleanup failed: ${errors.join('; ')}`);
    },
  };
  const unregister = onProcessExit(() => {
    pair.cleanup();
  });

  try {
    ip('netns', 'add', nsA);
    ip('netns', 'add', nsB);
    // created directly inside the namespaces: no name clash in the root netns
    ip('link', 'add', ifA, 'netns', nsA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB);
    for (const [ns, dev, a4, a6] of [
      [nsA, ifA, addrA4, addrA6],
      [nsB, ifB, addrB4, addrB6],
    ] as const) {
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'addr', 'add', `${a4}/24`, 'dev', dev);
      ip('-n', ns, '-6', 'addr', 'add', `${a6}/64`, 'dev', dev, 'nodad');
      ip('-n', ns, 'link', 'set', dev, 'up');
    }
    // wait (briefly) until both ends report carrier
    const deadline = Date.now() + 5000;
    for (;;) {
      const up = [
        [nsA, ifA],
        [nsB, ifB],
      ].every(([ns, dev]) => /LOWER_UP/.test(ip('-n', ns, 'link', 'show', 'dev', dev)));
      if (up) break;
      if (Date.now() > deadline) throw new Error('veth pair did not come up within 5 s');
      sleepSync(10);
    }
  } catch (e) {
    try {
      pair.cleanup();
    } catch {
      /* report the original error */
    }
    throw e;
  }
  return pair;
}
