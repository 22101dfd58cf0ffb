// The installed commands (package.json "bin") start here. These files are checked in, so that
// npm links them even before the build (npx run before `npm run build` would otherwise cache a
// link without them); the commands themselves are compiled into dist/ by `npm run build`.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

/** Runs the built command `name`, or says how to build it (exit 1). */
export async function launch(name) {
  // the parent as it was when we started: the probe checks it is still there when it asks the
  // kernel for a parent-death signal (src/cli/parent-death.ts)
  globalThis[Symbol.for('meshprobe.launchParent')] = process.ppid;
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const entry = path.join(root, 'dist', 'src', 'cli', `${name}.js`);
  if (!existsSync(entry)) {
    process.stderr.write(
      `${name}: meshprobe is not built in ${root}: run npm run build there (as root: npm run setup)\n`,
    );
    process.exit(1);
  }
  await import(pathToFileURL(entry).href);
}
