#!/usr/bin/env bash
# npm run package: the release build a maintainer could publish.
#   1. builds the release addon for this machine (linux-x64-gnu) and cross-builds linux-arm64-gnu,
#      both linked against glibc 2.17 (scripts/build-native.sh, which installs what it needs: the
#      Rust target with rustup, napi-rs's cross toolchain from the npm registry),
#   2. moves each .node into its platform package npm/<platform>/ (`napi artifacts`),
#   3. checks every platform package holds a binary of the right architecture that needs no newer
#      glibc than its floor and links no library but glibc's (scripts/check-glibc-floor.js), and
#      that the versions of the main package, its optionalDependencies and the platform packages
#      all match,
#   4. writes the tarballs of the main package and of each platform package to packages/.
# Other platforms are built by .github/workflows/release.yml (CI only, not run here).
#
# Environment: PACKAGE_OUT=dir writes the tarballs there instead of packages/ (an absolute path);
# PACKAGE_SKIP_CROSS=1 skips the arm64 cross build and leaves its platform package out (said
# loudly; npm run test:install uses it, scripts/test-platforms.sh does not).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${PACKAGE_OUT:-packages}
say() { printf '[package] %s\n' "$*" >&2; }
die() { printf '[package] error: %s\n' "$*" >&2; exit 1; }
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

BIN=$(node -p "require('./package.json').napi.binaryName")
VERSION=$(node -p "require('./package.json').version")

# 1. Builds. setup.sh installs the npm dependencies, builds the host's release addon (napi build
#    --platform --release) and compiles the TypeScript (dist/, with the ESM entry).
bash scripts/setup.sh
rm -rf artifacts && mkdir -p artifacts
host_triple=$(node -p "require('./dist/native-load').platformTriple(process.platform, process.arch, false)")
[ "$host_triple" = linux-x64-gnu ] || die "this script builds on linux-x64-gnu; this is $host_triple"
cp "$BIN.linux-x64-gnu.node" artifacts/

arm64_missing=""
if [ "${PACKAGE_SKIP_CROSS:-0}" = 1 ]; then
  arm64_missing="skipped (PACKAGE_SKIP_CROSS=1)"
  say "WARNING: linux-arm64-gnu NOT built: $arm64_missing; its platform package is left out"
else
  bash scripts/build-native.sh aarch64-unknown-linux-gnu artifacts/arm64
  mv "artifacts/arm64/$BIN.linux-arm64-gnu.node" artifacts/
  rm -rf artifacts/arm64
fi

# 2. Into the platform packages (napi's convention: npm/<platform>/<binaryName>.<platform>.node).
rm -f npm/*/"$BIN".*.node
built_targets=$(node -p "JSON.stringify(require('./package.json').napi.targets.filter((t) => '$arm64_missing' === '' || !t.startsWith('aarch64-')))")
# napi artifacts insists on every configured target: give it the ones built (package.json's napi
# config with the targets narrowed).
node -e "const n = require('./package.json').napi; console.log(JSON.stringify({ ...n, targets: $built_targets }))" >artifacts/napi.json
npx napi artifacts --output-dir artifacts --npm-dir npm --config-path artifacts/napi.json >&2
rm -f "$BIN".linux-arm64-gnu.node # napi artifacts also copies into the root; only the host's belongs there

# 3. Checks.
expect_arch() { # file, readelf machine
  local machine
  machine=$(readelf -h "$1" | sed -n 's/^ *Machine: *//p')
  [ "$machine" = "$2" ] || die "$1 is built for '$machine', expected '$2'"
  say "$1: ELF shared object, $machine"
}
platforms=()
for dir in npm/*/; do
  platform=$(basename "$dir")
  pkg_version=$(node -p "require('./$dir/package.json').version")
  pkg_name=$(node -p "require('./$dir/package.json').name")
  [ "$pkg_name" = "$BIN-$platform" ] || die "$dir/package.json is named $pkg_name, expected $BIN-$platform"
  [ "$pkg_version" = "$VERSION" ] || die "$pkg_name is version $pkg_version, the main package $VERSION"
  optional=$(node -p "(require('./package.json').optionalDependencies || {})['$pkg_name'] || ''")
  [ "$optional" = "$VERSION" ] || die "package.json optionalDependencies lists $pkg_name at '$optional', expected $VERSION"
  file="$dir$BIN.$platform.node"
  if [ ! -f "$file" ]; then
    say "npm/$platform: no binary, not packed"
    continue
  fi
  case $platform in
    linux-x64-gnu) expect_arch "$file" "Advanced Micro Devices X86-64" ;;
    linux-arm64-gnu) expect_arch "$file" AArch64 ;;
    *) die "no architecture check for $platform" ;;
  esac
  node scripts/check-glibc-floor.js "$file" || die "$file is above its glibc floor or links a library it must not"
  platforms+=("$platform")
done

# 4. Tarballs.
rm -rf "$OUT" && mkdir -p "$OUT"
npm pack --silent --pack-destination "$OUT" >/dev/null
for platform in "${platforms[@]}"; do
  cp LICENSE "npm/$platform/LICENSE"
  (cd "npm/$platform" && npm pack --silent --pack-destination "$(cd "$ROOT" && realpath "$OUT")" >/dev/null)
done
main="$OUT/$BIN-$VERSION.tgz"
if tar -tzf "$main" | grep -q '\.node$'; then
  die "$main contains a .node binary: binaries belong in the platform packages"
fi
say "tarballs in $OUT/:"
(cd "$OUT" && ls -l *.tgz | awk '{ printf "  %-44s %9d bytes\n", $9, $5 }') >&2
[ -z "$arm64_missing" ] || say "(linux-arm64-gnu left out: $arm64_missing)"
