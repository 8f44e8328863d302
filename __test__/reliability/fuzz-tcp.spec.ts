/**
 * Fuzzing a real tcp server from a raw socket (fast-check model test): random valid and invalid
 * preambles and frame sequences. The server never crashes or hangs; every bad input ends only that
 * connection, with the typed error the model predicts; a peer whose first frame is not a valid
 * client HELLO never becomes a connection (it is a 'clientError'); a concurrent well-behaved client
 * is served throughout; live counts are zero at the end.
 */
import test from 'ava'
import fc from 'fast-check'

import { connect, listen, type CloseResult, type Connection, TransportError } from '../../src/index'
import { FrameKind } from '../../src/protocol'
import {
  decodeCloseMessage,
  decodeHello,
  encodeCloseMessage,
  encodeFin,
  encodeNotice,
  encodeReady,
  type HelloPayload,
} from '../../src/protocol/frames'
import { assertNoLiveResources, echo, sleep, withDeadline } from '../helpers'
import { clientHello, PREAMBLE, RawPeer, frameBytes, header } from './raw-peer'

const opts = { maxMessageSize: 1024, readyTimeoutMs: 400, heartbeatIntervalMs: 100, heartbeatTimeoutMs: 500 }
/** Every connection the model drives must be over within this (the longest deadline is 500 ms). */
const END_BOUND_MS = 3000
const WINDOW = 1000 // the receive window the raw peer advertises, and the credits field of its every frame

type Noise = { kind: number; payload: Uint8Array }
type Fault =
  | { type: 'none' }
  | { type: 'oversize' | 'badKind' | 'badFlags' | 'truncate' | 'silence' | 'garbage'; at: number; bytes: Uint8Array; n: number }
  | { type: 'helloWrongRole' | 'helloVersion0' | 'shortHello' | 'staleReady' | 'badReqCount' | 'dataAfterReq' }
  | { type: 'dataEarly'; at: 0 | 1 }
  | { type: 'unsolicitedAck' | 'earlyFin' | 'noticeToServer' }

interface Script {
  messages: Uint8Array[]
  noise: Noise[][] // noise[i] goes before messages[i] (and noise[messages.length] before REQ)
  fault: Fault
}

/** The valid sequence's steps; faults are placed by step index. */
const STEPS = ['hello', 'ready', 'data', 'req', 'fin'] as const

const noiseArb: fc.Arbitrary<Noise> = fc.oneof(
  fc.record({ kind: fc.constant(FrameKind.HEARTBEAT as number), payload: fc.constant(new Uint8Array()) }),
  fc.record({ kind: fc.constant(FrameKind.CREDIT as number), payload: fc.constant(new Uint8Array()) }),
  fc.record({ kind: fc.integer({ min: 11, max: 15 }), payload: fc.uint8Array({ maxLength: 32 }) }),
)
const at = fc.integer({ min: 0, max: STEPS.length - 1 })
const faultArb: fc.Arbitrary<Fault> = fc.oneof(
  { weight: 4, arbitrary: fc.constant({ type: 'none' as const }) },
  fc.record({
    type: fc.constantFrom('oversize' as const, 'badKind' as const, 'badFlags' as const, 'truncate' as const, 'silence' as const, 'garbage' as const),
    at,
    bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }),
    n: fc.integer({ min: 1, max: 255 }),
  }),
  fc.record({
    type: fc.constantFrom(
      'helloWrongRole' as const,
      'helloVersion0' as const,
      'shortHello' as const,
      'staleReady' as const,
      'badReqCount' as const,
      'dataAfterReq' as const,
    ),
  }),
  fc.record({ type: fc.constant('dataEarly' as const), at: fc.constantFrom(0 as const, 1 as const) }),
  fc.record({ type: fc.constantFrom('unsolicitedAck' as const, 'earlyFin' as const, 'noticeToServer' as const) }),
)
const scriptArb: fc.Arbitrary<Script> = fc.array(fc.uint8Array({ maxLength: 1024 }), { maxLength: 20 }).chain((messages) =>
  fc.record({
    messages: fc.constant(messages),
    noise: fc.array(fc.array(noiseArb, { maxLength: 3 }), { minLength: messages.length + 1, maxLength: messages.length + 1 }),
    fault: faultArb,
  }),
)

