#!/usr/bin/env bash
# The RDMA suite on real verbs: boots a Soft-RoCE guest (scripts/softroce/run.sh) and runs, inside
# it, the rdma crate's Rust tests and the ava RDMA suite (RDMA_REQUIRED=1: an unavailable transport
# fails instead of skipping), then the demo over rdma; then two guests joined by a wire
# (scripts/softroce/two-hosts.sh) for the two-host faults over rdma and tcp. Build on the host first
# (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# The Rust tests: built here, copied under target/softroce, run in their own guest boot.
scripts/softroce/rust-tests.sh

# The ava suite and the demo, over the addon built by setup.sh. The guest's /tmp is empty and
# small: keep tsx's cache inside the repository, which the guest shares read-write.
scripts/softroce/run.sh 'export RDMA_REQUIRED=1 TSX_TSCONFIG_PATH=tsconfig.json; ibv_devices &&
  npx ava --timeout=300s --concurrency=1 __test__/rdma-e2e.spec.ts __test__/apps-rdma.spec.ts __test__/rdma-scale.spec.ts __test__/reliability/rdma-faults.spec.ts __test__/cli-rdma.spec.ts &&
  node dist/cli.js demo --transport rdma --host "$SOFTROCE_IP"'

# Two hosts: the tests run on a; b runs the agent that starts their peers and powers b off when a
# test asks (__test__/reliability/fixtures/two-host-agent.ts). b's agent exits by itself after
# RG_AGENT_MAX_MS, and the whole run is bounded by SOFTROCE_TIMEOUT.
SOFTROCE_TIMEOUT=${SOFTROCE_TIMEOUT:-900} scripts/softroce/two-hosts.sh \
  'export RDMA_REQUIRED=1 RG_TWO_HOST_REQUIRED=1 TSX_TSCONFIG_PATH=tsconfig.json
   npx ava --timeout=300s --concurrency=1 __test__/reliability/two-host.spec.ts' \
  'export TSX_TSCONFIG_PATH=tsconfig.json RG_AGENT_MAX_MS=840000
   node --import=tsx __test__/reliability/fixtures/two-host-agent.ts'
