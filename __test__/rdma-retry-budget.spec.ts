/**
 * One liveness rule (issue 23, first part): unless the caller sets rdmaAckTimeoutExponent, the rdma
 * queue pairs' retry budget is derived from heartbeatTimeoutMs, so that a silent peer is judged by
 * the heartbeat at the time the user chose, on rdma as on tcp, and not by the queue pair's retries
 * (~1.9 s before, whatever the heartbeat timeout). Pure: runs anywhere.
 */
import test from 'ava'
import fc from 'fast-check'

import { ackTimeoutExponentFor, RDMA_RETRY_COUNT, rdmaTuningOf } from '../src/options'

/** How long a queue pair retries an unacknowledged send: (retries + 1) x 4.096 us x 2^exponent. */
const budgetMs = (exponent: number, retries: number): number => (retries + 1) * 0.004096 * 2 ** exponent

test('the derived budget is the shortest that covers the heartbeat timeout and one interval', (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 10 ** 11 }),
      fc.integer({ min: 1, max: 60_000 }),
      fc.integer({ min: 0, max: 7 }),
      (timeout, interval, retries) => {
        const e = ackTimeoutExponentFor(timeout, interval, retries)!
        const need = timeout + interval
        if (e < 31) t.true(budgetMs(e, retries) >= need, `exponent ${e} gives ${budgetMs(e, retries)} ms < ${need} ms`)
        if (e > 14) t.true(budgetMs(e - 1, retries) < need, `exponent ${e - 1} would do for ${need} ms`)
        return e >= 14 && e <= 31
      },
    ),
    { numRuns: 2000 },
  )
})

test('defaults: 5 s heartbeat timeout and 1 s interval give exponent 18 (~7.5 s); no timeout keeps the transport default', (t) => {
  t.is(ackTimeoutExponentFor(5000, 1000, RDMA_RETRY_COUNT), 18)
  t.is(rdmaTuningOf({}).rdmaAckTimeoutExponent, 18)
  t.is(rdmaTuningOf({ heartbeatTimeoutMs: 0 }).rdmaAckTimeoutExponent, undefined)
  // The two-host tests' 1.5 s / 200 ms: exponent 16, the transport's old default.
  t.is(rdmaTuningOf({ heartbeatTimeoutMs: 1500, heartbeatIntervalMs: 200 }).rdmaAckTimeoutExponent, 16)
  // A heartbeat timeout of years: the longest the queue pair can wait.
  t.is(rdmaTuningOf({ heartbeatTimeoutMs: 3 * 365 * 86_400_000 }).rdmaAckTimeoutExponent, 31)
})

test('an explicit exponent wins; an explicit retry count enters the derivation', (t) => {
  t.is(rdmaTuningOf({ rdmaAckTimeoutExponent: 14, heartbeatTimeoutMs: 60_000 }).rdmaAckTimeoutExponent, 14)
  // One try instead of seven: each must last seven times longer, three more doublings.
  t.is(rdmaTuningOf({ rdmaRetryCount: 0, heartbeatTimeoutMs: 5000 }).rdmaAckTimeoutExponent, 21)
})
