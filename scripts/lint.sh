#!/usr/bin/env bash
# npm run lint: eslint (typescript-eslint, strict type-checked) over the TypeScript and
# JavaScript, prettier's check of their formatting, clang-format's of the C and C++.
# Fix formatting with: npm run format
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x node_modules/.bin/eslint ]; then
  echo "lint: node_modules is missing eslint: run npm ci (or npm run setup) first" >&2
  exit 1
fi
CLANG_FORMAT=${CLANG_FORMAT:-clang-format-14}
if ! command -v "$CLANG_FORMAT" >/dev/null; then
  echo "lint: $CLANG_FORMAT not found: apt-get install clang-format-14 (npm run setup does), or set CLANG_FORMAT" >&2
  exit 1
fi
mapfile -t c_files < <(git ls-files '*.c' '*.h' '*.cc' | grep -v '^bpf/vmlinux/')
status=0
echo "lint: eslint"
node_modules/.bin/eslint --max-warnings 0 . || status=1
echo "lint: prettier --check"
node_modules/.bin/prettier --check --log-level warn . || status=1
echo "lint: $CLANG_FORMAT (${#c_files[@]} files)"
"$CLANG_FORMAT" --dry-run --Werror "${c_files[@]}" || status=1
if [ "$status" != 0 ]; then
  echo "lint: failed (formatting alone: npm run format)" >&2
fi
exit "$status"
