#!/usr/bin/env bash
# The benchmark integration: the probes in the background during a load test,
# then analyze-latency and the combined HTML report.
#
#   sudo bash bench/load-test-report.sh [--out DIR] [--requests N] [--concurrency C]
#                                       [--sleeps LIST_US] [--sidecar-delay-ms D] [--no-mesh]
#                                       [--istio-metrics FILE] [--cilium-metrics FILE]
#
# The load is the project's own: test/tools/mpload, an HTTP/1.1 client that
# times every request itself, against an mpload server that sleeps what it
# is asked. By default they sit in two network namespaces made here, like two
# pods, each with a haproxy sidecar (Debian's haproxy):
#
#   [pod A] mpload client -> haproxy outbound 127.0.0.1:15001 -> veth ->
#   [pod B] haproxy inbound 10.231.0.2:15006 -> mpload server 127.0.0.1:8080
#
# --no-mesh: the client talks to the server on loopback, no namespaces.
# latency-probe, connection-tracker and packet-drop-probe run around the load
# (filtered to those namespaces); then analyze-latency (against the Istio or
# Hubble metrics you give, if any) and generate-report write DIR/report.html.
# Everything made here is removed on exit (processes by PID, namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

OUT=results
REQUESTS=3000
CONCURRENCY=4
SLEEPS=0,1000,2000,5000
DELAY=0
MESH=1
LOAD_FAILED=0
ISTIO=
CILIUM=
while (($#)); do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --sleeps) SLEEPS=$2; shift 2 ;;
    --sidecar-delay-ms) DELAY=$2; shift 2 ;;
    --no-mesh) MESH=0; shift ;;
    --istio-metrics) ISTIO=$2; shift 2 ;;
    --cilium-metrics) CILIUM=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "load-test-report: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$REQUESTS" =~ ^[1-9][0-9]*$ && "$CONCURRENCY" =~ ^[1-9][0-9]*$ && "$DELAY" =~ ^[0-9]+$ ]] ||
  { echo "load-test-report: --requests, --concurrency and --sidecar-delay-ms take whole numbers" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "load-test-report: run it as root (the probes load BPF programs): sudo bash $0" >&2; exit 3; }
if ((MESH)) && ! command -v haproxy >/dev/null; then
  echo "load-test-report: haproxy is missing: apt-get install haproxy, or run with --no-mesh" >&2; exit 2
fi
for f in "$ISTIO" "$CILIUM"; do
  [ -z "$f" ] || [ -r "$f" ] || { echo "load-test-report: cannot read '$f'" >&2; exit 2; }
