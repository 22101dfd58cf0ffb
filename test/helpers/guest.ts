// A guest that runs the real project, not a C loader: Debian's kernel
// (test/helpers/kernels.ts) booted under qemu with an initramfs holding
// busybox, /usr/bin/node and every library it, the addon, mpload and
// iptables-legacy link to, and the built project at its own absolute path
// (dist/, build/bpf, the Wasm module, the addon, the runtime node_modules,
// mpload). The base archive is cached in build/kernels/ and made again only
// when one of its files changed (their list, sizes and mtimes); each run
// appends a small archive with its script, its files and the kernel modules
// it asked for (decompressed, with a modules.dep: `modload name` in the guest
// insmods a module after what it depends on).
//
// Results come back over the serial console: the guest prints each one with
// emitBlock() as gzip+base64 lines between `=== BEGIN name ===` and
// `=== END name ===`, which parseBlocks() reads back on the host; kernel
// messages that land between the lines are skipped.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { guestModules, type KernelImage } from './kernels.js';
import { repoRoot } from './workload.js';

const CACHE = join(repoRoot, 'build', 'kernels');
const ADDON = join(repoRoot, 'native', 'build', 'Release', 'meshprobe_native.node');
const MPLOAD = join(repoRoot, 'test', 'tools', 'bin', 'mpload');
/** iptables-legacy (the guests have ip_tables, not nft userspace): the multi-call binary and its extensions */
const XTABLES = '/usr/sbin/xtables-legacy-multi';
const XTABLES_EXT = '/usr/lib/x86_64-linux-gnu/xtables';

/**
 * The project's files the guest needs, relative to the repository: package.json
 * (type: module), the compiled sources and tests, the BPF objects, the Wasm
 * module, the addon, and the runtime dependencies that are loaded at run time
 * (commander, the InfluxDB client, msgpackr; node-addon-api is headers for the build only).
 */
const PROJECT = [
  'package.json',
  'dist',
  'build/bpf',
  'build/meshprobe.wasm',
  'native/build/Release/meshprobe_native.node',
  'node_modules/commander',
  'node_modules/@influxdata',
  'node_modules/msgpackr',
  'test/tools/bin/mpload',
  'test/tools/mpload.c',
];

const APPLETS = [
  'sh',
  'ash',
  'mount',
  'umount',
  'ip',
  'cat',
  'echo',
  'printf',
  'sleep',
  'kill',
  'poweroff',
  'touch',
  'mkdir',
  'ls',
  'grep',
  'sed',
  'awk',
  'cut',
  'head',
  'tail',
  'tr',
  'wc',
  'base64',
  'gzip',
  'insmod',
  'rmmod',
  'lsmod',
  'modprobe',
  'dmesg',
  'ps',
  'rm',
  'cp',
  'mv',
  'ln',
  'chmod',
  'uname',
  'true',
  'false',
  'test',
  '[',
  'timeout',
  'unshare',
  'nsenter',
  'sysctl',
  'env',
  'id',
  'hostname',
  'tc',
  'date',
  'sync',
  'stat',
  'find',
  'xargs',
  'seq',
];

/** Markers on the console: /init prints them, runGuest() looks for them. */
export const INIT_MARKER = '=== GUEST INIT';
export const DONE_MARKER = '=== GUEST DONE';

