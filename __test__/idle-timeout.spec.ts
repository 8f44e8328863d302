/**
 * conn.setTimeout(ms): 'timeout' after ms without application traffic either way, like
 * net.Socket#setTimeout; heartbeats do not count; it does not close; 0 disables; re-armable.
 */
import test from 'ava'

import type { Connection } from '../src/index'
import { assertNoLiveResources, assertWithin, LATE_TIMER_MS, serverAndClient, sleep, withDeadline } from './helpers'

// Heartbeats every 20 ms: control traffic that must not count as activity.
const heartbeats = { heartbeatIntervalMs: 20 }

const IDLE_MS = 300

/** Resolves at the connection's next 'timeout', with the time it came. */
const nextTimeout = (c: Connection): Promise<number> =>
  withDeadline(new Promise<number>((resolve) => c.once('timeout', () => resolve(performance.now()))), IDLE_MS + LATE_TIMER_MS + 2000, "'timeout'")

test.serial("setTimeout(ms) emits 'timeout' once per idle period, heartbeats do not count, and the connection stays open", async (t) => {
  const { server, client, peer } = await serverAndClient(heartbeats, heartbeats)
  let timeouts = 0
  client.on('timeout', () => timeouts++)
  let started = performance.now()
  let fired = nextTimeout(client)
  client.setTimeout(IDLE_MS)
  t.is(client.timeout, IDLE_MS)
  // Each bound: no earlier than the idle period, later by a late timer's allowance at most.
  assertWithin(t, (await fired) - started, IDLE_MS, IDLE_MS + LATE_TIMER_MS, 'first timeout after setTimeout()')
  await sleep(2 * IDLE_MS)
  t.is(timeouts, 1, 'once per idle period, although heartbeats flowed')
  t.true(client.stats.heartbeatsReceived > 0, 'heartbeats were received meanwhile')
  t.is(client.state, 'OPEN')
  // Traffic starts a new idle period: received messages count...
  fired = nextTimeout(client)
  started = performance.now() // the message arrives after this
  await peer.send('wake')
  t.is((await client.read())?.toString(), 'wake')
  assertWithin(t, (await fired) - started, IDLE_MS, IDLE_MS + LATE_TIMER_MS, 'timeout after a received message')
  t.is(timeouts, 2)
  // ...and so do sent ones, which keep it quiet while they flow (a send every 30 ms).
  fired = nextTimeout(client)
  let last = performance.now() // when the last send started
  let widestGap = 0
  for (let i = 0; i < 15; i++) {
    widestGap = Math.max(widestGap, performance.now() - last)
    last = performance.now()
    await client.send(`tick ${i}`)
    await sleep(30)
  }
  // Only a loop stalled for a whole idle period between two sends could let one fire meanwhile.
  if (widestGap < IDLE_MS) t.is(timeouts, 2, 'no timeout while the application sends')
  else t.log(`a send came ${widestGap.toFixed(0)} ms after the one before: no claim about this period`)
  assertWithin(t, (await fired) - last, IDLE_MS, IDLE_MS + LATE_TIMER_MS, 'timeout after the last send')
  t.is((await client.close()).outcome, 'graceful')
  await server.close()
  assertNoLiveResources(t)
})

test.serial('setTimeout(0) disables; calling it again re-arms from now; bad values are ERR_INVALID_ARGUMENT', async (t) => {
  const { server, client } = await serverAndClient(heartbeats, heartbeats)
  let timeouts = 0
  client.on('timeout', () => timeouts++)
  const cb = (): void => t.fail('a callback removed by setTimeout(0, cb) ran')
  client.setTimeout(100, cb)
  client.setTimeout(0, cb)
  t.is(client.timeout, 0)
  await sleep(100 + LATE_TIMER_MS)
  t.is(timeouts, 0)
  const fired = nextTimeout(client)
  client.setTimeout(IDLE_MS)
  await sleep(IDLE_MS / 2)
  const rearmedAt = performance.now()
  client.setTimeout(IDLE_MS) // re-armed: counts from here
  assertWithin(t, (await fired) - rearmedAt, IDLE_MS, IDLE_MS + LATE_TIMER_MS, 'timeout after the re-arm, not after the first setTimeout()')
  t.is(timeouts, 1)
  t.throws(() => client.setTimeout(-1), { code: 'ERR_INVALID_ARGUMENT' } as never)
  t.throws(() => client.setTimeout(Number.NaN), { code: 'ERR_INVALID_ARGUMENT' } as never)
  t.is(client.setTimeout(0), client, 'returns the connection')
  await client.close()
  await server.close()
  assertNoLiveResources(t)
})

test.serial('a closed connection has no idle timer: setTimeout() after close never fires', async (t) => {
  const { server, client } = await serverAndClient(heartbeats, heartbeats)
  client.setTimeout(60_000)
  await client.close()
  await server.close()
  // Nothing is left that could fire: a closed connection's timeout is inert.
  client.setTimeout(10)
  let fired = false
  client.on('timeout', () => (fired = true))
  await sleep(50)
  t.false(fired)
  assertNoLiveResources(t)
})
