#!/usr/bin/env bash
# The RDMA suite on real verbs: boots a Soft-RoCE guest (scripts/softroce/run.sh) and runs, inside
# it, the rdma crate's Rust tests and the ava RDMA suite (RDMA_REQUIRED=1: an unavailable transport
# fails instead of skipping), then the demo over rdma. Build on the host first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# The Rust tests: built here, copied under target/softroce, run in their own guest boot.
scripts/softroce/rust-tests.sh

# The ava suite and the demo, over the addon built by setup.sh. The guest's /tmp is empty and
# small: keep tsx's cache inside the repository, which the guest shares read-write.
scripts/softroce/run.sh 'export RDMA_REQUIRED=1 TSX_TSCONFIG_PATH=tsconfig.json; ibv_devices &&
  npx ava --timeout=300s --concurrency=1 __test__/rdma-e2e.spec.ts __test__/reliability/rdma-faults.spec.ts __test__/cli-rdma.spec.ts &&
  node dist/cli.js demo --transport rdma --host "$SOFTROCE_IP"'
