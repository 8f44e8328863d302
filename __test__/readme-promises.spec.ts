/**
 * Promises the README makes about the public API that no other test held it to, one test each,
 * over tcp on loopback: reads before a failure's rejection, the connect and handshake deadlines, the
 * write() threshold and ERR_SEND_QUEUE_FULL, disposal and iteration, the events at run time,
 * destroy(error), the size caps, and the close deadlines given to listen()/connect().
 * Serial: each test ends by checking that every native live count in this process is zero.
 */
import test, { type ExecutionContext } from 'ava'

import { connect, listen, type CloseResult, type Connection, type Server } from '../src/index'
import { FrameKind } from '../src/protocol'
import {
  assertNoLiveResources,
  assertWithin,
  discard,
  echo,
  LATE_TIMER_MS,
  serverAndClient,
  silentServer,
  sleep,
  startPeer,
  withDeadline,
} from './helpers'
import { encodeCloseMessage } from '../src/protocol/frames'
import { clientHello, frameBytes, PREAMBLE, RawPeer, readyFor } from './reliability/raw-peer'

const code = (e: unknown): string | undefined => (e as { code?: string } | undefined)?.code

/** How long the promise `start()` returns took to settle (counted from before the call), and with what. */
async function timed(start: () => Promise<unknown>): Promise<{ ms: number; value?: unknown; error?: unknown }> {
  const started = performance.now()
  const settled = await start().then(
    (value: unknown) => ({ value }),
    (error: unknown) => ({ error }),
  )
  return { ms: performance.now() - started, ...settled }
}

test.serial('messages that arrived before a failure are read first; then the read rejects ERR_CONNECTION_DOWN', async (t) => {
  const { server, client, peer } = await serverAndClient()
  for (const m of ['one', 'two', 'three']) await peer.send(m)
  await withDeadline(
    (async () => {
      while (client.stats.bytesReceived < 11) await sleep(2)
    })(),
    5000,
    'the three messages arriving',
  )
  peer.destroy()
  t.is((await client.closed).outcome, 'forced', 'the client side is DOWN before it reads anything')
  t.is((await client.read())?.toString(), 'one')
  t.is((await client.read())?.toString(), 'two')
  t.is((await client.read())?.toString(), 'three')
  await t.throwsAsync(client.read(), { code: 'ERR_CONNECTION_DOWN' })
  await server.close({ graceMs: 0 })
  assertNoLiveResources(t)
})

test.serial('connectTimeoutMs: a transport handshake that never completes rejects ERR_TRANSPORT_TIMEOUT at the deadline', async (t) => {
  const port = await silentServer(t)
  for (const transport of ['tcp', 'auto'] as const) {
    const { ms, error } = await timed(() => connect({ transport, port, connectTimeoutMs: 300 }))
    t.is(code(error), 'ERR_TRANSPORT_TIMEOUT', `${transport}: ${String(error)}`)
    // Lower bound: not before the deadline; upper: a late timer's allowance (helpers.LATE_TIMER_MS).
    assertWithin(t, ms, 300, 300 + LATE_TIMER_MS, `${transport}: rejected at connectTimeoutMs`)
  }
  assertNoLiveResources(t)
})

test.serial("handshakeTimeoutMs: an accepted peer that never sends the preamble is a 'clientError' ERR_TRANSPORT_TIMEOUT then", async (t) => {
  const server = await listen({ port: 0, handshakeTimeoutMs: 300, readyTimeoutMs: 60_000 })
  const refused = new Promise<Error>((resolve) => server.once('clientError', resolve))
  const started = performance.now()
  const raw = await RawPeer.open(server.port)
  t.teardown(() => raw.destroy())
  const error = await withDeadline(refused, 5000, 'clientError')
  const ms = performance.now() - started
  t.is(code(error), 'ERR_TRANSPORT_TIMEOUT', String(error))
  assertWithin(t, ms, 300, 300 + LATE_TIMER_MS, 'refused at handshakeTimeoutMs')
  t.is(server.connections.size, 0)
  await server.close({ graceMs: 0 })
  assertNoLiveResources(t)
})

