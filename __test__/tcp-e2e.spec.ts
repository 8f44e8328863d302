/**
 * End to end over tcp on loopback, with the peer in a separate process where it matters.
 * Serial: each test ends by checking that every native live count in this process is zero.
 */
import type { LookupOptions } from 'node:dns'
import dnsPromises from 'node:dns/promises'
import net from 'node:net'

import test, { type ExecutionContext } from 'ava'

import { connect, listen, type Connection, TransportError } from '../src/index'
import {
  assertNoLiveResources,
  assertWithin,
  discard,
  echo,
  LATE_TIMER_MS,
  MAX_NODE_TIMER_MS,
  recordTimerDelays,
  sleep,
  startPeer,
  withDeadline,
} from './helpers'

test.serial('1,000 messages each way arrive complete and in order (server in another process)', async (t) => {
  const peer = startPeer(t, ['server'])
  const { port } = await peer.waitFor('port')
  const conn = await connect({ port: port as number })
  const total = 1000
  const received: string[] = []
  const reading = (async () => {
    for await (const m of conn) {
      received.push(m.toString())
      if (received.length === total) break
    }
  })()
  // Send without waiting for each: credits and the send queue pace them.
  await Promise.all(Array.from({ length: total }, (_, i) => conn.send(`message ${i} ${'x'.repeat(i % 97)}`)))
  await withDeadline(reading, 20_000, 'echoes')
  t.deepEqual(
    received,
    Array.from({ length: total }, (_, i) => `message ${i} ${'x'.repeat(i % 97)}`),
  )
  const result = await conn.close()
  t.is(result.outcome, 'graceful')
  assertNoLiveResources(t)
})

test.serial('a server killed with SIGKILL makes a pending read reject, not hang', async (t) => {
  const peer = startPeer(t, ['server'])
  const { port } = await peer.waitFor('port')
  const conn = await connect({ port: port as number, heartbeatIntervalMs: 200, heartbeatTimeoutMs: 1000 })
  const read = conn.read()
  peer.child.kill('SIGKILL')
  const err = await t.throwsAsync(withDeadline(read, 5000, 'pending read'))
  t.is((err as Error & { code: string }).code, 'ERR_CONNECTION_DOWN')
  const result = await conn.closed
  t.is(result.outcome, 'forced')
  await t.throwsAsync(conn.send('after down'), { code: 'ERR_CONNECTION_DOWN' })
  assertNoLiveResources(t)
})

test.serial('a client killed with SIGKILL takes its server-side connection DOWN; the server serves on', async (t) => {
  const server = await listen({ port: 0 })
  const accepted = new Promise<Connection>((resolve) => server.once('connection', resolve))
  const peer = startPeer(t, ['client', String(server.port)])
  await peer.waitFor('connected')
  const serverSide = await withDeadline(accepted, 5000, 'accept')
  await serverSide.send('ping')
  t.is((await serverSide.read())?.toString(), 'ping')
  const read = serverSide.read()
  peer.child.kill('SIGKILL')
  await t.throwsAsync(withDeadline(read, 5000, 'pending read'), { code: 'ERR_CONNECTION_DOWN' })
  t.is((await serverSide.closed).outcome, 'forced')

  server.once('connection', echo)
  const other = await connect({ port: server.port })
  await other.send('still serving')
  t.is((await other.read())?.toString(), 'still serving')
  t.is((await other.close()).outcome, 'graceful')
  t.deepEqual(await server.close({ graceMs: 500 }), { graceful: 0, forced: 0 }, 'both had closed before the shutdown')
  t.like(server.stats(), { graceful: 1, forced: 1 })
  assertNoLiveResources(t)
})

