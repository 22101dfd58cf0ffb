/**
 * bpf/records.h is the contract: compile a C program that prints sizeof and
 * offsetof of every field of every struct (and every MP_* constant) and
 * compare with src/records.ts and with the constants the Wasm module exports
 * (assembly/records.ts, read back as exported globals of build/meshprobe.wasm).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as TS from '../src/records.js';
import { wasmExports } from '../src/wasm.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const HEADER = path.join(ROOT, 'bpf', 'records.h');

interface CField {
  name: string;
  offset: number;
  size: number;
}
interface CStruct {
  size: number;
  fields: CField[];
}

/** Struct names with their field names, parsed from the header. */
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
  const macros = [...noComments.matchAll(/^#define\s+(MP_\w+)\s+\S+/gm)]
    .map((m) => m[1])
    .filter((n) => n !== 'MP_RECORDS_H' && !n.startsWith('MESHPROBE'));
  return { structs, macros };
}

function runC(
  structs: Map<string, string[]>,
  macros: string[],
): { layouts: Map<string, CStruct>; consts: Map<string, number> } {
  const lines = [
    '#include <stdio.h>',
    '#include <stddef.h>',
    '#include <linux/types.h>',
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
  lines.push('  return 0;', '}');
  const dir = mkdtempSync(path.join(tmpdir(), 'mp-layout-'));
  try {
    const c = path.join(dir, 'layout.c');
    const exe = path.join(dir, 'layout');
    writeFileSync(c, lines.join('\n'));
    execFileSync('cc', ['-std=gnu11', '-Wall', '-Werror', '-o', exe, c], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = execFileSync(exe, { encoding: 'utf8' });
    const layouts = new Map<string, CStruct>();
    const consts = new Map<string, number>();
    for (const line of out.trim().split('\n')) {
      const p = line.split(' ');
      if (p[0] === 'S') layouts.set(p[1], { size: Number(p[2]), fields: [] });
      else if (p[0] === 'F') layouts.get(p[1])!.fields.push({ name: p[2], offset: Number(p[3]), size: Number(p[4]) });
      else if (p[0] === 'M') consts.set(p[1], Number(p[2]));
    }
    return { layouts, consts };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const parsed = parseHeader(readFileSync(HEADER, 'utf8'));
const C = runC(parsed.structs, parsed.macros);

function wasmGlobal(name: string): number | undefined {
  const g = (wasmExports() as Record<string, unknown>)[name];
  return g instanceof WebAssembly.Global ? Number(g.value) : undefined;
}
const tsConst = (name: string): unknown => (TS as Record<string, unknown>)[name];

test('the header declares the four record structs', () => {
  assert.deepEqual([...C.layouts.keys()].sort(), Object.keys(TS.LAYOUTS).sort());
  assert.ok(C.layouts.get('mp_latency_rec')!.fields.length >= 9);
});

test('src/records.ts LAYOUTS: every struct size and field offset/size equals the C compiler', () => {
  for (const [s, cs] of C.layouts) {
    const ts = TS.LAYOUTS[s];
    assert.ok(ts, `src/records.ts has no layout for ${s}`);
    assert.equal(ts.size, cs.size, `sizeof(struct ${s})`);
    assert.deepEqual(Object.keys(ts.fields).sort(), cs.fields.map((f) => f.name).sort(), `fields of ${s}`);
    for (const f of cs.fields) {
      assert.deepEqual([...ts.fields[f.name]], [f.offset, f.size], `${s}.${f.name} [offset, size]`);
    }
  }
});

test('named constants (src/records.ts and Wasm exports): every offset and size equals the C compiler', () => {
  for (const [s, cs] of C.layouts) {
    const prefix = TS.STRUCT_PREFIX[s];
    assert.ok(prefix, `no prefix for ${s}`);
    const names = [
      [`${prefix}_SIZE`, cs.size] as const,
      ...cs.fields.map((f) => [`${prefix}_${f.name.toUpperCase()}`, f.offset] as const),
    ];
    for (const [name, want] of names) {
      assert.equal(tsConst(name), want, `src/records.ts ${name}`);
      assert.equal(wasmGlobal(name), want, `assembly/records.ts ${name} (Wasm export)`);
    }
  }
});

test('MP_* constants: src/records.ts and the Wasm module agree with the header', () => {
  assert.ok(C.consts.size >= 10);
  for (const [macro, value] of C.consts) {
    const name = macro.replace(/^MP_/, '');
    assert.equal(tsConst(name), value, `src/records.ts ${name} (${macro})`);
    const w = wasmGlobal(name);
    if (name.startsWith('STAT_')) {
      if (w !== undefined) assert.equal(w, value, `Wasm ${name}`);
    } else {
      assert.equal(w, value, `Wasm export ${name} (${macro})`);
    }
  }
});

test('every record-layout constant exported by the Wasm module matches src/records.ts', () => {
  const prefixes = Object.values(TS.STRUCT_PREFIX).map((p) => `${p}_`);
  let n = 0;
  for (const [name, g] of Object.entries(wasmExports() as Record<string, unknown>)) {
    if (!(g instanceof WebAssembly.Global)) continue;
    if (!prefixes.some((p) => name.startsWith(p)) && !/^(REC_|ROLE_|AF_|CONN_F_|PERF_)/.test(name)) continue;
    assert.equal(Number(g.value), tsConst(name), `Wasm ${name} vs src/records.ts`);
    n++;
  }
  assert.ok(n > 40, `only ${n} constants compared`);
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

test('every kernel counter has a name in the latency report', async () => {
  const { LATENCY_STATS } = await import('../src/probes/latency.js');
  const R = await import('../src/records.js');
  assert.equal(LATENCY_STATS.length, R.STAT__COUNT);
});
