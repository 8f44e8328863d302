/**
 * A busy process never takes a healthy peer for dead: while this process saturates a connection
 * (both ends here) and another process floods the same server, an idle connection with a 1.5 s
 * heartbeat timeout stays up for 30 s and a 50 ms interval timer never lags more than 100 ms.
 * (Before the transports ran on Node's loop, the flood's wake-ups ran back to back in one loop
 * turn: timers ran seconds late and the idle connection went DOWN with heartbeat-timeout.)
 */
import test from 'ava'

import { runFairness } from './reliability/fairness-scenario'

test('fairness: a saturated process keeps an idle connection up and its timers on time (tcp, 30 s)', async (t) => {
  t.timeout(90_000)
  const r = await runFairness({ transport: 'tcp', host: '127.0.0.1', durationMs: 30_000 })
  t.log(
    `interval ticks ${r.ticks}, max lag ${r.maxLagMs.toFixed(1)} ms; floods: in-process ${r.inProcessMiBps.toFixed(0)} MiB/s, ` +
      `other process ${r.otherProcessMiBps.toFixed(0)} MiB/s`,
  )
  t.is(r.idleDown, undefined, `the idle connection went down: ${JSON.stringify(r.idleDown)}`)
  t.deepEqual(r.serverDowns, [], 'no server-side connection may go down during the run')
  t.true(r.maxLagMs <= 100, `the 50 ms interval lagged ${r.maxLagMs.toFixed(1)} ms (bound 100 ms)`)
  // Both floods really ran: a test of fairness under no load would prove nothing.
  t.true(r.inProcessMiBps > 10, `in-process flood only ${r.inProcessMiBps.toFixed(1)} MiB/s`)
  t.true(r.otherProcessMiBps > 10, `other-process flood only ${r.otherProcessMiBps.toFixed(1)} MiB/s`)
})
