#!/usr/bin/env node
// Writes the TypeScript and AssemblyScript mirrors of bpf/records.h, the contract between the BPF
// programs and user space:
//   src/generated/layout.ts       (src/records.ts re-exports it)
//   assembly/generated/layout.ts  (the Wasm decoder's; assembly/records.ts re-exports it)
// Names, field types and doc comments come from the header's text; every value (sizeof,
// offsetof, the MP_* macros, the MP_STATS counters, perf framing from <linux/perf_event.h>)
// comes from the C compiler: a generated program is compiled for the host and run, and the same
// figures are asserted (_Static_assert) in a compile for the BPF target. The generator refuses a
// struct with implicit padding (fields must tile it) and a comment in the header that states
// another offset or size than the compiler's.
//
//   node scripts/gen-layout.mjs          write the files
//   node scripts/gen-layout.mjs --check  exit 1 if a file differs from what it would write
// CLANG (default clang) names the compiler. The generated files are checked in;
// test/records-layout.test.ts runs --check.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const HEADER = 'bpf/records.h';
const OUT_TS = 'src/generated/layout.ts';
const OUT_AS = 'assembly/generated/layout.ts';
const CLANG = process.env.CLANG || 'clang';

/** Prefix of each struct's constants: <PREFIX>_SIZE, <PREFIX>_<FIELD> (a byte offset). */
const PREFIX = {
  mp_rec_hdr: 'HDR',
  mp_latency_rec: 'LAT',
  mp_conn_open_rec: 'OPEN',
  mp_conn_close_rec: 'CLOSE',
  mp_measure_rec: 'MEAS',
  mp_drop_key: 'DKEY',
  mp_drop_val: 'DVAL',
  mp_pkt_key: 'PKEY',
  listen_key: 'LKEY',
};
/** Perf ring framing, from <linux/perf_event.h> (a PERF_RECORD_LOST's body is documented there, not a struct). */
const PERF = [
  ['PERF_RECORD_LOST', 'PERF_RECORD_LOST', 'perf record type: records the kernel could not write'],
  ['PERF_RECORD_SAMPLE', 'PERF_RECORD_SAMPLE', 'perf record type: a sample; ours carry only PERF_SAMPLE_RAW'],
  [
    'PERF_HDR_SIZE',
    'sizeof(struct perf_event_header)',
    'sizeof(struct perf_event_header), which starts every perf record',
  ],
  ['PERF_TYPE_OFF', 'offsetof(struct perf_event_header, type)', 'u32 type: PERF_RECORD_*'],
  ['PERF_MISC_OFF', 'offsetof(struct perf_event_header, misc)', 'u16 misc'],
  ['PERF_SIZE_OFF', 'offsetof(struct perf_event_header, size)', 'u16 size: of the whole perf record, header included'],
  ['PERF_SAMPLE_RAW_SIZE_OFF', 'sizeof(struct perf_event_header)', "a sample's u32 size of its raw data"],
  [
    'PERF_SAMPLE_RAW_OFF',
    'sizeof(struct perf_event_header) + sizeof(__u32)',
    "a sample's raw data: one of our records",
  ],
  ['PERF_LOST_ID_OFF', 'sizeof(struct perf_event_header)', "a PERF_RECORD_LOST's u64 id"],
  [
    'PERF_LOST_LOST_OFF',
    'sizeof(struct perf_event_header) + sizeof(__u64)',
    "a PERF_RECORD_LOST's u64 count of lost records",
  ],
  [
    'PERF_LOST_SIZE',
    'sizeof(struct perf_event_header) + 2 * sizeof(__u64)',
    'sizeof a PERF_RECORD_LOST (no sample_id_all)',
  ],
];
/** Left out of the Wasm module: map keys only src/ writes (the decoder reads perf records). */
const NOT_IN_WASM = new Set(['listen_key']);

class GenError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** A comment's text on one line. */
const commentText = (c) =>
  c
    .replace(/^\/\*+|\*+\/$/g, '')
    .replace(/\s+/g, ' ')
    .trim();

