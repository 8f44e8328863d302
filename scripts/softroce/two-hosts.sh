#!/usr/bin/env bash
# Runs one shell command in each of two throw-away Soft-RoCE qemu guests, a (10.99.1.1) and b
# (10.99.1.2), from the repository root. Each has its own rxe0 on its own NIC; the two NICs are
# joined by a virtual wire, so RDMA (and tcp) traffic between them really crosses a link that `tc` in
# a guest can cut, and a guest can vanish (`echo o > /proc/sysrq-trigger`).
#
#   scripts/softroce/two-hosts.sh 'command for a' 'command for b'
#
# Inside: SOFTROCE_HOST (a|b), SOFTROCE_IP, SOFTROCE_PEER_IP, SOFTROCE_NETDEV (eth0), SOFTROCE_SHARED
# (a fresh directory both guests see). Cutting and healing the wire, in a guest (both directions,
# silent: no event on either side; takes ~0.4 s to apply): scripts/softroce/wire.sh cut|heal.
# Exit status: a's; if that is 0, b's when b's command failed (b powering itself off is not a
# failure); 124 timeout, 125 a guest failed, 126 setup failed. Details: softroce.sh.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -ne 2 ]; then
  echo "usage: $0 'command for a' 'command for b'" >&2
  exit 2
fi
cd "$root"
start=$(date +%s)
set +e
bash "$root/scripts/softroce/softroce.sh" two "cd '$root' && $1" "cd '$root' && $2"
rc=$?
set -e
echo "softroce: two-host run took $(( $(date +%s) - start )) s (exit $rc)" >&2
exit $rc
