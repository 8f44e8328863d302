/**
 * Faults between two hosts, written once for both transports: two-host.spec.ts runs each case over
 * rdma and over tcp between the two Soft-RoCE guests (this process on host a, peers on host b). The
 * wire is really cut (Wire) and host b really vanishes (vanishB), so nothing here is simulated.
 *
 * Bounds, the same for both transports:
 * - detection: DOWN within heartbeatTimeoutMs + heartbeatIntervalMs + SLACK_MS after the fault, on
 *   both sides. SLACK_MS covers what the heartbeat bound cannot: the two guests' clocks agree within
 *   ~20 ms (b's times are b's wall clock), tc applies a cut a few ms after it is handed the change,
 *   and the emulated guests' timers fire late by tens of ms under load.
 * - teardown: every native resource freed (closed settled, live counts zero, or back to the peer's
 *   count with only its listener) within TEARDOWN_MS of DOWN: the rdma drain bound (2 s) plus 1 s.
 *   Never rdma-cm's ~100 s wait for DISCONNECTED from a peer that is gone.
 */
import type { ExecutionContext } from 'ava'

import { connect, listen, liveCounts, type CloseResult, type Connection } from '../../src/index'
import { assertNoLiveResources, withDeadline } from '../helpers'
import { remoteCounts, startRemote, vanishB, Wire, type RemoteNode } from './two-host'
import { settleCodes, settledError, sleep, wall, type Line } from './util'

export const SLACK_MS = 300
export const TEARDOWN_MS = 3000

export interface Env {
  transport: 'tcp' | 'rdma'
  heartbeatIntervalMs: number
  heartbeatTimeoutMs: number
}
const bound = (e: Env): number => e.heartbeatTimeoutMs + e.heartbeatIntervalMs + SLACK_MS
const hb = (e: Env) => ({ heartbeatIntervalMs: e.heartbeatIntervalMs, heartbeatTimeoutMs: e.heartbeatTimeoutMs })
const selfIp = (): string => process.env.SOFTROCE_IP!
const peerIp = (): string => process.env.SOFTROCE_PEER_IP!
const remoteEnv = (e: Env, host: string, extra: Record<string, string> = {}): Record<string, string> => ({
  RG_TRANSPORT: e.transport,
  RG_HOST: host,
  RG_OPTS: JSON.stringify(hb(e)),
  ...extra,
})
const code = (x: unknown): string | undefined => (x as { code?: string } | undefined)?.code
const until = async (cond: () => boolean, ms: number, what: string): Promise<void> =>
  withDeadline(
    (async () => {
      while (!cond()) await sleep(2)
    })(),
    ms,
    what,
  )
function sendMany(c: Connection, n: number, text: (i: number) => string): Array<Promise<void>> {
  return Array.from({ length: n }, (_, i) => {
    const p = c.send(text(i))
    p.catch(() => {})
    return p
  })
}
/** What a live-count record holds beyond `base` (a peer's listener stays up). */
const beyond = (now: Record<string, number>, base: Record<string, number>): Record<string, number> =>
  Object.fromEntries(Object.entries(now).filter(([k, n]) => n !== (base[k] ?? 0)))
/** What an rdma listener's device pool holds: it stays while the listener does (docs/rdma.md). */
const POOL_KINDS = new Set([
  'rdmaDevices',
  'rdmaProtectionDomains',
  'rdmaSharedReceiveQueues',
  'rdmaCompletionChannels',
  'rdmaCompletionQueues',
  'rdmaMemoryRegions',
  'rdmaRegisteredBytes',
])
/** Live counts beyond the listener's, less its device pool (at most one) and what is in it. */
const beyondListener = (now: Record<string, number>, base: Record<string, number>): Record<string, number> => {
  const extra = beyond(now, base)
  if ((extra.rdmaSharedReceiveQueues ?? 0) > 1) return extra
  return Object.fromEntries(Object.entries(extra).filter(([k]) => !POOL_KINDS.has(k)))
}
const isDownAfter =
  (at: number) =>
  (l: Line): boolean =>
    'down' in l && l.down.at > at

