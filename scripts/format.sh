#!/usr/bin/env bash
# npm run format: rewrites the TypeScript/JavaScript/JSON with prettier and the C/C++ with clang-format.
set -euo pipefail
cd "$(dirname "$0")/.."
CLANG_FORMAT=${CLANG_FORMAT:-clang-format-14}
node_modules/.bin/prettier --write --log-level warn .
mapfile -t c_files < <(git ls-files '*.c' '*.h' '*.cc' | grep -v '^bpf/vmlinux/')
"$CLANG_FORMAT" -i "${c_files[@]}"
