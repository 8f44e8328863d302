#!/usr/bin/env bash
# Builds the rdma crate's Rust tests on the host, copies the test binaries under target/softroce/
# (the guest's /tmp is empty, the repository is shared read-write) with target/softroce/run-tests.sh,
# which runs each of them with RDMA_REQUIRED=1 (a test that finds no device fails instead of
# skipping), then runs that inside a Soft-RoCE guest of its own. Extra arguments go to each test
# binary (e.g. a test name filter).
#
#   scripts/softroce/rust-tests.sh [ARGS]             build, then run them in a guest
#   scripts/softroce/rust-tests.sh --prepare [ARGS]   build only: scripts/test-rdma.sh runs
#                                                     `bash target/softroce/run-tests.sh` in the
#                                                     guest it boots for the ava RDMA suite
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
prepare_only=0
if [ "${1:-}" = --prepare ]; then
  prepare_only=1
  shift
fi
out="$root/target/softroce"
mkdir -p "$out"
rm -f "$out"/*

# The executables cargo built, from its JSON messages (no jq needed).
bins=$(cargo test -p rdma-graceful-rdma --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*"' | sed 's/"executable":"\(.*\)"/\1/')
[ -n "$bins" ] || { echo "rust-tests.sh: cargo built no test binaries" >&2; exit 1; }
args=
[ $# -eq 0 ] || args=$(printf ' %q' "$@")
{
  echo '#!/usr/bin/env bash'
  echo '# Written by scripts/softroce/rust-tests.sh: runs the rdma crate'"'"'s test binaries (in the guest).'
  echo 'export RDMA_REQUIRED=1'
  echo 'rc=0'
  for b in $bins; do
    cp "$b" "$out/"
    n=$(basename "$b")
    echo "echo '=== $n'; target/softroce/$n --test-threads=1 --nocapture$args || rc=1"
  done
  echo 'exit $rc'
} >"$out/run-tests.sh"

[ "$prepare_only" = 1 ] && exit 0
exec "$root/scripts/softroce/run.sh" 'ibv_devices; bash target/softroce/run-tests.sh'