/** One script per fault kind and step, played first, so every kind is exercised in every run. */
const msgs = [Uint8Array.from([1, 2, 3]), new Uint8Array(1024), new Uint8Array()]
const plain = (fault: Fault): [Script] => [{ messages: msgs, noise: [[], [{ kind: 11, payload: Uint8Array.from([7]) }], [], []], fault }]
const byteFaults = ['oversize', 'badKind', 'badFlags', 'truncate', 'silence', 'garbage'] as const
const everyFault: Array<[Script]> = [
  plain({ type: 'none' }),
  ...byteFaults.flatMap((type) => STEPS.map((_, step) => plain({ type, at: step, bytes: Uint8Array.from([0, 1, 0, 0, 0, 0, 0, 9, 1]), n: 3 }))),
  ...(
    [
      'helloWrongRole',
      'helloVersion0',
      'shortHello',
      'staleReady',
      'badReqCount',
      'dataAfterReq',
      'unsolicitedAck',
      'earlyFin',
      'noticeToServer',
    ] as const
  ).map((type) => plain({ type })),
  plain({ type: 'dataEarly', at: 0 }),
  plain({ type: 'dataEarly', at: 1 }),
]

type Expect =
  /** Refused before it became a connection: a 'clientError' with this code (any transport code if undefined). */
  | { refused: true; code?: string }
  | { outcome: 'graceful' }
  | { outcome: 'forced'; reason: string; code: string; causeCode?: string }
  | { outcome: 'forced'; anyTyped: true }

const violation: Expect = { outcome: 'forced', reason: 'protocol-violation', code: 'ERR_PROTOCOL_VIOLATION' }
/** What a fault before or instead of the client HELLO gives: a clientError, never a connection. */
const notHello: Expect = { refused: true, code: 'ERR_MALFORMED_FRAME' }
const beforeHello = (e: Expect): Expect => {
  if ('refused' in e || e.outcome === 'graceful') return e
  if ('anyTyped' in e) return { refused: true }
  return { refused: true, code: e.causeCode ?? (e.reason === 'handshake-timeout' ? 'ERR_TRANSPORT_TIMEOUT' : undefined) }
}

const hello = (over: Partial<HelloPayload> = {}): Buffer =>
  clientHello({ connectionId: 0x1234abcd, generation: 7, receiveWindow: WINDOW, maxMessageSize: 1 << 20, ...over })

/**
 * Plays `s` against the server from a raw socket and says what the server-side connection must end
 * with. Throws if the server's side of a valid exchange is wrong (echoes, ACK count).
 */
