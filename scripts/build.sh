#!/usr/bin/env bash
# Builds what is stale: bpf/ objects, the native addon, the Wasm module, the
# TypeScript, and the test workload. Each step runs only when its inputs changed.
# --js: only the Wasm module and the TypeScript (what the unit tests need;
# no clang, no kernel headers, no root).
set -euo pipefail
cd "$(dirname "$0")/.."
js_only=0
[ "${1:-}" = "--js" ] && js_only=1

newer() { # newer OUTPUT INPUT...: true when OUTPUT is missing or older than any input
  local out=$1; shift
  [ -e "$out" ] || return 0
  [ -n "$(find "$@" -newer "$out" -print -quit 2>/dev/null)" ]
}

[ "$js_only" = 1 ] || make -s -C bpf

addon=native/build/Release/meshprobe_native.node
if [ "$js_only" = 0 ] && newer "$addon" native/src native/binding.gyp; then
  echo "build: native addon"
  nodedir=()
  [ -f /usr/include/node/node_api.h ] && nodedir=(--nodedir=/usr)
  (cd native && ../node_modules/.bin/node-gyp rebuild "${nodedir[@]}" --loglevel=warn)
fi

if newer build/meshprobe.wasm assembly asconfig.json; then
  echo "build: wasm"
  node_modules/.bin/asc assembly/index.ts --config asconfig.json --target release
fi

if newer dist/.stamp src test bench tsconfig.json; then
  echo "build: typescript"
  node_modules/.bin/tsc -p .
  chmod +x dist/src/cli/*.js # runnable directly too (package.json "bin" is bin/*.js)
  touch dist/.stamp
fi

[ "$js_only" = 1 ] && exit 0
mkdir -p test/tools/bin
if newer test/tools/bin/mpload test/tools/mpload.c; then
  echo "build: test workload"
  cc -O2 -Wall -pthread -o test/tools/bin/mpload test/tools/mpload.c
fi