/** The source with every comment blanked (same length, newlines kept), so that indexes match. */
const blankComments = (s) => s.replace(/\/\*[\s\S]*?\*\//g, (m) => m.replace(/[^\n]/g, ' '));

/** Names, order, types and doc comments from the header's text (values come from the compiler). */
function parseHeader(src) {
  // #define lines (continuations joined)
  const joined = src.replace(/\\\n/g, ' ');
  const macros = [];
  let stats = null;
  for (const line of joined.split('\n')) {
    const m = /^#\s*define\s+(\w+)(\(?)(.*)$/.exec(line);
    if (!m) continue;
    const [, name, fnLike, rest] = m;
    if (name === 'MP_STATS' && fnLike) {
      stats = parseStats(rest.replace(/^[^)]*\)/, ''));
      continue;
    }
    if (fnLike || !name.startsWith('MP_')) continue;
    const value = rest.replace(/\/\*[\s\S]*?\*\//g, ' ').trim();
    if (value === '') continue;
    const doc = [...rest.matchAll(/\/\*[\s\S]*?\*\//g)].map((c) => commentText(c[0])).join(' ');
    macros.push({ name, doc });
  }
  if (!stats) throw new GenError('MP_LAYOUT_PARSE', `${HEADER}: no MP_STATS(X) list of the counters`);

  const blank = blankComments(src);
  const structs = [];
  for (const m of blank.matchAll(/\bstruct\s+(\w+)\s*\{([^}]*)\}\s*;/g)) {
    const name = m[1];
    const bodyAt = m.index + m[0].indexOf('{') + 1;
    // "/* N bytes ... */" right before the struct
    const before = src.slice(0, m.index).trimEnd();
    const sizeComment = before.endsWith('*/') ? /\/\*(?:(?!\/\*)[\s\S])*\*\/$/.exec(before)?.[0] : undefined;
    const sizeDoc = sizeComment && /^(\d+) bytes\b[,:]?\s*(.*)$/.exec(commentText(sizeComment));
    const fields = [];
    let at = 0;
    for (const decl of m[2].split(';')) {
      const end = bodyAt + at + decl.length; // index of the ';'
      at += decl.length + 1;
      const d = decl.replace(/\s+/g, ' ').trim();
      if (!d) continue;
      const fm = /^(.*?) ?\b(\w+)(?: ?\[ ?(\w+) ?\])?$/.exec(d);
      if (!fm || !fm[1]) throw new GenError('MP_LAYOUT_PARSE', `${HEADER}: cannot parse "${d}" in struct ${name}`);
      // the comment that starts on the same line, right after the ';'
      const trailing = /^[ \t]*(\/\*[\s\S]*?\*\/)/.exec(src.slice(end + 1));
      fields.push({ name: fm[2], type: cType(fm[1], fm[3]), comment: trailing ? commentText(trailing[1]) : '' });
    }
    structs.push({
      name,
      fields,
      statedSize: sizeDoc ? Number(sizeDoc[1]) : undefined,
      doc: sizeDoc ? sizeDoc[2] : '',
    });
  }
  return { macros, stats, structs };
}

/** X(NAME, "name") entries of MP_STATS, each with the comment before it. */
function parseStats(body) {
  const out = [];
  let doc = '';
  const rest = body.replace(/\/\*([\s\S]*?)\*\/|X\(\s*(\w+)\s*,\s*"([^"]*)"\s*\)/g, (all, comment, name, report) => {
    if (comment !== undefined) doc = doc ? `${doc} ${commentText(all)}` : commentText(all);
    else {
      out.push({ name, report, doc });
      doc = '';
    }
    return '';
  });
  if (rest.trim() !== '') throw new GenError('MP_LAYOUT_PARSE', `${HEADER}: MP_STATS: cannot parse "${rest.trim()}"`);
  return out;
}

function cType(t, n) {
  const base = t.replace(/^__(u|s)(8|16|32|64)$/, '$1$2');
  return n ? `${base}[${n}]` : base;
}

function run(cmd, args, opts = {}) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  } catch (e) {
    if (e.code === 'ENOENT')
      throw new GenError('MP_LAYOUT_NO_COMPILER', `${cmd} not found: install clang (npm run setup) or set CLANG`);
    throw new GenError('MP_LAYOUT_COMPILE', `${cmd} ${args.join(' ')} failed:\n${e.stderr || e.message}`);
  }
}

