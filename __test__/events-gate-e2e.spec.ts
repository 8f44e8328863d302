/**
 * Over a real tcp transport: the readiness gate holds the server's first send until READY, every
 * state change is published (EventEmitter and diagnostics_channel), and a peer that advertises no
 * capabilities (an older version) still talks to a new one.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'

import test from 'ava'

import { connect, listen, type Connection, type StateChange } from '../src/index'
import { FrameKind } from '../src/protocol'
import { assertNoLiveResources, echo, sleep } from './helpers'
import { clientHello, frameBytes, PREAMBLE, RawPeer, readyFor } from './reliability/raw-peer'

// The reason of each state change on the paths below (docs/protocol.md), client side then server side.
const REASONS_CLIENT = ['transport-connected', 'ready-sent', 'app-close', 'app-close', 'ack-received', 'fin-sent', 'fin-sent', 'close-complete']
const REASONS_SERVER = [
  'transport-accepted',
  'hello-received',
  'ready-received',
  'req-received',
  'req-received',
  'ack-sent',
  'fin-received',
  'fin-received',
  'close-complete',
]

type Published = StateChange & { connectionId: number; transport: string; timestamp: number }

test.serial('the server may send at once (queued, not failed), and every step is published with its reason and timed', async (t) => {
  const testStarted = Date.now()
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
  const connectStarted = performance.now()
  const conn = await connect({ port: server.port })
  const connectTook = performance.now() - connectStarted
  t.is((await conn.read())?.toString(), 'welcome')
  t.not(stateWhenSent, 'OPEN', `the server sent while ${stateWhenSent}, before the gate opened`)
  const closeStarted = performance.now()
  t.is((await conn.close()).outcome, 'graceful')
  const closeTook = performance.now() - closeStarted
  await server.close({ graceMs: 100 })

  const path = (id: number): string[] => published.filter((e) => e.connectionId === id).map((e) => `${e.machine}:${e.from}->${e.to}`)
  const reasons = (id: number): string[] => published.filter((e) => e.connectionId === id).map((e) => e.reason)
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
  t.deepEqual(reasons(conn.id), REASONS_CLIENT)
  t.deepEqual(reasons(serverConn!.id), REASONS_SERVER)
  for (const e of published) {
    t.is(e.transport, 'tcp')
    t.true(e.timestamp >= testStarted && e.timestamp <= Date.now(), 'timestamp: Date.now() when published')
  }
  const within = (ms: number | undefined, max: number): boolean => ms !== undefined && ms > 0 && ms <= max
  t.true(within(conn.timings.connectMs, connectTook), `connectMs ${conn.timings.connectMs}: within connect()'s ${connectTook} ms`)
  t.true(within(conn.timings.closeMs, closeTook), `closeMs ${conn.timings.closeMs}: within close()'s ${closeTook} ms`)
  t.true(within(serverConn!.timings.connectMs, connectTook), 'the server side times its setup (gate included), within the client connect')
  t.true(within(serverConn!.timings.closeMs, closeTook), 'the responding side times its close from the REQ, within the client close')
  assertNoLiveResources(t)
})

test.serial("the server's first send leaves only after the client's READY (seen on the wire by a raw client)", async (t) => {
  const server = await listen({ port: 0 })
  const sent: string[] = []
  server.on('connection', (c: Connection) => {
    void c.send('welcome').then(() => sent.push(c.state)) // resolves once the transport took it
  })
  const raw = await RawPeer.open(server.port)
  t.teardown(() => raw.destroy())
  raw.write(PREAMBLE)
  raw.write(frameBytes(FrameKind.HELLO, 8, clientHello()))
  const theirHello = await raw.take(FrameKind.HELLO, 5000)
  // Long enough for a send the gate failed to hold to reach us (a loopback round trip is < 1 ms).
  await sleep(200)
  t.deepEqual(
    raw.frames.map((f) => f.kind),
    [],
    'nothing after the server HELLO while READY is outstanding',
  )
  t.deepEqual(sent, [], 'the send still waits for the gate')
  raw.write(readyFor(theirHello!.payload))
  const data = await raw.take(FrameKind.DATA, 5000)
  t.is(data?.payload.toString(), 'welcome', 'the queued message left once READY arrived')
  t.deepEqual(sent, ['OPEN'])
  raw.destroy()
  await server.close({ graceMs: 0 })
  assertNoLiveResources(t)
})

test.serial('an old peer without capabilities still connects, exchanges data and closes (requireCapabilities: [])', async (t) => {
  // By default a server requires CREDITS and HEARTBEAT (admission-limits.spec.ts); it can opt out.
  const server = await listen({ port: 0, requireCapabilities: [] })
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
