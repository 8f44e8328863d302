/**
 * Property tests over random schedules of application calls, time advances and channel faults.
 */
import test from 'ava'
import fc from 'fast-check'

import { DRIVER_ENGINE_OPTIONS } from '../../src/connection'
import { closeTransitionAllowed } from '../../src/protocol/close'
import type { CloseState } from '../../src/protocol/actions'
import { FrameKind } from '../../src/protocol/frames'
import { type ConnectionOptions, DEFAULTS } from '../../src/protocol/options'
import { type Peer, Sim, type Side } from './sim'

type Op =
  | { op: 'send'; side: Side; n: number }
  | { op: 'close'; side: Side }
  | { op: 'end'; side: Side }
  | { op: 'notice'; graceMs: number }
  | { op: 'advance'; ms: number }
  | { op: 'cancel'; side: Side }
  | { op: 'destroy'; side: Side }
  | { op: 'graceEnded' }

const side = fc.constantFrom<Side>('A', 'B')
const opArb = (maxAdvance: number, minGraceMs = 30_000): fc.Arbitrary<Op> =>
  fc.oneof(
    { weight: 5, arbitrary: fc.record({ op: fc.constant('send' as const), side, n: fc.integer({ min: 1, max: 20 }) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('close' as const), side }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('end' as const), side }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('notice' as const), graceMs: fc.integer({ min: minGraceMs, max: 120_000 }) }) },
    { weight: 4, arbitrary: fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: maxAdvance }) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('cancel' as const), side }) },
  )

/** The engine as the product's driver runs it (src/connection.ts), with random windows and linger. */
const optionsArb: fc.Arbitrary<Partial<ConnectionOptions>> = fc.record({
  receiveWindow: fc.integer({ min: 1, max: 8 }),
  finLingerMs: fc.constantFrom(0, 0, 50),
  // 0: no liveness timeout, so that a vanished peer is met by the close deadlines (fin-timeout).
  heartbeatTimeoutMs: fc.constantFrom(5_000, 5_000, 0),
})

const LOSSY_KINDS = new Set<number>([
  FrameKind.DISCONNECT_REQ,
  FrameKind.DISCONNECT_ACK,
  FrameKind.DISCONNECT_FIN,
  FrameKind.SHUTDOWN_NOTICE,
  FrameKind.HEARTBEAT,
  FrameKind.CREDIT,
])

function newSim(
  latencyMs: number,
  a: Partial<ConnectionOptions>,
  b: Partial<ConnectionOptions>,
  reads: [number | undefined, number | undefined],
  faults = {},
): Sim {
  const sim = new Sim({ latencyMs, a: { ...a, ...DRIVER_ENGINE_OPTIONS }, b: { ...b, ...DRIVER_ENGINE_OPTIONS }, faults }).connect()
  sim.A.readDelayMs = reads[0]
  sim.B.readDelayMs = reads[1]
  // The driver's closeOnShutdownNotice: the client ends its side on the notice (once idle: the
  // ops' sends are synchronous, so at once here).
  sim.A.onShutdown = () => sim.at(sim.now, () => sim.end('A'))
  return sim
}

/** `arb` in a quarter of the runs, undefined in the rest (fc.option's nil comes 1 in `freq`). */
const sometimes = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb })

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
      case 'cancel':
        sim.cancel(o.side)
        break
      case 'destroy':
        sim.destroy(o.side)
        break
      case 'graceEnded':
        sim.graceEnded()
        break
    }
  }
}

const isPrefix = (a: string[], b: string[]): boolean => a.length <= b.length && a.every((x, i) => x === b[i])

/** The documented lifecycle (docs/protocol.md section 3); OPEN -> CLOSED is the legacy close. */
const LIFECYCLE: Record<string, readonly string[]> = {
  INIT: ['HELLO_SENT', 'WAIT_HELLO', 'DOWN'],
  HELLO_SENT: ['OPEN', 'DOWN'],
  WAIT_HELLO: ['WAIT_READY', 'OPEN', 'DOWN'],
  WAIT_READY: ['OPEN', 'DOWN'],
  OPEN: ['CLOSING', 'CLOSED', 'DOWN'],
  CLOSING: ['CLOSED', 'DOWN'],
  CLOSED: [],
  DOWN: [],
}

