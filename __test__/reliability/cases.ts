/**
 * Fault and load cases of the reliability suite, written once for both transports:
 * tcp-faults.spec.ts runs them on loopback, rdma-faults.spec.ts in the Soft-RoCE guest.
 * Every detection time is measured and asserted against heartbeatTimeoutMs + heartbeatIntervalMs
 * (+ LATE_TIMER_MS: a late timer on a loaded machine).
 */
import type { ExecutionContext } from 'ava'

import { connect, listen, type CloseResult, type Connection } from '../../src/index'
import { assertNoLiveResources, assertWithin, echo, LATE_TIMER_MS, type Peer, startPeer, withDeadline } from '../helpers'
import { has, settleCodes, settledError, sleep } from './util'

export interface Env {
  transport: 'tcp' | 'rdma'
  host: string
  /** Liveness settings of every connection in the case; the detection bound is their sum. */
  heartbeatIntervalMs: number
  heartbeatTimeoutMs: number
  /** Startup wait for peer processes (slow in the emulated guest). */
  startMs: number
  /** Scale of the load cases (1 on the host; smaller in the guest). */
  scale: number
}

/**
 * The detection bound: the documented timeout + one interval, plus LATE_TIMER_MS for the liveness
 * timer (and the test's own clock) firing late on a loaded machine.
 */
const bound = (e: Env): number => e.heartbeatTimeoutMs + e.heartbeatIntervalMs + LATE_TIMER_MS
const hb = (e: Env) => ({ heartbeatIntervalMs: e.heartbeatIntervalMs, heartbeatTimeoutMs: e.heartbeatTimeoutMs })
const peerEnv = (e: Env, extra: Record<string, string> = {}): Record<string, string> => ({
  RG_TRANSPORT: e.transport,
  RG_HOST: e.host,
  RG_OPTS: JSON.stringify(hb(e)),
  ...extra,
})
/**
 * Waits for `cond`; with `conn`, a connection that ends meanwhile fails the wait at once, saying
 * how it ended (instead of a timeout that hides the reason).
 */
const until = async (cond: () => boolean, ms: number, what: string, conn?: Connection): Promise<void> => {
  let ended: CloseResult | undefined
  void conn?.closed.then((r) => (ended = r))
  await withDeadline(
    (async () => {
      while (!cond()) {
        if (ended) throw new Error(`${what}: the connection ended first: ${ended.outcome}, ${ended.reason}, ${ended.error?.message ?? ''}`)
        await sleep(2)
      }
    })(),
    ms,
    what,
  )
}
/**
 * n sends, each also given a no-op handler: a test that fails early leaves no unhandled rejection.
 * Queued 500 to a turn: 20,000 send() calls in one turn block this process's loop for over a second
 * on a loaded machine (measured: 1.3 s under two busy loops), longer than the peer's liveness
 * timeout, so the peer, hearing nothing meanwhile, rightly declared us dead.
 */
async function sendMany(c: Connection, n: number, text: (i: number) => string): Promise<Array<Promise<void>>> {
  const sends: Array<Promise<void>> = []
  for (let i = 0; i < n; i++) {
    if (i > 0 && i % 500 === 0) await new Promise((r) => setImmediate(r))
    const p = c.send(text(i))
    p.catch(() => {})
    sends.push(p)
  }
  return sends
}
const code = (e: unknown): string | undefined => (e as { code?: string } | undefined)?.code

function checkForced(t: ExecutionContext, r: CloseResult, reasons: RegExp): void {
  t.is(r.outcome, 'forced')
  t.regex(r.reason, reasons)
  t.is(code(r.error), 'ERR_CONNECTION_DOWN', `close error: ${r.error?.message}`)
}

