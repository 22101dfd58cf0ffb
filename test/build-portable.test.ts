// The BPF build must not depend on the build host's kernel: the objects are
// compiled against the kernel types checked in under bpf/vmlinux/, and CO-RE
// fits them to each running kernel at load. Here the build runs in a mount
// namespace where /sys/kernel/btf is an empty directory (as on a host whose
// kernel has no BTF, or a container that hides it), into a directory of its
// own, and must give the same objects.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { needsRoot, tempDir } from './helpers/probe.js';
import { repoRoot } from './helpers/workload.js';

test('make -C bpf builds every object with /sys/kernel/btf hidden', (t) => {
  if (!needsRoot(t)) return; // a mount namespace needs CAP_SYS_ADMIN
  const dest = tempDir();
  const script =
    'mount -t tmpfs none /sys/kernel/btf && ! test -e /sys/kernel/btf/vmlinux && ' +
    `make -s -B -C "${join(repoRoot, 'bpf')}" DEST="${dest}"`;
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, `the build failed without the kernel's BTF:\n${r.stdout}\n${r.stderr}`);
  const built = readdirSync(dest)
    .filter((f) => f.endsWith('.bpf.o'))
    .sort();
  const shipped = readdirSync(join(repoRoot, 'build', 'bpf'))
    .filter((f) => f.endsWith('.bpf.o'))
    .sort();
  assert.deepEqual(built, shipped);
  for (const f of built) {
    // same compiler, same sources, same header: the same bytes
    assert.ok(
      readFileSync(join(dest, f)).equals(readFileSync(join(repoRoot, 'build', 'bpf', f))),
      `${f} differs from the one built normally`,
    );
  }
});

test('the Makefile reads no kernel BTF and names no bpftool dump', () => {
  const mk = readFileSync(join(repoRoot, 'bpf', 'Makefile'), 'utf8');
  assert.doesNotMatch(mk, /\/sys\/kernel\/btf/);
  assert.doesNotMatch(mk, /btf dump/);
  assert.ok(readFileSync(join(repoRoot, 'bpf', 'vmlinux', 'x86', 'vmlinux.h'), 'utf8').includes('struct sk_buff {'));
});
