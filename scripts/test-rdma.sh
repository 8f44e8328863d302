#!/usr/bin/env bash
# The RDMA suite on real verbs: boots a Soft-RoCE guest (scripts/softroce/run.sh) and runs, inside
# it, the rdma crate's Rust tests, the ava RDMA suite and the demo over rdma, with RDMA_REQUIRED=1 (an
# unavailable transport fails instead of skipping); then two guests joined by a wire
# (scripts/softroce/two-hosts.sh) for the two-host faults over rdma and tcp. Build on the host first
# (scripts/setup.sh).
# The three parts in the first guest share its boot; each runs whether or not the one before passed,
# and the guest's last line names the parts that failed ("test-rdma: FAILED in the guest: ...").
# Exit status: non-zero when any part fails (the two-host run is skipped then).
set -euo pipefail
cd "$(dirname "$0")/.."

# The Rust tests: built here, copied under target/softroce with their runner (run in the guest below).
scripts/softroce/rust-tests.sh --prepare

# The ava suite and the demo, over the addon built by setup.sh. The guest's /tmp is empty and
# small: keep tsx's cache inside the repository, which the guest shares read-write.
rc=0
scripts/softroce/run.sh "$(
  cat <<'GUEST'
export RDMA_REQUIRED=1 TSX_TSCONFIG_PATH=tsconfig.json
ibv_devices
failed=
part() { # name, command...: runs it, says how it ended, remembers a failure
  local name=$1 t0=$SECONDS rc=0
  shift
  echo "=== test-rdma: $name"
  "$@" || rc=$?
  if [ "$rc" = 0 ]; then
    echo "=== test-rdma: $name: ok ($((SECONDS - t0)) s)"
  else
    echo "=== test-rdma: $name: FAILED (exit $rc, $((SECONDS - t0)) s)"
    failed="${failed:+$failed, }$name"
  fi
}
part 'Rust tests (rdma crate)' bash target/softroce/run-tests.sh
part 'ava RDMA suite' npx ava --timeout=300s --concurrency=1 __test__/rdma-e2e.spec.ts __test__/apps-rdma.spec.ts \
  __test__/rdma-fast-path.spec.ts __test__/rdma-zero-copy.spec.ts __test__/rdma-scale.spec.ts __test__/reliability/rdma-faults.spec.ts __test__/cli-rdma.spec.ts \
  __test__/rdma-auth.spec.ts
part 'demo over rdma' node dist/cli.js demo --transport rdma --host "$SOFTROCE_IP"
if [ -n "$failed" ]; then
  echo "test-rdma: FAILED in the guest: $failed"
  exit 1
fi
echo 'test-rdma: the guest parts passed (Rust tests, ava RDMA suite, demo over rdma)'
GUEST
)" || rc=$?
if [ "$rc" != 0 ]; then
  echo "test-rdma: FAILED: the one-guest run (exit $rc; its failed parts are named above); the two-host run is skipped" >&2
  exit "$rc"
fi

# Two hosts: the tests run on a; b runs the agent that starts their peers and powers b off when a
# test asks (__test__/reliability/fixtures/two-host-agent.ts). b's agent exits by itself after
# RG_AGENT_MAX_MS, and the whole run is bounded by SOFTROCE_TIMEOUT.
SOFTROCE_TIMEOUT=${SOFTROCE_TIMEOUT:-900} scripts/softroce/two-hosts.sh \
  'export RDMA_REQUIRED=1 RG_TWO_HOST_REQUIRED=1 TSX_TSCONFIG_PATH=tsconfig.json
   npx ava --timeout=300s --concurrency=1 __test__/reliability/two-host.spec.ts' \
  'export TSX_TSCONFIG_PATH=tsconfig.json RG_AGENT_MAX_MS=840000
   node --require=tsx/cjs __test__/reliability/fixtures/two-host-agent.ts' || rc=$?
if [ "$rc" != 0 ]; then
  echo "test-rdma: FAILED: the two-host run (exit $rc)" >&2
  exit "$rc"
fi
echo 'test-rdma: ok (one guest: Rust tests, ava RDMA suite, demo; two hosts: two-host faults)' >&2
