#!/usr/bin/env bash
# Builds the container image (Containerfile) without any container registry, as root:
#  1. a Debian 12 root filesystem, debootstrap --variant=minbase, from the mirror apt is
#     configured with, into build/image/rootfs (kept: later runs reuse it; rm -rf it to refresh),
#     with the host's apt sources and configuration copied in so that apt-get works in builds;
#  2. imported as the base image localhost/meshprobe-base:bookworm (kept too, re-imported only
#     when missing);
#  3. the host's Node (package.json engines wants 20.17+, Debian 12 has 18) staged as
#     build/image/node.tar: the node binary, its headers (node-gyp builds the addon against them,
#     offline) and npm;
#  4. the npm packages the lock file names, put in the host's npm cache by the host's npm;
#  5. podman build on top, with the host's apt and npm caches mounted as overlays (writes stay in
#     the build): apt fetches only what the host has not, npm ci runs --offline.
# Prints the image's name, ID and size. Needs podman, runc and debootstrap (scripts/setup.sh).
#   scripts/image.sh [--tag NAME]   (default localhost/meshprobe:<package.json version>)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
version=$(node -p 'require("./package.json").version')
tag=localhost/meshprobe:$version
if [ "${1:-}" = "--tag" ]; then
  tag=${2:?usage: scripts/image.sh [--tag NAME]}
elif [ -n "${1:-}" ]; then
  echo "usage: scripts/image.sh [--tag NAME]" >&2
  exit 2
fi
base=localhost/meshprobe-base:bookworm
work=build/image
rootfs=$work/rootfs
[ "$(id -u)" = 0 ] || { echo "image: run as root (debootstrap, podman)" >&2; exit 1; }
for c in podman runc debootstrap; do
  command -v "$c" >/dev/null || { echo "image: $c is missing: run scripts/setup.sh" >&2; exit 1; }
done
# This project's podman settings: runc (crun refuses a hybrid cgroup layout), and ulimits the
# machine allows (podman's defaults may exceed the hard limits, then every container fails).
export CONTAINERS_CONF=$root/$work/containers.conf
mkdir -p "$work"
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
cat >"$CONTAINERS_CONF.tmp" <<EOF
# written by scripts/image.sh
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"
t0=$(date +%s)

# 1. the root filesystem (not needed when the base image is already in podman's storage)
if ! podman image exists "$base" && [ ! -e "$rootfs/.meshprobe-complete" ]; then
  # the first deb URI apt uses for Debian's main archive
  mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    sed -n 's/^URIs: *//p; s/^deb \(\[[^]]*\] \)\?\([^ ]*\) bookworm .*/\2/p' | grep -v security | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "image: debootstrap bookworm from $mirror into $rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --cache-dir=/var/cache/apt/archives bookworm "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  rm -f "$rootfs"/etc/apt/sources.list "$rootfs"/etc/apt/sources.list.d/*
  [ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$rootfs/etc/apt/"
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && cp "$f" "$rootfs/etc/apt/sources.list.d/"
  done
  cp /etc/apt/apt.conf.d/* "$rootfs/etc/apt/apt.conf.d/"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  touch "$rootfs/.meshprobe-complete"
fi
# 2. the base image
if ! podman image exists "$base"; then
  echo "image: importing $rootfs as $base"
  tar --exclude=./.meshprobe-complete -C "$rootfs" -c . | podman import - "$base" >/dev/null
fi
# 3. Node 20 from the host
node_bin=$(command -v node)
node_prefix=$(dirname "$(dirname "$(readlink -f "$node_bin")")")
"$node_bin" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a===20&&b>=17||a===22&&b>=9||a>22?0:1)' ||
  { echo "image: the host's node is $("$node_bin" -v); package.json engines wants >=20.17 <21 || >=22.9" >&2; exit 1; }
[ -f "$node_prefix/include/node/node_api.h" ] ||
  { echo "image: no Node headers in $node_prefix/include/node (the addon is built against them)" >&2; exit 1; }
[ -d "$node_prefix/lib/node_modules/npm" ] || { echo "image: no npm in $node_prefix/lib/node_modules" >&2; exit 1; }
stage=$work/node-stage
rm -rf "$stage" && mkdir -p "$stage/usr/bin" "$stage/usr/include" "$stage/usr/lib/node_modules"
cp -a "$(readlink -f "$node_bin")" "$stage/usr/bin/node"
cp -a "$node_prefix/include/node" "$stage/usr/include/"
cp -a "$node_prefix/lib/node_modules/npm" "$stage/usr/lib/node_modules/"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$stage/usr/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$stage/usr/bin/npx"
tar -C "$stage" -cf "$work/node.tar.tmp" usr && mv "$work/node.tar.tmp" "$work/node.tar"
rm -rf "$stage"
# 4. the npm packages of package-lock.json, in the host's npm cache (fetched by the host's npm, as
# it is configured), so that the build's npm ci runs --offline against that cache
npm_cache=$(npm config get cache)
if ! cmp -s package-lock.json "$work/npm-cached.lock"; then
  echo "image: npm ci on the host, to fill its npm cache ($npm_cache)"
  tmp=$(mktemp -d)
  cp package.json package-lock.json "$tmp/"
  (cd "$tmp" && npm ci --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null) ||
    { rm -rf "$tmp"; echo "image: npm ci failed" >&2; exit 1; }
  rm -rf "$tmp"
  cp package-lock.json "$work/npm-cached.lock"
fi
# 5. the image
echo "image: building $tag"
podman build --runtime runc --pull=never --network host \
  -v /var/cache/apt/archives:/var/cache/apt/archives:O \
  -v "$npm_cache:/root/.npm:O" \
  --build-arg "NODE_VERSION=$("$node_bin" -v)" \
  -t "$tag" -f Containerfile . >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; exit 1; }
# the build stage's last images of earlier builds (another source tree; untagged, no children): all
# but this build's (the next build's cache; the layers they share stay)
current=$(grep -B1 '^\[2/2\] STEP 1/' "$work/build.log" | sed -n 's/^--> \([0-9a-f]\{11,\}\)$/\1/p')
if [ -n "$current" ]; then
  podman images -q --no-trunc --filter dangling=true --filter label=io.meshprobe.stage=build |
    sed 's/^sha256://' | { grep -v "^$current" || true; } | xargs -r podman rmi >/dev/null 2>&1 ||
    echo "image: could not remove old build-stage images" >&2
fi
id=$(podman image inspect --format '{{.Id}}' "$tag")
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "image: $tag ${id:0:12}, $((size / 1000000)) MB, built in $(($(date +%s) - t0)) s (log: $work/build.log)"