/** The peer server process dies (SIGKILL) while thousands of messages stream both ways. */
export async function killServerMidTransfer(t: ExecutionContext, e: Env): Promise<void> {
  const peer = startPeer(t, ['server'], peerEnv(e))
  const { port } = await peer.waitFor(has('port'), 'port', e.startMs)
  const total = Math.round(20_000 * e.scale)
  const conn = await connect({ transport: e.transport, host: e.host, port, ...hb(e), maxQueuedSends: total })
  let echoes = 0
  const reading = (async () => {
    for await (const _ of conn) echoes++
  })()
  const sends = await sendMany(conn, total, (i) => `message ${i}`)
  await until(() => echoes >= 200, 30_000, '200 echoes', conn)
  const killedAt = performance.now()
  peer.child.kill('SIGKILL')
  const err = await withDeadline(settledError(reading), bound(e) + 5000, 'read after the kill')
  const detectedMs = performance.now() - killedAt
  t.is(code(err), 'ERR_CONNECTION_DOWN', 'the pending read rejects')
  assertWithin(t, detectedMs, 0, bound(e), 'DOWN after the kill')
  const tally = await settleCodes(sends)
  t.log(`killed after ${echoes} echoes; detected in ${detectedMs.toFixed(0)} ms; sends: ${JSON.stringify(tally)}`)
  t.true((tally.ERR_CONNECTION_DOWN ?? 0) > 0, 'sends still queued reject with ERR_CONNECTION_DOWN')
  t.deepEqual(
    Object.keys(tally).filter((k) => k !== 'ok' && k !== 'ERR_CONNECTION_DOWN'),
    [],
  )
  checkForced(t, await conn.close(), /transport-down|heartbeat-timeout/)
  assertNoLiveResources(t)
}

/** The peer client process dies (SIGKILL) while the server streams to it. */
export async function killClientMidTransfer(t: ExecutionContext, e: Env): Promise<void> {
  const server = await listen({ transport: e.transport, host: e.host, port: 0, ...hb(e), maxQueuedSends: 20_000 })
  t.teardown(() => void server.close({ graceMs: 0 }))
  const accepted = new Promise<Connection>((resolve) => server.once('connection', resolve))
  const client = startPeer(t, ['client', String(server.port)], peerEnv(e))
  await client.waitFor(has('connected'), 'connected', e.startMs)
  const conn = await withDeadline(accepted, 10_000, 'accept')
  let echoes = 0
  const reading = (async () => {
    for await (const _ of conn) echoes++
  })()
  const sends = await sendMany(conn, Math.round(20_000 * e.scale), (i) => `to client ${i}`)
  await until(() => echoes >= 200, 30_000, '200 echoes', conn)
  const killedAt = performance.now()
  client.child.kill('SIGKILL')
  const err = await withDeadline(settledError(reading), bound(e) + 5000, 'read after the kill')
  const detectedMs = performance.now() - killedAt
  t.is(code(err), 'ERR_CONNECTION_DOWN')
  assertWithin(t, detectedMs, 0, bound(e), 'server side DOWN after the kill')
  const tally = await settleCodes(sends)
  t.log(`killed after ${echoes} echoes; detected in ${detectedMs.toFixed(0)} ms; sends: ${JSON.stringify(tally)}`)
  t.true((tally.ERR_CONNECTION_DOWN ?? 0) > 0)
  t.deepEqual(
    Object.keys(tally).filter((k) => k !== 'ok' && k !== 'ERR_CONNECTION_DOWN'),
    [],
  )
  checkForced(t, await conn.close(), /transport-down|heartbeat-timeout/)
  t.deepEqual(await server.close({ graceMs: 100 }), { graceful: 0, forced: 0 }, 'it had gone before the shutdown')
  t.like(server.stats(), { graceful: 0, forced: 1 })
  assertNoLiveResources(t)
}

/**
 * Mid-close: our close() has started, the peer server (allowHalfOpen, never ends) holds its ACK,
 * and dies. `flushing`: the server also never reads, so our REQ is still behind queued sends.
 */
