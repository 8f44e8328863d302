/**
 * Faults between two hosts, over rdma and over tcp, held to the same bounds (two-host-cases.ts): the
 * wire between two Soft-RoCE guests cut while idle, while streaming, briefly, and during a server's
 * shutdown; host b vanishing mid-stream and mid-close. Runs on host a of
 * `scripts/softroce/two-hosts.sh` (scripts/test-rdma.sh starts it, with fixtures/two-host-agent.ts
 * on b); elsewhere every test is skipped with the reason in its title.
 *
 * Heartbeats: every 200 ms, DOWN after 1.5 s of silence, on both transports. The short partition
 * lasts 500 ms: within rdma's default RC retry budget (retry_count 6, ACK timeout exponent 16, 268 ms:
 * a send that gets no ACK fails ~1.9 s later, see docs/rdma.md) and the heartbeat timeout. An 800 ms
 * cut shows what the rdma tuning options do on the wire: exponent 14 (67 ms, a ~0.5 s budget) goes
 * DOWN, unless the client asks for 7 retries (forever on Soft-RoCE), which b's server side adopts.
 */
import test, { type ExecutionContext } from 'ava'

import { rdmaTest } from '../rdma-test'
import * as cases from './two-host-cases'
import { agentReady, twoHostUnavailableReason } from './two-host'

const twoHostUnavailable = twoHostUnavailableReason()
const twoHostTest = (title: string, fn: (t: ExecutionContext) => Promise<unknown>): void =>
  rdmaTest(
    title,
    async (t) => {
      await agentReady()
      // Printed at once as well: ava reports failures only at the end of the run.
      await fn(t).catch((err: unknown) => {
        console.error(`${title}: ${(err as Error)?.stack ?? String(err)}`)
        throw err
      })
    },
    twoHostUnavailable,
  )

const envs: cases.Env[] = (['rdma', 'tcp'] as const).map((transport) => ({ transport, heartbeatIntervalMs: 200, heartbeatTimeoutMs: 1500 }))
const summary: string[] = []
const keep = (p: Promise<string | string[]>): Promise<void> => p.then((s) => void summary.push(...[s].flat()))

for (const e of envs) {
  twoHostTest(
    `two hosts, ${e.transport}: wire cut while idle: both sides DOWN within the bound, the pending read rejects, all freed; after healing a new connection works`,
    (t) => keep(cases.partition(t, e, false)),
  )
  twoHostTest(
    `two hosts, ${e.transport}: wire cut while streaming: both sides DOWN within the bound, queued sends and the read reject ERR_CONNECTION_DOWN, all freed; healed: a new connection works`,
    (t) => keep(cases.partition(t, e, true)),
  )
  twoHostTest(
    `two hosts, ${e.transport}: a 500 ms cut (within the default ~1.9 s rdma retry budget, the heartbeat timeout and tcp's retransmission backoff): the connection survives, nothing lost or duplicated`,
    (t) => keep(cases.shortPartition(t, e, 500)),
  )
  twoHostTest(
    `two hosts, ${e.transport}: server shutdown (grace 1 s) while one client's host is cut off: polite clients finish, the cut one forced by grace end, close on time`,
    (t) => keep(cases.shutdownWithCutClient(t, e, 1000)),
  )
}
const rdma = envs[0]!
/** The cut against the retry budget of `tuning`; the outcome (survived or DOWN) must match `expect`. */
const budgetTest = (title: string, tuning: cases.Tuning, expect: RegExp): void =>
  twoHostTest(title, async (t) => {
    const what = await cases.cutAgainstRetryBudget(t, rdma, 800, tuning)
    summary.push(what)
    t.regex(what, expect)
  })
budgetTest(
  'two hosts, rdma: at the rdmaAckTimeoutExponent derived from a 1.5 s heartbeat timeout (16, ~1.9 s retry budget) an 800 ms cut is survived',
  { client: {}, server: {} },
  /survived/,
)
budgetTest(
  'two hosts, rdma: rdmaAckTimeoutExponent 14 on both ends (~0.5 s retry budget): the same 800 ms cut takes the connection DOWN',
  { client: { rdmaAckTimeoutExponent: 14 }, server: { rdmaAckTimeoutExponent: 14 } },
  /DOWN/,
)
budgetTest(
  "two hosts, rdma: rdmaRetryCount 7 from the client (forever on Soft-RoCE), adopted by b's server side given none: exponent 14 survives the 800 ms cut",
  { client: { rdmaAckTimeoutExponent: 14, rdmaRetryCount: 7 }, server: { rdmaAckTimeoutExponent: 14 } },
  /survived/,
)
// Last: host b is gone afterwards.
twoHostTest(
  'two hosts, rdma and tcp: host b powers off mid-stream and mid-close: every connection DOWN within the bound, close() forced with the reason, all freed',
  (t) => keep(cases.vanishedHost(t, envs)),
)

test.after.always(() => {
  if (summary.length > 0) console.log(['two-host summary:', ...summary].join('\n  '))
})
