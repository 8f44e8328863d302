/**
 * diagnostics_channel channels (connect, accept, close, diagnostic, state), each message with role,
 * transport and remote address; byte counters in conn.stats; server.stats().
 */
import { channel, subscribe, unsubscribe } from 'node:diagnostics_channel'

import test from 'ava'

import { CHANNEL_NAMES, Connection, connect, listen, Server } from '../src/index'
import { FrameKind } from '../src/protocol'
import { assertNoLiveResources, echo, sleep, withDeadline } from './helpers'
import { clientHello, PREAMBLE, RawPeer, frameBytes } from './reliability/raw-peer'

type Message = Record<string, unknown>

function record(t: { teardown(fn: () => void): void }): Record<keyof typeof CHANNEL_NAMES, Message[]> {
  const seen = { state: [], connect: [], accept: [], close: [], diagnostic: [] } as Record<keyof typeof CHANNEL_NAMES, Message[]>
  for (const [key, name] of Object.entries(CHANNEL_NAMES) as Array<[keyof typeof CHANNEL_NAMES, string]>) {
    const fn = (m: unknown): void => void seen[key].push(m as Message)
    subscribe(name, fn)
    t.teardown(() => unsubscribe(name, fn))
  }
  return seen
}

test.serial('the channel names are the documented ones', (t) => {
  t.deepEqual(CHANNEL_NAMES, {
    state: 'rdma-graceful:state',
    connect: 'rdma-graceful:connect',
    accept: 'rdma-graceful:accept',
    close: 'rdma-graceful:close',
    diagnostic: 'rdma-graceful:diagnostic',
  })
})

test.serial('connect, accept, state, close and diagnostic messages carry role, transport and remote address', async (t) => {
  const seen = record(t)
  const startedAt = Date.now()
  const server = await listen({ port: 0 })
  const accepted = new Promise<Connection>((resolve) => server.once('connection', resolve))
  const client = await connect({ port: server.port })
  const peer = await accepted
  const clientAt = `127.0.0.1:${server.port}`

  t.is(seen.connect.length, 1)
  const c = seen.connect[0]!
  t.like(c, { ok: true, role: 'client', transport: 'tcp', remoteAddress: clientAt, connectionId: client.id })
  t.is(c.connection, client)
  t.is(c.connectMs, client.timings.connectMs, "the connection's own connect time")
  t.true((c.timestamp as number) >= startedAt && (c.timestamp as number) <= Date.now(), 'timestamp: Date.now() when it was published')

  t.is(seen.accept.length, 1)
  t.like(seen.accept[0], {
    ok: true,
    role: 'server',
    transport: 'tcp',
    remoteAddress: peer.remoteAddress,
    connectionId: peer.id,
    localPort: server.port,
  })
  t.is(seen.accept[0]!.connection, peer)

  t.true(seen.state.some((s) => s.role === 'client' && s.to === 'OPEN' && s.remoteAddress === clientAt && s.transport === 'tcp'))

  await client.send('12345')
  t.is((await peer.read())?.toString(), '12345')
  t.true(seen.state.some((s) => s.role === 'server' && s.to === 'OPEN' && s.connectionId === peer.id))
  void (async () => {
    for await (const _ of peer); // read up to the client's end, then end the server side too
    peer.end()
  })()
  await client.close()
  await withDeadline(peer.closed, 2000, 'server side closed')
  const closes = seen.close
  t.is(closes.length, 2)
  const clientClose = closes.find((m) => m.role === 'client')!
  t.like(clientClose, { outcome: 'graceful', reason: 'close-complete', transport: 'tcp', remoteAddress: clientAt, bytesSent: 5, bytesReceived: 0 })
  t.like(
    closes.find((m) => m.role === 'server'),
    { outcome: 'graceful', bytesReceived: 5 },
  )

  // A failed attempt and a refused peer are published too.
  await t.throwsAsync(connect({ port: 1 }), { code: 'ERR_CONNECTION_REFUSED' })
  t.like(seen.connect[1], { ok: false, role: 'client', transport: 'tcp', remoteAddress: '127.0.0.1:1' })
  t.is((seen.connect[1]!.error as Error & { code: string }).code, 'ERR_CONNECTION_REFUSED')
  const raw = await RawPeer.open(server.port)
  raw.write(PREAMBLE)
  raw.write(frameBytes(FrameKind.DATA, 0, Buffer.from('x')))
  await withDeadline(raw.closed, 2000, 'refused')
  await withDeadline(
    (async () => {
      while (seen.accept.length < 2) await sleep(5)
    })(),
    2000,
    'accept message',
  )
  t.like(seen.accept[1], { ok: false, role: 'server', transport: 'tcp', localPort: server.port })
  t.regex(String(seen.accept[1]!.remoteAddress), /^127\.0\.0\.1:\d+$/)
  t.is((seen.accept[1]!.error as Error & { code: string }).code, 'ERR_MALFORMED_FRAME')

  await server.close()
  assertNoLiveResources(t)
})

