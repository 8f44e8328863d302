/**
 * Property tests with application models in the simulator (issue 18): servers that answer each
 * request or message after a random async delay, clients that close with requests in flight, and
 * clients streaming when the server's SHUTDOWN_NOTICE comes. The one invariant that matters to
 * the applications: in any outcome called graceful, nothing was lost: every request was answered
 * (or refused as not processed, which the requester hears), every message and reply arrived.
 *
 * The models do what the driver (src/connection.ts) and the README's idioms do: a request handler
 * ends its side at the peer's end (the engine holds the ACK until the last answer); a plain-message
 * server ends its side once its handlers are done; a client ends on the notice once it is idle.
 */
import test from 'ava'
import fc from 'fast-check'

import { DRIVER_ENGINE_OPTIONS } from '../../src/connection'
import { FrameKind } from '../../src/protocol/frames'
import { type Peer, Sim } from './sim'

const LOSSY_KINDS = new Set<number>([
  FrameKind.DISCONNECT_REQ,
  FrameKind.DISCONNECT_ACK,
  FrameKind.DISCONNECT_FIN,
  FrameKind.HEARTBEAT,
  FrameKind.CREDIT,
])

/** Both ends as the product's driver runs the engine; `bReads`: B's application reads every message at once. */
function driverSim(s: { latencyMs: number; window: number; lossPct?: number }, random: () => number, bReads: boolean): Sim {
  const lossPct = s.lossPct ?? 0
  const sim = new Sim({
    latencyMs: s.latencyMs,
    a: DRIVER_ENGINE_OPTIONS,
    b: { ...DRIVER_ENGINE_OPTIONS, receiveWindow: s.window },
    faults: { drop: (f) => LOSSY_KINDS.has(f.kind) && random() * 100 < lossPct },
  }).connect()
  sim.A.readDelayMs = 0
  if (bReads) sim.B.readDelayMs = 0
  return sim
}

function lcg(seed: number): () => number {
  let x = seed >>> 0
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0
    return x / 2 ** 32
  }
}

function invariantsOf(p: Peer): string | undefined {
  if (p.settleErrors.length > 0) return `${p.side}: ${p.settleErrors[0]}`
  if (p.requestErrors.length > 0) return `${p.side}: ${p.requestErrors[0]}`
  if (p.closedCount > 1) return `${p.side}: closed ${p.closedCount} times`
  if (p.peerEndedCount > 1) return `${p.side}: peerEnded ${p.peerEndedCount} times`
  return undefined
}

/** Every request of `p` ended exactly one way, when `p` was graceful. */
function requestsAccountedFor(p: Peer): string | undefined {
  if (p.closed?.outcome !== 'graceful') return undefined
  for (const [id, body] of p.requestsOut) {
    const reply = p.replies.get(id)
    if (reply === undefined && !p.notProcessed.includes(id)) return `${p.side}: graceful, but request ${id} (${body}) got no reply`
    if (reply !== undefined && reply.body !== `re ${body}`) return `${p.side}: request ${id} got ${reply.body}`
  }
  return undefined
}

/** A request the requester was told was not processed never reached the responder's application. */
function notProcessedMeansUnseen(requester: Peer, responder: Peer): string | undefined {
  const seen = new Set(responder.requestsIn.map((r) => r.requestId))
  const wrong = requester.notProcessed.find((id) => seen.has(id))
  return wrong === undefined ? undefined : `${requester.side}: request ${wrong} reported not processed, but ${responder.side}'s handler saw it`
}

const scheduleArb = fc.record({
  requests: fc.integer({ min: 1, max: 40 }),
  closeAfter: fc.integer({ min: 0, max: 40 }),
  maxHandlerMs: fc.integer({ min: 0, max: 3_000 }),
  latencyMs: fc.integer({ min: 0, max: 30 }),
  window: fc.integer({ min: 1, max: 8 }),
  lossPct: fc.constantFrom(0, 0, 20),
  crashB: fc.option(fc.integer({ min: 0, max: 5_000 }), { nil: undefined }),
  seed: fc.integer(),
})

test('request handler answering after random delays; the client closes with requests in flight: graceful means every request answered', (t) => {
  const reach: Record<string, number> = {}
  fc.assert(
    fc.property(scheduleArb, (s) => {
      const random = lcg(s.seed)
      const sim = driverSim(s, random, false)
      // B: the driver's handle(): each request answered after a random delay, its credit back then;
      // at the peer's end, end at once (the engine holds the ACK until the last answer).
      sim.B.onRequest = (id, body) =>
        sim.at(sim.now + Math.floor(random() * s.maxHandlerMs), () => {
          sim.consumed('B', 1)
          sim.respond('B', id, `re ${body}`)
        })
      sim.B.onPeerEnded = () => sim.at(sim.now, () => sim.end('B'))
      if (s.crashB !== undefined) sim.at(s.crashB, () => sim.crash('B', { reset: true }))
      sim.advance(100)
      for (let i = 0; i < s.requests; i++) {
        sim.request('A', `q${i}`)
        if (i === s.closeAfter) sim.close('A')
        sim.advance(Math.floor(random() * 50))
      }
      sim.close('A')
      sim.runToQuiet(sim.now + 600_000)
      const crossed = notProcessedMeansUnseen(sim.A, sim.B)
      if (crossed !== undefined) throw new Error(crossed)
      for (const p of [sim.A, sim.B]) {
        const err = invariantsOf(p) ?? requestsAccountedFor(p)
        if (err !== undefined) throw new Error(err)
        if (!p.crashed && !p.conn.isTerminal) throw new Error(`${p.side} still ${p.conn.state}/${p.conn.closeState}`)
      }
      if (sim.B.closed?.outcome === 'graceful' && sim.B.requestsIn.length !== sim.B.conn.stats.requestsReceived) throw new Error('B count')
      const key = `A ${sim.A.closed?.outcome}/${sim.A.closed?.reason}`
      reach[key] = (reach[key] ?? 0) + 1
    }),
    { numRuns: 500 },
  )
  t.log('outcomes reached:', JSON.stringify(reach))
  t.true((reach['A graceful/close-complete'] ?? 0) > 0, 'graceful closes were reached')
})

