#!/usr/bin/env bash
# Brings a fresh clone to a built state; cheap when nothing changed, so every entry point runs it.
#   - checks the toolchains (Node >= 20.17, Rust >= 1.88 with cargo),
#   - installs npm dependencies when package-lock.json is newer than node_modules,
#   - builds the native addon (napi build, release) against glibc 2.17 (scripts/build-native.sh: the
#     addon the tests load is the one that ships) and compiles the TypeScript to dist/ (with the
#     ESM entry dist/index.mjs, scripts/write-esm.js).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null || die "node is not installed (need Node.js >= 20.17)"
command -v npm >/dev/null || die "npm is not installed"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=17)?0:1)' ||
  die "Node.js $(node --version) is too old: need >= 20.17"
if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo is not installed (need Rust >= 1.88, e.g. from rustup or apt-get install cargo)"

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies"
  # npm ci refuses this lockfile (npm 11 omits other platforms' optional packages of @napi-rs/cli's
  # dependencies from it); install from the lock without rewriting it instead.
  npm install --no-save --no-audit --no-fund --loglevel=error
fi

bash scripts/build-native.sh

say "compiling TypeScript"
npx tsc -p tsconfig.build.json
node scripts/write-esm.js