async function play(peer: RawPeer, s: Script, check: (ok: boolean, what: string) => void): Promise<Expect> {
  const send = (kind: number, payload: Buffer | Uint8Array = Buffer.alloc(0)): void => peer.write(frameBytes(kind, WINDOW, Buffer.from(payload)))
  /** Sends a frame the server must take as a protocol violation, and says so. */
  const sendViolation = (kind: number, payload: Buffer | Uint8Array): Expect => {
    send(kind, payload)
    return violation
  }
  /** A first frame that is not a valid client HELLO: the server refuses the peer (clientError). */
  const sendRefused = (kind: number, payload: Buffer | Uint8Array): Expect => {
    send(kind, payload)
    return notHello
  }
  const f = s.fault
  const byteFault = (step: number): Expect | undefined => {
    if (!('at' in f) || f.at !== step || f.type === 'dataEarly') return undefined
    switch (f.type) {
      case 'oversize':
        peer.write(header(FrameKind.DATA, 0, WINDOW, opts.maxMessageSize + f.n))
        return { outcome: 'forced', reason: 'transport-down', code: 'ERR_CONNECTION_DOWN', causeCode: 'ERR_FRAME_TOO_LARGE' }
      case 'badKind':
        peer.write(header(16 + (f.n % 240), 0, WINDOW, 0)) // 16..255: beyond the highest kind
        return { outcome: 'forced', reason: 'transport-down', code: 'ERR_CONNECTION_DOWN', causeCode: 'ERR_MALFORMED_FRAME' }
      case 'badFlags':
        peer.write(header(FrameKind.HEARTBEAT, f.n, WINDOW, 0))
        return { outcome: 'forced', reason: 'transport-down', code: 'ERR_CONNECTION_DOWN', causeCode: 'ERR_MALFORMED_FRAME' }
      case 'truncate':
        peer.write(Buffer.concat([header(FrameKind.DATA, 0, WINDOW, 100 + f.n), Buffer.from(f.bytes).subarray(0, 50)]))
        peer.sock.end()
        return { outcome: 'forced', reason: 'transport-down', code: 'ERR_CONNECTION_DOWN' }
      case 'silence':
        // Nothing more: the setup deadline or the heartbeat timeout must end it.
        if (step === 0) return { outcome: 'forced', reason: 'handshake-timeout', code: 'ERR_HANDSHAKE_TIMEOUT' }
        if (step === 1) return { outcome: 'forced', reason: 'ready-timeout', code: 'ERR_READY_TIMEOUT' }
        return { outcome: 'forced', reason: 'heartbeat-timeout', code: 'ERR_CONNECTION_DOWN' }
      case 'garbage':
        peer.write(Buffer.from(f.bytes))
        peer.sock.end() // whatever the bytes meant, the connection must end
        return { outcome: 'forced', anyTyped: true }
    }
    return undefined
  }

  peer.write(PREAMBLE)
  // step 0: HELLO; a fault here is a clientError (the peer never became a connection)
  let r = byteFault(0)
  if (r) return beforeHello(r)
  if (f.type === 'dataEarly' && f.at === 0) return sendRefused(FrameKind.DATA, Buffer.from('early'))
  if (f.type === 'helloWrongRole') return sendRefused(FrameKind.HELLO, hello({ role: 'passive' }))
  if (f.type === 'helloVersion0') return sendRefused(FrameKind.HELLO, hello({ version: 0 }))
  if (f.type === 'shortHello') return sendRefused(FrameKind.HELLO, hello().subarray(0, 25))
  send(FrameKind.HELLO, hello())
  const theirHello = await peer.take(FrameKind.HELLO, 2000)
  check(theirHello !== null, 'the server answered HELLO')
  if (!theirHello) return { outcome: 'forced', anyTyped: true }
  const h = decodeHello(theirHello.payload)
  check(h.ok && h.value.role === 'passive', 'the server HELLO decodes, role passive')
  if (!h.ok) return { outcome: 'forced', anyTyped: true }

  // step 1: READY
  r = byteFault(1)
  if (r) return r
  if (f.type === 'dataEarly') return sendViolation(FrameKind.DATA, Buffer.from('early'))
  if (f.type === 'noticeToServer') return sendViolation(FrameKind.SHUTDOWN_NOTICE, encodeNotice(1000))
  const ready = { activeConnectionId: 0x1234abcd, passiveConnectionId: h.value.connectionId, generation: 7, activeQpn: 0, passiveQpn: 0 }
  if (f.type === 'staleReady') {
    send(FrameKind.READY, encodeReady({ ...ready, generation: 6 }))
    return { outcome: 'forced', reason: 'ready-timeout', code: 'ERR_READY_TIMEOUT' }
  }
  send(FrameKind.READY, encodeReady(ready))

  // step 2: DATA with noise
  r = byteFault(2)
  if (r) return r
  if (f.type === 'unsolicitedAck') return sendViolation(FrameKind.DISCONNECT_ACK, encodeCloseMessage({ dataCount: 0, attempt: 0 }))
  if (f.type === 'earlyFin') return sendViolation(FrameKind.DISCONNECT_FIN, encodeFin(0))
  s.messages.forEach((m, i) => {
    for (const n of s.noise[i]) send(n.kind, n.payload)
    send(FrameKind.DATA, m)
  })
  for (const n of s.noise[s.messages.length]) send(n.kind, n.payload)

  // step 3: DISCONNECT_REQ
  r = byteFault(3)
  if (r) return r
  if (f.type === 'badReqCount') return sendViolation(FrameKind.DISCONNECT_REQ, encodeCloseMessage({ dataCount: s.messages.length + 1, attempt: 0 }))
  send(FrameKind.DISCONNECT_REQ, encodeCloseMessage({ dataCount: s.messages.length, attempt: 0 }))
  if (f.type === 'dataAfterReq') return sendViolation(FrameKind.DATA, Buffer.from('late'))
  const ack = await peer.take(FrameKind.DISCONNECT_ACK, 2000)
  check(ack !== null, 'DISCONNECT_ACK arrived')
  if (!ack) return { outcome: 'forced', anyTyped: true }
  const echoes = peer.frames.filter((x) => x.kind === FrameKind.DATA).map((x) => x.payload)
  check(
    echoes.length === s.messages.length && echoes.every((e, i) => e.equals(Buffer.from(s.messages[i]))),
    `every message echoed once, in order, before ACK (${echoes.length}/${s.messages.length})`,
  )
  const a = decodeCloseMessage(ack.payload, 'ACK')
  check(a.ok && a.value.dataCount === s.messages.length, 'ACK counts the echoes')

  // step 4: DISCONNECT_FIN
  r = byteFault(4)
  if (r) return r
  send(FrameKind.DISCONNECT_FIN, encodeFin(0))
  return { outcome: 'graceful' }
}

