/**
 * Property tests over random schedules of application calls, time advances and channel faults.
 */
import test from 'ava'
import fc from 'fast-check'

import { FrameKind } from '../../src/protocol/frames'
import type { ConnectionOptions } from '../../src/protocol/options'
import { type Peer, Sim, type Side } from './sim'

type Op =
  | { op: 'send'; side: Side; n: number }
  | { op: 'close'; side: Side }
  | { op: 'end'; side: Side }
  | { op: 'notice'; graceMs: number }
  | { op: 'advance'; ms: number }

const side = fc.constantFrom<Side>('A', 'B')
const opArb = (maxAdvance: number): fc.Arbitrary<Op> =>
  fc.oneof(
    { weight: 5, arbitrary: fc.record({ op: fc.constant('send' as const), side, n: fc.integer({ min: 1, max: 20 }) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('close' as const), side }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('end' as const), side }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('notice' as const), graceMs: fc.integer({ min: 30_000, max: 120_000 }) }) },
    { weight: 4, arbitrary: fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: maxAdvance }) }) },
  )

const optionsArb: fc.Arbitrary<Partial<ConnectionOptions>> = fc.record({
  receiveWindow: fc.integer({ min: 1, max: 8 }),
  allowHalfOpen: fc.boolean(),
  finLingerMs: fc.constantFrom(0, 0, 50),
})

const LOSSY_KINDS = new Set<number>([
  FrameKind.DISCONNECT_REQ,
  FrameKind.DISCONNECT_ACK,
  FrameKind.DISCONNECT_FIN,
  FrameKind.SHUTDOWN_NOTICE,
  FrameKind.HEARTBEAT,
  FrameKind.CREDIT,
])

let counter = 0
function runOps(sim: Sim, ops: Op[]): void {
  for (const o of ops) {
    switch (o.op) {
      case 'send':
        for (let i = 0; i < o.n; i++) sim.send(o.side, `${o.side}${counter++}`)
        break
      case 'close':
        sim.close(o.side)
        break
      case 'end':
        sim.end(o.side)
        break
      case 'notice':
        sim.notice(o.graceMs)
        break
      case 'advance':
        sim.advance(o.ms)
        break
    }
  }
}

const isPrefix = (a: string[], b: string[]): boolean => a.length <= b.length && a.every((x, i) => x === b[i])

/** Invariants that hold in every run, whatever the faults. */
function checkAlways(p: Peer, other: Peer): string | undefined {
  if (p.settleErrors.length > 0) return `${p.side}: ${p.settleErrors[0]}`
  if (p.framesAfterTransportClose > 0) return `${p.side}: frames after transportClose`
  if (!isPrefix(p.delivered, other.writtenPayloads())) return `${p.side} delivered something the peer did not write in that order`
  if (p.conn.isTerminal) {
    if (p.closedCount !== 1) return `${p.side}: closed ${p.closedCount} times`
    if (p.transportCloseCount !== 1) return `${p.side}: transportClose ${p.transportCloseCount} times`
    if (p.conn.pollTimeout() !== undefined) return `${p.side}: a timer left armed, for ${p.conn.pollTimeout()}`
    // Every send settled exactly once.
    for (const id of p.sends.keys()) if (!p.written.includes(id) && !p.rejected.has(id)) return `${p.side}: send ${id} never settled`
    if (p.closed?.outcome === 'forced' && p.closed.error === undefined) return `${p.side}: forced without error`
  }
  return undefined
}

/** A graceful end on either side proves every DATA message both ways arrived. */
function checkGracefulMeansComplete(sim: Sim): string | undefined {
  if (sim.A.closed?.outcome !== 'graceful' && sim.B.closed?.outcome !== 'graceful') return undefined
  if (JSON.stringify(sim.B.delivered) !== JSON.stringify(sim.A.writtenPayloads())) return 'A->B data incomplete after a graceful close'
  if (JSON.stringify(sim.A.delivered) !== JSON.stringify(sim.B.writtenPayloads())) return 'B->A data incomplete after a graceful close'
  return undefined
}

test('lossless channel, both peers live: every message delivered exactly once in order; both graceful; one transportClose each', (t) => {
  fc.assert(
    fc.property(
      optionsArb,
      optionsArb,
      fc.integer({ min: 0, max: 40 }),
      fc.array(opArb(3_000), { maxLength: 40 }),
      fc.constantFrom<Side>('A', 'B'),
      (a, b, latencyMs, ops, finisher) => {
        const sim = new Sim({ latencyMs, a, b }).connect()
        runOps(sim, ops)
        // Finish: the app on each side closes (the half-open side ends too).
        sim.close(finisher)
        sim.close(finisher === 'A' ? 'B' : 'A')
        sim.runToQuiet(sim.now + 600_000)
        for (const [p, o] of [
          [sim.A, sim.B],
          [sim.B, sim.A],
        ] as const) {
          const err = checkAlways(p, o)
          if (err !== undefined) throw new Error(err)
          if (!p.conn.isTerminal) throw new Error(`${p.side} not terminal: ${p.conn.state}/${p.conn.closeState}`)
          if (p.closed?.outcome !== 'graceful') throw new Error(`${p.side} ${p.closed?.outcome} ${p.closed?.reason}`)
          // Only sends after this side's end (or after the close completed) were refused.
          for (const e of p.rejected.values()) {
            if (e.code !== 'ERR_SEND_AFTER_END' && e.code !== 'ERR_CONNECTION_CLOSED') throw new Error(`${p.side} rejected ${e.code}`)
          }
        }
        const err = checkGracefulMeansComplete(sim)
        if (err !== undefined) throw new Error(err)
        if (sim.B.delivered.length !== sim.A.writtenPayloads().length) throw new Error('count')
      },
    ),
    { numRuns: 1000 },
  )
  t.pass()
})

