// Kernel symbols from a /proc/kallsyms text (src/kernel/kallsyms.ts): text symbols only, sorted by
// address, modules named, restricted addresses recognised. No root, no kernel: fixture files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Kallsyms } from '../src/kernel/kallsyms.js';
import { tempDir } from './helpers/probe.js';

function fixture(text: string): string {
  const file = join(tempDir(), 'kallsyms');
  writeFileSync(file, text);
  return file;
}

test('text symbols by address, out of order in the file, kernel and module symbols', () => {
  const k = new Kallsyms(
    fixture(
      [
        'ffffffff81000000 T _stext',
        'ffffffff81000100 t helper_one',
        'ffffffff81200000 D some_data',
        'ffffffffc0a01000 t nft_do_chain\t[nf_tables]',
        'ffffffff81000200 T kfree_skb_reason',
        'ffffffffc0a02000 T nft_other\t[nf_tables]',
        'ffffffffc0b00000 t sch_netem_enqueue\t[sch_netem]',
        '',
      ].join('\n'),
    ),
  );
  assert.equal(k.restricted, false);
  assert.equal(k.size, 6, 'the data symbol is left out');
  assert.deepEqual(k.lookup(0xffffffff81000210n), { name: 'kfree_skb_reason', offset: 0x10 });
  assert.deepEqual(k.lookup(0xffffffff81000100n), { name: 'helper_one', offset: 0 });
  assert.deepEqual(k.lookup(0xffffffffc0a01004n), { name: 'nft_do_chain', offset: 4, module: 'nf_tables' });
  assert.deepEqual(k.lookup(0xffffffffc0b00010n), { name: 'sch_netem_enqueue', offset: 0x10, module: 'sch_netem' });
  assert.equal(k.lookup(0xffffffff80ffffffn), undefined, 'below the first symbol');
  assert.equal(k.address('nft_other'), 0xffffffffc0a02000n);
  assert.equal(k.address('some_data'), undefined);
});

test('every address zero: restricted, nothing found', () => {
  const k = new Kallsyms(fixture('0000000000000000 T _stext\n0000000000000000 t tcp_v4_rcv\n'));
  assert.equal(k.restricted, true);
  assert.equal(k.size, 0);
  assert.equal(k.lookup(0xffffffff81000000n), undefined);
});

test('an unreadable file is an error with a code', () => {
  assert.throws(() => new Kallsyms('/nonexistent/kallsyms'), { code: 'MP_KALLSYMS' });
});