/** An echo server on host b, and its live counts with only the listener up. */
async function remoteServer(
  t: ExecutionContext,
  e: Env,
  extra: Record<string, string> = {},
): Promise<{ node: RemoteNode; port: number; base: Record<string, number> }> {
  const node = startRemote(t, ['server'], remoteEnv(e, peerIp(), extra))
  const { port } = await node.waitFor((l) => 'port' in l, 'port', 120_000)
  return { node, port, base: await remoteCounts(node, 'with the listener only') }
}

/** After healing: a new connection between the hosts works end to end. */
async function freshConnectionWorks(t: ExecutionContext, e: Env, port: number): Promise<void> {
  const c = await withDeadline(
    connect({ transport: e.transport, host: peerIp(), port, ...hb(e), connectTimeoutMs: 10_000 }),
    15_000,
    'connect after healing',
  )
  await c.send('after heal')
  t.is((await withDeadline(c.read(), 10_000, 'echo after healing'))?.toString(), 'after heal', 'a new connection across the healed wire works')
  t.like(await c.close(), { outcome: 'graceful' })
}

/**
 * The wire is cut while the connection is idle (only heartbeats) or streaming both ways. Both sides
 * go DOWN within the bound; a's pending read (and, streaming, its queued sends) reject with
 * ERR_CONNECTION_DOWN; everything native is freed within TEARDOWN_MS on both hosts; after healing a
 * new connection works.
 */
export async function partition(t: ExecutionContext, e: Env, streaming: boolean): Promise<string> {
  const wire = new Wire(t)
  const b = await remoteServer(t, e)
  const conn = await connect({ transport: e.transport, host: peerIp(), port: b.port, ...hb(e), maxQueuedSends: 20_000 })
  await b.node.waitFor((l) => 'accepted' in l, 'accepted')
  let echoes = 0
  let sends: Array<Promise<void>> = []
  let reading: Promise<unknown>
  if (streaming) {
    reading = settledError(
      (async () => {
        for await (const _ of conn) echoes++
      })(),
    )
    sends = sendMany(conn, 4000, (i) => `message ${i} ${'x'.repeat(i % 200)}`)
    let aDown = ''
    void conn.closed.then((r) => (aDown = `${r.reason}: ${(r.error as Error | undefined)?.cause}`))
    // Seen failing now and then (the stream stalls or b ends it early): say what each side saw.
    await until(() => echoes >= 200, 60_000, '200 echoes before the cut').catch((err: Error) => {
      const bDown = b.node.lines.filter((l) => 'down' in l)
      throw new Error(`${err.message}; a: ${echoes} echoes, ${conn.state} ${aDown}; b: ${JSON.stringify(bDown)}`)
    })
  } else {
    await conn.send('hello')
    t.is((await conn.read())?.toString(), 'hello')
    reading = settledError(conn.read())
    await sleep(2 * e.heartbeatTimeoutMs) // idle: heartbeats alone keep it up
    t.is(conn.state, 'OPEN', 'idle for two heartbeat timeouts: still open')
  }
  const cutAt = await wire.cut()
  const err = await withDeadline(reading, bound(e) + 10_000, 'the pending read after the cut')
  const downMs = wall() - cutAt
  t.is(code(err), 'ERR_CONNECTION_DOWN', `the pending read rejects: ${String(err)}`)
  const result = await withDeadline(conn.closed, TEARDOWN_MS + 10_000, 'closed after DOWN')
  const teardownMs = wall() - cutAt - downMs
  t.is(result.outcome, 'forced')
  t.regex(result.reason, /^(heartbeat-timeout|transport-down)$/)
  t.is(code(result.error), 'ERR_CONNECTION_DOWN')
  const tally = await settleCodes(sends)
  if (streaming) {
    t.true((tally.ERR_CONNECTION_DOWN ?? 0) > 0, `queued sends reject with ERR_CONNECTION_DOWN: ${JSON.stringify(tally)}`)
    t.deepEqual(
      Object.keys(tally).filter((k) => k !== 'ok' && k !== 'ERR_CONNECTION_DOWN'),
      [],
    )
  }
  await t.throwsAsync(conn.send('late'), { code: 'ERR_CONNECTION_DOWN' })
  // Host b's side, by b's clock: its `down` line is printed once its connection was freed.
  const bDown = (await b.node.waitFor(isDownAfter(cutAt), 'DOWN after the cut', bound(e) + TEARDOWN_MS + 10_000)).down
  const bMs = bDown.at - cutAt
  t.like(bDown, { outcome: 'forced', code: 'ERR_CONNECTION_DOWN' }, `host b: ${JSON.stringify(bDown)}`)
  t.true(downMs <= bound(e), `a DOWN ${downMs.toFixed(0)} ms after the cut (bound ${bound(e)} ms)`)
  t.true(teardownMs <= TEARDOWN_MS, `a freed everything ${teardownMs.toFixed(0)} ms after DOWN (bound ${TEARDOWN_MS} ms)`)
  t.true(bMs <= bound(e) + TEARDOWN_MS, `b DOWN and freed ${bMs.toFixed(0)} ms after the cut (bound ${bound(e)} + ${TEARDOWN_MS} ms)`)
  assertNoLiveResources(t)
  t.deepEqual(beyondListener(await remoteCounts(b.node, 'after DOWN'), b.base), {}, 'host b: live counts back to the listener (and its device pool)')
  await wire.heal()
  await freshConnectionWorks(t, e, b.port)
  assertNoLiveResources(t)
  const what = `${e.transport} partition ${streaming ? `while streaming (${echoes} echoes before)` : 'while idle'}: a DOWN ${downMs.toFixed(0)} ms (${result.reason}), freed ${teardownMs.toFixed(0)} ms later; b DOWN+freed ${bMs.toFixed(0)} ms (${bDown.reason}); bound ${bound(e)} ms + ${TEARDOWN_MS} ms; sends ${JSON.stringify(tally)}`
  t.log(what)
  return what
}