/** Every state event is a legal step of its machine, from where the previous one left it. */
function checkPaths(p: Peer): string | undefined {
  const at: Record<'connection' | 'close', string> = { connection: 'INIT', close: 'NONE' }
  for (const e of p.events) {
    if (e.from !== at[e.machine]) return `${p.side}: ${e.machine} event from ${e.from}, but it was in ${at[e.machine]}`
    const legal = e.machine === 'connection' ? LIFECYCLE[e.from]?.includes(e.to) : closeTransitionAllowed(e.from as CloseState, e.to as CloseState)
    if (!legal) return `${p.side}: illegal ${e.machine} step ${e.from} -> ${e.to} (${e.reason})`
    at[e.machine] = e.to
  }
  return undefined
}

/** Invariants that hold in every run, whatever the faults. */
function checkAlways(p: Peer, other: Peer): string | undefined {
  if (p.settleErrors.length > 0) return `${p.side}: ${p.settleErrors[0]}`
  if (p.framesAfterTransportClose > 0) return `${p.side}: frames after transportClose`
  if (p.peerEndedCount > 1) return `${p.side}: peerEnded ${p.peerEndedCount} times`
  if (!isPrefix(p.delivered, other.writtenPayloads())) return `${p.side} delivered something the peer did not write in that order`
  const path = checkPaths(p)
  if (path !== undefined) return path
  if (p.conn.isTerminal) {
    if (p.closedCount !== 1) return `${p.side}: closed ${p.closedCount} times`
    if (p.transportCloseCount !== 1) return `${p.side}: transportClose ${p.transportCloseCount} times`
    if (p.conn.pollTimeout() !== undefined) return `${p.side}: a timer left armed, for ${p.conn.pollTimeout()}`
    // Every send settled exactly once: written, rejected, or withdrawn by its caller.
    for (const id of p.sends.keys()) {
      if (!p.written.includes(id) && !p.rejected.has(id) && !p.cancelled.has(id)) return `${p.side}: send ${id} never settled`
    }
    if (p.closed?.outcome === 'forced' && p.closed.error === undefined) return `${p.side}: forced without error`
    if (p.closed?.outcome === 'graceful' && p.conn.closeState !== 'COMPLETED') return `${p.side}: graceful in close state ${p.conn.closeState}`
  }
  return undefined
}

/** Two graceful ends tell the same story: both the three-way close, or both the legacy one. */
function checkReasonsAgree(sim: Sim): string | undefined {
  const a = sim.A.closed
  const b = sim.B.closed
  if (a?.outcome !== 'graceful' || b?.outcome !== 'graceful') return undefined
  const threeWay = (r: string): boolean => r === 'close-complete'
  if (threeWay(a.reason) !== threeWay(b.reason)) return `graceful with different closes: A ${a.reason}, B ${b.reason}`
  return undefined
}

/** fc.assert, with the failing invariant's message in the error (ava does not print a `cause`). */
function assertWithCause<T>(property: fc.IProperty<T>, params: fc.Parameters<T>): void {
  try {
    fc.assert(property, params)
  } catch (err) {
    const cause = (err as Error).cause
    throw new Error(`${(err as Error).message}\ncause: ${cause instanceof Error ? cause.message : String(cause)}`)
  }
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
      fc.tuple(fc.constantFrom(0, 0, 5), fc.constantFrom(0, 0, 5)),
      (a, b, latencyMs, ops, finisher, reads) => {
        const sim = newSim(latencyMs, a, b, reads)
        runOps(sim, ops)
        // Finish: the application on each side closes (as the README's idioms end their side).
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
          if (p.closed.reason !== 'close-complete') throw new Error(`${p.side} graceful by ${p.closed.reason}`)
          // Only sends after this side's end (or after the close completed) were refused.
          for (const e of p.rejected.values()) {
            if (e.code !== 'ERR_SEND_AFTER_END' && e.code !== 'ERR_CONNECTION_CLOSED') throw new Error(`${p.side} rejected ${e.code}`)
          }
        }
        const err = checkGracefulMeansComplete(sim) ?? checkReasonsAgree(sim)
        if (err !== undefined) throw new Error(err)
      },
    ),
    { numRuns: 1000 },
  )
  t.pass()
})