export async function killServerMidClose(t: ExecutionContext, e: Env, flushing: boolean): Promise<void> {
  const peer = startPeer(t, ['server'], peerEnv(e, { RG_BEHAVIOUR: 'hold', RG_READ: flushing ? '0' : '1' }))
  const { port } = await peer.waitFor(has('port'), 'port', e.startMs)
  const conn = await connect({ transport: e.transport, host: e.host, port, ...hb(e) })
  const n = flushing ? 200 : 10 // 200 is above the receive window (64 tcp, 48 rdma)
  const sends = await sendMany(conn, n, (i) => `request ${i}`)
  const pendingRead = conn.read()
  const closing = conn.close()
  if (flushing) {
    await sleep(100)
    t.is(conn.closeState, 'NONE', 'REQ waits behind sends that have no credit')
  } else {
    await peer.waitFor((l) => l.closeState === 'REQ_RECEIVED', 'REQ_RECEIVED', 10_000)
    await sleep(2 * e.heartbeatIntervalMs) // heartbeats keep the half-closed connection alive
    t.is(conn.closeState, 'REQ_SENT', 'waiting for the ACK the server holds')
  }
  const killedAt = performance.now()
  peer.child.kill('SIGKILL')
  const result = await withDeadline(closing, bound(e) + 5000, 'close() after the kill')
  const detectedMs = performance.now() - killedAt
  const readErr = await settledError(pendingRead)
  t.is(code(readErr), 'ERR_CONNECTION_DOWN', 'the pending read rejects')
  checkForced(t, result, /transport-down|heartbeat-timeout/)
  assertWithin(t, detectedMs, 0, bound(e), 'close() forced after the kill')
  const tally = await settleCodes(sends)
  t.log(`close forced (${result.reason}) ${detectedMs.toFixed(0)} ms after the kill; sends ${JSON.stringify(tally)}`)
  if (flushing) t.true((tally.ERR_CONNECTION_DOWN ?? 0) > 0, 'sends without credit reject with ERR_CONNECTION_DOWN')
  else t.deepEqual(tally, { ok: n })
  assertNoLiveResources(t)
}

/** Mid-close from the other side: the peer client has sent REQ; our server holds its ACK, keeps sending, and the client dies. */
export async function killClientMidClose(t: ExecutionContext, e: Env): Promise<void> {
  const server = await listen({ transport: e.transport, host: e.host, port: 0, ...hb(e), allowHalfOpen: true })
  t.teardown(() => void server.close({ graceMs: 0 }))
  const accepted = new Promise<Connection>((resolve) => server.once('connection', resolve))
  const client = startPeer(t, ['client', String(server.port)], peerEnv(e, { RG_BEHAVIOUR: 'close', RG_COUNT: '10' }))
  const conn = await withDeadline(accepted, e.startMs, 'accept')
  const got: string[] = []
  const reading = (async () => {
    for await (const m of conn) got.push(m.toString())
  })()
  await until(() => conn.closeState === 'REQ_RECEIVED', 10_000, 'REQ from the client')
  await reading // the client's end: the loop ends, nothing lost
  t.deepEqual(
    got,
    Array.from({ length: 10 }, (_, i) => `from client ${i}`),
  )
  // Half-open: we may still send; the client never reads, so most of these wait for credits.
  const sends = await sendMany(conn, 200, (i) => `late reply ${i}`)
  await sleep(2 * e.heartbeatIntervalMs)
  t.is(conn.state, 'CLOSING')
  const killedAt = performance.now()
  client.child.kill('SIGKILL')
  const result = await withDeadline(conn.closed, bound(e) + 5000, 'server side after the kill')
  const detectedMs = performance.now() - killedAt
  checkForced(t, result, /transport-down|heartbeat-timeout/)
  assertWithin(t, detectedMs, 0, bound(e), 'server side forced after the kill')
  const tally = await settleCodes(sends)
  t.log(`forced (${result.reason}) ${detectedMs.toFixed(0)} ms after the kill; sends ${JSON.stringify(tally)}`)
  t.true((tally.ERR_CONNECTION_DOWN ?? 0) > 0, 'sends waiting for credit reject with ERR_CONNECTION_DOWN')
  t.deepEqual(
    Object.keys(tally).filter((k) => k !== 'ok' && k !== 'ERR_CONNECTION_DOWN'),
    [],
  )
  t.deepEqual(await server.close({ graceMs: 100 }), { graceful: 0, forced: 0 }, 'it had gone before the shutdown')
  t.like(server.stats(), { graceful: 0, forced: 1 })
  assertNoLiveResources(t)
}

/**
 * A frozen peer (SIGSTOP): `side` says which process is frozen. Only heartbeats can tell. After
 * SIGCONT the old connection stays dead on both sides, and a new one to/from the woken peer works.
 */