test.serial('garbage bytes and an oversized frame get clear errors; other clients are served throughout', async (t) => {
  const server = await listen({ port: 0, maxMessageSize: 1024 })
  const clientErrors: Array<TransportError> = []
  server.on('clientError', (e: TransportError) => clientErrors.push(e))
  const serverConns: Connection[] = []
  server.on('connection', (c: Connection) => {
    serverConns.push(c)
    echo(c)
  })
  const good = await connect({ port: server.port, maxMessageSize: 1024 })

  // 1. Not this protocol at all.
  const raw = net.connect(server.port, '127.0.0.1')
  raw.on('error', () => {})
  raw.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
  await withDeadline(new Promise<void>((resolve) => server.once('clientError', () => resolve())), 5000, 'clientError')
  t.is(clientErrors[0].code, 'ERR_MALFORMED_FRAME')
  t.regex(clientErrors[0].message, /not an rdma-graceful endpoint/)

  // 2. The right preamble, then a frame header announcing 1 MiB to a server that allows 1 KiB: not a
  // client HELLO, so it never becomes a connection.
  const bad = net.connect(server.port, '127.0.0.1')
  bad.on('error', () => {})
  const conns = serverConns.length
  const refused = withDeadline(new Promise<void>((resolve) => server.once('clientError', () => resolve())), 5000, 'clientError')
  bad.write(Buffer.from('RDMAGRC\x01', 'latin1'))
  bad.write(Buffer.from([0, 0, 0, 0, 0, 0x10, 0, 0]))
  await refused
  t.is(clientErrors[1].code, 'ERR_FRAME_TOO_LARGE')
  t.regex(clientErrors[1].message, /exceeds the maximum of 1024 bytes/)
  t.is(serverConns.length, conns, 'the oversized first frame never became a connection')

  // 3. Sending more than the limit is refused on this side too, with a typed error.
  await t.throwsAsync(good.send(Buffer.alloc(2048)), { code: 'ERR_MESSAGE_TOO_LARGE' })

  // The well-behaved client was never disturbed.
  await good.send('fine')
  t.is((await good.read())?.toString(), 'fine')
  t.is((await good.close()).outcome, 'graceful')
  raw.destroy()
  bad.destroy()
  await server.close({ graceMs: 100 })
  assertNoLiveResources(t)
})

test.serial('connect() to a port where nothing listens rejects ERR_CONNECTION_REFUSED (a TransportError)', async (t) => {
  const closedPort = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => resolve(p))
    })
  })
  await t.throwsAsync(connect({ port: closedPort }), { code: 'ERR_CONNECTION_REFUSED', instanceOf: TransportError })
  assertNoLiveResources(t)
})