/**
 * A partition shorter than what either side tolerates: the connection stays OPEN, every message
 * arrives once and in order (the stream is checked end to end), and it closes gracefully.
 */
export async function shortPartition(t: ExecutionContext, e: Env, cutMs: number): Promise<string> {
  const wire = new Wire(t)
  const b = await remoteServer(t, e)
  const conn = await connect({ transport: e.transport, host: peerIp(), port: b.port, ...hb(e), maxQueuedSends: 20_000 })
  const got: string[] = []
  const reading = (async () => {
    for await (const m of conn) got.push(m.toString())
  })()
  const sent: string[] = []
  let stop = false
  const writing = (async () => {
    for (let i = 0; !stop; i++) {
      const m = `m${i}`
      await conn.send(m)
      sent.push(m)
      if (sent.length - got.length > 16) await until(() => sent.length - got.length <= 16, 30_000, 'echoes catching up')
    }
  })()
  await until(() => got.length >= 100, 60_000, '100 echoes before the cut')
  const before = got.length
  const cutAt = await wire.cut()
  await sleep(cutMs - (wall() - cutAt))
  const healAt = await wire.heal()
  t.is(conn.state, 'OPEN', 'open right after the heal')
  await until(() => got.length >= before + 200, 60_000, '200 more echoes after the heal')
  stop = true
  await writing
  const result = await withDeadline(conn.close(), 30_000, 'close')
  await reading
  t.deepEqual(result, { outcome: 'graceful', reason: 'close-complete' })
  t.is(got.length, sent.length, 'as many echoes as messages sent')
  t.deepEqual(got, sent, 'every message echoed once, in order')
  const bDown = (await b.node.waitFor((l) => 'down' in l, 'the close', 10_000)).down
  t.is(bDown.outcome, 'graceful', `host b: ${JSON.stringify(bDown)}`)
  assertNoLiveResources(t)
  const what = `${e.transport} partition of ${(healAt - cutAt).toFixed(0)} ms (+ a few ms for tc): survived; ${sent.length} messages, each echoed once in order (${before} before the cut); graceful close`
  t.log(what)
  return what
}

