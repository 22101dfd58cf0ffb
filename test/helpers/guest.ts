// A guest that runs the real project, not a C loader: Debian's kernel
// (test/helpers/kernels.ts) booted under qemu with an initramfs holding
// busybox, /usr/bin/node and every library it and the addon link to, and
// the built project at its own absolute path (dist/, build/bpf, the Wasm
// module, the addon, the runtime node_modules, mpload). The base archive is
// cached in build/kernels/ and made again only when one of its files
// changed; each run appends a small archive with its script.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { KernelImage } from './kernels.js';
import { repoRoot } from './workload.js';

const CACHE = join(repoRoot, 'build', 'kernels');
const ADDON = join(repoRoot, 'native', 'build', 'Release', 'meshprobe_native.node');
const MPLOAD = join(repoRoot, 'test', 'tools', 'bin', 'mpload');

/** The project's files the guest needs, relative to the repository. */
const PROJECT = ['package.json', 'dist', 'build/bpf', 'build/meshprobe.wasm', 'native/build/Release/meshprobe_native.node',
  'node_modules/commander', 'node_modules/@influxdata', 'test/tools/bin/mpload', 'test/tools/mpload.c'];

const APPLETS = ['sh', 'mount', 'ip', 'cat', 'echo', 'sleep', 'kill', 'poweroff', 'touch', 'mkdir', 'ls', 'grep', 'insmod'];

/** Shared libraries a binary loads, with the dynamic loader (ldd). */
function libraries(binary: string): string[] {
  const out = execFileSync('ldd', [binary], { encoding: 'utf8' });
  return [...out.matchAll(/(?:=>\s*)?(\/\S+)\s+\(0x/g)].map((m) => m[1]);
}

function walk(p: string, into: string[]): void {
  const st = statSync(p);
  if (st.isDirectory()) for (const f of readdirSync(p)) walk(join(p, f), into);
  else into.push(`${p}:${st.size}:${st.mtimeMs}`);
}

/** build/kernels/guest-<hash>.cpio.gz, made when missing. */
export function guestBase(): string {
  const libs = [...new Set(['/usr/bin/node', ADDON, MPLOAD].flatMap(libraries))].sort();
  const inputs: string[] = [];
  for (const f of ['/bin/busybox', '/usr/bin/node', ...libs, ...PROJECT.map((p) => join(repoRoot, p))]) {
    if (!existsSync(f)) throw new Error(`the guest needs ${f}: run npm run build`);
    walk(f, inputs);
  }
  const hash = createHash('sha256').update(inputs.join('\n')).digest('hex').slice(0, 16);
  const archive = join(CACHE, `guest-${hash}.cpio.gz`);
  if (existsSync(archive)) return archive;

  mkdirSync(CACHE, { recursive: true });
  for (const f of readdirSync(CACHE)) if (/^guest-[0-9a-f]+\.cpio\.gz$/.test(f)) rmSync(join(CACHE, f));
  const root = join(CACHE, `guest-root-${process.pid}`);
  rmSync(root, { recursive: true, force: true });
  try {
    for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'run', 'etc', 'usr/bin']) mkdirSync(join(root, d), { recursive: true });
    copyFileSync('/bin/busybox', join(root, 'bin', 'busybox'));
    chmodSync(join(root, 'bin', 'busybox'), 0o755);
    for (const a of APPLETS) symlinkSync('busybox', join(root, 'bin', a));
    for (const f of ['/usr/bin/node', ...libs]) {
      mkdirSync(join(root, dirname(f)), { recursive: true });
      copyFileSync(f, join(root, f)); // follows links: the library under the name the loader asks for
      chmodSync(join(root, f), 0o755);
    }
    for (const p of PROJECT) cpSync(join(repoRoot, p), join(root, repoRoot, p), { recursive: true, preserveTimestamps: true });
    writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    writeFileSync(join(root, 'etc', 'hosts'), '127.0.0.1 localhost\n::1 localhost\n');
    writeFileSync(join(root, 'init'), `#!/bin/busybox sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t debugfs none /sys/kernel/debug
mount -t tracefs none /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 none /sys/fs/cgroup
ip link set lo up
# the initramfs does not keep every mtime: the workload binary must not look older than its source
touch ${join(repoRoot, 'test', 'tools', 'bin', 'mpload')}
echo "VM-KERNEL $(cat /proc/sys/kernel/osrelease)"
cd ${repoRoot}
sh /run.sh
echo VM-DONE
poweroff -f
`);
    chmodSync(join(root, 'init'), 0o755);
    const tmp = `${archive}.tmp.${process.pid}`;
    execFileSync('sh', ['-c', `cd "${root}" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "${tmp}"`]);
    execFileSync('mv', [tmp, archive]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  return archive;
}

/**
 * Boots `kernel` with the guest base and `files` (path in the guest ->
 * contents) plus /run.sh = `script`; returns what the console printed.
 */
export function runGuest(kernel: KernelImage, script: string, files: Record<string, string> = {}, timeoutMs = 900_000): string {
  const base = guestBase();
  const work = join(CACHE, `run-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(join(work, 'root'), { recursive: true });
  try {
    writeFileSync(join(work, 'root', 'run.sh'), script);
    for (const [p, text] of Object.entries(files)) {
      mkdirSync(join(work, 'root', dirname(p)), { recursive: true });
      writeFileSync(join(work, 'root', p), text);
    }
    const initrd = join(work, 'initrd.gz');
    copyFileSync(base, initrd);
    // the kernel reads concatenated archives; the next one must start 4-byte aligned
    const pad = (4 - (statSync(initrd).size % 4)) % 4;
    if (pad) appendFileSync(initrd, Buffer.alloc(pad));
    execFileSync('sh', ['-c', `cd "${join(work, 'root')}" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >> "${initrd}"`]);
    // Under multi-threaded TCG a kernel now and then oopses while it patches its own code at boot
    // (int3 in text_poke, seen with 6.12 about one boot in five), before /init runs: boot again then.
    let out = '';
    for (let attempt = 1; attempt <= 3; attempt++) {
      const r = spawnSync('qemu-system-x86_64', [
        '-nographic', '-no-reboot', '-m', '2048', '-smp', '2', '-kernel', kernel.vmlinuz, '-initrd', initrd,
        '-append', 'console=ttyS0 panic=-1 quiet',
      ], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 });
      if (r.error) throw r.error;
      out = r.stdout.replace(/\r/g, '');
      if (/^VM-KERNEL /m.test(out)) return out;
      process.stderr.write(`guest: ${kernel.release} died before /init (attempt ${attempt}): ${/Oops[^\n]*|Kernel panic[^\n]*/.exec(out)?.[0] ?? 'no console'}\n`);
    }
    return out;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
