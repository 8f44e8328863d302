/**
 * Limits on who may start (src/limits.ts): maxConnections, maxAdmitting and a per-address rate are
 * checked when the transport hands an accepted peer over; beyond them the peer is aborted at once
 * (no HELLO awaited, no timer) and counted in server.stats().refusedBy. Capabilities a server
 * requires (default CREDITS and HEARTBEAT), and the bound on what a peer without flow control may
 * leave unread.
 */
import test from 'ava'

import { connect, listen, type Connection, type Server, type TransportError } from '../src/index'
import { AddressRate, addressOf } from '../src/limits'
import { ALL_CAPABILITIES, Capability, FrameKind } from '../src/protocol'
import { assertNoLiveResources, echo, sleep, withDeadline } from './helpers'
import { clientHello, frameBytes, PREAMBLE, RawPeer, readyFor } from './reliability/raw-peer'

function watch(server: Server): { errors: TransportError[]; next(): Promise<TransportError> } {
  const errors: TransportError[] = []
  server.on('clientError', (e) => errors.push(e))
  return { errors, next: () => withDeadline(new Promise<TransportError>((resolve) => server.once('clientError', resolve)), 5000, 'clientError') }
}

/** A raw peer that sent its preamble and nothing else (it stays "being admitted"). */
async function silent(server: Server): Promise<RawPeer> {
  const p = await RawPeer.open(server.port)
  p.write(PREAMBLE)
  return p
}

async function until(cond: () => boolean, what: string): Promise<void> {
  await withDeadline(
    (async () => {
      while (!cond()) await sleep(5)
    })(),
    5000,
    what,
  )
}

test.serial('maxConnections: beyond it an attempt is refused at once with ERR_LIMIT_REACHED and counted; a freed slot admits again', async (t) => {
  const server = await listen({ port: 0, maxConnections: 2 })
  server.on('connection', echo)
  const seen = watch(server)
  const a = await connect({ port: server.port })
  const b = await connect({ port: server.port })
  const refusal = seen.next()
  const started = performance.now()
  const err = await t.throwsAsync(connect({ port: server.port }))
  t.true(performance.now() - started < 1000, 'refused at once, not at a deadline')
  t.true(['ERR_CONNECTION_DOWN', 'ERR_PEER_CLOSED', 'ERR_CONNECTION_RESET'].includes((err as TransportError).code), (err as TransportError).code)
  const e = await refusal
  t.is(e.code, 'ERR_LIMIT_REACHED')
  t.regex(e.message, /maxConnections/)
  t.like(server.stats(), { accepted: 2, refused: 1, refusedBy: { maxConnections: 1 } })
  await a.close()
  await until(() => server.connections.size === 1, 'the closed connection is gone')
  const c = await connect({ port: server.port })
  t.is(server.connections.size, 2, 'a freed slot admits again')
  await Promise.all([b.close(), c.close()])
  await server.close({ graceMs: 500 })
  assertNoLiveResources(t)
})

test.serial('maxAdmitting: with that many peers silent after their preamble, the next is closed right away, not at readyTimeoutMs', async (t) => {
  const server = await listen({ port: 0, maxAdmitting: 2, readyTimeoutMs: 10_000 })
  const seen = watch(server)
  const quiet = [await silent(server), await silent(server)]
  await until(() => server.stats().admitting === 2, 'two peers being admitted')
  const refusal = seen.next()
  const third = await silent(server)
  const e = await refusal
  t.is(e.code, 'ERR_LIMIT_REACHED')
  t.regex(e.message, /maxAdmitting/)
  await withDeadline(third.closed, 1000, 'the third socket closed by the server at once')
  t.false(
    quiet.some((q) => q.isClosed),
    'the two being admitted are untouched',
  )
  t.like(server.stats(), { admitting: 2, refused: 1, refusedBy: { maxAdmitting: 1 } })
  for (const q of quiet) q.destroy()
  await server.close({ graceMs: 0 })
  assertNoLiveResources(t)
})

test.serial('addressRate: more attempts from one address than it allows are refused at once; others are served', async (t) => {
  const server = await listen({ port: 0, addressRate: { attempts: 3, intervalMs: 60_000 } })
  server.on('connection', echo)
  const seen = watch(server)
  const conns: Connection[] = []
  for (let i = 0; i < 3; i++) conns.push(await connect({ port: server.port }))
  const refusal = seen.next()
  await t.throwsAsync(connect({ port: server.port }))
  const e = await refusal
  t.is(e.code, 'ERR_LIMIT_REACHED')
  t.regex(e.message, /too many attempts from 127\.0\.0\.1 \(addressRate\)/)
  t.like(server.stats(), { accepted: 3, refused: 1, refusedBy: { addressRate: 1 } })
  await conns[0]!.send('still served')
  t.is((await conns[0]!.read())?.toString(), 'still served')
  await Promise.all(conns.map((c) => c.close()))
  await server.close({ graceMs: 500 })
  assertNoLiveResources(t)
})

