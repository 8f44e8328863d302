/**
 * Over a real tcp transport: the readiness gate holds the server's first send until READY, every
 * state change is published (EventEmitter and diagnostics_channel), and a peer that advertises no
 * capabilities (an older version) still talks to a new one.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'

import test from 'ava'

import { connect, listen, type Connection, type StateChange } from '../src/index'
import { assertNoLiveResources, echo } from './helpers'

type Published = StateChange & { connectionId: number; transport: string; timestamp: number }

test.serial('the server may send at once; the gate holds it until READY, and every step is published', async (t) => {
  const published: Published[] = []
  const onState = (m: unknown): void => void published.push(m as Published)
  subscribe('rdma-graceful:state', onState)
  t.teardown(() => unsubscribe('rdma-graceful:state', onState))

  const server = await listen({ port: 0 })
  let stateWhenSent = ''
  let serverConn: Connection | undefined
  const heard: string[] = []
  server.on('connection', (c: Connection) => {
    serverConn = c
    stateWhenSent = c.state
    // A listener attached in the 'connection' handler hears every state change, the first included.
    c.on('state', (e: StateChange) => heard.push(`${e.machine}:${e.from}->${e.to}`))
    void c.send('welcome') // sent before READY: queued, not failed
    c.once('end', () => c.end()) // nothing more to say once the client has ended
  })
  const conn = await connect({ port: server.port })
  t.is((await conn.read())?.toString(), 'welcome')
  t.not(stateWhenSent, 'OPEN', `the server sent while ${stateWhenSent}, before the gate opened`)
  t.is((await conn.close()).outcome, 'graceful')
  await server.close({ graceMs: 100 })

  const path = (id: number): string[] => published.filter((e) => e.connectionId === id).map((e) => `${e.machine}:${e.from}->${e.to}`)
  t.deepEqual(path(conn.id), [
    'connection:INIT->HELLO_SENT',
    'connection:HELLO_SENT->OPEN',
    'connection:OPEN->CLOSING',
    'close:NONE->REQ_SENT',
    'close:REQ_SENT->ACK_RECEIVED',
    'close:ACK_RECEIVED->FIN_SENT',
    'close:FIN_SENT->COMPLETED',
    'connection:CLOSING->CLOSED',
  ])
  t.deepEqual(path(serverConn!.id), [
    'connection:INIT->WAIT_HELLO',
    'connection:WAIT_HELLO->WAIT_READY',
    'connection:WAIT_READY->OPEN',
    'connection:OPEN->CLOSING',
    'close:NONE->REQ_RECEIVED',
    'close:REQ_RECEIVED->ACK_SENT',
    'close:ACK_SENT->FIN_RECEIVED',
    'close:FIN_RECEIVED->COMPLETED',
    'connection:CLOSING->CLOSED',
  ])
  t.deepEqual(heard, path(serverConn!.id), "the server connection's own 'state' events, from the first")
  for (const e of published) {
    t.is(e.transport, 'tcp')
    t.true(typeof e.reason === 'string' && e.reason.length > 0)
    t.true(Number.isFinite(e.at) && Number.isFinite(e.timestamp))
  }
  t.true(conn.timings.connectMs! > 0 && conn.timings.closeMs! >= 0)
  t.true(serverConn!.timings.connectMs! > 0, 'the server side times its setup (gate included)')
  t.true(serverConn!.timings.closeMs! >= 0, 'the responding side times its close from the REQ')
  assertNoLiveResources(t)
})

test.serial('an old peer without capabilities still connects, exchanges data and closes', async (t) => {
  const server = await listen({ port: 0 })
  server.on('connection', echo)
  const old = await connect({ port: server.port, capabilities: 0 })
  await old.send('from the past')
  t.is((await old.read())?.toString(), 'from the past')
  const result = await old.close()
  t.is(result.outcome, 'graceful')
  t.deepEqual(await server.close({ graceMs: 500 }), { graceful: 0, forced: 0 }, 'it had closed before the shutdown')
  t.like(server.stats(), { graceful: 1, forced: 0 })
  assertNoLiveResources(t)
})