/** rdma tuning given to connect() on a (the client) and to listen() on b. */
export interface Tuning {
  client: { rdmaAckTimeoutExponent?: number; rdmaRetryCount?: number }
  server: { rdmaAckTimeoutExponent?: number }
}

/**
 * What rdmaAckTimeoutExponent and rdmaRetryCount do on the wire (rdma only): the wire is cut for
 * `cutMs` while both ends stream, with a send always outstanding. A cut longer than the queue pairs'
 * retry budget ((retry count + 1) x ACK timeout, docs/rdma.md) fails the outstanding send with
 * retry-exceeded: the connection goes DOWN (transport-down) before the heartbeat timeout. A cut
 * within it leaves the connection OPEN, every message echoed once, in order. Says which it was.
 */
export async function cutAgainstRetryBudget(t: ExecutionContext, e: Env, cutMs: number, tuning: Tuning): Promise<string> {
  const wire = new Wire(t)
  const b = await remoteServer(t, e, { RG_OPTS: JSON.stringify({ ...hb(e), ...tuning.server }) })
  const conn = await connect({ transport: e.transport, host: peerIp(), port: b.port, ...hb(e), ...tuning.client, maxQueuedSends: 20_000 })
  let downAt = 0 // wall-clock ms, as the cut's time
  conn.on('state', (s) => {
    if (s.to === 'DOWN' && downAt === 0) downAt = performance.timeOrigin + s.at
  })
  const got: string[] = []
  const reading = settledError(
    (async () => {
      for await (const m of conn) got.push(m.toString())
    })(),
  )
  const sent: string[] = []
  let stop = false
  const writing = (async () => {
    for (let i = 0; !stop && conn.state === 'OPEN'; i++) {
      const m = `m${i}`
      await conn.send(m).catch(() => {})
      sent.push(m)
      while (!stop && conn.state === 'OPEN' && sent.length - got.length > 16) await sleep(1)
    }
  })()
  await until(() => got.length >= 100, 60_000, '100 echoes before the cut')
  const cutAt = await wire.cut()
  await sleep(cutMs - (wall() - cutAt))
  const downDuringCut = conn.state !== 'OPEN'
  await wire.heal()
  const before = got.length
  await until(() => got.length >= before + 100 || conn.state === 'DOWN' || conn.state === 'CLOSED', 30_000, '100 more echoes, or DOWN')
  stop = true
  await writing
  const what = (r: string): string => {
    const s = `${e.transport} ${JSON.stringify(tuning)}: a ${cutMs} ms cut: ${r}`
    t.log(s)
    return s
  }
  if (conn.state === 'OPEN') {
    t.like(await withDeadline(conn.close(), 30_000, 'close'), { outcome: 'graceful' })
    await reading
    t.deepEqual(got, sent.slice(0, got.length), 'every message echoed once, in order')
    t.is(got.length, sent.length)
    assertNoLiveResources(t)
    return what('survived, nothing lost')
  }
  const result = await conn.closed
  const downMs = downAt - cutAt
  t.true(downDuringCut, 'DOWN during the cut')
  t.true(downMs < e.heartbeatTimeoutMs, `DOWN ${downMs.toFixed(0)} ms after the cut: before the heartbeat timeout, by the transport`)
  t.is(code(await reading), 'ERR_CONNECTION_DOWN')
  assertNoLiveResources(t)
  return what(`DOWN ${downMs.toFixed(0)} ms after the cut (${result.reason}, ${code(result.error?.cause) ?? ''})`)
}