test('AddressRate: a token bucket per address that refills over the interval, and tracks a bounded number of addresses', (t) => {
  const rate = new AddressRate(2, 1000, 3)
  t.true(rate.take('a', 0))
  t.true(rate.take('a', 0))
  t.false(rate.take('a', 10), 'the third within the interval')
  t.true(rate.take('a', 510), 'half the interval later, one attempt is back')
  t.false(rate.take('a', 520))
  for (const x of ['b', 'c', 'd', 'e']) rate.take(x, 600)
  t.is(rate.size, 3, 'never more than maxTracked addresses')
  t.is(addressOf('10.0.0.1:5000'), '10.0.0.1')
  t.is(addressOf('[::1]:5000'), '::1')
  t.is(addressOf('fe80::1'), 'fe80::1')
})

test.serial('limit options are checked', async (t) => {
  for (const opts of [
    { maxConnections: -1 },
    { maxConnections: 1.5 },
    { maxAdmitting: 0 },
    { addressRate: { attempts: 0, intervalMs: 1000 } },
    { addressRate: { attempts: 1, intervalMs: 0 } },
    { requireCapabilities: ['credits', 'telepathy'] },
  ]) {
    const err = await t.throwsAsync(listen({ port: 0, ...(opts as object) }))
    t.is((err as TransportError).code, 'ERR_INVALID_ARGUMENT', JSON.stringify(opts))
  }
  assertNoLiveResources(t)
})

for (const [name, bit] of [
  ['CREDITS', Capability.CREDITS],
  ['HEARTBEAT', Capability.HEARTBEAT],
] as const) {
  test.serial(`a client HELLO without ${name} is refused by default (ERR_UNSUPPORTED_BY_PEER); requireCapabilities: [] admits it`, async (t) => {
    const strict = await listen({ port: 0 })
    const seen = watch(strict)
    const refusal = seen.next()
    const err = await t.throwsAsync(connect({ port: strict.port, capabilities: ALL_CAPABILITIES & ~bit, readyTimeoutMs: 1000 }))
    t.truthy(err)
    const e = await refusal
    t.is(e.code, 'ERR_UNSUPPORTED_BY_PEER')
    t.regex(e.message, new RegExp(name))
    t.like(strict.stats(), { accepted: 0, refusedBy: { capabilities: 1 } })
    await strict.close({ graceMs: 0 })

    const lenient = await listen({ port: 0, requireCapabilities: [] })
    lenient.on('connection', echo)
    const conn = await connect({ port: lenient.port, capabilities: ALL_CAPABILITIES & ~bit })
    await conn.send('ok')
    t.is((await conn.read())?.toString(), 'ok')
    await conn.close()
    await lenient.close({ graceMs: 500 })
    assertNoLiveResources(t)
  })
}

test.serial('a peer without flow control cannot pile up more unread messages than the window: the connection ends as a violation', async (t) => {
  const server = await listen({ port: 0, requireCapabilities: [], receiveWindow: 4 })
  const conns: Connection[] = []
  server.on('connection', (c) => conns.push(c)) // never reads
  const peer = await RawPeer.open(server.port)
  peer.write(Buffer.concat([PREAMBLE, frameBytes(FrameKind.HELLO, 0, clientHello({ capabilities: ALL_CAPABILITIES & ~Capability.CREDITS }))]))
  const hello = await peer.take(FrameKind.HELLO, 3000)
  t.truthy(hello)
  peer.write(readyFor(hello!.payload))
  for (let i = 0; i < 4; i++) peer.write(frameBytes(FrameKind.DATA, 0, Buffer.from(`m${i}`)))
  await until(() => conns[0]?.stats.dataDelivered === 4, 'four delivered')
  t.is(conns[0]!.state, 'OPEN', 'up to the window is fine')
  const closed = new Promise<{ error?: Error; reason: string }>((resolve) => conns[0]!.once('close', resolve))
  peer.write(frameBytes(FrameKind.DATA, 0, Buffer.from('one too many')))
  const r = await withDeadline(closed, 3000, 'the connection ends')
  t.is(r.reason, 'protocol-violation')
  t.regex(r.error?.message ?? '', /beyond the receive window of 4/)
  await withDeadline(peer.closed, 3000, 'the raw socket is closed')
  await server.close({ graceMs: 0 })
  assertNoLiveResources(t)
})
