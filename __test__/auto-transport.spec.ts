/**
 * transport: 'auto': the policy (src/auto.ts) as a pure function, and on this host (no RDMA device
 * unless it runs in the Soft-RoCE guest) listen/connect with 'auto' over tcp with the reason in
 * `transportChoice`, a 'diagnostic' and the diagnostics channel. The rdma side is in rdma-e2e.spec.ts.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'

import test from 'ava'

import { chooseTransport, fallBack } from '../src/auto'
import { connect, listen, TransportError, type Diagnostic } from '../src/index'
import { assertNoLiveResources, echo, rdmaUnavailableReason } from './helpers'

const unavailable = rdmaUnavailableReason()
const up = { addresses: ['10.99.0.1', 'fe80::1'] }

test('policy: listen takes rdma only where an ACTIVE RDMA port has the address (or the wildcard)', (t) => {
  t.is(chooseTransport('listen', '10.99.0.1', up).transport, 'rdma')
  t.is(chooseTransport('listen', '::ffff:10.99.0.1', up).transport, 'rdma')
  t.is(chooseTransport('listen', '0.0.0.0', up).transport, 'rdma')
  const other = chooseTransport('listen', '192.168.1.5', up)
  t.is(other.transport, 'tcp')
  t.regex(other.reason, /no ACTIVE RDMA port has 192\.168\.1\.5/)
  t.regex(chooseTransport('listen', '127.0.0.1', up).reason, /loopback/)
  t.is(chooseTransport('listen', '::1', up).transport, 'tcp')
  t.regex(chooseTransport('listen', '10.99.0.1', { addresses: [] }).reason, /no ACTIVE RDMA port/)
  const err = new TransportError('ERR_TRANSPORT_UNAVAILABLE', 'no RDMA device found')
  const none = chooseTransport('listen', '10.99.0.1', { unavailable: err, addresses: [] })
  t.like(none, { requested: 'auto', transport: 'tcp', rdmaError: err })
  t.regex(none.reason, /rdma unavailable: no RDMA device found/)
})

test('policy: connect tries rdma first where a port is active, and falls back only on unreachable, refused or unavailable', (t) => {
  t.is(chooseTransport('connect', '10.99.0.2', up).transport, 'rdma')
  t.is(chooseTransport('connect', '127.0.0.1', up).transport, 'tcp')
  t.is(chooseTransport('connect', '10.99.0.2', { addresses: [] }).transport, 'tcp')
  for (const code of ['ERR_ADDRESS_UNREACHABLE', 'ERR_CONNECTION_REFUSED', 'ERR_TRANSPORT_UNAVAILABLE']) {
    const choice = fallBack(new TransportError(code, 'x'))
    t.is(choice?.transport, 'tcp', code)
    t.is((choice?.rdmaError as TransportError | undefined)?.code as string, code)
  }
  for (const code of ['ERR_TRANSPORT_TIMEOUT', 'ERR_MALFORMED_FRAME', 'ERR_CONNECTION_RESET', 'ERR_IO']) {
    t.is(fallBack(new TransportError(code, 'x')), undefined, code)
  }
  t.is(fallBack(new DOMException('aborted', 'AbortError')), undefined)
})

test.serial("listen and connect with 'auto' here: the choice, its reason, a diagnostic event and a channel message", async (t) => {
  const published: Array<Record<string, unknown>> = []
  const onMessage = (m: unknown): void => void published.push(m as Record<string, unknown>)
  subscribe('rdma-graceful:diagnostic', onMessage)
  t.teardown(() => unsubscribe('rdma-graceful:diagnostic', onMessage))

  // 127.0.0.1 is tcp whatever the host has (rdma-cm does not serve loopback).
  const server = await listen({ transport: 'auto', port: 0 })
  const serverDiag = new Promise<Diagnostic>((resolve) => server.once('diagnostic', resolve))
  t.is(server.transport, 'tcp')
  t.is(server.transportChoice?.transport, 'tcp')
  t.is(server.transportChoice?.requested, 'auto')
  t.regex(server.transportChoice!.reason, unavailable ? /rdma unavailable/ : /loopback/)
  t.like(await serverDiag, { code: 'transport-auto' })
  server.on('connection', echo)

  const conn = await connect({ transport: 'auto', port: server.port })
  const connDiag = new Promise<Diagnostic>((resolve) => conn.once('diagnostic', resolve))
  t.is(conn.transport, 'tcp')
  t.is(conn.transportChoice?.transport, 'tcp')
  t.regex((await connDiag).detail, /^tcp: /)
  await conn.send('over auto')
  t.is((await conn.read())?.toString(), 'over auto')
  t.is((await conn.close()).outcome, 'graceful')
  await server.close()

  t.true(published.some((m) => m.code === 'transport-auto' && m.role === 'server' && m.transport === 'tcp'))
  t.true(
    published.some(
      (m) => m.code === 'transport-auto' && m.role === 'client' && m.transport === 'tcp' && m.remoteAddress === `127.0.0.1:${server.port}`,
    ),
  )
  // A named transport has no choice to report.
  const plain = await listen({ port: 0 })
  t.is(plain.transportChoice, undefined)
  await plain.close()
  assertNoLiveResources(t)
})

test.serial("'auto' checks its options for both transports; a bad transport names 'auto'", async (t) => {
  await t.throwsAsync(listen({ transport: 'auto', port: 0, receiveWindow: 64 }), { code: 'ERR_INVALID_ARGUMENT', message: /receiveWindow on rdma/ })
  await t.throwsAsync(connect({ transport: 'fast' as 'tcp', port: 1 }), { code: 'ERR_INVALID_ARGUMENT', message: /'tcp', 'rdma' or 'auto'/ })
  assertNoLiveResources(t)
})

const hostOnly = unavailable === undefined ? test.skip : test.serial
hostOnly("without rdma, transport 'rdma' fails ERR_TRANSPORT_UNAVAILABLE naming the tcp fallback of 'auto'", async (t) => {
  const err = await t.throwsAsync(listen({ transport: 'rdma', port: 0 }))
  t.is((err as TransportError).code, 'ERR_TRANSPORT_UNAVAILABLE')
  t.regex(err!.message, /transport: 'auto' falls back to tcp/)
  const err2 = await t.throwsAsync(connect({ transport: 'rdma', port: 1, host: '10.0.0.1' }))
  t.regex(err2!.message, /'auto'/)
  // 'auto' to a non-loopback address takes tcp at once, with the rdma error as the reason.
  const server = await listen({ transport: 'auto', port: 0, host: '0.0.0.0' })
  t.is(server.transport, 'tcp')
  t.is((server.transportChoice?.rdmaError as TransportError | undefined)?.code, 'ERR_TRANSPORT_UNAVAILABLE')
  await server.close()
  assertNoLiveResources(t)
})
