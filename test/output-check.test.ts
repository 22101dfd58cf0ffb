// Where the report goes is checked before anything loads (exit 2, one line): kernel file systems,
// devices, directories, missing directories and a full disk are refused; standard output, pipes,
// /dev/null and plain files pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { checkWritable } from '../src/cli/options.js';
import { MeshprobeError } from '../src/errors.js';
import { runCli, tempDir } from './helpers/probe.js';

function refused(file: string, why: RegExp, minFree?: number): void {
  assert.throws(
    () => {
      checkWritable(file, minFree);
    },
    (e: unknown) => e instanceof MeshprobeError && e.exitCode === 2 && why.test(e.message),
    file,
  );
}

test('refused: /proc, /sys, a device, a directory, a missing directory, too little free space', () => {
  refused('/proc/x', /\/proc is on proc, a kernel file system/);
  refused('/proc/self/status', /on proc, a kernel file system/);
  refused('/sys/x', /\/sys is on sysfs, a kernel file system/);
  refused('/dev/full', /it is a device/);
  refused(tempDir(), /it is a directory/);
  refused(join(tempDir(), 'no', 'report.json'), /directory .* does not exist/);
  refused(
    join(tempDir(), 'report.json'),
    /only \d+ KB free on its file system .*free some space/,
    Number.MAX_SAFE_INTEGER,
  );
});

test('passes: a file, standard output, /dev/null, a FIFO', () => {
  const dir = tempDir();
  for (const f of [join(dir, 'report.json'), '-', '/dev/stdout', '/dev/null']) checkWritable(f);
  const fifo = join(dir, 'fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  checkWritable(fifo);
});

test('the CLI refuses --output /proc/x and /sys/x before loading anything: one line, exit 2', () => {
  for (const out of ['/proc/x', '/sys/x']) {
    const r = runCli('latency-probe', ['--output', out, '--duration', '1']);
    assert.equal(r.code, 2, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], new RegExp(`cannot write the report to ${out}: .* kernel file system`));
  }
});