export async function frozenPeer(t: ExecutionContext, e: Env, side: 'server' | 'client'): Promise<void> {
  let conn: Connection
  let peer: Peer
  let server: Awaited<ReturnType<typeof listen>> | undefined
  let peerPort = 0
  if (side === 'server') {
    peer = startPeer(t, ['server'], peerEnv(e))
    peerPort = (await peer.waitFor(has('port'), 'port', e.startMs)).port
    conn = await connect({ transport: e.transport, host: e.host, port: peerPort, ...hb(e), maxQueuedSends: 20_000 })
  } else {
    const s = await listen({ transport: e.transport, host: e.host, port: 0, ...hb(e), maxQueuedSends: 20_000 })
    server = s
    t.teardown(() => void s.close({ graceMs: 0 }))
    const accepted = new Promise<Connection>((resolve) => s.once('connection', resolve))
    peer = startPeer(t, ['client', String(s.port)], peerEnv(e))
    conn = await withDeadline(accepted, e.startMs, 'accept')
    s.on('connection', echo)
  }
  let echoes = 0
  const reading = (async () => {
    for await (const _ of conn) echoes++
  })()
  // Traffic in flight when the peer freezes: its kernel (or RDMA device) keeps acknowledging.
  const sends = await sendMany(conn, Math.round(20_000 * e.scale), (i) => `m ${i}`)
  await until(() => echoes >= 100, 30_000, '100 echoes')
  const frozenAt = performance.now()
  peer.child.kill('SIGSTOP')
  const err = await withDeadline(settledError(reading), bound(e) + 5000, 'read from a frozen peer')
  const detectedMs = performance.now() - frozenAt
  t.is(code(err), 'ERR_CONNECTION_DOWN')
  const result = await conn.closed
  checkForced(t, result, /^heartbeat-timeout$/)
  assertWithin(t, detectedMs, 0, bound(e), 'DOWN after SIGSTOP')
  await settleCodes(sends)
  peer.child.kill('SIGCONT')
  // The woken peer's side of the old connection ends too (it never comes back).
  const down = await peer.waitFor(has('down'), 'down of the old connection', 10_000 + bound(e))
  t.is(down.down.outcome, 'forced', `the woken peer's old connection: ${JSON.stringify(down.down)}`)
  t.is(conn.state, 'DOWN', 'a DOWN connection stays DOWN when the peer wakes up')
  await t.throwsAsync(conn.send('again'), { code: 'ERR_CONNECTION_DOWN' })
  // A new connection with the woken peer works.
  if (side === 'server') {
    const fresh = await connect({ transport: e.transport, host: e.host, port: peerPort, ...hb(e) })
    await fresh.send('after wake')
    t.is((await fresh.read())?.toString(), 'after wake')
    t.is((await fresh.close()).outcome, 'graceful')
  } else {
    peer.command(`probe ${server!.port}`)
    const p = await peer.waitFor(has('probe'), 'probe', 20_000)
    t.deepEqual(p.probe, { ok: true, outcome: 'graceful', echo: 'probe' })
    t.deepEqual(await server!.close({ graceMs: 500 }), { graceful: 0, forced: 0 }, 'both had closed before the shutdown')
    t.like(server!.stats(), { graceful: 1, forced: 1 })
  }
  t.log(`frozen ${side}: DOWN after ${detectedMs.toFixed(0)} ms (bound ${bound(e)} ms); woken peer saw ${down.down.reason}`)
  assertNoLiveResources(t)
}

/**
 * Server shutdown under load: polite clients pipeline requests until the notice, the rest ignore it.
 * Counted end to end: every request a polite client sent (send resolved) gets exactly one response,
 * in order; the ones that ignore the notice are forced at grace end.
 */