/**
 * Server shutdown with grace while one client's host is cut off: the server is here on a with two
 * polite clients (also on a, over a's own device), the third client runs on b and its wire is cut
 * just before server.close({ graceMs }). The polite clients get every response and close gracefully;
 * the cut one is forced no later than grace end (by the grace timer, or earlier where the transport
 * saw the cut first: rdma's retry-exceeded); the server's close resolves on time.
 */
export async function shutdownWithCutClient(t: ExecutionContext, e: Env, graceMs: number): Promise<string> {
  const wire = new Wire(t)
  const server = await listen({ transport: e.transport, host: selfIp(), port: 0, ...hb(e) })
  t.teardown(() => void server.close({ graceMs: 0 }))
  const accepted: Connection[] = []
  server.on('connection', (c: Connection) => {
    accepted.push(c)
    void (async () => {
      for await (const m of c) await c.send(Buffer.concat([Buffer.from('re:'), m]))
      c.end() // the README's idiom: our ACK goes after the last reply
    })().catch(() => {})
  })
  const remote = startRemote(t, ['client', String(server.port)], remoteEnv(e, selfIp()))
  await remote.waitFor((l) => 'connected' in l, 'connected', 120_000)
  const polite = await Promise.all(
    [0, 1].map(() => connect({ transport: e.transport, host: selfIp(), port: server.port, ...hb(e), closeOnShutdownNotice: true })),
  )
  await until(() => accepted.length === 3, 10_000, 'three connections accepted')
  const cutConn = accepted[0]!
  let stop = false
  const runs = polite.map(async (c, i) => {
    const sent: string[] = []
    const got: string[] = []
    const reading = (async () => {
      for await (const m of c) got.push(m.toString())
    })().catch((x: unknown) => x)
    // No new requests once the server is shutting down: the client then ends its side once idle.
    for (let n = 0; !stop && c.state === 'OPEN' && !c.shuttingDown; n++) {
      const id = `r${i}.${n}`
      try {
        await c.send(id)
        sent.push(id)
      } catch {
        break
      }
      if (sent.length - got.length > 4) await until(() => sent.length - got.length <= 4 || c.state !== 'OPEN', 30_000, 'responses')
    }
    return { sent, got, readEnd: await reading, result: await c.closed }
  })
  await sleep(300) // polite load under way
  const cutAt = await wire.cut()
  const started = performance.now()
  const tally = await withDeadline(server.close({ graceMs }), graceMs + 10_000, 'server close')
  const elapsed = performance.now() - started
  stop = true
  const outcomes = await Promise.all(runs)
  const cut: CloseResult = await cutConn.closed
  const cutForcedMs = wall() - cutAt
  let requests = 0
  for (const [i, o] of outcomes.entries()) {
    t.is(o.result.outcome, 'graceful', `polite client ${i}: ${JSON.stringify(o.result)}`)
    t.is(o.readEnd, undefined, `polite client ${i} read to the end`)
    t.deepEqual(
      o.got,
      o.sent.map((id) => `re:${id}`),
      `polite client ${i}: every request answered once, in order`,
    )
    requests += o.sent.length
  }
  t.is(cut.outcome, 'forced', `the cut client's connection: ${JSON.stringify(cut)}`)
  t.regex(cut.reason, /^(grace-expired|transport-down)$/)
  t.deepEqual(tally, { graceful: 2, forced: 1 })
  if (cut.reason === 'grace-expired') t.true(elapsed >= graceMs - 50, `forced at grace end (${elapsed.toFixed(0)} ms, grace ${graceMs} ms)`)
  t.true(elapsed <= graceMs + SLACK_MS, `server close resolved ${elapsed.toFixed(0)} ms after it began (grace ${graceMs} ms + ${SLACK_MS} ms)`)
  // The client on b never got the notice: it goes DOWN by itself, within the bound.
  const bDown = (await remote.waitFor(isDownAfter(cutAt), 'DOWN after the cut', bound(e) + TEARDOWN_MS + 10_000)).down
  const bMs = bDown.at - cutAt
  t.like(bDown, { outcome: 'forced', code: 'ERR_CONNECTION_DOWN' }, `host b: ${JSON.stringify(bDown)}`)
  t.true(bMs <= bound(e) + TEARDOWN_MS, `b DOWN and freed ${bMs.toFixed(0)} ms after the cut`)
  await wire.heal()
  assertNoLiveResources(t)
  const what = `${e.transport} shutdown, grace ${graceMs} ms, one client's host cut off: 2 polite clients ${requests} requests all answered, graceful; cut one forced (${cut.reason}) ${cutForcedMs.toFixed(0)} ms after the cut; server close ${elapsed.toFixed(0)} ms; b's client DOWN ${bMs.toFixed(0)} ms (${bDown.reason})`
  t.log(what)
  return what
}

