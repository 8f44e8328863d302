/**
 * conn.setTimeout(ms): 'timeout' after ms without application traffic either way, like
 * net.Socket#setTimeout; heartbeats do not count; it does not close; 0 disables; re-armable.
 */
import test from 'ava'

import { assertNoLiveResources, serverAndClient, sleep } from './helpers'

// Heartbeats every 20 ms: control traffic that must not count as activity.
const heartbeats = { heartbeatIntervalMs: 20 }

test.serial("setTimeout(ms) emits 'timeout' once per idle period, heartbeats do not count, and the connection stays open", async (t) => {
  const { server, client, peer } = await serverAndClient(heartbeats, heartbeats)
  let timeouts = 0
  const started = performance.now()
  let firstAt = 0
  client.setTimeout(150, () => (firstAt = performance.now() - started))
  client.on('timeout', () => timeouts++)
  t.is(client.timeout, 150)
  await sleep(400)
  t.is(timeouts, 1, 'once per idle period, although heartbeats flowed')
  t.true(firstAt >= 140 && firstAt < 350, `fired after ${firstAt.toFixed(0)} ms`)
  t.true(client.stats.heartbeatsReceived > 0, 'heartbeats were received meanwhile')
  t.is(client.state, 'OPEN')
  // Traffic starts a new idle period: received messages count...
  await peer.send('wake')
  t.is((await client.read())?.toString(), 'wake')
  await sleep(300)
  t.is(timeouts, 2)
  // ...and so do sent ones, which keep it quiet while they flow.
  for (let i = 0; i < 8; i++) {
    await client.send(`tick ${i}`)
    await sleep(40)
  }
  t.is(timeouts, 2, 'no timeout while the application sends')
  await sleep(300)
  t.is(timeouts, 3)
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
  await sleep(250)
  t.is(timeouts, 0)
  client.setTimeout(150)
  await sleep(100)
  client.setTimeout(150) // re-armed: counts from here
  await sleep(100)
  t.is(timeouts, 0)
  await sleep(150)
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
