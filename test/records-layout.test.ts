/**
 * bpf/records.h is the contract. scripts/gen-layout.mjs writes its mirrors (src/generated/layout.ts,
 * re-exported by src/records.ts, and assembly/generated/layout.ts, compiled into build/meshprobe.wasm):
 * the checked-in files must be what it writes now. Then, independently of the generator, a C program
 * compiled here prints sizeof/offsetof of every field of every struct, every MP_* macro, every MP_STATS
 * counter (name, index, report name) and the perf framing, and each value must equal, by name, the
 * constant of src/records.ts and the global the Wasm module exports.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as TS from '../src/records.js';
import { LATENCY_STATS } from '../src/probes/latency.js';
import { wasmExports } from '../src/wasm.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const HEADER = path.join(ROOT, 'bpf', 'records.h');
/** clang (npm run setup installs it); the unit tier (no Debian package) compiles the host part with cc */
const HAS_CLANG = spawnSync('clang', ['--version']).status === 0;
const CLANG = process.env.CLANG ?? (HAS_CLANG ? 'clang' : 'cc');
/** structs the Wasm module leaves out (map keys only src/ writes), as scripts/gen-layout.mjs does */
const NOT_IN_WASM = ['listen_key'];

interface CField {
  name: string;
  offset: number;
  size: number;
}
interface CStruct {
  size: number;
  fields: CField[];
}
interface CStat {
  name: string;
  index: number;
  report: string;
}
interface CFigures {
  layouts: Map<string, CStruct>;
  consts: Map<string, number>;
  stats: CStat[];
  perf: Map<string, number>;
}

