// Other kernels to test the BPF programs on: Debian's cloud kernel images
// (bullseye: 5.10, bookworm: 6.1, trixie: 6.12), fetched with apt-get through a private apt
// state (nothing of the system's apt configuration or lists is changed; the
// mirror and keyring are those the system already uses), and booted under
// qemu (software emulation) by test/helpers/guest.ts. The package's modules
// (veth, sch_netem, ip_tables, ...) stay in build/kernels/<suite>/root; guestModules()
// picks some with their dependencies, decompressed, for a guest to insmod.
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { repoRoot } from './workload.js';

const CACHE = join(repoRoot, 'build', 'kernels');

/** The deb822 stanza of the system's Debian sources, with another suite. */
function privateSources(suite: string): string {
  const text = readFileSync('/etc/apt/sources.list.d/debian.sources', 'utf8');
  const stanza = text.split(/\n\s*\n/).find((s) => /^Suites:.*\bbookworm\b/m.test(s) && !/security/.test(s));
  if (!stanza) throw new Error('no Debian bookworm stanza in /etc/apt/sources.list.d/debian.sources');
  const uris = /^URIs:\s*(.+)$/m.exec(stanza)?.[1];
  if (!uris) throw new Error('no URIs in the Debian bookworm stanza of /etc/apt/sources.list.d/debian.sources');
  const signedBy = /^Signed-By:\s*(.+)$/m.exec(stanza)?.[1];
  return `Types: deb\nURIs: ${uris}\nSuites: ${suite}\nComponents: main\n${signedBy ? `Signed-By: ${signedBy}\n` : ''}`;
}

export interface KernelImage {
  suite: string;
  release: string;
  vmlinuz: string;
}

/** Debian's current cloud kernel of `suite`, downloaded once into build/kernels/<suite>. */
export type Suite = 'bookworm' | 'bullseye' | 'trixie';