/** Shared libraries a binary loads, with the dynamic loader (ldd). */
function libraries(binary: string): string[] {
  const out = execFileSync('ldd', [binary], { encoding: 'utf8' });
  return [...out.matchAll(/(?:=>\s*)?(\/\S+)\s+\(0x/g)].map((m) => m[1]);
}

function walk(p: string, into: string[]): void {
  const st = statSync(p);
  if (st.isDirectory()) for (const f of readdirSync(p).sort()) walk(join(p, f), into);
  else into.push(`${p}:${st.size}:${st.mtimeMs}`);
}

/** Inserts a module and, first, what modules.dep says it needs (busybox sh; insmod of a loaded one is not an error). */
const MODLOAD = `#!/bin/busybox sh
# modload NAME...: insmod NAME after its dependencies, from /lib/modules/$(uname -r)/modules.dep
dir=/lib/modules/$(uname -r)
rc=0
for name in "$@"; do
  n=$(echo "$name" | tr - _)
  line=$(grep -E "(^|/)($n|$(echo "$n" | tr _ -))\\.ko:" "$dir/modules.dep" | head -n 1)
  if [ -z "$line" ]; then
    if grep -qE "/($n|$(echo "$n" | tr _ -))\\.ko$" "$dir/modules.builtin" 2>/dev/null; then continue; fi
    echo "modload: no module $name in $dir/modules.dep" >&2; rc=1; continue
  fi
  mod=\${line%%:*}
  deps=\${line#*:}
  order=""
  for d in $deps; do order="$d $order"; done   # modules.dep lists the last to load first
  for f in $order $mod; do
    base=$(basename "$f" .ko | tr - _)
    if grep -q "^$base " /proc/modules; then continue; fi
    out=$(insmod "$dir/$f" 2>&1) || { echo "modload: insmod $f: $out" >&2; rc=1; }
  done
done
exit $rc
`;

function initScript(): string {
  return `#!/bin/busybox sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# /tmp stays the initramfs's own (writable): a tmpfs there would hide a project cloned under /tmp
mount -t tmpfs run /run
mount -t debugfs none /sys/kernel/debug
mount -t tracefs none /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 none /sys/fs/cgroup
ip link set lo up
# the initramfs does not keep every mtime: the workload binary must not look older than its source
touch ${MPLOAD}
echo "${INIT_MARKER} $(cat /proc/sys/kernel/osrelease) ==="
cd ${repoRoot}
sh /run.sh
rc=$?
echo "${DONE_MARKER} $rc ==="
poweroff -f
`;
}

/** build/kernels/guest-<hash>.cpio.gz, made when missing. */
export function guestBase(): string {
  const haveIptables = existsSync(XTABLES) && existsSync(XTABLES_EXT);
  const bins = ['/usr/bin/node', ADDON, MPLOAD, ...(haveIptables ? [XTABLES] : [])];
  const libs = [...new Set(bins.flatMap(libraries))].sort();
  const inputs: string[] = [
    createHash('sha256')
      .update(initScript() + MODLOAD + APPLETS.join(','))
      .digest('hex'),
  ];
  for (const f of [
    '/bin/busybox',
    ...bins.filter((b) => b !== ADDON && b !== MPLOAD),
    ...libs,
    ...(haveIptables ? [XTABLES_EXT] : []),
    ...PROJECT.map((p) => join(repoRoot, p)),
  ]) {
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
    for (const d of [
      'bin',
      'sbin',
      'proc',
      'sys',
      'dev',
      'tmp',
      'run',
      'etc',
      'usr/bin',
      'usr/sbin',
      'lib/modules',
      'root',
    ])
      mkdirSync(join(root, d), { recursive: true });
    copyFileSync('/bin/busybox', join(root, 'bin', 'busybox'));
    chmodSync(join(root, 'bin', 'busybox'), 0o755);
    for (const a of APPLETS) symlinkSync('busybox', join(root, 'bin', a));
    writeFileSync(join(root, 'bin', 'modload'), MODLOAD, { mode: 0o755 });
    for (const f of ['/usr/bin/node', ...libs]) {
      mkdirSync(join(root, dirname(f)), { recursive: true });
      copyFileSync(f, join(root, f)); // follows links: the library under the name the loader asks for
      chmodSync(join(root, f), 0o755);
    }
    if (haveIptables) {
      copyFileSync(XTABLES, join(root, XTABLES));
      chmodSync(join(root, XTABLES), 0o755);
      // xtables-legacy-multi picks its personality from its name
      for (const n of ['iptables', 'iptables-legacy', 'iptables-save', 'iptables-restore'])
        symlinkSync('xtables-legacy-multi', join(root, 'usr', 'sbin', n));
      cpSync(XTABLES_EXT, join(root, XTABLES_EXT), { recursive: true, dereference: true });
    }
    for (const p of PROJECT)
      cpSync(join(repoRoot, p), join(root, repoRoot, p), { recursive: true, preserveTimestamps: true });
    writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    writeFileSync(join(root, 'etc', 'group'), 'root:x:0:\n');
    writeFileSync(join(root, 'etc', 'hosts'), '127.0.0.1 localhost\n::1 localhost\n');
    writeFileSync(join(root, 'init'), initScript(), { mode: 0o755 });
    const tmp = `${archive}.tmp.${process.pid}`;
    execFileSync('sh', ['-c', `cd "${root}" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "${tmp}"`]);
    execFileSync('mv', [tmp, archive]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  return archive;
}

export interface GuestOptions {
  /** more files: path in the guest (no leading /) -> contents */
  files?: Record<string, string | Buffer>;
  /** kernel modules the script may `modload` (their dependencies come along) */
  modules?: string[];
  /** host binaries (absolute paths) put at the same path in the guest, with the libraries they load (ldd) */
  binaries?: string[];
  /** qemu is killed after this long (default 15 min) */
  timeoutMs?: number;
  /** boots again when the kernel dies before /init (default 3 tries) */
  attempts?: number;
}

export interface GuestRun {
  /** the serial console of the last boot, \r removed */
  console: string;
  /** wall time of all boots, ms */
  ms: number;
  attempts: number;
  /** /init ran, and ran the script to the end (with its exit status) */
  reachedInit: boolean;
  scriptExit?: number;
  /** modules asked for that this kernel has built in */
  builtinModules: string[];
  timedOut: boolean;
}

/**
 * Boots `kernel` with the guest base, `opts.files`, `opts.modules` and
 * /run.sh = `script`; returns the console. The per-run directory is removed
 * whatever happens.
 */
export function runGuest(kernel: KernelImage, script: string, opts: GuestOptions = {}): GuestRun {
  const base = guestBase();
  const work = join(CACHE, `run-${process.pid}-${kernel.suite}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(join(work, 'root'), { recursive: true });
  const started = Date.now();
  try {
    const root = join(work, 'root');
    writeFileSync(join(root, 'run.sh'), script);
    for (const [p, text] of Object.entries(opts.files ?? {})) {
      mkdirSync(join(root, dirname(p)), { recursive: true });
      writeFileSync(join(root, p), text);
    }
    const bins = opts.binaries ?? [];
    for (const f of [...new Set([...bins, ...bins.flatMap(libraries)])]) {
      mkdirSync(join(root, dirname(f)), { recursive: true });
      copyFileSync(f, join(root, f)); // follows links, as for the base
      chmodSync(join(root, f), 0o755);
    }
    let builtinModules: string[] = [];
    if (opts.modules?.length) {
      const m = guestModules(kernel, opts.modules);
      for (const [p, src] of m.files) {
        mkdirSync(join(root, dirname(p)), { recursive: true });
        copyFileSync(src, join(root, p));
      }
      mkdirSync(join(root, 'lib', 'modules', kernel.release), { recursive: true });
      writeFileSync(join(root, 'lib', 'modules', kernel.release, 'modules.dep'), m.modulesDep);
      builtinModules = m.builtin;
      writeFileSync(
        join(root, 'lib', 'modules', kernel.release, 'modules.builtin'),
        m.builtin.map((n) => `kernel/${n}.ko`).join('\n') + '\n',
      );
    }
    const initrd = join(work, 'initrd.gz');
    copyFileSync(base, initrd);
    // the kernel reads concatenated archives; the next one must start 4-byte aligned
    const pad = (4 - (statSync(initrd).size % 4)) % 4;
    if (pad) appendFileSync(initrd, Buffer.alloc(pad));
    execFileSync('sh', ['-c', `cd "${root}" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >> "${initrd}"`]);
    // Under multi-threaded TCG a kernel now and then oopses while it patches its own code at boot
    // (int3 in text_poke, seen with 6.12 about one boot in five), before /init runs: boot again then.
    const tries = opts.attempts ?? 3;
    let out = '';
    let timedOut = false;
    let attempt = 0;
    while (attempt < tries) {
      attempt++;
      const r = spawnSync(
        'qemu-system-x86_64',
        [
          '-nographic',
          '-no-reboot',
          '-m',
          '2048',
          '-smp',
          '2',
          '-kernel',
          kernel.vmlinuz,
          '-initrd',
          initrd,
          '-append',
          'console=ttyS0 panic=-1 quiet',
        ],
        { encoding: 'utf8', timeout: opts.timeoutMs ?? 900_000, maxBuffer: 256 << 20, killSignal: 'SIGKILL' },
      );
      // null, not a string, when qemu could not be started at all (@types/node says string)
      const stdout = r.stdout as string | null;
      const stderr = r.stderr as string | null;
      const error: NodeJS.ErrnoException | undefined = r.error;
      out = (stdout ?? '').replace(/\r/g, '');
      timedOut = error?.code === 'ETIMEDOUT';
      if (r.error && !timedOut) throw r.error;
      if (out.includes(INIT_MARKER) || timedOut) break;
      process.stderr.write(
        `guest: ${kernel.release} died before /init (attempt ${attempt}, qemu exit ${String(r.status)}): ${/Oops[^\n]*|Kernel panic[^\n]*|BUG:[^\n]*/.exec(out)?.[0] ?? `console ends: ${out.slice(-300)} ${stderr?.slice(-300) ?? ''}`}\n`,
      );
    }
    const done = new RegExp(`${DONE_MARKER} (\\d+) ===`).exec(out);
    return {
      console: out,
      ms: Date.now() - started,
      attempts: attempt,
      reachedInit: out.includes(INIT_MARKER),
      scriptExit: done ? Number(done[1]) : undefined,
      builtinModules,
      timedOut,
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Prints `data` as a block the host can read back from a console (gzip, base64, 76 columns, markers). */
export function emitBlock(name: string, data: unknown): void {
  const b64 = gzipSync(Buffer.from(JSON.stringify(data))).toString('base64');
  const lines = [`=== BEGIN ${name} ===`];
  for (let i = 0; i < b64.length; i += 76) lines.push(b64.slice(i, i + 76));
  lines.push(`=== END ${name} ===`);
  process.stdout.write(lines.join('\n') + '\n');
}

export interface Block {
  name: string;
  /** the JSON value, parsed: its shape is the reader's to name */
  data?: unknown;
  error?: string;
}

/** The blocks emitBlock() printed, in order; lines in between that are not base64 (kernel messages) are skipped. */
export function parseBlocks(text: string): Block[] {
  const blocks: Block[] = [];
  const re = /^=== BEGIN (.+?) ===$([\s\S]*?)^=== END \1 ===$/gm;
  for (const m of text.replace(/\r/g, '').matchAll(re)) {
    const b64 = m[2]
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => /^[A-Za-z0-9+/]+=*$/.test(l))
      .join('');
    try {
      blocks.push({ name: m[1], data: JSON.parse(gunzipSync(Buffer.from(b64, 'base64')).toString('utf8')) });
    } catch (e) {
      blocks.push({ name: m[1], error: `unreadable block: ${(e as Error).message}` });
    }
  }
  return blocks;
}