done
[ -x dist/src/cli/latency-probe.js ] || [ -f dist/src/cli/latency-probe.js ] || bash scripts/setup.sh
if [ ! -x test/tools/bin/mpload ] || [ test/tools/mpload.c -nt test/tools/bin/mpload ]; then
  mkdir -p test/tools/bin && cc -O2 -pthread -o test/tools/bin/mpload test/tools/mpload.c
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/meshprobe-loadtest.XXXXXX)
TAG=$$
NS_A=mpload-a-$TAG
NS_B=mpload-b-$TAG
PIDS=()
cleanup() {
  local rc=$?
  # on a failure, keep the probes' own output next to the results
  if ((rc != 0)); then cp "$WORK"/*.out "$OUT"/ 2>/dev/null || true; fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if ((MESH)); then ip netns del "$NS_A" 2>/dev/null || true; ip netns del "$NS_B" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'echo "load-test-report: failed at line $LINENO: $BASH_COMMAND (logs in $OUT)" >&2' ERR

inns() { local ns=$1; shift; if ((MESH)); then ip netns exec "$ns" "$@"; else "$@"; fi; }
wait_listen() { # ns port
  for _ in $(seq 100); do
    inns "$1" ss -Hltn "sport = :$2" | grep -q . && return 0
    sleep 0.05
  done
  echo "load-test-report: nothing listens on port $2" >&2; return 1
}

if ((MESH)); then
  ip netns add "$NS_A"; ip netns add "$NS_B"
  ip link add mpla netns "$NS_A" type veth peer name mplb netns "$NS_B"
  ip -n "$NS_A" addr add 10.231.0.1/24 dev mpla; ip -n "$NS_B" addr add 10.231.0.2/24 dev mplb
  for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
  ip -n "$NS_A" link set mpla up; ip -n "$NS_B" link set mplb up
  sidecar() { # ns name bind server
    cat > "$WORK/$2.cfg" <<EOF
global
  log stdout format raw local0
  nbthread 1
  lua-load $WORK/delay.lua
defaults
  mode http
  log global
  log-format "%ci:%cp %Ta %Tr %ST"
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend $2
  bind $3
$( ((DELAY)) && echo "  http-request lua.sidecar_delay")
  default_backend upstream
backend upstream
  http-reuse always
  server up $4
EOF
    ip netns exec "$1" haproxy -db -f "$WORK/$2.cfg" > "$OUT/haproxy-$2.log" 2>&1 &
    PIDS+=($!)
  }
  echo "core.register_action(\"sidecar_delay\", { \"http-req\" }, function(txn) core.msleep($DELAY) end)" > "$WORK/delay.lua"
fi

# started directly, not through a function, so that $! is mpload itself (`ip netns exec` execs)
SRV=(test/tools/bin/mpload server --listen 127.0.0.1 --port 8080 --http --max-spinners "$CONCURRENCY")
if ((MESH)); then ip netns exec "$NS_B" "${SRV[@]}" > "$OUT/server.json" 2> "$WORK/server.out" &
else "${SRV[@]}" > "$OUT/server.json" 2> "$WORK/server.out" &
fi
SERVER=$!; PIDS+=($SERVER)
wait_listen "$NS_B" 8080
TARGET_PORT=8080
FILTER=(--filter port=8080)
if ((MESH)); then
  sidecar "$NS_B" inbound 10.231.0.2:15006 127.0.0.1:8080
  sidecar "$NS_A" outbound 127.0.0.1:15001 10.231.0.2:15006
  wait_listen "$NS_B" 15006; wait_listen "$NS_A" 15001
  TARGET_PORT=15001
  FILTER=(--filter "netns=$NS_A,$NS_B")
fi

# the probes in the background, each until SIGINT (their reports are written then)
probe() { # name output
  node "dist/src/cli/$1.js" "${FILTER[@]}" --output "$OUT/$2" --no-progress > "$WORK/$1.out" 2>&1 &
  PIDS+=($!)
  eval "PROBE_${1//-/_}=$!"
  for _ in $(seq 200); do
    grep -q "measuring" "$WORK/$1.out" && return 0
    kill -0 "$!" 2>/dev/null || { echo "load-test-report: $1 failed: $(tail -n 3 "$WORK/$1.out")" >&2; return 1; }
    sleep 0.05
  done
  echo "load-test-report: $1 did not start in 10 s: $(tail -n 3 "$WORK/$1.out")" >&2; return 1
}
probe latency-probe ebpf-latency.json
probe connection-tracker connections.json
probe packet-drop-probe drops.json
PROBES=("$PROBE_latency_probe" "$PROBE_connection_tracker" "$PROBE_packet_drop_probe")

echo "load-test-report: $REQUESTS requests, $CONCURRENCY connections, sleeps $SLEEPS µs$( ((MESH)) && echo ", through two haproxy sidecars (+$DELAY ms each)")"
inns "$NS_A" test/tools/bin/mpload client --connect 127.0.0.1 --port "$TARGET_PORT" --http \
  --requests "$REQUESTS" --concurrency "$CONCURRENCY" --sleeps "$SLEEPS" > "$OUT/client.json" ||
  { LOAD_FAILED=1; echo "load-test-report: the load had failed requests (see $OUT/client.json); the reports are still written" >&2; }
sleep 0.3
for p in "${PROBES[@]}"; do kill -INT "$p" 2>/dev/null || { echo "load-test-report: a probe ended early (logs in $OUT)" >&2; exit 1; }; done
for p in "${PROBES[@]}"; do
  wait "$p" || { echo "load-test-report: a probe failed (logs in $OUT)" >&2; exit 1; }
done
kill "$SERVER"; wait "$SERVER" || true  # it writes its summary to server.json on SIGTERM

ANALYZE=(--ebpf-probe "$OUT/ebpf-latency.json")
[ -z "$ISTIO" ] || ANALYZE+=(--istio-metrics "$ISTIO")
[ -z "$CILIUM" ] || ANALYZE+=(--cilium-metrics "$CILIUM")
COMPARE=()
if [ -n "$ISTIO$CILIUM" ]; then
  node dist/src/cli/analyze-latency.js "${ANALYZE[@]}"
  node dist/src/cli/analyze-latency.js "${ANALYZE[@]}" --json --output "$OUT/analysis.json"
  COMPARE=(--compare "$OUT/analysis.json")
fi
node dist/src/cli/generate-report.js --include-ebpf-metrics "$OUT/ebpf-latency.json" \
  --connections "$OUT/connections.json" --drops "$OUT/drops.json" "${COMPARE[@]}" --output "$OUT/report.html"

node -e '
const [lat, cl] = process.argv.slice(1).map((f) => JSON.parse(require("fs").readFileSync(f, "utf8")));
const o = lat.metrics.overhead_analysis;
console.log(`client, as it timed itself: mean ${(cl.latency_us.mean / 1000).toFixed(3)} ms, p99 ${(cl.latency_us.p99 / 1000).toFixed(3)} ms (${cl.requests} requests, ${cl.errors} errors)`);
console.log(`latency-probe overhead_analysis: total ${o.total_ms} ms = application ${o.application_ms} + mesh ${o.mesh_processing_ms} + kernel ${o.kernel_processing_ms}`);
' "$OUT/ebpf-latency.json" "$OUT/client.json"
echo "load-test-report: $OUT/report.html (and ebpf-latency.json, connections.json, drops.json, client.json, server.json$( ((MESH)) && echo ", haproxy-*.log"))"
exit $LOAD_FAILED
