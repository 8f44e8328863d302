#!/usr/bin/env bash
# Builds the rdma crate's Rust tests on the host, copies the test binaries under target/softroce/
# (the guest's /tmp is empty, the repository is shared read-write), then runs them inside the
# Soft-RoCE guest, with RDMA_REQUIRED=1: a test that finds no device fails there instead of skipping.
# Extra arguments go to each test binary (e.g. a test name filter).
#
#   scripts/softroce/rust-tests.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out="$root/target/softroce"
mkdir -p "$out"
rm -f "$out"/*

# The executables cargo built, from its JSON messages (no jq needed).
bins=$(cargo test -p rdma-graceful-rdma --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*"' | sed 's/"executable":"\(.*\)"/\1/')
[ -n "$bins" ] || { echo "rust-tests.sh: cargo built no test binaries" >&2; exit 1; }
names=()
for b in $bins; do
  cp "$b" "$out/"
  names+=("$(basename "$b")")
done

args=$(printf ' %q' "$@")
cmd="export RDMA_REQUIRED=1; ibv_devices; rc=0"
for n in "${names[@]}"; do
  cmd="$cmd; echo '=== $n'; target/softroce/$n --test-threads=1 --nocapture$args || rc=1"
done
cmd="$cmd; exit \$rc"
exec "$root/scripts/softroce/run.sh" "$cmd"