test.serial('write() is false at half of maxQueuedSends messages; a send beyond maxQueuedSends rejects ERR_SEND_QUEUE_FULL', async (t) => {
  // One credit, nobody reads: the first message leaves, the rest wait.
  const { server, client, peer } = await serverAndClient({ maxQueuedSends: 8 }, { receiveWindow: 1 })
  const written: boolean[] = []
  for (let i = 0; i < 5; i++) written.push(client.write(`w${i}`, () => {}))
  t.deepEqual(written, [true, true, true, true, false], 'the first left; false once 4 (8 / 2) messages wait')
  t.is(client.writableMessages, 4)
  const sends = Array.from({ length: 4 }, (_, i) => client.send(`s${i}`))
  t.is(client.writableMessages, 8)
  await t.throwsAsync(withDeadline(client.send('one too many'), 2000, 'the send beyond the queue'), { code: 'ERR_SEND_QUEUE_FULL' })
  t.is(client.state, 'OPEN', 'a full queue refuses the send, not the connection')
  const got: string[] = []
  for (let i = 0; i < 9; i++) got.push((await peer.read())!.toString())
  await Promise.all(sends)
  t.deepEqual(got, ['w0', 'w1', 'w2', 'w3', 'w4', 's0', 's1', 's2', 's3'])
  discard(peer)
  t.is((await client.close()).outcome, 'graceful')
  await server.close()
  assertNoLiveResources(t)
})

test.serial('for await (const conn of server) yields each connection; server.connections and stats().admitting count them', async (t) => {
  const server = await listen({ port: 0 })
  const raw = await RawPeer.open(server.port)
  t.teardown(() => raw.destroy())
  raw.write(PREAMBLE)
  await withDeadline(
    (async () => {
      while (server.stats().admitting === 0) await sleep(2)
    })(),
    5000,
    'the raw peer being admitted',
  )
  t.is(server.stats().admitting, 1, 'accepted, no HELLO yet')
  t.is(server.connections.size, 0, 'not a connection before its HELLO')
  // Two connections before anyone iterates: the server keeps them for the loop.
  const a = await connect({ port: server.port })
  const b = await connect({ port: server.port })
  const served: Connection[] = []
  const serving = (async () => {
    for await (const c of server) {
      served.push(c)
      echo(c)
    }
  })()
  // And one while the loop waits.
  raw.write(frameBytes(FrameKind.HELLO, 8, clientHello()))
  await raw.take(FrameKind.HELLO, 5000)
  t.is(server.stats().admitting, 0)
  t.is(served.length, 3, 'the loop got every connection')
  t.deepEqual(new Set(served), server.connections)
  raw.destroy()
  await a.send('via the iterator')
  t.is((await a.read())?.toString(), 'via the iterator')
  await a.close()
  await b.close()
  await withDeadline(
    (async () => {
      while (server.connections.size > 0) await sleep(2)
    })(),
    5000,
    'the connections leaving server.connections',
  )
  await server.close()
  await withDeadline(serving, 2000, 'the loop ends when the server closes')
  assertNoLiveResources(t)
})

test.serial('Symbol.asyncDispose closes a connection gracefully and a server', async (t) => {
  const server = await listen({ port: 0 })
  const serverSide: Array<Promise<CloseResult>> = []
  server.on('connection', (c) => {
    serverSide.push(c.closed)
    discard(c)
  })
  const conn = await connect({ port: server.port })
  await conn[Symbol.asyncDispose]()
  t.is(conn.state, 'CLOSED')
  t.deepEqual(await conn.closed, { outcome: 'graceful', reason: 'close-complete' })
  t.like(await serverSide[0], { outcome: 'graceful' })
  let closed = false
  server.once('close', () => (closed = true))
  await server[Symbol.asyncDispose]()
  t.true(closed)
  assertNoLiveResources(t)
})

test.serial("events at run time: the Connection's 'open', 'end' and 'close' (with the result), the Server's 'close' (with the tally)", async (t) => {
  const server = await listen({ port: 0, allowHalfOpen: true })
  const serverEvents: string[] = []
  const serverConn = new Promise<Connection>((resolve) =>
    server.once('connection', (c) => {
      c.on('open', () => serverEvents.push(`open ${c.state}`))
      c.on('end', () => serverEvents.push('end'))
      c.on('close', (r) => serverEvents.push(`close ${r.outcome} ${c.state}`))
      resolve(c)
    }),
  )
  const client = await connect({ port: server.port, allowHalfOpen: true })
  const clientEvents: string[] = []
  client.on('end', () => clientEvents.push('end'))
  client.on('close', (r) => clientEvents.push(`close ${r.outcome} ${r.reason}`))
  const sc = await serverConn
  await withDeadline(
    (async () => {
      while (serverEvents.length === 0) await sleep(2)
    })(),
    5000,
    "the server side's 'open'",
  )
  t.deepEqual(serverEvents, ['open OPEN'])
  client.end()
  t.is(await sc.read(), null)
  t.deepEqual(serverEvents, ['open OPEN', 'end'], "'end' once the peer sends no more")
  sc.end()
  t.is(await client.read(), null)
  t.deepEqual(clientEvents.slice(0, 1), ['end'])
  await client.closed
  t.deepEqual(clientEvents, ['end', 'close graceful close-complete'])
  await sc.closed
  t.deepEqual(serverEvents, ['open OPEN', 'end', 'close graceful CLOSED'])
  const tally = new Promise((resolve) => server.once('close', resolve))
  await server.close()
  t.deepEqual(await tally, { graceful: 0, forced: 0 }, "the shutdown's own counts: the connection had closed before it")
  t.like(server.stats(), { graceful: 1, forced: 0 })
  assertNoLiveResources(t)
})