test.serial('bad options reject ERR_INVALID_ARGUMENT when given, not when the first connection arrives', async (t) => {
  await t.throwsAsync(connect({ port: 70000 }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.throwsAsync(connect({ port: 1, transport: 'carrier-pigeon' as 'tcp' }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.throwsAsync(listen({ port: 0, maxMessageSize: 0 }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.throwsAsync(listen({ port: 0, heartbeatIntervalMs: -1 }), { code: 'ERR_INVALID_ARGUMENT', message: /heartbeatIntervalMs/ })
  await t.throwsAsync(connect({ port: 1, receiveWindow: 0 }), { code: 'ERR_INVALID_ARGUMENT', message: /receiveWindow/ })
  const server = await listen({ port: 0 })
  await t.throwsAsync(server.close({ graceMs: -5 }), { code: 'ERR_INVALID_ARGUMENT' })
  await server.close()
  assertNoLiveResources(t)
})

test.serial('send() after end() rejects ERR_SEND_AFTER_END; the close still completes gracefully', async (t) => {
  const server = await listen({ port: 0 })
  server.on('connection', discard)
  const a = await connect({ port: server.port })
  a.end()
  await t.throwsAsync(a.send('late'), { code: 'ERR_SEND_AFTER_END' })
  t.is((await a.closed).outcome, 'graceful')
  await server.close({ graceMs: 500 })
  assertNoLiveResources(t)
})

test.serial('a destroyed connection: send() and read() reject ERR_CONNECTION_DESTROYED, close() resolves with the same forced result', async (t) => {
  const server = await listen({ port: 0 })
  server.on('connection', discard)
  const b = await connect({ port: server.port })
  b.destroy()
  await t.throwsAsync(b.send('after destroy'), { code: 'ERR_CONNECTION_DESTROYED' })
  await t.throwsAsync(b.read(), { code: 'ERR_CONNECTION_DESTROYED' })
  const result = await b.closed
  t.is(result.outcome, 'forced')
  t.is(await b.close(), result, 'close() after destroy() resolves with the same result')
  await server.close({ graceMs: 500 })
  assertNoLiveResources(t)
})

test.serial('an abort in the middle of an attempt frees it at once: a rejected connect() leaves nothing behind', async (t) => {
  // A peer that accepts TCP but never answers the handshake keeps the attempt in flight.
  const silent = net.createServer((socket) => socket.on('error', () => {}))
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => void silent.close())
  const port = (silent.address() as net.AddressInfo).port
  const controller = new AbortController()
  const attempt = connect({ port, signal: controller.signal, connectTimeoutMs: 10_000 })
  await sleep(100)
  controller.abort(new Error('no answer, giving up'))
  const started = performance.now()
  await t.throwsAsync(withDeadline(attempt, 2000, 'aborted connect'), { message: 'no answer, giving up' })
  assertWithin(t, performance.now() - started, 0, LATE_TIMER_MS, 'the abort did not wait for the connect deadline (10 s)')
  assertNoLiveResources(t)
})

test.serial('an AbortSignal cancels a connection attempt', async (t) => {
  const server = await listen({ port: 0 })
  const controller = new AbortController()
  const attempt = connect({ port: server.port, signal: controller.signal })
  controller.abort(new Error('user gave up'))
  await t.throwsAsync(attempt, { message: 'user gave up' })
  await server.close({ graceMs: 100 })
  assertNoLiveResources(t)
})

/** Records every name the library hands to Node's resolver (node:dns/promises lookup), with its options. */
function recordLookups(t: ExecutionContext): Array<{ host: string; family: unknown }> {
  const seen: Array<{ host: string; family: unknown }> = []
  const original = dnsPromises.lookup
  const spy = (host: string, options: LookupOptions) => {
    seen.push({ host, family: options?.family })
    return original(host, options)
  }
  dnsPromises.lookup = spy as typeof original
  t.teardown(() => {
    dnsPromises.lookup = original
  })
  return seen
}

test.serial("a host name is resolved off the event loop, by Node's resolver, before the native side sees it", async (t) => {
  const lookups = recordLookups(t)
  const server = await listen({ host: 'localhost', port: 0, allowHalfOpen: false }) // takes no part: its side ends after the client's
  const conn = await connect({ host: 'localhost', port: server.port })
  t.deepEqual(
    lookups.map((l) => l.host),
    ['localhost', 'localhost'],
    'listen() and connect() resolved the name with dns.lookup (libuv thread pool)',
  )
  t.regex(conn.remoteAddress, /^(127\.0\.0\.1|\[?::1\]?):\d+$/, 'the native side got an address')
  await conn.close()
  await server.close()
  const err = await t.throwsAsync(connect({ host: 'no.such.host.invalid', port: 9 }))
  t.is((err as TransportError).code, 'ERR_ADDRESS_UNREACHABLE')
  t.regex(err!.message, /no\.such\.host\.invalid/)
  await t.throwsAsync(listen({ host: 'no.such.host.invalid' }), { code: 'ERR_ADDRESS_UNREACHABLE' } as never)
  assertNoLiveResources(t)
})

test.serial("where rdma may be chosen ('auto', 'rdma'), host names resolve preferring IPv4", async (t) => {
  const lookups = recordLookups(t)
  const server = await listen({ port: 0 })
  server.on('connection', discard)
  const conn = await connect({ transport: 'auto', host: 'localhost', port: server.port })
  t.deepEqual(lookups, [{ host: 'localhost', family: 4 }])
  t.regex(conn.remoteAddress, /^127\.0\.0\.1:\d+$/)
  await conn.close()
  await t.throwsAsync(connect({ transport: 'rdma', host: 'localhost', port: server.port, connectTimeoutMs: 2000 }))
  t.deepEqual(lookups[1], { host: 'localhost', family: 4 }, 'rdma resolves IPv4 too')
  await server.close()
  assertNoLiveResources(t)
})

test.serial('rdma tuning options are checked at once, whatever the transport', async (t) => {
  for (const bad of [0, 32, 1.5, -1]) {
    await t.throwsAsync(connect({ port: 9, rdmaAckTimeoutExponent: bad }), { code: 'ERR_INVALID_ARGUMENT' } as never)
    await t.throwsAsync(listen({ rdmaAckTimeoutExponent: bad }), { code: 'ERR_INVALID_ARGUMENT' } as never)
  }
  for (const bad of [8, -1, 2.5]) {
    const err = await t.throwsAsync(connect({ port: 9, rdmaRetryCount: bad }))
    t.is((err as TransportError).code, 'ERR_INVALID_ARGUMENT')
    t.regex(err!.message, /rdmaRetryCount must be an integer from 0 to 7/)
  }
  for (const bad of [-1, 2.5, 1_000_001]) {
    const err = await t.throwsAsync(connect({ port: 9, rdmaBusyPollUs: bad }))
    t.is((err as TransportError).code, 'ERR_INVALID_ARGUMENT')
    t.regex(err!.message, /rdmaBusyPollUs must be an integer from 0 to 1000000/)
    await t.throwsAsync(listen({ rdmaBusyPollUs: bad }), { code: 'ERR_INVALID_ARGUMENT' } as never)
  }
  for (const bad of [-1, 1, 1023, 2048.5, 64 * 1024 * 1024 + 1]) {
    const err = await t.throwsAsync(connect({ port: 9, rdmaZeroCopyThreshold: bad }))
    t.is((err as TransportError).code, 'ERR_INVALID_ARGUMENT')
    t.regex(err!.message, /rdmaZeroCopyThreshold must be 0 \(off\) or an integer from 1024 to 67108864/)
    await t.throwsAsync(listen({ rdmaZeroCopyThreshold: bad }), { code: 'ERR_INVALID_ARGUMENT' } as never)
  }
  // Valid values are accepted (and ignored by tcp: a large message still goes, copied).
  const server = await listen({ port: 0, rdmaAckTimeoutExponent: 14, rdmaBusyPollUs: 0, rdmaZeroCopyThreshold: 0, allowHalfOpen: false })
  server.on('connection', echo)
  const conn = await connect({
    port: server.port,
    rdmaRetryCount: 3,
    rdmaAckTimeoutExponent: 18,
    rdmaBusyPollUs: 1_000_000,
    rdmaZeroCopyThreshold: 1024,
  })
  await conn.send(Buffer.alloc(4096, 7))
  t.deepEqual(await conn.read(), Buffer.alloc(4096, 7))
  t.is(conn.stats.zeroCopySent, 0, 'tcp copies')
  t.is((await conn.close()).outcome, 'graceful')
  await server.close()
  assertNoLiveResources(t)
})

test.serial('send() with something that is not a Buffer, Uint8Array or string rejects ERR_INVALID_ARGUMENT (never throws)', async (t) => {
  const server = await listen({ port: 0, allowHalfOpen: false }) // takes no part: its side ends after the client's
  const conn = await connect({ port: server.port })
  for (const bad of [undefined, null, 42, { a: 1 }, new ArrayBuffer(4), [1, 2]]) {
    let p: Promise<void> | undefined
    t.notThrows(
      () => {
        p = conn.send(bad as never)
      },
      `send(${String(bad)}) must not throw`,
    )
    const err = await t.throwsAsync(p!)
    t.is((err as TransportError).code, 'ERR_INVALID_ARGUMENT')
    t.regex(err!.message, /send\(\) takes a Buffer, a Uint8Array or a string/)
  }
  // The connection is unaffected.
  t.is((await conn.close()).outcome, 'graceful')
  await server.close()
  assertNoLiveResources(t)
})

test.serial('sendTimeoutMs takes any duration from 1 ms to years (a chained timer), and refuses nonsense', async (t) => {
  const delays = recordTimerDelays(t)
  // No liveness timeout on either side and a longer heartbeat interval: the send's deadline is the
  // client's earliest, the one its timer is armed for.
  const server = await listen({ port: 0, receiveWindow: 1, heartbeatTimeoutMs: 0 })
  const accepted = new Promise<Connection>((resolve) => server.once('connection', resolve))
  const threeYears = 3 * 365 * 24 * 3600 * 1000 // beyond 2^32-1 ms
  const conn = await connect({ port: server.port, sendTimeoutMs: threeYears, heartbeatTimeoutMs: 0, heartbeatIntervalMs: 2 * threeYears })
  const serverSide = await accepted // reads nothing yet: one credit, so the second send waits
  await conn.send('fits')
  let settled = false
  const waiting = conn.send('waits three years at most').finally(() => (settled = true))
  await sleep(300)
  t.false(settled, 'the send waits: its three-year deadline did not fire at once')
  t.true(delays.includes(MAX_NODE_TIMER_MS), 'its deadline was armed as a chain of steps of 2^31-1 ms')
  t.deepEqual(
    delays.filter((d) => d > MAX_NODE_TIMER_MS),
    [],
    'no Node timer got a delay it would turn into 1 ms',
  )
  t.is((await serverSide.read())?.toString(), 'fits')
  await waiting // the read returned a credit
  t.is((await serverSide.read())?.toString(), 'waits three years at most')
  discard(serverSide)
  t.is((await conn.close()).outcome, 'graceful')
  for (const bad of [0, -5, 1.5, Number.NaN, Infinity]) {
    await t.throwsAsync(connect({ port: server.port, sendTimeoutMs: bad }), { code: 'ERR_INVALID_ARGUMENT' } as never)
  }
  await server.close()
  assertNoLiveResources(t)
})

test('heartbeats grant no credit: a server that never reads holds its client to the window while the native sweep sends heartbeats', async (t) => {
  const hb = { heartbeatIntervalMs: 20, heartbeatTimeoutMs: 5000 }
  const server = await listen({ port: 0, receiveWindow: 4, ...hb })
  t.teardown(() => server.close({ graceMs: 0 }))
  const ends: string[] = []
  server.on('connection', (c) => c.on('close', (r) => ends.push(r.reason))) // never reads
  const conn = await connect({ port: server.port, ...hb })
  for (let i = 0; i < 50; i++) conn.send(`m${i}`).catch(() => {})
  await sleep(400) // 20 intervals: the server, which sends nothing else, heartbeats all along
  t.true(conn.stats.heartbeatsReceived >= 5, `${conn.stats.heartbeatsReceived} heartbeats received`)
  t.is(conn.stats.dataSent, 4, 'only the window of 4 went out: the heartbeats repeated its credits field')
  t.is(conn.state, 'OPEN')
  t.deepEqual(ends, [], 'the server saw no DATA beyond its window')
  conn.destroy()
})
