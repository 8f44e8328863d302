/**
 * Backpressure without a promise per message: writableLength / writableMessages count what waits
 * for credits, write() returns false at the high-water mark, 'drain' follows; failed writes are
 * never silent; toDuplex() makes stream.pipeline() work end to end, in order, with backpressure.
 */
import { PassThrough, Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

import { once } from 'node:events'

import test from 'ava'

import { connect, listen, toDuplex } from '../src/index'
import { assertNoLiveResources, serverAndClient, sleep, withDeadline } from './helpers'

test.serial("write() returns false at the high-water mark, counts what waits, and 'drain' follows once it is all sent", async (t) => {
  // The server grants 4 credits and reads nothing until told: writes beyond 4 wait.
  const { server, client, peer } = await serverAndClient({ writableHighWaterMark: 1000 }, { receiveWindow: 4 })
  t.is(client.writableHighWaterMark, 1000)
  const results: boolean[] = []
  for (let i = 0; i < 4; i++) results.push(client.write(Buffer.alloc(100, i)))
  t.deepEqual(results, [true, true, true, true], 'the window takes the first four at once')
  t.is(client.writableLength, 0)
  for (let i = 4; i < 13; i++) results.push(client.write(Buffer.alloc(100, i)))
  t.is(client.writableMessages, 9)
  t.is(client.writableLength, 900)
  t.true(
    results.slice(4).every((r) => r),
    'below the mark',
  )
  t.false(client.write(Buffer.alloc(100, 13)), 'at the mark (1000 bytes waiting)')
  t.true(client.writableNeedDrain)
  let drains = 0
  const drained = new Promise<void>((resolve) => client.once('drain', resolve))
  client.on('drain', () => drains++)
  const got: number[] = []
  for (let i = 0; i < 14; i++) got.push((await peer.read())![0]!)
  await withDeadline(drained, 2000, 'drain')
  t.deepEqual(
    got,
    Array.from({ length: 14 }, (_, i) => i),
    'every message, in order',
  )
  t.is(client.writableLength, 0)
  t.is(client.writableMessages, 0)
  t.false(client.writableNeedDrain)
  t.is(drains, 1)
  t.throws(() => client.write(42 as never), { code: 'ERR_INVALID_ARGUMENT' } as never)
  const rest = (async () => {
    for await (const _ of peer); // reads up to the client's end, so the server side ends too
  })()
  t.is((await client.close()).outcome, 'graceful')
  await rest
  await server.close()
  assertNoLiveResources(t)
})

test.serial('a producer that waits for drain sends 2,000 messages without a promise each, none lost', async (t) => {
  const { server, client, peer } = await serverAndClient({ writableHighWaterMark: 4096 }, { receiveWindow: 8 })
  const total = 2000
  const reading = (async () => {
    const got: string[] = []
    for await (const m of peer) got.push(m.toString())
    return got
  })()
  let falses = 0
  for (let i = 0; i < total; i++) {
    if (!client.write(`message ${i} ${'x'.repeat(100)}`)) {
      falses++
      await new Promise<void>((resolve) => client.once('drain', resolve))
    }
  }
  t.true(falses > 0, 'the producer was held back')
  t.is((await client.close()).outcome, 'graceful')
  const got = await reading
  t.is(got.length, total)
  t.true(got.every((m, i) => m.startsWith(`message ${i} `)))
  t.true(client.stats.bytesSent >= total * 100)
  await server.close()
  assertNoLiveResources(t)
})

test.serial(
  "a write() that fails without a callback is reported on 'error' (or, with no listener, by one process warning); the connection stays up",
  async (t) => {
    const { server, client, peer } = await serverAndClient({ sendTimeoutMs: 100 }, { receiveWindow: 1 })
    const errors: Array<Error | undefined> = []
    client.write('fits', (e) => errors.push(e))
    client.write('waits, then times out', (e) => errors.push(e))
    await sleep(300)
    t.is(errors[0], undefined)
    t.is((errors[1] as Error & { code: string }).code, 'ERR_SEND_TIMEOUT')
    t.is(client.state, 'OPEN', 'with a callback the caller decides')
    // Listened for: the failure comes as 'error' (Node's habit), the connection stays up.
    const reported = once(client, 'error')
    client.write('waits too, and an error listener hears it')
    const [error] = (await withDeadline(reported, 2000, "'error' after the failed write")) as [Error & { code: string }]
    t.is(error.code, 'ERR_SEND_TIMEOUT')
    t.is(client.state, 'OPEN', 'a failed write does not destroy a healthy connection')
    // Nobody listens: one process warning for the connection, however many writes fail.
    const warnings: Array<Error & { code?: string }> = []
    const onWarning = (w: Error): void => void warnings.push(w)
    process.on('warning', onWarning)
    client.write('nobody listens')
    client.write('nobody listens either')
    await sleep(400)
    process.off('warning', onWarning)
    t.deepEqual(
      warnings.filter((w) => w.code === 'RDMA_GRACEFUL_WRITE_FAILED').map((w) => w.message.includes('no credit')),
      [true],
    )
    t.is(client.state, 'OPEN')
    // The peer reads: only the first message was ever written; the failed ones never were.
    t.is((await peer.read())?.toString(), 'fits')
    const eof = peer.read() // the peer reads to the client's end: its side then ends (allowHalfOpen: false)
    const closed = await client.close()
    t.is(closed.outcome, 'graceful', JSON.stringify(closed))
    t.is(await eof, null)
    await server.close({ graceMs: 100 })
    assertNoLiveResources(t)
  },
)

test.serial('toDuplex: pipeline() of 3,000 messages through an echo server arrives complete and in order', async (t) => {
  const server = await listen({ port: 0, receiveWindow: 16 })
  // An echo: the same Duplex at both ends, with a Transform between (an async generator there
  // would destroy the source when it ends, before the replies went out: Node's rule for any Duplex).
  server.on('connection', (c) => {
    const d = toDuplex(c)
    void pipeline(d, new PassThrough({ objectMode: true }), d).catch((e) => t.fail(String(e)))
  })
  const client = await connect({ port: server.port, writableHighWaterMark: 2048 })
  const total = 3000
  const got: string[] = []
  const duplex = toDuplex(client)
  await withDeadline(
    Promise.all([
      pipeline(
        Readable.from(
          (function* () {
            for (let i = 0; i < total; i++) yield `n${i}`
          })(),
        ),
        duplex,
      ),
      pipeline(
        duplex,
        new Writable({
          objectMode: true,
          write(chunk: Buffer, _e, cb) {
            got.push(chunk.toString())
            cb()
          },
        }),
      ),
    ]),
    30_000,
    'pipelines',
  )
  t.is(got.length, total)
  t.deepEqual(
    got,
    Array.from({ length: total }, (_, i) => `n${i}`),
  )
  await withDeadline(client.closed, 5000, 'the stream closed the connection')
  t.is((await client.closed).outcome, 'graceful')
  await server.close()
  assertNoLiveResources(t)
})

test.serial('toDuplex: a slow consumer holds the producer back end to end (credits follow reads)', async (t) => {
  // write() is false at 5 waiting messages of 10 bytes; the server grants 4 credits, its stream
  // buffers 2 and the consumer 1: a producer that waits for 'drain' is at most 5 + 4 + 2 + 1 and the
  // one in hand ahead of what the consumer took, whatever the consumer's pace.
  const { server, client, peer } = await serverAndClient({ writableHighWaterMark: 50 }, { receiveWindow: 4 })
  // Read-only: its writable side ends with its readable side, so the server's side ends too.
  const source = toDuplex(peer, { readableHighWaterMark: 2, allowHalfOpen: false })
  let produced = 0
  let consumed = 0
  let lead = 0
  let waits = 0
  const producing = (async () => {
    for (; produced < 200; produced++) {
      lead = Math.max(lead, produced - consumed)
      if (!client.write(Buffer.alloc(10))) {
        waits++
        await new Promise<void>((r) => client.once('drain', r))
      }
    }
    client.end()
  })()
  await sleep(100)
  t.true(produced <= 4 + 5, `${produced} messages produced while nobody read (the window and write()'s mark)`)
  await pipeline(
    source,
    new Writable({
      objectMode: true,
      highWaterMark: 1,
      write(_chunk, _e, cb) {
        consumed++
        setTimeout(cb, 1)
      },
    }),
  )
  await producing
  t.is(consumed, 200)
  t.true(waits > 0, 'the producer waited for drain')
  t.true(lead <= 5 + 4 + 2 + 1 + 1, `the producer ran at most ${lead} messages ahead of the consumer`)
  t.is((await client.closed).outcome, 'graceful')
  await server.close()
  assertNoLiveResources(t)
})

test.serial('toDuplex: a connection that goes down fails the pipeline with its typed error', async (t) => {
  const { server, client, peer } = await serverAndClient()
  const duplex = toDuplex(client)
  const consuming = pipeline(duplex, new Writable({ objectMode: true, write: (_c, _e, cb) => cb() }))
  peer.destroy()
  const err = await t.throwsAsync(withDeadline(consuming, 5000, 'pipeline failure'))
  t.is((err as Error & { code: string }).code, 'ERR_CONNECTION_DOWN')
  await client.closed
  await server.close({ graceMs: 100 })
  assertNoLiveResources(t)
})
