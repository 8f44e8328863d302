/**
 * AbortSignal on read() and close(): an aborted read rejects with Node's AbortError shape and takes
 * no message; an aborted close is forced with reason 'aborted'; listeners do not pile up.
 */
import { getEventListeners } from 'node:events'

import test from 'ava'

import { AbortError, connect, type listen, type Connection } from '../src/index'
import { assertNoLiveResources, discard, serverAndClient, sleep, withDeadline } from './helpers'

test.serial('read({ signal }): an abort rejects with AbortError (ABORT_ERR, cause = reason) and takes no message', async (t) => {
  const { server, client, peer } = await serverAndClient()
  const controller = new AbortController()
  const reason = new Error('gave up waiting')
  const read = client.read({ signal: controller.signal })
  setTimeout(() => controller.abort(reason), 20)
  const err = await t.throwsAsync(read)
  t.true(err instanceof AbortError)
  t.is(err!.name, 'AbortError')
  t.is((err as AbortError).code, 'ABORT_ERR')
  t.is(err!.cause, reason)
  // The next message goes to the next read, not to the aborted one.
  await peer.send('kept')
  t.is((await client.read())?.toString(), 'kept')
  // An already-aborted signal rejects at once, even with a message waiting, which stays.
  await peer.send('still kept')
  await sleep(20)
  await t.throwsAsync(client.read({ signal: AbortSignal.abort('no') }), { name: 'AbortError', code: 'ABORT_ERR' } as never)
  t.is((await client.read())?.toString(), 'still kept')
  t.is(client.state, 'OPEN', 'an aborted read does not touch the connection')
  await t.throwsAsync(client.read({ signal: 'nope' as never }), { code: 'ERR_INVALID_ARGUMENT' })
  t.is((await client.close()).outcome, 'graceful')
  await server.close()
  assertNoLiveResources(t)
})

test.serial('read({ signal }): the abort listener is removed once a read settles (no leak over many reads)', async (t) => {
  const { server, client, peer } = await serverAndClient()
  const controller = new AbortController()
  for (let i = 0; i < 500; i++) {
    const read = client.read({ signal: controller.signal })
    await peer.send(`m${i}`)
    t.is((await read)?.toString(), `m${i}`)
  }
  t.is(getEventListeners(controller.signal, 'abort').length, 0)
  // Aborted ones remove theirs too.
  for (let i = 0; i < 50; i++) {
    const c = new AbortController()
    const read = client.read({ signal: c.signal })
    c.abort()
    await t.throwsAsync(read, { name: 'AbortError' })
    t.is(getEventListeners(c.signal, 'abort').length, 0)
  }
  await client.close()
  await server.close()
  assertNoLiveResources(t)
})

test.serial('close({ signal }): an abort turns the graceful close into a forced one with reason aborted', async (t) => {
  // The server never reads and allows half-open: the close waits for its ACK, which the abort cuts short.
  const { server, client } = await serverAndClient({ allowHalfOpen: true, ackTimeoutMs: 60_000 }, { allowHalfOpen: true, ackTimeoutMs: 60_000 })
  const controller = new AbortController()
  const closing = client.close({ signal: controller.signal })
  await sleep(50)
  t.is(client.state, 'CLOSING')
  const reason = new Error('shutting down now')
  controller.abort(reason)
  const result = await withDeadline(closing, 2000, 'aborted close')
  t.is(result.outcome, 'forced')
  t.is(result.reason, 'aborted')
  t.is((result.error as Error & { code: string }).code, 'ERR_CONNECTION_DESTROYED')
  t.is(result.error?.cause, reason)
  t.is(getEventListeners(controller.signal, 'abort').length, 0)
  await server.close({ graceMs: 100 })
  assertNoLiveResources(t)
})

test.serial(
  'close({ signal }): an already-aborted signal forces at once; a close that completes removes its listener; close() still takes no argument',
  async (t) => {
    const { server, client } = await serverAndClient()
    const result = await client.close({ signal: AbortSignal.abort() })
    t.is(result.outcome, 'forced')
    t.is(result.reason, 'aborted')

    const { client: c2 } = await pairOn(server)
    const controller = new AbortController()
    t.is((await c2.close({ signal: controller.signal })).outcome, 'graceful')
    t.is(getEventListeners(controller.signal, 'abort').length, 0)
    controller.abort() // after the close: nothing happens
    t.is((await c2.closed).outcome, 'graceful')

    const { client: c3 } = await pairOn(server)
    t.is((await c3.close()).outcome, 'graceful')
    await t.throwsAsync(c3.close({ signal: 42 as never }), { code: 'ERR_INVALID_ARGUMENT' })
    await server.close({ graceMs: 100 })
    assertNoLiveResources(t)
  },
)

async function pairOn(server: Awaited<ReturnType<typeof listen>>): Promise<{ client: Connection }> {
  server.once('connection', discard)
  return { client: await connect({ port: server.port }) }
}

test.serial(
  'one AbortSignal shared by 200 waiting sends, reads and requests across connections: no MaxListenersExceededWarning, one listener',
  async (t) => {
    const { server, client, peer } = await serverAndClient({}, { receiveWindow: 1 })
    const other = await connect({ port: server.port })
    const warnings: Error[] = []
    const onWarning = (w: Error): void => void warnings.push(w)
    process.on('warning', onWarning)
    const controller = new AbortController()
    const { signal } = controller
    // Window 1 and nobody reading: every send after the first waits for a credit.
    const sends = Array.from({ length: 100 }, (_, i) => client.send(`m${i}`, { signal }))
    const reads = Array.from({ length: 50 }, () => other.read({ signal }))
    const requests = Array.from({ length: 50 }, () => other.request('q', { signal }))
    await new Promise((r) => setTimeout(r, 50))
    t.is(getEventListeners(signal, 'abort').length, 1, 'one listener on the signal, however many waits share it')
    controller.abort(new Error('enough'))
    const settled = await Promise.allSettled([...sends, ...reads, ...requests])
    t.true(settled.filter((s) => s.status === 'rejected').length >= 199, 'every wait but the first send gave up')
    t.is(getEventListeners(signal, 'abort').length, 0)
    await new Promise((r) => setImmediate(r))
    process.off('warning', onWarning)
    t.deepEqual(
      warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message),
      [],
    )
    t.is((await peer.read())?.toString(), 'm0', 'only the first send was ever written')
    const eof = peer.read() // read to the client's end: the server's side then ends (allowHalfOpen: false)
    t.is((await client.close()).outcome, 'graceful')
    t.is(await eof, null)
    t.is((await other.close()).outcome, 'graceful', "the request nobody handled was answered when the server's side ended")
    await server.close({ graceMs: 100 })
    assertNoLiveResources(t)
  },
)
