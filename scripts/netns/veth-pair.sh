#!/usr/bin/env bash
# Two network namespaces joined by a veth pair, for partition tests. Needs root and iproute2.
# Addresses are private and exist only inside the two namespaces: <name>a has 10.200.0.1/30 on
# <name>a0, <name>b has 10.200.0.2/30 on <name>b0. The host's own namespace is not touched.
#
#   veth-pair.sh create NAME   make both namespaces and the pair (NAME: at most 12 characters)
#   veth-pair.sh cut NAME      partition: both ends of the pair down (nothing passes, no reset)
#   veth-pair.sh heal NAME     both ends up again
#   veth-pair.sh destroy NAME  remove both namespaces (and the pair); safe to repeat
#   veth-pair.sh check         exit 0 when namespaces can be made here, else say why
set -euo pipefail

cmd=${1:-}
name=${2:-}
need_name() { [ -n "$name" ] && [ ${#name} -le 12 ] || { echo "veth-pair.sh: NAME of 1..12 characters required" >&2; exit 2; }; }

case "$cmd" in
  check)
    command -v ip >/dev/null || { echo "iproute2 (ip) is not installed"; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "not root (network namespaces need CAP_SYS_ADMIN)"; exit 1; }
    probe="rgchk$$"
    if ! out=$(ip netns add "$probe" 2>&1); then echo "ip netns add failed: $out"; exit 1; fi
    if ! out=$(ip -n "$probe" link add "${probe}x" type veth peer name "${probe}y" 2>&1); then
      ip netns del "$probe" 2>/dev/null || true
      echo "veth pairs unavailable: $out"; exit 1
    fi
    ip netns del "$probe"
    ;;
  create)
    need_name
    ip netns add "${name}a"
    ip netns add "${name}b"
    ip -n "${name}a" link add "${name}a0" type veth peer name "${name}b0" netns "${name}b"
    ip -n "${name}a" addr add 10.200.0.1/30 dev "${name}a0"
    ip -n "${name}b" addr add 10.200.0.2/30 dev "${name}b0"
    for s in a b; do
      ip -n "${name}$s" link set lo up
      ip -n "${name}$s" link set "${name}${s}0" up
    done
    ;;
  cut)
    need_name
    ip -n "${name}a" link set "${name}a0" down
    ip -n "${name}b" link set "${name}b0" down
    ;;
  heal)
    need_name
    ip -n "${name}a" link set "${name}a0" up
    ip -n "${name}b" link set "${name}b0" up
    ;;
  destroy)
    need_name
    ip netns del "${name}a" 2>/dev/null || true
    ip netns del "${name}b" 2>/dev/null || true
    ;;
  *)
    echo "usage: $0 create|cut|heal|destroy NAME | check" >&2
    exit 2
    ;;
esac
