#!/usr/bin/env bash
# Runs one shell command inside a throw-away Soft-RoCE (rdma_rxe) qemu guest, from the repository
# root, so the RDMA suite runs on a real RDMA device on machines (and CI) that have none.
#
#   scripts/softroce/run.sh 'ibv_devices && scripts/softroce/in-guest-rust-tests.sh'
#
# This wraps run-in-softroce.sh (the shared recipe: Debian's kernel with rdma_rxe in qemu, the host's
# file system read-only, the repository read-write). Where that script lives:
#   $SOFTROCE_SCRIPT, else ../shared/softroce/ next to the checkout, else /work/shared/softroce/.
# Inside the guest: SOFTROCE_IP (10.99.0.1) is the address to use (rdma-cm does not work on
# 127.0.0.1); /tmp is an empty tmpfs, so build on the host and keep binaries under the repository.
# Exit status: the command's; 124 guest timeout (SOFTROCE_TIMEOUT); 125 guest failed; 126 setup
# failed or the script is missing.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
script=""
for c in "${SOFTROCE_SCRIPT:-}" "$root/../shared/softroce/run-in-softroce.sh" /work/shared/softroce/run-in-softroce.sh; do
  if [ -n "$c" ] && [ -x "$c" ]; then script=$c; break; fi
done
if [ -z "$script" ]; then
  echo "scripts/softroce/run.sh: run-in-softroce.sh not found (looked at \$SOFTROCE_SCRIPT," >&2
  echo "  $root/../shared/softroce/ and /work/shared/softroce/): the RDMA suite needs it to boot a" >&2
  echo "  Soft-RoCE guest. Set SOFTROCE_SCRIPT=/path/to/run-in-softroce.sh, or run the suite on a" >&2
  echo "  machine with an RDMA device directly." >&2
  exit 126
fi
if [ $# -lt 1 ]; then
  echo "usage: $0 'command to run in the guest (from the repository root)'" >&2
  exit 2
fi
cd "$root"
start=$(date +%s.%N)
set +e
"$script" "cd '$root' && $*"
rc=$?
set -e
echo "softroce: guest run took $(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || echo '?') s (exit $rc)" >&2
exit $rc
