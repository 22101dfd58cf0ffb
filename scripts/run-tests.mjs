// Runs every compiled test file (dist/test/**/*.test.js) with node's test
// runner, one file at a time: the probe tests measure host-wide traffic and
// must not overlap. Extra arguments filter file names (substring match).
// --unit: only the tests that need no root, no Debian package and no
// kernel (parsers, histograms, the Wasm decoder, exporters' formats,
// analyze, report), for a contributor's quick loop (npm run test:unit).
import { readdirSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const dir = path.join(root, 'dist', 'test');
const files = [];
(function walk(d) {
  for (const name of readdirSync(d)) {
    const p = path.join(d, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.js')) files.push(p);
  }
})(dir);
const UNIT = [
  'analyze-cli',
  'analyze-compare',
  'analyze-fixtures',
  'analyze-parse',
  'analyze-quantile',
  'conn-aging',
  'conn-row-hist',
  'kallsyms',
  'decoder',
  'generate-report.test',
  'histogram',
  'hooks',
  'k8s-manifests',
  'k8s-identity',
  'map-aging',
  'msgpack.test',
  'k8s-outputs',
  'outputs-unit',
  'overhead-unit',
  'records-layout',
];
const args = process.argv.slice(2);
const unit = args.includes('--unit');
const filters = args.filter((a) => a !== '--unit');
const chosen = files
  .sort()
  .filter((f) => !unit || UNIT.some((u) => path.basename(f).startsWith(u)))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)));
if (chosen.length === 0) {
  console.error(`run-tests: no test files matched in ${dir}`);
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', ...chosen], {
  stdio: 'inherit',
  cwd: root,
});
process.exit(r.status ?? 1);
