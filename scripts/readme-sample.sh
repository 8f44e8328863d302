#!/usr/bin/env bash
# bash scripts/readme-sample.sh <dir>: writes the README's API sample, as a user would paste it, to
# <dir>/sample.mjs (ESM), sample.cjs (CommonJS) and sample.mts (for tsc): the two ```ts blocks of
# README.md's "## API" section, with a client that dies between them (the server must carry on)
# and checks of what the sample must have done; it prints "sample ok: ..." last. Used by
# test-install.sh (on this machine) and test-platforms.sh (arm64 under emulation, old glibc).
set -euo pipefail
README="$(cd "$(dirname "$0")/.." && pwd)/README.md"
die() { printf '[readme-sample] error: %s\n' "$*" >&2; exit 1; }
[ $# -eq 1 ] && [ -d "$1" ] || die "usage: bash scripts/readme-sample.sh <existing dir>"
cd "$1"
rm -f block1.txt block2.txt
awk '/^## API/ { api = 1; next } api && /^### / { exit } api && /^```ts/ { n++; on = 1; next } api && /^```/ { on = 0; next } on { print > ("block" n ".txt") }' "$README"
[ -s block1.txt ] && [ -s block2.txt ] || die "README.md's API section no longer has its two sample blocks"
grep -q "^import { listen, connect } from 'rdma-graceful'$" block1.txt || die "README sample does not import from 'rdma-graceful'"
{
  cat block1.txt
  cat <<'JS'
// -- test: a client that dies in the middle of its echo; the server must carry on.
{
  const victim = await connect({ port: server.port })
  await victim.send('ping')
  await victim.read()
  victim.destroy()
  await victim.closed
  await new Promise((resolve) => setTimeout(resolve, 300))
}
JS
  cat block2.txt
  cat <<'JS'
// -- test: what the sample must have done.
if (reply === null || reply.toString() !== 'hello') throw new Error(`echo replied ${String(reply)}`)
if (result.outcome !== 'graceful') throw new Error(`close was ${result.outcome} (${result.reason})`)
console.log(`sample ok: echo 'hello', close ${result.outcome} (${result.reason})`)
JS
} >sample.mjs
rm -f block1.txt block2.txt
cp sample.mjs sample.mts
{
  echo "(async () => {"
  sed "s/^import { listen, connect } from 'rdma-graceful'$/const { listen, connect } = require('rdma-graceful')/" sample.mjs
  echo "})().catch((err) => { console.error(err); process.exit(1) })"
} >sample.cjs
