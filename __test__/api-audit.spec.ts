/**
 * The public API's argument checks, as node:net / undici users expect: every bad argument is a
 * typed ERR_INVALID_ARGUMENT (a rejection from promise-returning calls, a throw from the others),
 * never a plain TypeError from deep inside, and never a hang.
 */
import test from 'ava'

import { connect, listen, TransportError } from '../src/index'
import { assertNoLiveResources, serverAndClient } from './helpers'

const invalidArgument = { code: 'ERR_INVALID_ARGUMENT', instanceOf: TransportError } as const

test.serial('connect() and listen() with a missing or non-object options argument reject ERR_INVALID_ARGUMENT', async (t) => {
  await t.throwsAsync((connect as (o?: unknown) => Promise<unknown>)(), invalidArgument)
  await t.throwsAsync(connect(null as never), invalidArgument)
  await t.throwsAsync(connect(7 as never), invalidArgument)
  await t.throwsAsync(listen(null as never), invalidArgument)
  await t.throwsAsync(listen('0.0.0.0' as never), invalidArgument)
  assertNoLiveResources(t)
})

test.serial('host, backlog and signal of the wrong type are ERR_INVALID_ARGUMENT', async (t) => {
  await t.throwsAsync(connect({ port: 1, host: 5 as never }), { ...invalidArgument, message: /host/ })
  await t.throwsAsync(listen({ port: 0, host: {} as never }), { ...invalidArgument, message: /host/ })
  await t.throwsAsync(listen({ port: 0, backlog: -1 }), { ...invalidArgument, message: /backlog/ })
  await t.throwsAsync(listen({ port: 0, backlog: 1.5 }), { ...invalidArgument, message: /backlog/ })
  await t.throwsAsync(connect({ port: 1, signal: 'stop' as never }), { ...invalidArgument, message: /signal/ })
  await t.throwsAsync(connect({ port: 1, connectTimeoutMs: 2 ** 32 }), { ...invalidArgument, message: /connectTimeoutMs/ })
  await t.throwsAsync(connect({ port: 1, writableHighWaterMark: 0 }), { ...invalidArgument, message: /writableHighWaterMark/ })
  assertNoLiveResources(t)
})

test.serial('send() with a signal that is not an AbortSignal rejects ERR_INVALID_ARGUMENT; server.close() checks graceMs', async (t) => {
  const { server, client } = await serverAndClient()
  await t.throwsAsync(client.send('x', { signal: {} as never }), { ...invalidArgument, message: /signal/ })
  await t.throwsAsync(client.send('x', 'opts' as never), invalidArgument)
  t.is(client.state, 'OPEN')
  t.is((await client.close()).outcome, 'graceful')
  await t.throwsAsync(server.close({ graceMs: Number.NaN }), invalidArgument)
  await server.close()
  assertNoLiveResources(t)
})
