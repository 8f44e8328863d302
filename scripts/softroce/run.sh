#!/usr/bin/env bash
# Runs one shell command inside a throw-away Soft-RoCE (rdma_rxe) qemu guest, from the repository
# root, so the RDMA suite runs on a real RDMA device on machines (and CI) that have none.
#
#   scripts/softroce/run.sh 'ibv_devices && target/softroce/some-test-binary'
#
# The guest is the project's own (softroce.sh, next to this file: what it installs and caches, and
# every knob, are described there). Inside the guest: SOFTROCE_IP (10.99.0.1) is the address to use
# (rdma-cm does not work on 127.0.0.1); /tmp is an empty tmpfs, so build on the host and keep
# binaries under the repository, which the guest shares read-write.
# Exit status: the command's; 124 guest timeout (SOFTROCE_TIMEOUT); 125 guest failed; 126 setup failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -lt 1 ]; then
  echo "usage: $0 'command to run in the guest (from the repository root)'" >&2
  exit 2
fi
cd "$root"
start=$(date +%s)
set +e
bash "$root/scripts/softroce/softroce.sh" one "cd '$root' && $*"
rc=$?
set -e
echo "softroce: guest run took $(( $(date +%s) - start )) s (exit $rc)" >&2
exit $rc
