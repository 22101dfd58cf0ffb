/** Where the built artefacts live, from the compiled file (dist/src/paths.js). */
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BPF_DIR = path.join(REPO_ROOT, 'build', 'bpf');
export const ADDON_PATH = path.join(REPO_ROOT, 'native', 'build', 'Release', 'meshprobe_native.node');

export function bpfObjectPath(name: string): string {
  return path.join(BPF_DIR, `${name}.bpf.o`);
}