/** Every figure from the compiler. */
function compileFigures(parsed) {
  const header = path.join(ROOT, HEADER);
  const dir = mkdtempSync(path.join(tmpdir(), 'mp-gen-layout-'));
  try {
    // the macros the preprocessor defines, to check the text parse found all of them
    const defined = run(CLANG, ['-dM', '-E', '-x', 'c', '-include', 'linux/types.h', header])
      .split('\n')
      .map((l) => /^#define (MP_\w+) /.exec(l)?.[1])
      .filter((n) => n !== undefined);
    const parsedNames = parsed.macros.map((m) => m.name);
    const missed = defined.filter((n) => !parsedNames.includes(n));
    const extra = parsedNames.filter((n) => !defined.includes(n));
    if (missed.length || extra.length)
      throw new GenError(
        'MP_LAYOUT_PARSE',
        `${HEADER}: macros the preprocessor defines but the parse missed: ${missed.join(', ') || 'none'}; ` +
          `parsed but not defined: ${extra.join(', ') || 'none'}`,
      );

    const c = [
      '#include <stdio.h>',
      '#include <stddef.h>',
      '#include <linux/types.h>',
      '#include <linux/perf_event.h>',
      `#include "${header}"`,
      'int main(void)',
      '{',
    ];
    for (const s of parsed.structs) {
      c.push(`\tprintf("S ${s.name} %zu\\n", sizeof(struct ${s.name}));`);
      for (const f of s.fields)
        c.push(
          `\tprintf("F ${s.name} ${f.name} %zu %zu\\n", offsetof(struct ${s.name}, ${f.name}), ` +
            `sizeof(((struct ${s.name} *)0)->${f.name}));`,
        );
    }
    for (const m of parsed.macros) c.push(`\tprintf("M ${m.name} %lld\\n", (long long)(${m.name}));`);
    c.push(
      '#define MP_GEN_STAT(name, report) printf("T %s %lld %s\\n", #name, (long long)MP_STAT_##name, report);',
      '\tMP_STATS(MP_GEN_STAT)',
      '\tprintf("M MP_STAT__COUNT %lld\\n", (long long)MP_STAT__COUNT);',
      ...PERF.map(([name, expr]) => `\tprintf("P ${name} %lld\\n", (long long)(${expr}));`),
      '\treturn 0;',
      '}',
    );
    writeFileSync(path.join(dir, 'layout.c'), c.join('\n') + '\n');
    const exe = path.join(dir, 'layout');
    run(CLANG, ['-std=gnu11', '-Wall', '-Werror', '-o', exe, path.join(dir, 'layout.c')]);
    const fig = { sizes: new Map(), fields: new Map(), macros: new Map(), stats: [], perf: new Map() };
    for (const line of run(exe, []).trim().split('\n')) {
      const p = line.split(' ');
      if (p[0] === 'S') fig.sizes.set(p[1], Number(p[2]));
      else if (p[0] === 'F') fig.fields.set(`${p[1]}.${p[2]}`, [Number(p[3]), Number(p[4])]);
      else if (p[0] === 'M') fig.macros.set(p[1], Number(p[2]));
      else if (p[0] === 'T') fig.stats.push({ name: p[1], index: Number(p[2]), report: p.slice(3).join(' ') });
      else if (p[0] === 'P') fig.perf.set(p[1], Number(p[2]));
    }

    // the same figures for the BPF target, whose compiles emit the records
    const a = [
      // the kernel's (vmlinux.h, asm-generic/int-ll64.h)
      'typedef unsigned char __u8;',
      'typedef unsigned short __u16;',
      'typedef unsigned int __u32;',
      'typedef unsigned long long __u64;',
      '#include <stddef.h>',
      `#include "${header}"`,
    ];
    for (const s of parsed.structs) {
      a.push(`_Static_assert(sizeof(struct ${s.name}) == ${fig.sizes.get(s.name)}, "sizeof ${s.name}");`);
      for (const f of s.fields) {
        const [o, z] = fig.fields.get(`${s.name}.${f.name}`);
        a.push(
          `_Static_assert(offsetof(struct ${s.name}, ${f.name}) == ${o} && ` +
            `sizeof(((struct ${s.name} *)0)->${f.name}) == ${z}, "${s.name}.${f.name}");`,
        );
      }
    }
    for (const [n, v] of fig.macros) a.push(`_Static_assert(${n} == ${v}, "${n}");`);
    writeFileSync(path.join(dir, 'bpf.c'), a.join('\n') + '\n');
    run(CLANG, ['-target', 'bpf', '-fsyntax-only', '-Wall', '-Werror', path.join(dir, 'bpf.c')]);
    return fig;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The parse and the figures together, checked. */
function buildModel(parsed, fig) {
  const names = new Set();
  const take = (n) => {
    if (names.has(n)) throw new GenError('MP_LAYOUT_NAME', `two constants would be named ${n}`);
    names.add(n);
    return n;
  };
  const consts = parsed.macros.map((m) => ({
    name: take(m.name.replace(/^MP_/, '')),
    value: fig.macros.get(m.name),
    doc: m.doc,
  }));
  if (fig.stats.map((s) => s.name).join() !== parsed.stats.map((s) => s.name).join())
    throw new GenError('MP_LAYOUT_PARSE', `${HEADER}: MP_STATS: the parse and the compiler disagree`);
  const stats = fig.stats.map((s, i) => {
    if (s.index !== i) throw new GenError('MP_LAYOUT_STATS', `MP_STAT_${s.name} is ${s.index}, not its place ${i}`);
    if (!/^[a-z][a-z0-9_]*$/.test(s.report))
      throw new GenError('MP_LAYOUT_STATS', `MP_STAT_${s.name}: report name "${s.report}" is not [a-z0-9_]`);
    return { name: take(`STAT_${s.name}`), value: s.index, report: s.report, doc: parsed.stats[i].doc };
  });
  const statCount = {
    name: take('STAT__COUNT'),
    value: fig.macros.get('MP_STAT__COUNT'),
    doc: 'the number of counters (entries of "stats")',
  };
  if (statCount.value !== stats.length)
    throw new GenError('MP_LAYOUT_STATS', `MP_STAT__COUNT is ${statCount.value}, MP_STATS lists ${stats.length}`);
  if (new Set(stats.map((s) => s.report)).size !== stats.length)
    throw new GenError('MP_LAYOUT_STATS', 'MP_STATS: two counters have the same report name');

  const structs = parsed.structs.map((s) => {
    const prefix = PREFIX[s.name];
    if (!prefix) throw new GenError('MP_LAYOUT_PREFIX', `struct ${s.name}: give it a prefix in scripts/gen-layout.mjs`);
    const size = fig.sizes.get(s.name);
    if (s.statedSize !== undefined && s.statedSize !== size)
      throw new GenError('MP_LAYOUT_COMMENT', `${HEADER}: struct ${s.name} says ${s.statedSize} bytes, is ${size}`);
    let end = 0;
    const fields = s.fields.map((f) => {
      const [offset, fsize] = fig.fields.get(`${s.name}.${f.name}`);
      if (offset !== end)
        throw new GenError(
          'MP_LAYOUT_GAP',
          `struct ${s.name}: ${f.name} at ${offset} but the previous field ends at ${end}: name the padding`,
        );
      end = offset + fsize;
      const om = /^(\d+)(?::\s*|$)/.exec(f.comment);
      if (om && Number(om[1]) !== offset)
        throw new GenError('MP_LAYOUT_COMMENT', `${HEADER}: ${s.name}.${f.name} says offset ${om[1]}, is ${offset}`);
      const doc = om ? f.comment.slice(om[0].length) : f.comment;
      return { name: f.name, const: take(`${prefix}_${f.name.toUpperCase()}`), type: f.type, offset, size: fsize, doc };
    });
    if (end !== size)
      throw new GenError(
        'MP_LAYOUT_GAP',
        `struct ${s.name}: fields end at ${end}, sizeof is ${size}: name the padding`,
      );
    return { name: s.name, prefix, sizeConst: take(`${prefix}_SIZE`), size, doc: s.doc, fields };
  });
  const perf = PERF.map(([name, , doc]) => ({ name: take(name), value: fig.perf.get(name), doc }));
  return { consts, stats, statCount, structs, perf };
}

const HEAD = [
  `// Generated by scripts/gen-layout.mjs from ${HEADER} (and <linux/perf_event.h>): values are the C`,
  "// compiler's sizeof/offsetof and macro values. Do not edit: change the header, then run",
  '// `node scripts/gen-layout.mjs`. test/records-layout.test.ts fails when this file is stale.',
];

/** One output: ts = src/ (TypeScript), else AssemblyScript (u32 constants only). */
function render(model, ts) {
  const o = [...HEAD];
  const ty = ts ? '' : ': u32';
  const doc = (d) => {
    if (d) o.push(`/** ${d} */`);
  };
  const konst = (c) => {
    doc(c.doc);
    o.push(`export const ${c.name}${ty} = ${c.value};`);
  };
  if (!ts) o.push("// The Wasm decoder's subset: all but the kernel counters and map keys it never reads.");
  o.push('', `// ---- #define MP_* (${HEADER}) ----`);
  model.consts.forEach(konst);
  if (ts) {
    o.push('', '// ---- MP_STATS: per-CPU kernel counters, index in the array map "stats" ----');
    model.stats.forEach(konst);
    konst(model.statCount);
    o.push('/** What the reports call each counter, by index (the names in MP_STATS). */');
    o.push('export const STAT_NAMES = [', ...model.stats.map((s) => `  '${s.report}',`), '] as const;');
  }
  for (const s of model.structs) {
    if (!ts && NOT_IN_WASM.has(s.name)) continue;
    o.push('', `// ---- struct ${s.name}: ${s.size} bytes${s.doc ? `, ${s.doc}` : ''} ----`);
    o.push(`export const ${s.sizeConst}${ty} = ${s.size};`);
    for (const f of s.fields) {
      doc(`${f.type} ${f.name}${f.doc ? `: ${f.doc}` : ''}`);
      o.push(`export const ${f.const}${ty} = ${f.offset};`);
    }
  }
  o.push('', '// ---- perf ring framing (<linux/perf_event.h>) ----');
  model.perf.forEach(konst);
  if (ts) {
    o.push(
      '',
      '/** [offset, size] of every field, keyed by the C struct and field names. */',
      'export type FieldTable = Record<string, readonly [offset: number, size: number]>;',
      'export interface StructLayout {',
      '  readonly size: number;',
      '  readonly fields: FieldTable;',
      '}',
      '',
      '/** Every struct of the header. */',
      'export const LAYOUTS: Readonly<Record<string, StructLayout>> = {',
    );
    for (const s of model.structs) {
      o.push(`  ${s.name}: {`, `    size: ${s.size},`, '    fields: {');
      for (const f of s.fields) o.push(`      ${f.name}: [${f.offset}, ${f.size}],`);
      o.push('    },', '  },');
    }
    o.push(
      '};',
      '',
      "/** Name prefix of each struct's constants: <PREFIX>_SIZE, <PREFIX>_<FIELD> (a byte offset). */",
      'export const STRUCT_PREFIX: Readonly<Record<string, string>> = {',
      ...model.structs.map((s) => `  ${s.name}: '${s.prefix}',`),
      '};',
    );
  }
  return o.join('\n') + '\n';
}

/** The files' paths (relative to the repository) and texts. */
function generate() {
  const parsed = parseHeader(readFileSync(path.join(ROOT, HEADER), 'utf8'));
  const model = buildModel(parsed, compileFigures(parsed));
  return [
    [OUT_TS, render(model, true)],
    [OUT_AS, render(model, false)],
  ];
}

function main() {
  const check = process.argv.includes('--check');
  const files = generate();
  let stale = 0;
  for (const [rel, text] of files) {
    const file = path.join(ROOT, rel);
    let old = null;
    try {
      old = readFileSync(file, 'utf8');
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
    }
    if (old === text) continue;
    if (check) {
      const a = (old ?? '').split('\n');
      const b = text.split('\n');
      let i = 0;
      while (i < a.length && a[i] === b[i]) i++;
      console.error(
        `gen-layout: MP_LAYOUT_STALE: ${rel} is not what ${HEADER} gives (line ${i + 1}: ` +
          `has ${JSON.stringify(a[i] ?? null)}, should have ${JSON.stringify(b[i] ?? null)}): ` +
          'run node scripts/gen-layout.mjs',
      );
      stale++;
    } else {
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, text);
      console.log(`gen-layout: wrote ${rel}`);
    }
  }
  if (stale) process.exit(1);
}

try {
  main();
} catch (e) {
  if (!(e instanceof GenError)) throw e;
  console.error(`gen-layout: ${e.code}: ${e.message}`);
  process.exit(1);
}