test('faults (control loss, duplication, delay, crash, reset, destroy, grace end, cancelled sends, slow readers): every wait ends by its deadline; invariants hold', (t) => {
  // Every deadline a live side can meet in sequence after the last app call, with the defaults:
  // setup 5 s, flush 5 s, 4 x ACK 5 s as the closer, then (a passive closer yielding to a
  // simultaneous REQ) drain/end 15 s and 4 x FIN 10 s as the responder, the heartbeat timeout 5 s;
  // plus the slowest reader's delay (a read after the last input is an input too) and the frame
  // in flight at each end of the chain (3 s of delay at most).
  const D = DEFAULTS
  const BOUND =
    D.readyTimeoutMs +
    D.flushTimeoutMs +
    (D.maxCloseRetries + 1) * D.ackTimeoutMs +
    D.drainTimeoutMs +
    (D.maxCloseRetries + 1) * D.finTimeoutMs +
    D.heartbeatTimeoutMs +
    5_000 +
    2 * 3_000
  const reach: Record<string, number> = {}
  let agreementChecked = 0
  assertWithCause(
    fc.property(
      optionsArb,
      optionsArb,
      fc.integer({ min: 0, max: 40 }),
      fc.array(opArb(8_000, 1_000), { maxLength: 30 }),
      fc.record({
        lossPct: fc.constantFrom(0, 0, 0, 10, 30, 60),
        dupPct: fc.constantFrom(0, 0, 20, 50),
        maxDelay: fc.integer({ min: 0, max: 3_000 }),
        crash: sometimes(fc.record({ side, atOp: fc.nat(30), reset: fc.boolean() })),
        // An application that never ends its side (or never reads): the end-timeout / drain-timeout paths.
        neverEnds: sometimes(side),
        // A closer whose host vanishes right after its FIN: the FIN is lost and no reset follows.
        vanish: fc.constantFrom(false, false, false, true),
        // An input that forces the close: destroy() on either side, or the server-wide grace end.
        force: sometimes(
          fc.record({ atOp: fc.nat(30), op: fc.constantFrom<Op>({ op: 'destroy', side: 'A' }, { op: 'destroy', side: 'B' }, { op: 'graceEnded' }) }),
        ),
        // undefined: an application that never reads (its peer's queued data waits for credits).
        reads: fc.tuple(fc.constantFrom(0, 5, 500, 5_000, undefined), fc.constantFrom(0, 5, 500, 5_000, undefined)),
        seed: fc.integer(),
      }),
      (a, b, latencyMs, ops, f) => {
        let rnd = f.seed >>> 0
        const random = (): number => {
          rnd = (Math.imul(rnd, 1664525) + 1013904223) >>> 0
          return rnd / 2 ** 32
        }
        const sim = newSim(latencyMs, a, b, f.reads, {
          // HELLO/READY loss is covered by named tests; here loss hits what retries and liveness handle.
          drop: (fr: { kind: number }) =>
            (LOSSY_KINDS.has(fr.kind) && random() * 100 < f.lossPct) || (f.vanish && fr.kind === FrameKind.DISCONNECT_FIN),
          dropDown: () => f.vanish,
          duplicate: () => random() * 100 < f.dupPct,
          delay: () => Math.floor(random() * f.maxDelay),
        })
        ops.forEach((o, i) => {
          if (f.crash !== undefined && f.crash.atOp === i) sim.crash(f.crash.side, { reset: f.crash.reset })
          if (f.force !== undefined && f.force.atOp === i) runOps(sim, [f.force.op])
          runOps(sim, [o])
        })
        if (f.neverEnds !== 'A') sim.close('A')
        if (f.neverEnds !== 'B') sim.close('B')
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
          // heartbeatTimeoutMs 0 means "never judge a silent peer": with the peer gone without a
          // word and no close of ours in progress, this side waits for its application, as documented.
          const waitsForApp = p.conn.options.heartbeatTimeoutMs === 0 && p.conn.closeState === 'NONE' && p.conn.state === 'OPEN'
          if (!p.conn.isTerminal && waitsForApp && (f.vanish || f.crash !== undefined)) continue
          if (!p.conn.isTerminal) throw new Error(`${p.side} still ${p.conn.state}/${p.conn.closeState} at ${sim.now}`)
          // A notice's grace is a deadline the application set: the bound includes the longest one.
          const grace = Math.max(0, ...ops.map((o) => (o.op === 'notice' ? o.graceMs : 0)))
          if ((p.closed?.at as number) > lastInput + Math.max(BOUND, grace))
            throw new Error(`${p.side} ended at ${p.closed?.at}, last input ${lastInput}`)
          const key = `${p.closed?.outcome}/${p.closed?.reason}`
          reach[key] = (reach[key] ?? 0) + 1
        }
        const err = checkGracefulMeansComplete(sim) ?? checkReasonsAgree(sim)
        if (err !== undefined) throw new Error(err)
        // Without loss, crash or a forcing input both sides agree on the outcome class.
        const forcingInput = f.force !== undefined && f.force.atOp < ops.length
        if (f.lossPct === 0 && f.crash === undefined && !f.vanish && !forcingInput) {
          agreementChecked++
          const lastStep = sim.B.closed?.reason === 'grace-expired' || sim.A.closed?.reason === 'grace-expired'
          if (sim.A.closed?.outcome !== sim.B.closed?.outcome && !lastStep) {
            throw new Error(`outcomes differ: A ${sim.A.closed?.outcome}/${sim.A.closed?.reason}, B ${sim.B.closed?.outcome}/${sim.B.closed?.reason}`)
          }
        }
      },
    ),
    { numRuns: 1000 },
  )
  t.log('close outcomes reached (both sides of 1,000 runs):', JSON.stringify(reach))
  t.log(`outcome agreement checked in ${agreementChecked} runs`)
  for (const reason of [
    'flush-timeout',
    'ack-timeout',
    'drain-timeout',
    'end-timeout',
    'fin-timeout',
    'grace-expired',
    'destroyed',
    'close-complete',
  ]) {
    const n = Object.entries(reach)
      .filter(([k]) => k.endsWith(`/${reason}`))
      .reduce((sum, [, v]) => sum + v, 0)
    t.true(n > 0, `${reason} was reached (${n})`)
  }
  t.true(agreementChecked >= 100, `agreement was checked in ${agreementChecked} runs`)
})

