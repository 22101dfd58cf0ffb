// The BPF programs on other kernels than this one: Debian's 6.1 (bookworm,
// no sock_send_length tracepoint: fexit and kprobes) and 5.10 (bullseye: no
// BPF atomics, no bpf_get_func_ret: kprobes and the .noatomics object),
// booted under qemu. test/tools/hookcheck loads build/bpf/latency*.bpf.o with
// each hook choice, runs 30 request/response exchanges on loopback inside
// the VM and counts the records. This is what the start-up probing in
// src/kernel/features.ts and src/pipeline/session.ts relies on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { bootWith, debianKernel } from './helpers/kernels.js';
import { needsRoot } from './helpers/probe.js';
import { repoRoot } from './helpers/workload.js';

const HOOKCHECK = join(repoRoot, 'test', 'tools', 'bin', 'hookcheck');
const OBJ = join(repoRoot, 'build', 'bpf', 'latency.bpf.o');
const OBJ_NOATOMICS = join(repoRoot, 'build', 'bpf', 'latency.noatomics.bpf.o');

interface Check { mode: string; kernel: string; ok: boolean; stage?: string; client?: number; server?: number; open?: number; close?: number; lost?: number }

function runChecks(suite: 'bookworm' | 'bullseye'): { release: string; results: Record<string, Check> } {
  const kernel = debianKernel(suite);
  const script = ['latency', 'latency.noatomics'].flatMap((o) =>
    ['raw_tp', 'fexit', 'kprobe'].map((m) => `echo "CHECK ${o} $(/hookcheck /${o}.bpf.o ${m} 30 2000 2>/dev/null)"`)).join('\n');
  const out = bootWith(kernel, [HOOKCHECK, OBJ, OBJ_NOATOMICS], script);
  const release = /VM-KERNEL (\S+)/.exec(out)?.[1];
  assert.ok(release && /VM-DONE/.test(out), `the VM did not run to the end:\n${out.slice(-2000)}`);
  const results: Record<string, Check> = {};
  for (const m of out.matchAll(/^CHECK (\S+) (\{.*\})\s*$/gm)) {
    const r = JSON.parse(m[2]) as Check;
    results[`${m[1]}/${r.mode}`] = r;
  }
  return { release, results };
}

function assertCounted(r: Check | undefined, what: string): void {
  assert.ok(r, `${what}: no result`);
  assert.equal(r.ok, true, `${what}: ${JSON.stringify(r)}`);
  assert.equal(r.client, 30);
  assert.equal(r.server, 30);
  assert.equal(r.open, 2);
  assert.equal(r.close, 2);
  assert.equal(r.lost, 0);
}

test('Debian 6.1: no socket tracepoints; fexit and kprobes count every exchange', (t) => {
  if (!needsRoot(t)) return;
  const { release, results } = runChecks('bookworm');
  assert.match(release, /^6\.1\./);
  assert.equal(results['latency/raw_tp'].ok, false);
  assert.match(results['latency/raw_tp'].stage!, /^attach/);
  assertCounted(results['latency/fexit'], '6.1 fexit');
  assertCounted(results['latency/kprobe'], '6.1 kprobe');
  assertCounted(results['latency.noatomics/kprobe'], '6.1 kprobe without atomics');
});

test('Debian 5.10: no BPF atomics and no bpf_get_func_ret; the .noatomics object with kprobes counts every exchange', (t) => {
  if (!needsRoot(t)) return;
  const { release, results } = runChecks('bullseye');
  assert.match(release, /^5\.10\./);
  for (const m of ['raw_tp', 'fexit', 'kprobe']) {
    assert.equal(results[`latency/${m}`].ok, false);
    assert.equal(results[`latency/${m}`].stage, 'load', 'the object with atomics is refused whole');
  }
  assert.equal(results['latency.noatomics/fexit'].stage, 'load', 'fexit exists, but bpf_get_func_ret does not');
  assertCounted(results['latency.noatomics/kprobe'], '5.10 kprobe');
});
