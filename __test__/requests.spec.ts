/**
 * conn.request() / conn.handle() over tcp: correlation by the protocol, deadlines, aborts, a bound
 * on handlers at once, the close handshake accounting for replies owed, and peers without it.
 */
import test from 'ava'

import { ALL_CAPABILITIES, Capability } from '../src/protocol'
import { assertNoLiveResources, serverAndClient, sleep, withDeadline } from './helpers'

test.serial('a failing handler answers with ERR_REMOTE_HANDLER and its message; the connection stays up', async (t) => {
  const { server, client, peer } = await serverAndClient()
  peer.handle(async (body) => {
    if (body.toString() === 'bad') throw new Error('no such thing')
    if (body.toString() === 'sync') throw new TypeError('thrown at once')
    if (body.toString() === 'number') return 42 as unknown as string
    return `ok ${body.toString()}`
  })
  await t.throwsAsync(client.request('bad'), { code: 'ERR_REMOTE_HANDLER', message: /no such thing/ })
  await t.throwsAsync(client.request('sync'), { code: 'ERR_REMOTE_HANDLER', message: /thrown at once/ })
  await t.throwsAsync(client.request('number'), { code: 'ERR_REMOTE_HANDLER', message: /must return a Buffer, a Uint8Array or a string/ })
  t.is((await client.request('fine')).toString(), 'ok fine')
  t.is((await client.close()).outcome, 'graceful')
  await server.close()
  assertNoLiveResources(t)
})

test.serial('requests time out (ERR_REQUEST_TIMEOUT) and abort (AbortError); the late reply is dropped, the close stays graceful', async (t) => {
  const { server, client, peer } = await serverAndClient({ requestTimeoutMs: 150 })
  peer.handle(async (body) => {
    await sleep(Number(body.toString()))
    return body
  })
  const started = performance.now()
  await t.throwsAsync(client.request('400'), { code: 'ERR_REQUEST_TIMEOUT' })
  const waited = performance.now() - started
  t.true(waited >= 149, `rejected after ${waited.toFixed(0)} ms, not before the timeout`)
  // Deadlines share one timer: a shorter one made after a longer one still fires first, on time.
  const order: string[] = []
  const long = client.request('400').catch((e: Error) => {
    order.push('150 ms')
    return e
  })
  const shortStarted = performance.now()
  await t.throwsAsync(
    client.request('400', { timeoutMs: 50 }).catch((e: Error) => {
      order.push('50 ms')
      throw e
    }),
    { code: 'ERR_REQUEST_TIMEOUT' },
  )
  t.true(performance.now() - shortStarted >= 49, 'not before its own deadline')
  t.is(((await long) as Error & { code: string }).code, 'ERR_REQUEST_TIMEOUT')
  t.deepEqual(order, ['50 ms', '150 ms'], 'the shorter deadline, armed later, fired first')
  const controller = new AbortController()
  const aborted = client.request('300', { signal: controller.signal, timeoutMs: Infinity })
  controller.abort(new Error('caller gave up'))
  const err = await t.throwsAsync(aborted, { name: 'AbortError' })
  t.is((err as Error).cause instanceof Error && ((err as Error).cause as Error).message, 'caller gave up')
  t.is((await client.request('1')).toString(), '1', 'later requests still get their own replies')
  await t.throwsAsync(client.request('x', { timeoutMs: 0 }), { code: 'ERR_INVALID_ARGUMENT' })
  t.is((await client.close()).outcome, 'graceful', 'the server answered the given-up requests before its ACK')
  await server.close()
  assertNoLiveResources(t)
})

test.serial('a request in flight when the connection goes DOWN rejects with ERR_CONNECTION_DOWN, never hangs', async (t) => {
  const { server, client, peer } = await serverAndClient()
  peer.handle(() => new Promise(() => {})) // never answers
  const pending = client.request('hello?')
  await sleep(50)
  peer.destroy()
  await t.throwsAsync(withDeadline(pending, 5000, 'the request'), { code: 'ERR_CONNECTION_DOWN' })
  await server.close()
  assertNoLiveResources(t)
})

test.serial('at most receiveWindow handlers run at once; the rest wait for credits, none is lost', async (t) => {
  const { server, client, peer } = await serverAndClient({}, { receiveWindow: 8 })
  let running = 0
  let most = 0
  peer.handle(async (body) => {
    running++
    most = Math.max(most, running)
    await sleep(5)
    running--
    return body
  })
  const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => client.request(`${i}`)))
  t.deepEqual(
    replies.map((r) => r.toString()),
    Array.from({ length: 100 }, (_, i) => `${i}`),
  )
  t.is(most, 8, 'the receive window bounds the handlers running at once')
  t.is((await client.close()).outcome, 'graceful')
  await server.close()
  assertNoLiveResources(t)
})

test.serial('requests and plain messages share the connection; requests before handle() are answered once it is set', async (t) => {
  const { server, client, peer } = await serverAndClient()
  const early = client.request('early')
  await client.send('plain')
  t.is((await peer.read())?.toString(), 'plain')
  peer.handle((body) => `re ${body.toString()}`)
  t.is((await early).toString(), 're early')
  await peer.send('plain back')
  t.is((await client.read())?.toString(), 'plain back')
  t.is((await client.close()).outcome, 'graceful')
  await server.close()
  assertNoLiveResources(t)
})

test.serial('the server ending while requests are on their way: those it never saw reject ERR_REQUEST_NOT_PROCESSED', async (t) => {
  const { server, client, peer } = await serverAndClient()
  let seen = 0
  let handling!: () => void
  const firstHandled = new Promise<void>((resolve) => (handling = resolve))
  peer.handle(async (body) => {
    seen++
    handling()
    await sleep(20)
    return body
  })
  const first = client.request('first')
  await withDeadline(firstHandled, 5000, "the handler got 'first'")
  peer.end() // the server ends its side: it answers 'first', then sends DISCONNECT_REQ
  const later = Array.from({ length: 5 }, (_, i) => client.request(`later ${i}`))
  for (const r of later) r.catch(() => {}) // each is checked below
  t.is((await first).toString(), 'first', 'a request seen before the end is answered')
  for (const r of later) await t.throwsAsync(r, { code: 'ERR_REQUEST_NOT_PROCESSED' })
  t.is(seen, 1, 'the handler never saw the later ones')
  t.is((await client.close()).outcome, 'graceful')
  await server.close()
  assertNoLiveResources(t)
})

test.serial('a peer without the REQUESTS capability: request() rejects ERR_UNSUPPORTED_BY_PEER, plain messages work', async (t) => {
  const { server, client, peer } = await serverAndClient({}, { capabilities: ALL_CAPABILITIES & ~Capability.REQUESTS })
  await t.throwsAsync(client.request('hi'), { code: 'ERR_UNSUPPORTED_BY_PEER' })
  await client.send('plain')
  t.is((await peer.read())?.toString(), 'plain')
  peer.end()
  t.is((await client.close()).outcome, 'graceful')
  await server.close()
  assertNoLiveResources(t)
})
