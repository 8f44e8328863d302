#!/usr/bin/env bash
# npm run test:install: what `npm install rdma-graceful` gives a user, checked from the tarballs.
#   1. packs the main package and this machine's platform package (scripts/package.sh, no cross build),
#   2. installs both tarballs into an empty app with cargo/rustc OFF the PATH and npm offline, with an
#      empty cache and a registry that does not exist: nothing but the two local tarballs can come in,
#   3. runs the README's API sample (both blocks, with a client that dies in between) as CommonJS
#      and as ESM, type-checks it and the type-test fixtures with `tsc --noEmit` (strict, nodenext),
#      and runs `npx rdma-graceful --help`.
# Fails if any step fails. TEST_INSTALL_KEEP=1 keeps the temporary app (its path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
say() { printf '[test:install] %s\n' "$*" >&2; }
die() { printf '[test:install] FAILED: %s\n' "$*" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/rdma-graceful-install.XXXXXX")
if [ "${TEST_INSTALL_KEEP:-0}" = 1 ]; then say "keeping $TMP"; else trap 'rm -rf "$TMP"' EXIT; fi

# 1. The tarballs.
PACKAGE_OUT="$TMP/tarballs" PACKAGE_SKIP_CROSS=1 bash scripts/package.sh
VERSION=$(node -p "require('./package.json').version")
HOST=$(node -p "require('./dist/native-load').platformTriple(process.platform, process.arch, false)")
MAIN="$TMP/tarballs/rdma-graceful-$VERSION.tgz"
NATIVE="$TMP/tarballs/rdma-graceful-$HOST-$VERSION.tgz"
[ -f "$MAIN" ] && [ -f "$NATIVE" ] || die "package.sh did not write $MAIN and $NATIVE"

# 2. An empty app; no Rust, no network.
NO_RUST_PATH=""
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -n "$d" ] || continue
  if [ -e "$d/cargo" ] || [ -e "$d/rustc" ]; then continue; fi
  NO_RUST_PATH="${NO_RUST_PATH:+$NO_RUST_PATH:}$d"
done
export PATH="$NO_RUST_PATH"
if command -v cargo >/dev/null || command -v rustc >/dev/null; then die "cargo is still on the PATH"; fi
unset NAPI_RS_NATIVE_LIBRARY_PATH CARGO RUSTC npm_config_nodedir || true
APP="$TMP/app"
mkdir -p "$APP"
bash "$ROOT/scripts/offline-npmrc.sh" "$TMP"
export npm_config_userconfig="$TMP/npmrc" npm_config_globalconfig="$TMP/npmrc-global"
cd "$APP"
printf '{ "name": "app", "version": "1.0.0", "private": true }\n' >package.json
say "npm install $(basename "$MAIN") $(basename "$NATIVE") (cargo off the PATH, offline, empty cache)"
if ! npm install "$MAIN" "$NATIVE" >"$TMP/install.log" 2>&1; then
  cat "$TMP/install.log" >&2
  die "npm install of the tarballs failed"
fi
sed 's/^/  | /' "$TMP/install.log" >&2
[ -f "node_modules/rdma-graceful-$HOST/rdma-graceful.$HOST.node" ] || die "the platform package has no binary"
if find node_modules/rdma-graceful -name '*.node' | grep -q .; then die "the main package ships a .node"; fi

# 3a. The README's sample (scripts/readme-sample.sh: its two API blocks, a client that dies between them).
bash "$ROOT/scripts/readme-sample.sh" .

run_sample() { # file
  say "node $1"
  if ! node "$1" >"$1.out" 2>"$1.err"; then
    cat "$1.out" "$1.err" >&2
    die "node $1 exited with an error"
  fi
  sed 's/^/  | /' "$1.out" "$1.err" >&2
  grep -q '^sample ok' "$1.out" || die "$1 did not finish"
  # The dying client must have reached the sample's catch (and not crashed the process).
  grep -q 'ConnectionDownError' "$1.err" || die "$1: the dying client did not reach the sample's catch"
}
run_sample sample.cjs
run_sample sample.mjs

# 3b. TypeScript: the sample and the type-test fixtures, strict, nodenext, against the installed types.
mkdir -p node_modules/@types
ln -s "$ROOT/node_modules/@types/node" node_modules/@types/node
cp "$ROOT/__test__/types/fixture.ts" "$ROOT/__test__/types/fixture-esm.mts" .
cat >tsconfig.json <<'JSON'
{
  "compilerOptions": {
    "target": "ES2022",
    "module": "nodenext",
    "moduleResolution": "nodenext",
    "types": ["node"],
    "strict": true,
    "noEmit": true,
    "skipLibCheck": false
  },
  "files": ["sample.mts", "fixture.ts", "fixture-esm.mts"]
}
JSON
say "tsc --noEmit (strict, nodenext): sample.mts fixture.ts fixture-esm.mts"
node "$ROOT/node_modules/typescript/bin/tsc" -p tsconfig.json || die "tsc found errors in the installed package's types"

# 3c. The command line.
say "npx rdma-graceful --help"
npx --no-install rdma-graceful --help >help.out 2>&1 || { cat help.out >&2; die "npx rdma-graceful --help failed"; }
sed 's/^/  | /' help.out >&2
grep -q '^usage: rdma-graceful <command>' help.out || die "npx rdma-graceful --help did not print the usage"

say "OK: installed from $(basename "$MAIN") + $(basename "$NATIVE") without Rust or network; CJS, ESM, tsc and the CLI work"
