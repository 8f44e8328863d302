#!/usr/bin/env bash
# Counts what one 64 B round trip costs the client: syscalls and wake-ups (epoll waits), with
# strace -c attached for the round trips only, for ours over rdma and tcp, raw node:net, and
# ib_send_lat -e (whole runs of 5 and N round trips, subtracted); and a CPU profile of ours over
# rdma (node --cpu-prof, the whole client run). Client and server in two processes.
#
#   scripts/softroce/run.sh 'export TSX_TSCONFIG_PATH=tsconfig.json; bash bench/syscalls.sh'   (in the guest)
#   BENCH_SYSCALLS_TRANSPORTS=tcp bash bench/syscalls.sh                                        (tcp only, anywhere)
#
# Env: BENCH_SYSCALLS_N (round trips, default 2000), BENCH_OPTS (JSON options for ours, e.g.
# '{"rdmaBusyPollUs":100}'). Output: a table on stdout; profiles and strace summaries under
# bench/out/prof/ (BENCH_PROF_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_SYSCALLS_N:-2000}
HOST=${SOFTROCE_IP:-127.0.0.1}
OPTS=${BENCH_OPTS:-{\}}
PROF=${BENCH_PROF_DIR:-bench/out/prof}
transports=${BENCH_SYSCALLS_TRANSPORTS:-rdma tcp}
tmp=$(mktemp -d)
mkdir -p "$PROF"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT

# start_peer NAME ARGS...: a bench/peer-process.ts in the background, its stdin a fifo kept open
# (not in a subshell: the fifo's writer must outlive the call); sets PORT.
start_peer() {
  local name=$1; shift
  mkfifo "$tmp/$name.in"
  node --import tsx bench/peer-process.ts "$@" <"$tmp/$name.in" >"$tmp/$name.out" &
  pids+=($!)
  exec {fd}>"$tmp/$name.in"
  for _ in $(seq 1200); do grep -q '^port ' "$tmp/$name.out" 2>/dev/null && break; sleep 0.1; done
  PORT=$(awk '/^port / {print $2; exit}' "$tmp/$name.out")
}

# counts FILE: "calls epoll_waits" from an strace -c summary (calls is the 4th column).
counts() {
  awk '$NF == "total" {calls = $4} $NF ~ /^epoll_(p)?wait$/ {w += $4} END {printf "%d %d", calls, w}' "$1"
}

# per_rtt LABEL CMD...: runs the client CMD --attach, traces its N round trips, prints a row.
per_rtt() {
  local label=$1; shift
  coproc CLIENT { "$@" --n "$N" --attach; }
  local line pid spid
  read -r line <&"${CLIENT[0]}"
  pid=${line#ready }
  strace -f -c -o "$tmp/trace" -p "$pid" 2>/dev/null & spid=$!
  sleep 2
  echo go >&"${CLIENT[1]}"
  read -r line <&"${CLIENT[0]}"
  kill -INT "$spid"; wait "$spid" || true
  echo end >&"${CLIENT[1]}"
  wait "$CLIENT_PID" || true
  read -r c w <<<"$(counts "$tmp/trace")"
  awk -v l="$label" -v c="$c" -v w="$w" -v n="$N" 'BEGIN {printf "| %s | %.1f | %.1f |\n", l, c / n, w / n}'
  cp "$tmp/trace" "$PROF/strace-${label// /-}.txt"
}

echo "| client, 64 B round trip ($N) | syscalls per round trip | epoll waits per round trip |"
echo "| --- | --- | --- |"
start_peer raw --kind raw --mode echo
per_rtt "raw node:net tcp" node --import tsx bench/rtt-client.ts --kind raw --port "$PORT"
for t in $transports; do
  h=127.0.0.1; [ "$t" = rdma ] && h=$HOST
  start_peer "ours-$t" --kind ours --mode echo --transport "$t" --host "$h" --opts "$OPTS"
  port=$PORT
  per_rtt "ours $t" node --import tsx bench/rtt-client.ts --kind ours --transport "$t" --host "$h" --port "$port" --opts "$OPTS"
  if [ "$t" = rdma ]; then
    rm -f "$PROF"/*.cpuprofile
    node --cpu-prof --cpu-prof-dir="$PROF" --import tsx bench/rtt-client.ts --kind ours --transport rdma \
      --host "$h" --port "$port" --opts "$OPTS" --n "$N" --dist </dev/null
  fi
done
if [[ " $transports " == *" rdma "* ]] && command -v ib_send_lat >/dev/null; then
  # ib_send_lat -e: the device's own event path (whole runs of 5 and N round trips, subtracted).
  lat=(ib_send_lat -d "${SOFTROCE_DEV:-rxe0}" -x "${SOFTROCE_GID_INDEX:-1}" -s 64 -e)
  for n in 5 "$N"; do
    "${lat[@]}" -n "$n" >/dev/null 2>&1 & pids+=($!)
    sleep 1
    strace -f -c -o "$tmp/lat$n" "${lat[@]}" -n "$n" "$HOST" >/dev/null 2>&1
  done
  read -r c0 w0 <<<"$(counts "$tmp/lat5")"
  read -r c1 w1 <<<"$(counts "$tmp/lat$N")"
  awk -v c="$((c1 - c0))" -v n="$((N - 5))" 'BEGIN {printf "| ib_send_lat -e | %.1f | 0 (blocks in read on the channel) |\n", c / n}'
fi
if ls "$PROF"/*.cpuprofile >/dev/null 2>&1; then
  echo
  node bench/profile-top.js "$PROF"/*.cpuprofile
fi