test.serial("every connection 'diagnostic' is published on rdma-graceful:diagnostic", async (t) => {
  const seen = record(t)
  const server = await listen({ port: 0 })
  const peer = new Promise<Connection>((resolve) => server.once('connection', resolve))
  // A raw client whose READY is stale: the server reports 'stale-ready'.
  const raw = await RawPeer.open(server.port)
  raw.write(PREAMBLE)
  raw.write(frameBytes(FrameKind.HELLO, 8, clientHello({ connectionId: 7 })))
  await raw.take(FrameKind.HELLO, 2000)
  const events: string[] = []
  ;(await peer).on('diagnostic', (d) => events.push(d.code))
  raw.write(frameBytes(FrameKind.READY, 8, Buffer.alloc(20)))
  await withDeadline(
    (async () => {
      while (seen.diagnostic.length === 0) await sleep(5)
    })(),
    2000,
    'diagnostic',
  )
  t.like(seen.diagnostic[0], { code: 'stale-ready', role: 'server', transport: 'tcp', connectionId: (await peer).id })
  t.regex(String(seen.diagnostic[0]!.remoteAddress), /^127\.0\.0\.1:\d+$/)
  t.deepEqual(events, ['stale-ready'])
  raw.destroy()
  await server.close({ graceMs: 0 })
  assertNoLiveResources(t)
})

test.serial('conn.stats counts application and wire bytes; server.stats() gives connections by state and totals', async (t) => {
  const server = await listen({ port: 0 })
  server.on('connection', echo)
  const client = await connect({ port: server.port })
  for (const m of ['a', 'bb', 'ccc']) {
    await client.send(m)
    await client.read()
  }
  const s = client.stats
  t.is(s.bytesSent, 6)
  t.is(s.bytesReceived, 6)
  t.true(s.wireBytesSent >= 6 + 3 * 8, `wire ${s.wireBytesSent}`)
  t.true(s.wireBytesReceived >= 6 + 3 * 8)
  t.is(s.dataDelivered, 3, 'the protocol counters are there too: 3 messages delivered')
  t.true(s.framesReceived >= 4, `frames received ${s.framesReceived}: the HELLO and 3 echoes at least`)
  const during = server.stats()
  t.deepEqual(during.connections, { OPEN: 1 })
  t.like(during, { admitting: 0, accepted: 1, refused: 0, graceful: 0, forced: 0, bytesSent: 6, bytesReceived: 6 })
  await client.close()
  const other = await connect({ port: server.port })
  other.destroy()
  await other.closed
  const raw = await RawPeer.open(server.port)
  raw.write(Buffer.from('nonsense'))
  await raw.closed
  await withDeadline(
    (async () => {
      while (server.stats().forced + server.stats().graceful < 2 || server.stats().refused < 1) await sleep(5)
    })(),
    3000,
    'tallies',
  )
  t.like(server.stats(), { connections: {}, accepted: 2, refused: 1, graceful: 1, forced: 1, bytesSent: 6, bytesReceived: 6 })
  await server.close()
  assertNoLiveResources(t)
})

test.serial('without a subscriber, no channel message is built or published', async (t) => {
  const built: string[] = []
  // Every message starts from the connection's or the server's channelBase(): count those calls.
  for (const [name, proto] of [
    ['connection', Connection.prototype],
    ['server', Server.prototype],
  ] as const) {
    const target = proto as unknown as { channelBase(...args: unknown[]): unknown }
    const original = target.channelBase
    target.channelBase = function (this: unknown, ...args: unknown[]) {
      built.push(name)
      return original.apply(this, args)
    }
    t.teardown(() => {
      target.channelBase = original
    })
  }
  const published: string[] = []
  for (const name of Object.values(CHANNEL_NAMES)) {
    const ch = channel(name)
    t.false(ch.hasSubscribers, `${name} has no subscriber in this test`)
    const original = ch.publish.bind(ch)
    ch.publish = (m: unknown) => {
      published.push(name)
      original(m)
    }
    t.teardown(() => {
      ch.publish = original
    })
  }
  const server = await listen({ port: 0 })
  server.on('connection', echo)
  const client = await connect({ port: server.port })
  await client.send('x')
  await client.read()
  await client.close()
  await server.close()
  await t.throwsAsync(connect({ port: server.port }), { code: 'ERR_CONNECTION_REFUSED' })
  t.deepEqual(built, [], 'no message was built')
  t.deepEqual(published, [], 'nothing was published')
  assertNoLiveResources(t)
})