const KNOWN_CODES = new Set(['ERR_CONNECTION_DOWN', 'ERR_PROTOCOL_VIOLATION', 'ERR_HANDSHAKE_TIMEOUT', 'ERR_READY_TIMEOUT', 'ERR_CLOSE_TIMEOUT'])
/** What a refused peer's clientError may carry when the model does not predict one code. */
const REFUSAL_CODES = new Set(['ERR_MALFORMED_FRAME', 'ERR_FRAME_TOO_LARGE', 'ERR_PEER_CLOSED', 'ERR_CONNECTION_RESET', 'ERR_TRANSPORT_TIMEOUT'])
const nextClientError = (seen: TransportError[]): Promise<TransportError> => nextOf(seen, END_BOUND_MS, 'clientError of the raw socket')

/** The next element pushed to `seen` (polled; the poll stops at its deadline, so nothing is left running). */
function nextOf<T>(seen: T[], ms: number, what: string): Promise<T> {
  const known = seen.length
  const until = performance.now() + ms
  return withDeadline(
    (async () => {
      while (seen.length === known && performance.now() < until) await sleep(2)
      return seen[known]!
    })(),
    ms + 100,
    what,
  ).then((x) => {
    if (x === undefined) throw new Error(`${what}: none within ${ms} ms`)
    return x
  })
}

const nextConnection = (seen: Connection[]): Promise<Connection> => nextOf(seen, 2000, 'server-side connection of the raw socket')