export async function shutdownUnderLoad(t: ExecutionContext, e: Env, polite: number, rude: number): Promise<void> {
  const server = await listen({ transport: e.transport, host: e.host, port: 0, ...hb(e) })
  t.teardown(() => void server.close({ graceMs: 0 }))
  let served = 0
  server.on('connection', (c: Connection) => {
    void (async () => {
      for await (const m of c) {
        if (m[0] === 0x72 /* 'r' */ && served % 7 === 0) await sleep(1) // some requests take a while
        served++
        await c.send(Buffer.concat([Buffer.from('re:'), m]))
      }
      c.end()
    })().catch(() => {})
  })
  const clients = await Promise.all(
    Array.from({ length: polite + rude }, (_, i) =>
      connect({ transport: e.transport, host: e.host, port: server.port, ...hb(e), closeOnShutdownNotice: i < polite }),
    ),
  )
  let stop = false
  const runs = clients.map(async (c, i) => {
    const sent: string[] = []
    const got: string[] = []
    const reading = (async () => {
      for await (const m of c) got.push(m.toString())
    })().catch((x: unknown) => x)
    let n = 0
    const inflight = new Set<Promise<void>>()
    // The README's idiom: no new requests once the server is shutting down; the client then ends
    // its side by itself once idle (or, ignoring the notice, is forced at the end of the grace).
    while (!stop && c.state === 'OPEN' && !(i < polite && c.shuttingDown)) {
      const id = `r${i}.${n++}`
      const p = c.send(id).then(
        () => void sent.push(id),
        () => {},
      )
      inflight.add(p)
      void p.finally(() => inflight.delete(p))
      if (inflight.size >= 8) await Promise.race(inflight)
    }
    await Promise.all(inflight)
    const readEnd = await reading
    return { sent, got, readEnd, result: await c.closed }
  })
  await until(() => served >= 500 * e.scale, 60_000, 'load before the shutdown')
  const graceMs = 1500
  const started = performance.now()
  const tally = await withDeadline(server.close({ graceMs }), graceMs + 10_000, 'server close')
  const elapsed = performance.now() - started
  stop = true
  const outcomes = await Promise.all(runs)
  let requests = 0
  for (const [i, o] of outcomes.entries()) {
    if (i < polite) {
      t.is(o.result.outcome, 'graceful', `polite client ${i}: ${JSON.stringify(o.result)}`)
      t.is(o.readEnd, undefined, `polite client ${i} read to the end`)
      t.deepEqual(
        o.got,
        o.sent.map((id) => `re:${id}`),
        `polite client ${i}: every request answered once, in order`,
      )
      requests += o.sent.length
    } else {
      t.is(o.result.outcome, 'forced', `client ${i} ignored the notice`)
      t.is(code(o.result.error), 'ERR_CONNECTION_DOWN')
      // What it got before the force is still exact: a prefix of its requests, nothing duplicated.
      t.deepEqual(
        o.got,
        o.sent.slice(0, o.got.length).map((id) => `re:${id}`),
      )
    }
  }
  t.deepEqual(tally, { graceful: polite, forced: rude })
  assertWithin(t, elapsed, graceMs - 50, graceMs + LATE_TIMER_MS, 'forced at grace end')
  t.log(
    `${polite} polite clients: ${requests} requests, ${requests} responses; ${rude} forced after ${elapsed.toFixed(0)} ms; server handled ${served}`,
  )
  assertNoLiveResources(t)
}

/**
 * Zero loss at close under load: `conns` concurrent connections to an echo peer process each queue
 * `perConn` messages and close at once; every message's echo arrives, in order, and every close is
 * graceful.
 */
export async function zeroLossAtClose(t: ExecutionContext, e: Env, conns: number, perConn: number): Promise<void> {
  const peer = startPeer(t, ['server'], peerEnv(e))
  const { port } = await peer.waitFor(has('port'), 'port', e.startMs)
  const cs = await Promise.all(
    Array.from({ length: conns }, () => connect({ transport: e.transport, host: e.host, port, ...hb(e), maxQueuedSends: perConn })),
  )
  const started = performance.now()
  const outcomes = await withDeadline(
    Promise.all(
      cs.map(async (c, k) => {
        const got: string[] = []
        const reading = (async () => {
          for await (const m of c) got.push(m.toString())
        })()
        const sends = await sendMany(c, perConn, (i) => `c${k} m${i} ${'x'.repeat(i % 50)}`)
        const result = await c.close() // REQ goes behind all of them; ACK behind all echoes
        await Promise.all(sends)
        await reading
        return { got, result }
      }),
    ),
    120_000,
    'closes under load',
  )
  const ms = performance.now() - started
  let total = 0
  for (const [k, o] of outcomes.entries()) {
    t.deepEqual(o.result, { outcome: 'graceful', reason: 'close-complete' })
    t.deepEqual(
      o.got,
      Array.from({ length: perConn }, (_, i) => `c${k} m${i} ${'x'.repeat(i % 50)}`),
      `connection ${k}: nothing lost`,
    )
    total += o.got.length
  }
  t.is(total, conns * perConn)
  await peer.waitFor(() => peer.lines.filter(has('down')).length >= conns, 'server-side closes', 10_000)
  const serverSide = peer.lines.filter(has('down'))
  t.log(`server side: ${JSON.stringify(serverSide.map((l) => l.down))}`)
  t.deepEqual(
    serverSide.map((l) => l.down.outcome),
    Array(conns).fill('graceful'),
    'the server side of every connection closed gracefully too',
  )
  t.log(`${conns} connections x ${perConn} messages: ${total} echoes, all graceful, in ${ms.toFixed(0)} ms`)
  assertNoLiveResources(t)
}
