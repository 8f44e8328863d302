/**
 * The one wrapper of the rdma tests: a serial test where rdma runs here, elsewhere skipped with the
 * reason in its title. Under RDMA_REQUIRED=1 (the Soft-RoCE guest) an unavailable transport throws
 * instead (rdmaUnavailableReason), so the RDMA suite cannot pass by skipping where it must run.
 * (Not in helpers.ts: fixture processes import that, and ava's `test` exists only under ava.)
 */
import test, { type ExecutionContext } from 'ava'

import { rdmaUnavailableReason } from './helpers'

let reason: { why: string | undefined } | undefined

/** `unavailable`: another reason to skip (e.g. no second host), checked before rdma's own. */
export function rdmaTest(title: string, fn: (t: ExecutionContext) => Promise<unknown>, unavailable?: string): void {
  reason ??= { why: rdmaUnavailableReason() }
  const why = unavailable ?? reason.why
  if (why === undefined) test.serial(title, fn)
  else test.skip(`${title} (skipped: ${why})`, () => {})
}