test('faults (control loss, duplication, delay, crash, reset): every wait ends by its deadline; invariants hold', (t) => {
  // Longest chain of waits a live side can be in after the last app call, with default options:
  // flush 5 s + 4 x ACK 5 s (closer) or drain 20 s + 4 x FIN 10 s (responder), heartbeat 5 s, setup 5 s.
  const BOUND = 5_000 + 20_000 + 20_000 + 40_000 + 5_000
  fc.assert(
    fc.property(
      optionsArb,
      optionsArb,
      fc.integer({ min: 0, max: 40 }),
      fc.array(opArb(8_000), { maxLength: 30 }),
      fc.record({
        lossPct: fc.integer({ min: 0, max: 60 }),
        dupPct: fc.integer({ min: 0, max: 50 }),
        maxDelay: fc.integer({ min: 0, max: 3_000 }),
        crash: fc.option(fc.record({ side, atOp: fc.nat(30), reset: fc.boolean() }), { nil: undefined }),
        seed: fc.integer(),
      }),
      (a, b, latencyMs, ops, f) => {
        let rnd = f.seed >>> 0
        const random = (): number => {
          rnd = (Math.imul(rnd, 1664525) + 1013904223) >>> 0
          return rnd / 2 ** 32
        }
        const sim = new Sim({
          latencyMs,
          a,
          b,
          faults: {
            // HELLO/READY loss is covered by named tests; here loss hits what retries and liveness handle.
            drop: (fr) => LOSSY_KINDS.has(fr.kind) && random() * 100 < f.lossPct,
            duplicate: () => random() * 100 < f.dupPct,
            delay: () => Math.floor(random() * f.maxDelay),
          },
        }).connect()
        ops.forEach((o, i) => {
          if (f.crash !== undefined && f.crash.atOp === i) sim.crash(f.crash.side, { reset: f.crash.reset })
          runOps(sim, [o])
        })
        sim.close('A')
        sim.close('B')
        const lastInput = sim.now
        sim.runToQuiet(lastInput + 10 * BOUND)
        for (const [p, o] of [
          [sim.A, sim.B],
          [sim.B, sim.A],
        ] as const) {
          const err = checkAlways(p, o)
          if (err !== undefined) throw new Error(err)
          if (p.crashed) continue
          // The channel never corrupts or reorders, so a violation here would be an engine bug.
          if (p.closed?.reason === 'protocol-violation') throw new Error(`${p.side}: ${p.closed.error?.message}`)
          if (!p.conn.isTerminal) throw new Error(`${p.side} still ${p.conn.state}/${p.conn.closeState} at ${sim.now}`)
          if ((p.closed?.at as number) > lastInput + BOUND) throw new Error(`${p.side} ended at ${p.closed?.at}, last input ${lastInput}`)
        }
        const err = checkGracefulMeansComplete(sim)
        if (err !== undefined) throw new Error(err)
        // Without loss and crash both sides agree on the outcome class.
        if (f.lossPct === 0 && f.crash === undefined && sim.A.closed?.outcome !== sim.B.closed?.outcome) {
          throw new Error(`outcomes differ: A ${sim.A.closed?.outcome}/${sim.A.closed?.reason}, B ${sim.B.closed?.outcome}/${sim.B.closed?.reason}`)
        }
      },
    ),
    { numRuns: 1000 },
  )
  t.pass()
})

test('old peers (random capability subsets) under random schedules: lossless runs end graceful with all data', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 15 }), fc.integer({ min: 0, max: 15 }), fc.array(opArb(2_000), { maxLength: 25 }), (capsA, capsB, ops) => {
      const sim = new Sim({ latencyMs: 3, a: { capabilities: capsA }, b: { capabilities: capsB, receiveWindow: 3 } }).connect()
      runOps(sim, ops)
      sim.close('A')
      sim.close('B')
      sim.runToQuiet(sim.now + 600_000)
      for (const [p, o] of [
        [sim.A, sim.B],
        [sim.B, sim.A],
      ] as const) {
        const err = checkAlways(p, o)
        if (err !== undefined) throw new Error(err)
        if (p.closed?.outcome !== 'graceful') throw new Error(`${p.side} ${p.closed?.outcome} ${p.closed?.reason}`)
      }
      // With THREE_WAY_CLOSE on both, graceful proves completeness; with the legacy close only the
      // closer's direction is guaranteed (the old behaviour this capability fixes).
      if ((capsA & capsB & 2) !== 0) {
        const err = checkGracefulMeansComplete(sim)
        if (err !== undefined) throw new Error(err)
      }
    }),
    { numRuns: 500 },
  )
  t.pass()
})