test.serial('destroy(error): a pending read and queued sends reject ERR_CONNECTION_DESTROYED with the error as cause', async (t) => {
  const { server, client } = await serverAndClient({}, { receiveWindow: 1 })
  await client.send('fits')
  const queued = client.send('waits for a credit')
  const pending = client.read()
  const why = new Error('the application gave up')
  client.destroy(why)
  for (const p of [pending, queued]) {
    const err = await t.throwsAsync(p)
    t.is(code(err), 'ERR_CONNECTION_DESTROYED')
    t.is((err as Error).cause, why)
  }
  const result = await client.closed
  t.like(result, { outcome: 'forced', reason: 'destroyed' })
  t.is(result.error?.cause, why)
  await server.close({ graceMs: 0 })
  assertNoLiveResources(t)
})

test.serial('maxMessageSize is capped at 64 MiB, and a 64 MiB message goes through end to end', async (t) => {
  const max = 64 * 2 ** 20
  await t.throwsAsync(listen({ port: 0, maxMessageSize: max + 1 }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.throwsAsync(connect({ port: 9, maxMessageSize: max + 1 }), { code: 'ERR_INVALID_ARGUMENT' })
  const { server, client } = await serverAndClient({ maxMessageSize: max }, { maxMessageSize: max })
  const big = Buffer.alloc(max, 7)
  big.writeUInt32BE(0xdeadbeef, max - 4)
  const peer = [...server.connections][0]!
  echo(peer)
  await client.send(big)
  const back = await withDeadline(client.read(), 30_000, 'the 64 MiB echo')
  t.is(back?.length, max)
  t.true(back?.equals(big))
  t.is((await client.close()).outcome, 'graceful')
  await server.close()
  assertNoLiveResources(t)
})

/**
 * The close deadlines given to connect()/listen() reach the engine: each close is forced with its
 * reason when its deadline, and its retries, pass. Bounds: the deadline (x attempts) at least, and a
 * late timer's allowance (helpers.LATE_TIMER_MS) at most.
 */
/** The time (`at`, on the connection's clock) of the first state change to each state. */
function stateTimes(c: Connection): Partial<Record<string, number>> {
  const at: Partial<Record<string, number>> = {}
  c.on('state', (e) => {
    at[e.to] ??= e.at
  })
  return at
}

function inWindow(t: ExecutionContext, ms: number, deadline: number, what: string): void {
  assertWithin(t, ms, deadline, deadline + LATE_TIMER_MS, `${what}: forced`)
}

test.serial('connect({ ackTimeoutMs, maxCloseRetries }): a peer that never ACKs forces the close with ack-timeout, ERR_CLOSE_TIMEOUT', async (t) => {
  const { server, client } = await serverAndClient({ ackTimeoutMs: 150, maxCloseRetries: 1 }, { allowHalfOpen: true }) // never ends
  const { ms } = await timed(() => client.close())
  const result = await client.closed
  t.like(result, { outcome: 'forced', reason: 'ack-timeout' })
  t.is(code(result.error), 'ERR_CLOSE_TIMEOUT')
  t.is(client.stats.closeRetries, 1)
  inWindow(t, ms, 2 * 150, 'the REQ and one re-send')
  await server.close({ graceMs: 0 })
  assertNoLiveResources(t)
})

test.serial('connect({ flushTimeoutMs }): data that cannot leave before the REQ forces the close with flush-timeout', async (t) => {
  const { server, client } = await serverAndClient({ flushTimeoutMs: 200 }, { receiveWindow: 1 }) // nobody reads
  await client.send('fits')
  const stuck = client.send('no credit')
  const { ms } = await timed(() => client.close())
  t.like(await client.closed, { outcome: 'forced', reason: 'flush-timeout' })
  await t.throwsAsync(stuck, { code: 'ERR_CLOSE_TIMEOUT' })
  inWindow(t, ms, 200, 'flush')
  await server.close({ graceMs: 0 })
  assertNoLiveResources(t)
})

test.serial('listen({ drainTimeoutMs }): a half-open server side that never ends is forced with end-timeout after the REQ', async (t) => {
  const server = await listen({ port: 0, allowHalfOpen: true, drainTimeoutMs: 200 })
  const serverSide = new Promise<Connection>((resolve) => server.once('connection', resolve))
  const client = await connect({ port: server.port })
  const sc = await serverSide
  const at = stateTimes(sc)
  void (async () => {
    for await (const _ of sc); // reads to the client's end, and never ends its own side
  })().catch(() => {})
  void client.close()
  const result = await withDeadline(sc.closed, 5000, 'the drain timeout')
  t.like(result, { outcome: 'forced', reason: 'end-timeout' })
  t.is(code(result.error), 'ERR_CLOSE_TIMEOUT')
  inWindow(t, at.DOWN! - at.REQ_RECEIVED!, 200, 'drain, from the REQ')
  await client.closed
  await server.close({ graceMs: 0 })
  assertNoLiveResources(t)
})

test.serial('listen({ finTimeoutMs, maxCloseRetries }): a client that never sends FIN forces the server side with fin-timeout', async (t) => {
  const server: Server = await listen({ port: 0, finTimeoutMs: 150, maxCloseRetries: 1, allowHalfOpen: true })
  const serverSide = new Promise<Connection>((resolve) => server.once('connection', resolve))
  const raw = await RawPeer.open(server.port)
  t.teardown(() => raw.destroy())
  raw.write(PREAMBLE)
  raw.write(frameBytes(FrameKind.HELLO, 8, clientHello()))
  const h = await raw.take(FrameKind.HELLO, 5000)
  const sc = await serverSide
  const at = stateTimes(sc)
  raw.write(readyFor(h!.payload))
  raw.write(frameBytes(FrameKind.DISCONNECT_REQ, 0, encodeCloseMessage({ dataCount: 0, attempt: 0 })))
  t.is(await sc.read(), null)
  sc.end() // half-open: the server side ends when it says so, and ACKs
  await raw.take(FrameKind.DISCONNECT_ACK, 5000)
  const result = await withDeadline(sc.closed, 5000, 'the fin timeout')
  t.like(result, { outcome: 'forced', reason: 'fin-timeout' })
  t.is(code(result.error), 'ERR_CLOSE_TIMEOUT')
  t.is(sc.stats.closeRetries, 1, 'the ACK was sent again once')
  inWindow(t, at.DOWN! - at.ACK_SENT!, 2 * 150, 'the ACK and one re-send, from the first ACK')
  raw.destroy()
  await server.close({ graceMs: 0 })
  assertNoLiveResources(t)
})

test.serial(
  "ERR_TRANSPORT_QUEUE_FULL: a peer that stops reading its socket fills tcp's 64 MiB queue; the connection goes DOWN with that cause",
  async (t) => {
    // The peer grants 64 credits of 4 MiB: the lifecycle layer would let 256 MiB wait, more than the
    // transport queues. Frozen (SIGSTOP), it takes nothing off its socket.
    const size = 4 * 2 ** 20
    const peer = startPeer(t, ['server'], { RG_OPTS: JSON.stringify({ maxMessageSize: size, receiveWindow: 64 }) })
    const { port } = await peer.waitFor('port')
    const conn = await connect({ port, maxMessageSize: size, heartbeatTimeoutMs: 0 })
    peer.child.kill('SIGSTOP')
    const payload = Buffer.alloc(size, 1)
    const sends = Array.from({ length: 64 }, () => conn.send(payload))
    for (const s of sends) s.catch(() => {})
    const result = await withDeadline(conn.closed, 10_000, 'the connection going down')
    t.like(result, { outcome: 'forced', reason: 'transport-down' })
    t.is(code(result.error), 'ERR_CONNECTION_DOWN')
    t.is(code(result.error?.cause), 'ERR_TRANSPORT_QUEUE_FULL', String(result.error?.cause))
    await t.throwsAsync(sends[63]!, { code: 'ERR_CONNECTION_DOWN' })
    assertNoLiveResources(t)
  },
)