export function debianKernel(suite: Suite): KernelImage {
  const dir = join(CACHE, suite);
  const found = existsSync(join(dir, 'root', 'boot'))
    ? readdirSync(join(dir, 'root', 'boot')).find((f) => f.startsWith('vmlinuz-'))
    : undefined;
  if (found) return { suite, release: found.slice('vmlinuz-'.length), vmlinuz: join(dir, 'root', 'boot', found) };

  const apt = join(dir, 'apt');
  mkdirSync(join(apt, 'sources'), { recursive: true });
  mkdirSync(join(apt, 'lists', 'partial'), { recursive: true });
  mkdirSync(join(apt, 'cache', 'archives', 'partial'), { recursive: true });
  writeFileSync(join(apt, 'sources', `${suite}.sources`), privateSources(suite));
  const opts = [
    '-o',
    `Dir::Etc::SourceList=/dev/null`,
    '-o',
    `Dir::Etc::SourceParts=${join(apt, 'sources')}`,
    '-o',
    `Dir::State::Lists=${join(apt, 'lists')}`,
    '-o',
    `Dir::Cache=${join(apt, 'cache')}`,
    '-o',
    'APT::Sandbox::User=root',
    '-q',
  ];
  execFileSync('apt-get', [...opts, 'update'], { stdio: 'pipe' });
  const deps = execFileSync('apt-cache', [...opts, 'depends', 'linux-image-cloud-amd64'], { encoding: 'utf8' });
  const pkg = /Depends:\s*(linux-image-[^\s]+-cloud-amd64)\b/.exec(deps)?.[1];
  if (!pkg) throw new Error(`cannot find the ${suite} cloud kernel package:\n${deps}`);
  execFileSync('apt-get', [...opts, 'download', pkg], { cwd: dir, stdio: 'pipe' });
  const deb = readdirSync(dir).find((f) => f.startsWith(pkg) && f.endsWith('.deb'));
  if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${dir}`);
  execFileSync('dpkg-deb', ['-x', join(dir, deb), join(dir, 'root')]);
  rmSync(join(dir, deb));
  rmSync(apt, { recursive: true, force: true });
  return debianKernel(suite);
}

/** Where the kernel package put its modules: lib/modules/<release> (bullseye, bookworm) or usr/lib/modules/<release> (trixie, merged /usr). */
export function modulesDir(kernel: KernelImage): string {
  const root = dirname(dirname(kernel.vmlinuz));
  for (const d of [join(root, 'lib', 'modules', kernel.release), join(root, 'usr', 'lib', 'modules', kernel.release)]) {
    if (existsSync(d)) return d;
  }
  throw new Error(`no lib/modules/${kernel.release} under ${root}`);
}

const MODULE_SUFFIX = /\.ko(\.xz|\.zst|\.gz)?$/;

/** Module name as the kernel spells it (depends= lists these): file name without .ko*, '-' as '_'. */
function moduleName(file: string): string {
  return basename(file).replace(MODULE_SUFFIX, '').replace(/-/g, '_');
}

interface ModuleIndex {
  byName: Map<string, string>;
  builtin: Set<string>;
}
const indexes = new Map<string, ModuleIndex>();

function moduleIndex(dir: string): ModuleIndex {
  let idx = indexes.get(dir);
  if (idx) return idx;
  const byName = new Map<string, string>();
  (function walk(d: string, rel: string) {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name), rel ? `${rel}/${e.name}` : e.name);
      else if (MODULE_SUFFIX.test(e.name)) byName.set(moduleName(e.name), rel ? `${rel}/${e.name}` : e.name);
    }
  })(join(dir, 'kernel'), 'kernel');
  const builtinFile = join(dir, 'modules.builtin');
  const builtin = new Set(
    existsSync(builtinFile) ? readFileSync(builtinFile, 'utf8').split('\n').filter(Boolean).map(moduleName) : [],
  );
  idx = { byName, builtin };
  indexes.set(dir, idx);
  return idx;
}

/**
 * The module file, decompressed (Debian compresses trixie's with xz; busybox insmod may not read
 * that), cached beside the kernel in build/kernels/<suite>/modules-plain/.
 */
function plainModule(kernel: KernelImage, rel: string): string {
  const src = join(modulesDir(kernel), rel);
  const out = join(CACHE, kernel.suite, 'modules-plain', kernel.release, rel.replace(MODULE_SUFFIX, '.ko'));
  if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) return out;
  mkdirSync(dirname(out), { recursive: true });
  const tmp = `${out}.tmp.${process.pid}`;
  if (rel.endsWith('.ko')) copyFileSync(src, tmp);
  else {
    const tool = rel.endsWith('.xz') ? 'xz' : rel.endsWith('.zst') ? 'zstd' : 'gzip';
    writeFileSync(tmp, execFileSync(tool, ['-dc', src], { maxBuffer: 256 << 20 }));
  }
  renameSync(tmp, out);
  return out;
}

/** depends= of a module's .modinfo (comma-separated module names, maybe empty). */
function moduleDepends(file: string): string[] {
  const buf = readFileSync(file);
  const at = buf.indexOf('\0depends=');
  if (at < 0) return [];
  const start = at + '\0depends='.length;
  const end = buf.indexOf(0, start);
  return buf
    .subarray(start, end < 0 ? undefined : end)
    .toString('latin1')
    .split(',')
    .map((s) => s.trim().replace(/-/g, '_'))
    .filter(Boolean);
}

export interface GuestModules {
  release: string;
  /** path in the guest (lib/modules/<release>/kernel/...ko, no leading /) -> decompressed file on the host */
  files: Map<string, string>;
  /** lib/modules/<release>/modules.dep for those modules, in depmod's format */
  modulesDep: string;
  /** asked for but built into this kernel: nothing to load */
  builtin: string[];
}

/**
 * `names` and every module they depend on (their .modinfo depends=, transitively), decompressed,
 * with a modules.dep for them: what a guest needs to `modload name` (see guest.ts). A name the
 * kernel has built in is listed in `builtin`; a name that is neither throws.
 */
export function guestModules(kernel: KernelImage, names: string[]): GuestModules {
  const dir = modulesDir(kernel);
  const idx = moduleIndex(dir);
  const deps = new Map<string, string[]>(); // rel -> rels it needs
  const builtin: string[] = [];
  const visit = (name: string): string | undefined => {
    const n = name.replace(/-/g, '_');
    const rel = idx.byName.get(n);
    if (!rel) {
      if (idx.builtin.has(n)) {
        if (!builtin.includes(n)) builtin.push(n);
        return undefined;
      }
      throw new Error(`${kernel.release} has no module ${name} (neither in ${dir}/kernel nor built in)`);
    }
    if (deps.has(rel)) return rel;
    deps.set(rel, []);
    const needs = moduleDepends(plainModule(kernel, rel))
      .map(visit)
      .filter((r): r is string => !!r);
    deps.set(rel, needs);
    return rel;
  };
  for (const n of names) visit(n);
  // modules.dep lists, after each module, all it needs transitively, the ones to load last first
  const closure = (rel: string, seen = new Set<string>()): string[] => {
    const out: string[] = [];
    for (const d of deps.get(rel) ?? []) {
      if (seen.has(d)) continue;
      seen.add(d);
      out.push(d, ...closure(d, seen));
    }
    return out;
  };
  const guestRel = (rel: string) => rel.replace(MODULE_SUFFIX, '.ko');
  const files = new Map<string, string>();
  const lines: string[] = [];
  for (const rel of deps.keys()) {
    files.set(`lib/modules/${kernel.release}/${guestRel(rel)}`, plainModule(kernel, rel));
    lines.push(
      `${guestRel(rel)}:${closure(rel)
        .map((d) => ` ${guestRel(d)}`)
        .join('')}`,
    );
  }
  return { release: kernel.release, files, modulesDep: lines.join('\n') + '\n', builtin };
}