/** Struct names with their field names, and the MP_* object-like macros, parsed from the header. */
function parseHeader(src: string): { structs: Map<string, string[]>; macros: string[] } {
  const noComments = src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  const structs = new Map<string, string[]>();
  for (const m of noComments.matchAll(/struct\s+(\w+)\s*\{([^}]*)\}\s*;/g)) {
    const fields: string[] = [];
    for (const decl of m[2].split(';')) {
      const d = decl.trim();
      if (!d) continue;
      const fm = /(\w+)\s*(\[\s*\w+\s*\])?$/.exec(d);
      assert.ok(fm, `cannot parse field declaration "${d}" in struct ${m[1]}`);
      fields.push(fm[1]);
    }
    structs.set(m[1], fields);
  }
  const macros = [...noComments.matchAll(/^#define\s+(MP_\w+)\s+\S+/gm)].map((m) => m[1]);
  return { structs, macros };
}

function runC(structs: Map<string, string[]>, macros: string[]): CFigures {
  const lines = [
    '#include <stdio.h>',
    '#include <stddef.h>',
    '#include <linux/types.h>',
    '#include <linux/perf_event.h>',
    `#include "${HEADER}"`,
    'int main(void) {',
  ];
  for (const [s, fields] of structs) {
    lines.push(`  printf("S ${s} %zu\\n", sizeof(struct ${s}));`);
    for (const f of fields) {
      lines.push(`  printf("F ${s} ${f} %zu %zu\\n", offsetof(struct ${s}, ${f}), sizeof(((struct ${s} *)0)->${f}));`);
    }
  }
  for (const m of macros) lines.push(`  printf("M ${m} %lld\\n", (long long)(${m}));`);
  lines.push(
    '#define PRINT_STAT(name, report) printf("T %s %d %s\\n", #name, (int)MP_STAT_##name, report);',
    '  MP_STATS(PRINT_STAT)',
    '  printf("M MP_STAT__COUNT %d\\n", (int)MP_STAT__COUNT);',
    '  printf("P sizeof %zu\\n", sizeof(struct perf_event_header));',
    '  printf("P type %zu\\n", offsetof(struct perf_event_header, type));',
    '  printf("P misc %zu\\n", offsetof(struct perf_event_header, misc));',
    '  printf("P size %zu\\n", offsetof(struct perf_event_header, size));',
    '  printf("P PERF_RECORD_LOST %d\\n", (int)PERF_RECORD_LOST);',
    '  printf("P PERF_RECORD_SAMPLE %d\\n", (int)PERF_RECORD_SAMPLE);',
    '  return 0;',
    '}',
  );
  const dir = mkdtempSync(path.join(tmpdir(), 'mp-layout-'));
  try {
    const c = path.join(dir, 'layout.c');
    const exe = path.join(dir, 'layout');
    writeFileSync(c, lines.join('\n'));
    execFileSync(CLANG, ['-std=gnu11', '-Wall', '-Werror', '-o', exe, c], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = execFileSync(exe, { encoding: 'utf8' });
    const fig: CFigures = { layouts: new Map(), consts: new Map(), stats: [], perf: new Map() };
    for (const line of out.trim().split('\n')) {
      const p = line.split(' ');
      if (p[0] === 'S') fig.layouts.set(p[1], { size: Number(p[2]), fields: [] });
      else if (p[0] === 'F') {
        const s = fig.layouts.get(p[1]);
        assert.ok(s, `field of unknown struct ${p[1]}`);
        s.fields.push({ name: p[2], offset: Number(p[3]), size: Number(p[4]) });
      } else if (p[0] === 'M') fig.consts.set(p[1], Number(p[2]));
      else if (p[0] === 'T') fig.stats.push({ name: p[1], index: Number(p[2]), report: p.slice(3).join(' ') });
      else if (p[0] === 'P') fig.perf.set(p[1], Number(p[2]));
    }
    return fig;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const parsed = parseHeader(readFileSync(HEADER, 'utf8'));
const C = runC(parsed.structs, parsed.macros);

function wasmGlobal(name: string): number | undefined {
  const g = wasmExports()[name];
  return g instanceof WebAssembly.Global ? Number(g.value) : undefined;
}
const tsConst = (name: string): unknown => (TS as Record<string, unknown>)[name];

test('src/generated/layout.ts and assembly/generated/layout.ts are what scripts/gen-layout.mjs writes now', (t) => {
  if (!HAS_CLANG && !process.env.CLANG) {
    // the generator also compiles for -target bpf, which only clang does
    if (process.env.CI === 'true') throw new Error('clang is missing: CI runs npm run setup, which installs it');
    t.skip('clang not installed (npm run setup installs it)');
    return;
  }
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'gen-layout.mjs'), '--check'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, `gen-layout --check: ${r.stderr}${r.error ? String(r.error) : ''}`);
});

test('LAYOUTS holds every struct of the header', () => {
  assert.deepEqual([...C.layouts.keys()].sort(), Object.keys(TS.LAYOUTS).sort());
  assert.ok(C.layouts.has('listen_key'));
  assert.ok((C.layouts.get('mp_latency_rec')?.fields.length ?? 0) >= 9);
});

test('src/records.ts LAYOUTS: every struct size and field offset/size equals the C compiler', () => {
  for (const [s, cs] of C.layouts) {
    const ts = TS.LAYOUTS[s];
    assert.ok(ts, `src/records.ts has no layout for ${s}`);
    assert.equal(ts.size, cs.size, `sizeof(struct ${s})`);
    assert.deepEqual(
      Object.keys(ts.fields),
      cs.fields.map((f) => f.name),
      `fields of ${s}, in order`,
    );
    for (const f of cs.fields) {
      assert.deepEqual(ts.fields[f.name], [f.offset, f.size], `${s}.${f.name} [offset, size]`);
    }
  }
});

test('named offsets and sizes (src/records.ts and Wasm exports) equal the C compiler', () => {
  for (const [s, cs] of C.layouts) {
    const prefix = TS.STRUCT_PREFIX[s];
    assert.ok(prefix, `no prefix for ${s}`);
    const names = [
      [`${prefix}_SIZE`, cs.size] as const,
      ...cs.fields.map((f) => [`${prefix}_${f.name.toUpperCase()}`, f.offset] as const),
    ];
    for (const [name, want] of names) {
      assert.equal(tsConst(name), want, `src/records.ts ${name}`);
      if (NOT_IN_WASM.includes(s)) assert.equal(wasmGlobal(name), undefined, `Wasm exports ${name}`);
      else assert.equal(wasmGlobal(name), want, `Wasm export ${name}`);
    }
  }
});

test('MP_* macros: src/records.ts and the Wasm module agree with the header', () => {
  assert.ok(C.consts.size >= 30, `only ${C.consts.size} macros`);
  for (const [macro, value] of C.consts) {
    const name = macro.replace(/^MP_/, '');
    assert.equal(tsConst(name), value, `src/records.ts ${name} (${macro})`);
    if (name === 'STAT__COUNT') assert.equal(wasmGlobal(name), undefined, `Wasm exports ${name}`);
    else assert.equal(wasmGlobal(name), value, `Wasm export ${name} (${macro})`);
  }
});

test('MP_STATS: every kernel counter by name, index and report name', () => {
  assert.ok(C.stats.length > 0);
  C.stats.forEach((s, i) => {
    assert.equal(s.index, i, `MP_STAT_${s.name} is at its place in MP_STATS`);
    assert.equal(tsConst(`STAT_${s.name}`), s.index, `src/records.ts STAT_${s.name}`);
    assert.equal(wasmGlobal(`STAT_${s.name}`), undefined, `the Wasm module exports STAT_${s.name}`);
  });
  assert.equal(TS.STAT__COUNT, C.stats.length);
  assert.equal(C.consts.get('MP_STAT__COUNT'), C.stats.length);
  assert.deepEqual(
    [...TS.STAT_NAMES],
    C.stats.map((s) => s.report),
  );
  assert.deepEqual(
    [...LATENCY_STATS],
    C.stats.map((s) => s.report),
    'latency report counter names',
  );
  const tsStats = Object.keys(TS).filter((k) => /^STAT_[A-Z]/.test(k) && k !== 'STAT_NAMES');
  assert.deepEqual(tsStats.sort(), C.stats.map((s) => `STAT_${s.name}`).sort(), 'no other STAT_* in src/records.ts');
});

test('perf framing (<linux/perf_event.h>): src/records.ts and the Wasm module', () => {
  const hdr = C.perf.get('sizeof');
  assert.ok(hdr !== undefined);
  const want: [string, number | undefined][] = [
    ['PERF_RECORD_LOST', C.perf.get('PERF_RECORD_LOST')],
    ['PERF_RECORD_SAMPLE', C.perf.get('PERF_RECORD_SAMPLE')],
    ['PERF_HDR_SIZE', hdr],
    ['PERF_TYPE_OFF', C.perf.get('type')],
    ['PERF_MISC_OFF', C.perf.get('misc')],
    ['PERF_SIZE_OFF', C.perf.get('size')],
    // PERF_SAMPLE_RAW: u32 size, then the data
    ['PERF_SAMPLE_RAW_SIZE_OFF', hdr],
    ['PERF_SAMPLE_RAW_OFF', hdr + 4],
    // PERF_RECORD_LOST: u64 id, u64 lost
    ['PERF_LOST_ID_OFF', hdr],
    ['PERF_LOST_LOST_OFF', hdr + 8],
    ['PERF_LOST_SIZE', hdr + 16],
  ];
  for (const [name, value] of want) {
    assert.ok(value !== undefined, name);
    assert.equal(tsConst(name), value, `src/records.ts ${name}`);
    assert.equal(wasmGlobal(name), value, `Wasm export ${name}`);
  }
  const tsPerf = Object.keys(TS).filter((k) => k.startsWith('PERF_'));
  assert.deepEqual(tsPerf.sort(), want.map(([n]) => n).sort(), 'no other PERF_* in src/records.ts');
});

test('every record-layout constant the Wasm module exports is in src/records.ts with the same value', () => {
  const prefixes = Object.values(TS.STRUCT_PREFIX).map((p) => `${p}_`);
  let n = 0;
  for (const [name, g] of Object.entries(wasmExports())) {
    if (!(g instanceof WebAssembly.Global)) continue;
    if (!prefixes.some((p) => name.startsWith(p)) && !/^(REC_|ROLE_|AF_|CONN_F_|PERF_|METRIC_|RESULT_|DIR_)/.test(name))
      continue;
    assert.equal(Number(g.value), tsConst(name), `Wasm ${name} vs src/records.ts`);
    n++;
  }
  assert.ok(n > 100, `only ${n} constants compared`);
});

test('src/records.ts fields tile each struct (no overlap, no unnamed gap)', () => {
  for (const [s, l] of Object.entries(TS.LAYOUTS)) {
    const fs = Object.values(l.fields)
      .map(([o, z]) => [o, z])
      .sort((a, b) => a[0] - b[0]);
    let at = 0;
    for (const [o, z] of fs) {
      assert.equal(o, at, `${s}: field at ${o}, expected ${at}`);
      at = o + z;
    }
    assert.equal(at, l.size, `${s}: fields end at ${at}`);
  }
});
