// Other kernels to test the BPF programs on: Debian's cloud kernel images
// (bookworm: 6.1, bullseye: 5.10), fetched with apt-get through a private apt
// state (nothing of the system's apt configuration or lists is changed; the
// mirror and keyring are those the system already uses), and booted under
// qemu (software emulation) with a small initramfs made of busybox and the
// files a test needs.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, copyFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './workload.js';

const CACHE = join(repoRoot, 'build', 'kernels');

/** The deb822 stanza of the system's Debian sources, with another suite. */
function privateSources(suite: string): string {
  const text = readFileSync('/etc/apt/sources.list.d/debian.sources', 'utf8');
  const stanza = text.split(/\n\s*\n/).find((s) => /^Suites:.*\bbookworm\b/m.test(s) && !/security/.test(s));
  if (!stanza) throw new Error('no Debian bookworm stanza in /etc/apt/sources.list.d/debian.sources');
  const uris = /^URIs:\s*(.+)$/m.exec(stanza)![1];
  const signedBy = /^Signed-By:\s*(.+)$/m.exec(stanza)?.[1];
  return `Types: deb\nURIs: ${uris}\nSuites: ${suite}\nComponents: main\n${signedBy ? `Signed-By: ${signedBy}\n` : ''}`;
}

export interface KernelImage { suite: string; release: string; vmlinuz: string }

/** Debian's current cloud kernel of `suite`, downloaded once into build/kernels/<suite>. */
export function debianKernel(suite: 'bookworm' | 'bullseye'): KernelImage {
  const dir = join(CACHE, suite);
  const found = existsSync(join(dir, 'root', 'boot')) ? readdirSync(join(dir, 'root', 'boot')).find((f) => f.startsWith('vmlinuz-')) : undefined;
  if (found) return { suite, release: found.slice('vmlinuz-'.length), vmlinuz: join(dir, 'root', 'boot', found) };

  const apt = join(dir, 'apt');
  mkdirSync(join(apt, 'sources'), { recursive: true });
  mkdirSync(join(apt, 'lists', 'partial'), { recursive: true });
  mkdirSync(join(apt, 'cache', 'archives', 'partial'), { recursive: true });
  writeFileSync(join(apt, 'sources', `${suite}.sources`), privateSources(suite));
  const opts = [
    '-o', `Dir::Etc::SourceList=/dev/null`, '-o', `Dir::Etc::SourceParts=${join(apt, 'sources')}`,
    '-o', `Dir::State::Lists=${join(apt, 'lists')}`, '-o', `Dir::Cache=${join(apt, 'cache')}`,
    '-o', 'APT::Sandbox::User=root', '-q',
  ];
  execFileSync('apt-get', [...opts, 'update'], { stdio: 'pipe' });
  const deps = execFileSync('apt-cache', [...opts, 'depends', 'linux-image-cloud-amd64'], { encoding: 'utf8' });
  const pkg = /Depends:\s*(linux-image-[^\s]+-cloud-amd64)\b/.exec(deps)?.[1];
  if (!pkg) throw new Error(`cannot find the ${suite} cloud kernel package:\n${deps}`);
  execFileSync('apt-get', [...opts, 'download', pkg], { cwd: dir, stdio: 'pipe' });
  const deb = readdirSync(dir).find((f) => f.startsWith(pkg) && f.endsWith('.deb'))!;
  execFileSync('dpkg-deb', ['-x', join(dir, deb), join(dir, 'root')]);
  rmSync(join(dir, deb));
  rmSync(apt, { recursive: true, force: true });
  return debianKernel(suite);
}

/**
 * Boots `kernel` with an initramfs of busybox, `files` (copied to /) and an
 * /init running `script` (sh), and returns what the console printed.
 */
export function bootWith(kernel: KernelImage, files: string[], script: string, timeoutMs = 240_000): string {
  const work = join(CACHE, `vm-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  const root = join(work, 'root');
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync('/bin/busybox', join(root, 'bin', 'busybox'));
  chmodSync(join(root, 'bin', 'busybox'), 0o755);
  for (const a of ['sh', 'mount', 'ip', 'poweroff', 'cat', 'echo']) symlinkSync('busybox', join(root, 'bin', a));
  for (const f of files) copyFileSync(f, join(root, f.split('/').pop()!));
  writeFileSync(join(root, 'init'), `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
ip link set lo up
echo "VM-KERNEL $(cat /proc/sys/kernel/osrelease)"
${script}
echo VM-DONE
poweroff -f
`);
  chmodSync(join(root, 'init'), 0o755);
  for (const f of files) chmodSync(join(root, f.split('/').pop()!), 0o755);
  const initrd = join(work, 'initrd.gz');
  execFileSync('sh', ['-c', `cd "${root}" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "${initrd}"`]);
  try {
    const r = spawnSync('qemu-system-x86_64', [
      '-nographic', '-no-reboot', '-m', '1024', '-smp', '2', '-kernel', kernel.vmlinuz, '-initrd', initrd,
      '-append', 'console=ttyS0 panic=-1 quiet',
    ], { encoding: 'utf8', timeout: timeoutMs });
    if (r.error) throw r.error;
    return r.stdout;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
