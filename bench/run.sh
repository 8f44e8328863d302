#!/usr/bin/env bash
# npm run bench: the benchmarks of issue 5, each against its anchor measured in the same run.
#   1. tcp on this machine (anchor: raw node:net), bench/suite.ts --transport tcp
#   2. rdma inside a Soft-RoCE qemu guest (anchor: ib_send_lat / ib_send_bw run in the same guest
#      run), bench/suite.ts --transport rdma; smaller counts there (TCG emulation is slow)
#   3. bench/report.ts writes bench/RESULTS.md from bench/out/*.json
# BENCH_SKIP_RDMA=1 skips the guest. Raw per-run data stays in bench/out/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# 1,000 connections with both ends in one process need ~2,000 descriptors (plus the anchors').
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p bench/out
rm -f bench/out/tcp.json bench/out/rdma.json bench/out/guest-machine.txt bench/out/rdma.log
start=$(date +%s)

echo "[bench] tcp on the host (ulimit -n $(ulimit -n))" >&2
npx tsx bench/suite.ts --transport tcp --scale host --out bench/out/tcp.json

if [ "${BENCH_SKIP_RDMA:-0}" != 1 ]; then
  echo "[bench] rdma in the Soft-RoCE guest" >&2
  # The guest's /tmp is an empty tmpfs; tsx needs the tsconfig path spelled out there (as in test-rdma.sh).
  set +e
  SOFTROCE_TIMEOUT=${SOFTROCE_TIMEOUT:-480} scripts/softroce/run.sh '
    export TSX_TSCONFIG_PATH=tsconfig.json; ulimit -n 65536 2>/dev/null || true
    { nproc; grep -m1 "model name" /proc/cpuinfo | cut -d: -f2-; uname -r; } > bench/out/guest-machine.txt
    npx tsx bench/suite.ts --transport rdma --host "$SOFTROCE_IP" --scale guest --out bench/out/rdma.json' \
    2>&1 | tee bench/out/rdma.log
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 0 ] || echo "[bench] the rdma run failed (exit $rc); RESULTS.md says so" >&2
fi

echo "[bench] writing bench/RESULTS.md" >&2
BENCH_WALL_S=$(( $(date +%s) - start )) npx tsx bench/report.ts > bench/RESULTS.md.new
mv bench/RESULTS.md.new bench/RESULTS.md
echo "[bench] done in $(( $(date +%s) - start )) s: bench/RESULTS.md" >&2