test('plain-message server answering after random delays, ending its side when its handlers are done: graceful means every reply arrived', (t) => {
  fc.assert(
    fc.property(scheduleArb, (s) => {
      const random = lcg(s.seed)
      const sim = driverSim(s, random, true)
      // B: the README's concurrent-server idiom: each message answered after a random delay; once
      // the client has ended, wait for the handlers, then end().
      let handling = 0
      let peerEnded = false
      const endIfDone = (): void => {
        if (peerEnded && handling === 0) sim.end('B')
      }
      let seen = sim.B.delivered.length
      const onWire = (): void => {
        for (; seen < sim.B.delivered.length; seen++) {
          const body = sim.B.delivered[seen]
          handling++
          sim.at(sim.now + Math.floor(random() * s.maxHandlerMs), () => {
            handling--
            sim.send('B', `re ${body}`)
            endIfDone()
          })
        }
      }
      sim.B.onPeerEnded = () =>
        sim.at(sim.now, () => {
          onWire()
          peerEnded = true
          endIfDone()
        })
      if (s.crashB !== undefined) sim.at(s.crashB, () => sim.crash('B', { reset: true }))
      sim.advance(100)
      for (let i = 0; i < s.requests; i++) {
        sim.send('A', `m${i}`)
        if (i === s.closeAfter) sim.close('A')
        sim.advance(Math.floor(random() * 50))
        onWire()
      }
      sim.close('A')
      for (let k = 0; k < 200 && !(sim.A.conn.isTerminal && sim.B.conn.isTerminal); k++) {
        sim.advance(500)
        onWire()
      }
      sim.runToQuiet(sim.now + 600_000)
      for (const p of [sim.A, sim.B]) {
        const err = invariantsOf(p)
        if (err !== undefined) throw new Error(err)
      }
      if (sim.A.closed?.outcome === 'graceful' || sim.B.closed?.outcome === 'graceful') {
        const asked = sim.A.writtenPayloads()
        const answered = new Set(sim.A.delivered)
        for (const m of asked) if (!answered.has(`re ${m}`)) throw new Error(`graceful, but no reply to ${m}`)
      }
    }),
    { numRuns: 500 },
  )
  t.pass()
})

test('a client streaming when SHUTDOWN_NOTICE comes ends once idle: graceful means the whole stream arrived; a short grace is forced, never graceful with a gap', (t) => {
  const reach: Record<string, number> = {}
  fc.assert(
    fc.property(
      fc.record({
        messages: fc.integer({ min: 1, max: 300 }),
        pacingMs: fc.integer({ min: 0, max: 20 }),
        noticeAt: fc.integer({ min: 0, max: 2_000 }),
        graceMs: fc.integer({ min: 0, max: 8_000 }),
        window: fc.integer({ min: 1, max: 8 }),
        latencyMs: fc.integer({ min: 0, max: 30 }),
      }),
      (s) => {
        const sim = driverSim(s, Math.random, true)
        // B reads everything and ends once the client has (the counting server of the e2e tests).
        sim.B.onPeerEnded = () => sim.at(sim.now, () => sim.end('B'))
        // A streams `messages`, one every pacingMs; on the notice it ends once idle: after its
        // stream (the driver's idle end sees a writer still at work and waits for it).
        let next = 0
        const writeNext = (): void => {
          if (sim.A.conn.isTerminal) return
          if (next === s.messages) return sim.end('A')
          sim.send('A', `s${next++}`)
          sim.at(sim.now + s.pacingMs, writeNext)
        }
        sim.at(sim.now + 10, writeNext)
        sim.at(s.noticeAt, () => sim.notice(s.graceMs))
        sim.B.onPeerEnded = () => sim.at(sim.now, () => sim.end('B'))
        // The server-wide grace ends (server.close()): force whoever is left.
        sim.at(s.noticeAt + s.graceMs, () => sim.graceEnded())
        sim.runToQuiet(sim.now + 600_000)
        for (const p of [sim.A, sim.B]) {
          const err = invariantsOf(p)
          if (err !== undefined) throw new Error(err)
          if (!p.conn.isTerminal) throw new Error(`${p.side} still ${p.conn.state}`)
        }
        const graceful = sim.A.closed?.outcome === 'graceful' || sim.B.closed?.outcome === 'graceful'
        if (graceful && sim.B.delivered.length !== s.messages) throw new Error(`graceful with ${sim.B.delivered.length} of ${s.messages}`)
        // Both agree, but for one honest case: the grace ended while B waited for the closer's FIN,
        // the last step; A completed (all data had arrived both ways), B could not know that.
        const lastStep = sim.B.closed?.reason === 'grace-expired' && sim.B.conn.closeState === 'ACK_SENT'
        if (sim.A.closed?.outcome !== sim.B.closed?.outcome && !lastStep) throw new Error(`A ${sim.A.closed?.reason}, B ${sim.B.closed?.reason}`)
        const key = `B ${sim.B.closed?.outcome}/${sim.B.closed?.reason}`
        reach[key] = (reach[key] ?? 0) + 1
      },
    ),
    { numRuns: 500 },
  )
  t.log('outcomes reached:', JSON.stringify(reach))
  t.true((reach['B graceful/close-complete'] ?? 0) > 0 && (reach['B forced/grace-expired'] ?? 0) > 0, 'both endings were reached')
})