test.serial('fuzz: random frame sequences from a raw socket end only their own connection, with the predicted typed error', async (t) => {
  const server = await listen({ port: 0, ...opts })
  const accepted: Connection[] = []
  const clientErrors: TransportError[] = []
  server.on('clientError', (e: TransportError) => clientErrors.push(e))
  server.on('connection', (c: Connection) => {
    accepted.push(c)
    echo(c)
  })
  // The well-behaved client ping-pongs throughout.
  const good = await connect({ port: server.port, ...opts })
  await withDeadline(
    (async () => {
      while (accepted.length === 0) await sleep(2)
    })(),
    2000,
    'accept of the good client',
  )
  let pongs = 0
  let stop = false
  const goodLoop = (async () => {
    while (!stop) {
      await good.send(`ping ${pongs}`)
      const m = await good.read()
      if (m?.toString() !== `ping ${pongs}`) throw new Error(`good client got ${m?.toString()} for ping ${pongs}`)
      pongs++
      await sleep(5)
    }
  })()

  t.teardown(async () => {
    stop = true
    good.destroy()
    await server.close({ graceMs: 0 })
  })

  const tally: Record<string, number> = {}
  let slowest = 0
  let refused = 0
  await assertProperty(
    fc.asyncProperty(scriptArb, async (s) => {
      const peer = await RawPeer.open(server.port)
      try {
        const before = accepted.length
        const refusalP = nextClientError(clientErrors)
        const connP = nextConnection(accepted)
        refusalP.catch(() => {})
        connP.catch(() => {})
        const problems: string[] = []
        const started = performance.now()
        const expect = await play(peer, s, (ok, what) => {
          if (!ok) problems.push(what)
        })
        if ('refused' in expect) {
          const e = await refusalP
          await withDeadline(peer.closed, END_BOUND_MS, 'the server closed the raw socket')
          slowest = Math.max(slowest, performance.now() - started)
          const key = `${s.fault.type}:refused:${e.code}`
          tally[key] = (tally[key] ?? 0) + 1
          if (!(e instanceof TransportError)) throw new Error(`clientError is not a TransportError: ${String(e)}`)
          if (expect.code !== undefined ? e.code !== expect.code : !REFUSAL_CODES.has(e.code)) {
            throw new Error(`expected clientError ${expect.code ?? 'with a refusal code'}, got ${e.code}: ${e.message}`)
          }
          if (accepted.length !== before) throw new Error(`a refused peer (${s.fault.type}) became a connection`)
          refused++
          return
        }
        const conn = await connP
        t.is(accepted.length, before + 1)
        const result: CloseResult = await withDeadline(conn.closed, END_BOUND_MS, `end of the fuzzed connection (${s.fault.type})`)
        await withDeadline(peer.closed, END_BOUND_MS, 'the server closed the raw socket')
        slowest = Math.max(slowest, performance.now() - started)
        const err = result.error as (Error & { code?: string; cause?: { code?: string } }) | undefined
        const key = `${s.fault.type}:${result.reason}:${err?.code ?? '-'}`
        tally[key] = (tally[key] ?? 0) + 1
        if (problems.length > 0) throw new Error(`${problems.join('; ')} (script ${s.fault.type})`)
        if (expect.outcome === 'graceful') {
          if (result.outcome !== 'graceful') throw new Error(`valid exchange ended ${JSON.stringify(result)} ${err?.message}`)
          const unknown = s.noise.flat().filter((n) => n.kind >= 11).length
          if (conn.stats.unknownFrames !== unknown) throw new Error(`unknownFrames ${conn.stats.unknownFrames} != ${unknown}`)
        } else if ('anyTyped' in expect) {
          if (result.outcome !== 'forced' || !err || !KNOWN_CODES.has(err.code ?? '')) throw new Error(`untyped end ${JSON.stringify(result)}`)
        } else {
          if (result.outcome !== 'forced' || result.reason !== expect.reason || err?.code !== expect.code) {
            throw new Error(`expected ${JSON.stringify(expect)}, got ${JSON.stringify({ ...result, code: err?.code, msg: err?.message })}`)
          }
          if (expect.causeCode && err?.cause?.code !== expect.causeCode) {
            throw new Error(`expected cause ${expect.causeCode}, got ${err?.cause?.code} (${String(err?.cause)})`)
          }
        }
      } finally {
        peer.destroy()
      }
    }),
    { numRuns: 150, examples: everyFault, endOnFailure: true },
  )
  stop = true
  await withDeadline(goodLoop, 5000, 'good client loop')
  t.log(`outcomes: ${JSON.stringify(tally)}; slowest run ${slowest.toFixed(0)} ms; good client pongs ${pongs}`)
  const types = new Set(Object.keys(tally).map((k) => k.split(':')[0]))
  t.deepEqual([...types].sort(), [...new Set(everyFault.map(([s]) => s.fault.type))].sort(), 'every fault kind was played')
  t.is(clientErrors.length, refused, 'a clientError exactly for each peer whose first frame was not a client HELLO')
  t.true(refused > 0, 'some peers were refused')
  t.true(pongs > 10, `the well-behaved client was served throughout (${pongs} round trips)`)
  t.is(good.state, 'OPEN')
  t.is((await good.close()).outcome, 'graceful')
  t.deepEqual(await server.close({ graceMs: 200 }), { graceful: 0, forced: 0 }, 'every connection had closed before the shutdown')
  t.like(server.stats(), { graceful: 1 + tally_graceful(tally), forced: accepted.length - 1 - tally_graceful(tally) })
  assertNoLiveResources(t)
})

