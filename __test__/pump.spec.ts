/**
 * A timer reaching the protocol first polls the transport (Hub#pump), so that input which waited
 * behind a busy loop counts before a deadline is judged; but thousands of timers expiring together
 * must not poll once each (quadratic: every connection's I/O per timer).
 */
import test from 'ava'

import { connect, listen, type Connection } from '../src/index'
import { Hub, PUMP_MIN_INTERVAL_MS } from '../src/hub'
import { sleep } from './helpers'

test('timers expiring together poll the transport at most once per PUMP_MIN_INTERVAL_MS', async (t) => {
  const hb = { heartbeatIntervalMs: 10, heartbeatTimeoutMs: 60_000 }
  const server = await listen({ transport: 'tcp', host: '127.0.0.1', port: 0, ...hb })
  const accepted: Connection[] = []
  server.on('connection', (c: Connection) => accepted.push(c))
  const conns = await Promise.all(Array.from({ length: 200 }, () => connect({ transport: 'tcp', host: '127.0.0.1', port: server.port, ...hb })))
  const native = (Hub.for('tcp') as unknown as { native: { pollNow(): unknown[] } }).native
  const real = native.pollNow.bind(native)
  let polls = 0
  native.pollNow = () => {
    polls++
    return real()
  }
  const hbBefore = conns.reduce((n, c) => n + c.stats.heartbeatsSent, 0)
  const t0 = performance.now()
  await sleep(1000)
  const ms = performance.now() - t0
  delete (native as { pollNow?: unknown }).pollNow
  const heartbeats = conns.reduce((n, c) => n + c.stats.heartbeatsSent, 0) - hbBefore
  t.log(`${polls} polls from timers in ${ms.toFixed(0)} ms; ${heartbeats} client heartbeats sent`)
  t.true(heartbeats > 1000, `the timers ran (${heartbeats} heartbeats)`)
  t.true(polls <= ms / PUMP_MIN_INTERVAL_MS + 1, `${polls} polls in ${ms.toFixed(0)} ms`)
  await Promise.all(conns.map((c) => c.close()))
  await server.close({ graceMs: 1000 })
})
