#!/usr/bin/env bash
# Installs what is missing on a bare Debian 12 machine (Debian packages, npm
# packages) and builds whatever is stale. Quick when nothing is missing.
# --js: no Debian packages, only npm ci and the JavaScript side of the build
# (npm run test:unit, as any user).
set -euo pipefail
cd "$(dirname "$0")/.."
js_only=0
[ "${1:-}" = "--js" ] && js_only=1

# build: clang/llvm/libbpf/bpftool for bpf/, g++/python3/make for native/;
# test peers: iproute2 (netns, veth), nginx and wrk (overhead bench), curl;
# other kernels under qemu: qemu-system-x86, busybox-static, cpio;
# exporter peers the tests start themselves: victoria-metrics, influxdb (1.x),
# prometheus (with promtool); the sidecar proxy of the mesh-overhead test: haproxy;
# the browser that renders generate-report's HTML in its test: chromium (+ a font).
# npm run lint: clang-format-14 for bpf/ and native/.
# the container image (scripts/image.sh, test/image.test.ts): podman, runc, debootstrap.
# the simplest peer the cost bench compares the probes with (bench/cpu-cost.ts, bench/peer.bt): bpftrace.
APT_PKGS=(clang llvm libbpf-dev libelf-dev zlib1g-dev bpftool make gcc g++ python3
          iproute2 nginx-light wrk curl procps qemu-system-x86 busybox-static cpio
          victoria-metrics influxdb prometheus iptables openssl
          haproxy chromium fonts-dejavu-core clang-format-14
          podman runc debootstrap bpftrace)
missing=()
[ "$js_only" = 1 ] && APT_PKGS=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}: run this as root, or apt-get install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  # the server packages must not start their daemons: the tests start their own, on ports they choose
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  # and must not start them at the next boot either
  for svc in prometheus influxdb victoria-metrics haproxy; do
    if [[ " ${missing[*]} " == *" $svc "* ]] && command -v deb-systemd-helper >/dev/null; then
      deb-systemd-helper disable "$svc.service" >/dev/null 2>&1 ||
        echo "setup: could not disable $svc.service; stop it with systemctl disable $svc if it starts at boot" >&2
    fi
  done
  if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

stamp=node_modules/.meshprobe-lock
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  echo "setup: npm ci"
  npm ci --ignore-scripts --no-audit --no-fund
  cp package-lock.json "$stamp"
fi

if [ "$js_only" = 1 ]; then bash scripts/build.sh --js; else bash scripts/build.sh; fi
