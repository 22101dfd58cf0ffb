// Other kernels to test the BPF programs on: Debian's cloud kernel images
// (bullseye: 5.10, bookworm: 6.1, trixie: 6.12), fetched with apt-get through a private apt
// state (nothing of the system's apt configuration or lists is changed; the
// mirror and keyring are those the system already uses), and booted under
// qemu (software emulation) by test/helpers/guest.ts.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
export function debianKernel(suite: 'bookworm' | 'bullseye' | 'trixie'): KernelImage {
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
