#!/usr/bin/env bash
# In a two-host Soft-RoCE guest (two-hosts.sh): cuts or heals this host's wire to the other.
#   wire.sh cut    drop everything leaving and arriving on $SOFTROCE_NETDEV: both directions go
#                  silent at once, the link stays up, neither side gets any event
#   wire.sh heal   remove both again
# (Egress netem alone is not a partition: the peer's packets still arrive. `ip link set eth0 down`
# is not silent: the local device gets IBV_EVENT_PORT_ERR.)
set -euo pipefail
dev=${SOFTROCE_NETDEV:?wire.sh runs inside a two-host Soft-RoCE guest}
case "${1:-}" in
  cut) printf '%s\n' "qdisc add dev $dev root netem loss 100%" "qdisc add dev $dev ingress" \
         "filter add dev $dev ingress matchall action drop" | tc -b - ;;
  heal) printf '%s\n' "qdisc del dev $dev root" "qdisc del dev $dev ingress" | tc -b - ;;
  *) echo "usage: $0 cut|heal" >&2; exit 2 ;;
esac
