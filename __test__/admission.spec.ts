/**
 * A peer becomes a server 'connection' only once its first frame is a valid client HELLO; anything
 * else after a valid preamble (another frame, a bad HELLO, silence, a close) is a 'clientError'
 * with a typed TransportError, like a bad preamble, and never a 'connection'.
 */
import test from 'ava'

import { connect, listen, type Connection, type Server, TransportError } from '../src/index'
import { FrameKind } from '../src/protocol'
import { assertNoLiveResources, assertWithin, echo, LATE_TIMER_MS, sleep, withDeadline } from './helpers'
import { clientHello, PREAMBLE, RawPeer, frameBytes } from './reliability/raw-peer'

const hello = (role: 'active' | 'passive' = 'active'): Buffer => clientHello({ role })

async function watch(server: Server): Promise<{ conns: Connection[]; errors: TransportError[]; next(): Promise<TransportError> }> {
  const conns: Connection[] = []
  const errors: TransportError[] = []
  server.on('connection', (c) => conns.push(c))
  server.on('clientError', (e) => errors.push(e))
  return {
    conns,
    errors,
    next: () => withDeadline(new Promise<TransportError>((resolve) => server.once('clientError', resolve)), 5000, 'clientError'),
  }
}

const cases: Array<[string, (p: RawPeer) => void, string, RegExp]> = [
  ['a DATA frame first', (p) => p.write(frameBytes(FrameKind.DATA, 0, Buffer.from('hi'))), 'ERR_MALFORMED_FRAME', /DATA, not HELLO/],
  ['a READY first', (p) => p.write(frameBytes(FrameKind.READY, 0, Buffer.alloc(20))), 'ERR_MALFORMED_FRAME', /READY, not HELLO/],
  ['a HELLO claiming the server role', (p) => p.write(frameBytes(FrameKind.HELLO, 0, hello('passive'))), 'ERR_MALFORMED_FRAME', /server role/],
  ['a short HELLO', (p) => p.write(frameBytes(FrameKind.HELLO, 0, hello().subarray(0, 10))), 'ERR_MALFORMED_FRAME', /HELLO payload is 10 bytes/],
  ['a bad frame header', (p) => p.write(Buffer.from([0xee, 0, 0, 0, 0, 0, 0, 0])), 'ERR_MALFORMED_FRAME', /./],
  ['a close', (p) => p.sock.end(), 'ERR_PEER_CLOSED', /./],
  ['an RST', (p) => p.sock.resetAndDestroy(), 'ERR_CONNECTION_RESET', /./],
]

for (const [what, act, code, message] of cases) {
  test.serial(`a valid preamble then ${what} is a clientError ${code}, never a connection`, async (t) => {
    const server = await listen({ port: 0, maxMessageSize: 1024 })
    const seen = await watch(server)
    const peer = await RawPeer.open(server.port)
    peer.write(PREAMBLE)
    const error = seen.next()
    act(peer)
    const e = await error
    t.true(e instanceof TransportError)
    t.is(e.code as string, code)
    t.regex(e.message, message)
    await withDeadline(peer.closed, 5000, 'the server closed the raw socket')
    t.is(seen.conns.length, 0, 'no connection')
    peer.destroy()
    await server.close({ graceMs: 0 })
    assertNoLiveResources(t)
  })
}

test.serial('a peer silent after its preamble is refused at readyTimeoutMs with ERR_TRANSPORT_TIMEOUT', async (t) => {
  const server = await listen({ port: 0, readyTimeoutMs: 200 })
  const seen = await watch(server)
  const peer = await RawPeer.open(server.port)
  peer.write(PREAMBLE)
  const started = performance.now()
  const e = await seen.next()
  const took = performance.now() - started
  t.is(e.code, 'ERR_TRANSPORT_TIMEOUT')
  t.is((e.cause as Error & { code: string }).code, 'ERR_HANDSHAKE_TIMEOUT')
  assertWithin(t, took, 200, 200 + LATE_TIMER_MS, 'refused after readyTimeoutMs')
  await withDeadline(peer.closed, 5000, 'the server closed the raw socket')
  t.is(seen.conns.length, 0)
  await server.close({ graceMs: 0 })
  assertNoLiveResources(t)
})

test.serial('server.close() refuses a peer that has not sent its HELLO by the end of the grace period', async (t) => {
  const server = await listen({ port: 0, readyTimeoutMs: 60_000 })
  const seen = await watch(server)
  const peer = await RawPeer.open(server.port)
  peer.write(PREAMBLE)
  await sleep(50)
  const error = seen.next()
  const started = performance.now()
  t.deepEqual(await withDeadline(server.close({ graceMs: 100 }), 5000, 'server close'), { graceful: 0, forced: 0 })
  assertWithin(t, performance.now() - started, 100, 100 + LATE_TIMER_MS, 'refused when the grace ended')
  t.is((await error).code, 'ERR_CONNECTION_RESET')
  t.is(seen.conns.length, 0)
  peer.destroy()
  assertNoLiveResources(t)
})

test.serial('a valid HELLO makes the connection; the setup deadline counts from the accept', async (t) => {
  // HELLO comes 700 ms after the accept, then no READY: the deadline falls 800 ms after the accept,
  // not 1,500 ms (800 after the HELLO). The upper bound allows for a late timer on a loaded machine
  // (LATE_TIMER_MS) and stays below 1,500.
  const readyTimeoutMs = 800
  const server = await listen({ port: 0, readyTimeoutMs })
  const seen = await watch(server)
  const states: string[] = []
  server.on('connection', (c) => c.on('state', (s) => states.push(`${s.from}->${s.to}`)))
  const openedAt = performance.now() // the accept comes after this
  const peer = await RawPeer.open(server.port)
  peer.write(PREAMBLE)
  await sleep(700)
  t.is(seen.conns.length, 0, 'not a connection before its HELLO')
  peer.write(frameBytes(FrameKind.HELLO, 8, hello()))
  t.truthy(await peer.take(FrameKind.HELLO, 2000), 'the server answered HELLO')
  t.is(seen.conns.length, 1)
  t.deepEqual(states.slice(0, 2), ['INIT->WAIT_HELLO', 'WAIT_HELLO->WAIT_READY'])
  const result = await withDeadline(seen.conns[0]!.closed, 2000, 'ready timeout')
  const took = performance.now() - openedAt
  t.is(result.reason, 'ready-timeout')
  assertWithin(t, took, readyTimeoutMs, readyTimeoutMs + LATE_TIMER_MS, 'closed after the accept')
  peer.destroy()
  t.deepEqual(seen.errors, [])
  await server.close({ graceMs: 0 })

  // A real client is unaffected.
  const s2 = await listen({ port: 0 })
  s2.on('connection', echo)
  const conn = await connect({ port: s2.port })
  await conn.send('ok')
  t.is((await conn.read())?.toString(), 'ok')
  t.is((await conn.close()).outcome, 'graceful')
  await s2.close()
  assertNoLiveResources(t)
})