interface Victim {
  transport: string
  kind: 'stream' | 'close'
  conn: Connection
  /** Settles at DOWN (stream: the pending read; close: the close() under way). */
  down: Promise<unknown>
  sends: Array<Promise<void>>
  echoes?: number
  /** close(): the stream's is called after DOWN, the mid-close one's is the one under way. */
  closing?: Promise<CloseResult>
  downAt?: number
  closedAt?: number
  reason?: string
}

/**
 * Host b powers off at once (sysrq o) while, for each transport, one connection to it streams and
 * another is mid-close (a's close() has sent REQ, b's server holds the ACK). a detects every one
 * within the bound; every close() settles forced with the reason; everything is freed within
 * TEARDOWN_MS; live counts are zero. b is gone afterwards: this case runs last.
 */
export async function vanishedHost(t: ExecutionContext, envs: Env[]): Promise<string[]> {
  const victims: Victim[] = []
  const holds: RemoteNode[] = []
  // A failed case must not leave connections (and the test process) hanging.
  t.teardown(async () => void (await Promise.allSettled(victims.map((v) => withDeadline(v.conn.close(), 10_000, 'close at teardown')))))
  // Every peer process on b starts first: a process starting (tsx compiling) takes b's one vCPU
  // for seconds, long enough to starve an open connection's heartbeats past the 1.5 s timeout.
  const servers = await Promise.all(
    envs.map(async (e) => {
      const echo = await remoteServer(t, e)
      const hold = startRemote(t, ['server'], remoteEnv(e, peerIp(), { RG_BEHAVIOUR: 'hold', RG_READ: '1' }))
      const holdPort = (await hold.waitFor((l) => 'port' in l, 'port', 120_000)).port as number
      return { e, echo, hold, holdPort }
    }),
  )
  for (const { e, echo, hold, holdPort } of servers) {
    const s = await connect({ transport: e.transport, host: peerIp(), port: echo.port, ...hb(e), maxQueuedSends: 20_000 })
    const sv: Victim = { transport: e.transport, kind: 'stream', conn: s, echoes: 0, down: Promise.resolve(), sends: [] }
    sv.down = settledError(
      (async () => {
        for await (const _ of s) sv.echoes!++
      })(),
    )
    const c = await connect({ transport: e.transport, host: peerIp(), port: holdPort, ...hb(e) })
    const cs = sendMany(c, 10, (i) => `request ${i}`)
    victims.push(sv, {
      transport: e.transport,
      kind: 'close',
      conn: c,
      down: settledError(c.read()),
      sends: cs,
    })
    holds.push(hold)
  }
  for (const v of victims)
    void v.conn.closed.then((r) => {
      v.reason = `${r.outcome} ${r.reason}`
    })
  // The streams and every close() start only now, all together: a stream must still be under way
  // when b vanishes, and a REQ left unanswered long enough times out ('ack-timeout').
  // Paced streams (at most 16 echoes outstanding): two unpaced floods at once overload b's one
  // emulated vCPU, and then connections fail before b vanishes.
  for (const v of victims.filter((x) => x.kind === 'stream')) {
    void (async () => {
      for (let i = 0; v.conn.state === 'OPEN'; i++) {
        if (v.sends.length - v.echoes! >= 16) {
          await sleep(2)
          continue
        }
        const p = v.conn.send(`m ${i}`)
        p.catch(() => {})
        v.sends.push(p)
      }
    })()
  }
  await until(() => victims.every((v) => v.kind !== 'stream' || v.echoes! >= 100), 60_000, '100 echoes on each stream').catch((err: Error) => {
    const why = (v: Victim): string => `${v.transport} ${v.kind} ${v.conn.state} echoes ${v.echoes} ${v.reason ?? ''}`
    throw new Error(`${err.message}: ${victims.map(why).join('; ')}`)
  })
  for (const v of victims.filter((x) => x.kind === 'close')) v.closing = v.conn.close()
  await Promise.all(holds.map((h) => h.waitFor((l) => l.closeState === 'REQ_RECEIVED', 'REQ_RECEIVED', 20_000)))
  await sleep(2 * envs[0]!.heartbeatIntervalMs)
  for (const v of victims) t.is(v.conn.state, v.kind === 'stream' ? 'OPEN' : 'CLOSING', `${v.transport} ${v.kind}: still up before the vanish`)
  for (const v of victims) {
    void v.down.then(() => {
      v.downAt = wall()
    })
    void v.conn.closed.then(() => {
      v.closedAt = wall()
    }) // settles once the native side freed all
  }
  const goneAt = await vanishB()
  const out: string[] = []
  const e0 = envs[0]!
  await withDeadline(Promise.all(victims.map((v) => v.down)), bound(e0) + 10_000, 'every connection DOWN after the vanish')
  for (const v of victims) {
    const e = envs.find((x) => x.transport === v.transport)!
    const downMs = v.downAt! - goneAt
    const err = await v.down
    const result = await withDeadline(v.closing ?? v.conn.close(), TEARDOWN_MS + 10_000, 'close() after DOWN')
    await withDeadline(v.conn.closed, TEARDOWN_MS + 10_000, 'closed after DOWN')
    const freedMs = Math.max(0, v.closedAt! - v.downAt!)
    const tally = await settleCodes(v.sends)
    t.is(code(err), 'ERR_CONNECTION_DOWN', `${v.transport} ${v.kind}: the pending read rejects`)
    t.is(result.outcome, 'forced', `${v.transport} ${v.kind}: ${JSON.stringify(result)}`)
    t.regex(result.reason, /^(heartbeat-timeout|transport-down)$/, `${v.transport} ${v.kind}`)
    t.is(code(result.error), 'ERR_CONNECTION_DOWN')
    t.deepEqual(
      Object.keys(tally).filter((k) => k !== 'ok' && k !== 'ERR_CONNECTION_DOWN'),
      [],
      `${v.transport} ${v.kind} sends: ${JSON.stringify(tally)}`,
    )
    await t.throwsAsync(v.conn.send('late'), { code: 'ERR_CONNECTION_DOWN' }, `${v.transport} ${v.kind}: a send after DOWN rejects`)
    t.true(downMs <= bound(e), `${v.transport} ${v.kind}: DOWN ${downMs.toFixed(0)} ms after b vanished (bound ${bound(e)} ms)`)
    t.true(freedMs <= TEARDOWN_MS, `${v.transport} ${v.kind}: close() settled ${freedMs.toFixed(0)} ms after DOWN (bound ${TEARDOWN_MS} ms)`)
    out.push(
      `${v.transport} vanished host mid-${v.kind === 'stream' ? 'stream' : 'close'}: DOWN ${downMs.toFixed(0)} ms after b powered off (${result.reason}), close() settled forced ${freedMs.toFixed(0)} ms later; bound ${bound(e)} ms + ${TEARDOWN_MS} ms; sends ${JSON.stringify(tally)}`,
    )
  }
  assertNoLiveResources(t)
  t.deepEqual(Object.fromEntries(Object.entries(liveCounts()).filter(([, n]) => n !== 0)), {})
  for (const l of out) t.log(l)
  return out
}
