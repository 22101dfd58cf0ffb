// npm run bench: every benchmark, one after the other (they each need the whole machine).
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const benches = [
  ['bench/decode-rate.mjs'],
  ['dist/bench/pipeline-rate.js'],
  ['dist/bench/overhead.js'],
  ['dist/bench/sampling.js'],
  ['dist/bench/connections.js'],
  ['dist/bench/drops.js'],
  ['dist/bench/cpu-cost.js'],
  ['dist/bench/scrapes.js'],
  ['dist/bench/record-format.js'],
];
let failed = 0;
for (const [file] of benches) {
  console.log(`\n== ${file}`);
  const r = spawnSync(process.execPath, [path.join(root, file)], { stdio: 'inherit', cwd: root });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