/** fc.assert, with the failing run's own error in the message (fast-check keeps it in `cause`). */
async function assertProperty<T>(p: fc.IAsyncProperty<T>, params: fc.Parameters<T>): Promise<void> {
  try {
    await fc.assert(p, params)
  } catch (e) {
    const cause = (e as Error).cause as Error | undefined
    throw new Error(`${(e as Error).message}\nCause: ${cause?.stack ?? String(cause)}`)
  }
}

function tally_graceful(tally: Record<string, number>): number {
  return Object.entries(tally)
    .filter(([k]) => k.startsWith('none:'))
    .reduce((a, [, n]) => a + n, 0)
}

test.serial('fuzz: a wrong preamble is a clientError ERR_MALFORMED_FRAME, never a connection; the server serves on', async (t) => {
  const server = await listen({ port: 0, ...opts })
  const accepted: Connection[] = []
  server.on('connection', (c: Connection) => {
    accepted.push(c)
    echo(c)
  })
  const errors: TransportError[] = []
  server.on('clientError', (e: TransportError) => errors.push(e))
  const bad = fc.oneof(
    fc.uint8Array({ minLength: 8, maxLength: 40 }).filter((b) => !Buffer.from(b).subarray(0, 8).equals(PREAMBLE)),
    fc
      .integer({ min: 0, max: 255 })
      .filter((v) => v !== 1)
      .map((v) => Buffer.concat([PREAMBLE.subarray(0, 7), Buffer.from([v])])),
  )
  t.teardown(async () => void (await server.close({ graceMs: 0 })))
  await assertProperty(
    fc.asyncProperty(bad, async (bytes) => {
      const before = errors.length
      const peer = await RawPeer.open(server.port)
      peer.write(Buffer.from(bytes))
      await withDeadline(peer.closed, END_BOUND_MS, 'server closed the socket')
      await withDeadline(
        (async () => {
          while (errors.length === before) await sleep(2)
        })(),
        2000,
        'clientError',
      )
      const e = errors[before]
      if (e.code !== 'ERR_MALFORMED_FRAME') throw new Error(`clientError ${e.code}: ${e.message}`)
      const versionByte = Buffer.from(bytes).subarray(0, 7).equals(PREAMBLE.subarray(0, 7))
      if (versionByte && !/version/.test(e.message)) throw new Error(`version mismatch not named: ${e.message}`)
    }),
    { numRuns: 60, endOnFailure: true },
  )
  t.is(accepted.length, 0, 'no bad preamble became a connection')
  const good = await connect({ port: server.port, ...opts })
  await good.send('still here')
  t.is((await good.read())?.toString(), 'still here')
  t.is((await good.close()).outcome, 'graceful')
  await server.close({ graceMs: 100 })
  assertNoLiveResources(t)
})