test("old peers (random capability subsets) under random schedules: lossless runs end graceful; the closer's data always arrives, all data with THREE_WAY_CLOSE", (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 31 }), fc.integer({ min: 0, max: 31 }), fc.array(opArb(2_000), { maxLength: 25 }), (capsA, capsB, ops) => {
      const sim = newSim(3, { capabilities: capsA }, { capabilities: capsB, receiveWindow: 3 }, [0, 0])
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
      if ((capsA & capsB & 2) !== 0) {
        // With THREE_WAY_CLOSE on both, graceful proves completeness both ways.
        const err = checkGracefulMeansComplete(sim) ?? checkReasonsAgree(sim)
        if (err !== undefined) throw new Error(err)
      } else {
        // The legacy close guarantees the closer's direction only (what THREE_WAY_CLOSE fixes):
        // when one side sent REQ and the other went away on it, everything the closer wrote
        // arrived. (Both sending REQ at once guarantees nothing: each goes away on its own REQ.)
        const closers = [sim.A, sim.B].filter((p) => p.closeStates().includes('REQ_SENT'))
        const closer = closers[0]
        const other = closer === sim.A ? sim.B : sim.A
        if (closers.length === 1 && closer !== undefined && JSON.stringify(other.delivered) !== JSON.stringify(closer.writtenPayloads())) {
          throw new Error(`legacy close: ${closer.side}'s data did not all arrive`)
        }
      }
    }),
    { numRuns: 500 },
  )
  t.pass()
})
