/**
 * Deterministic simulation of two protocol engines: a fake clock, an ordered channel per direction
 * with injectable faults (loss, duplication, extra delay), peer crash (stops processing, optionally
 * with a transport reset seen by the other side), and each engine's earliest deadline
 * (`pollTimeout()`), handled by fake time.
 *
 * The channel never reorders: the real transports are ordered. Loss and duplication model what the
 * close retries exist for (a stalled or vanished peer); they are applied only to control frames unless
 * a test asks otherwise, because a live transport never loses or repeats DATA.
 */

import type { Action, StateChange } from '../../src/protocol/actions'
import { ProtocolConnection } from '../../src/protocol/connection'
import type { RdmaGracefulError } from '../../src/protocol/errors'
import { type Frame, FrameKind } from '../../src/protocol/frames'
import type { ConnectionOptions } from '../../src/protocol/options'

export type Side = 'A' | 'B'
export type Direction = 'A->B' | 'B->A'

export interface Faults {
  /** Drop this frame (it never arrives). */
  drop?: (frame: Frame, dir: Direction, sim: Sim) => boolean
  /** Deliver this frame twice. */
  duplicate?: (frame: Frame, dir: Direction, sim: Sim) => boolean
  /** Extra one-way delay for this frame (order is still kept: later frames wait behind it). */
  delay?: (frame: Frame, dir: Direction, sim: Sim) => number
  /** A transport close that never reaches the other side (the host vanished: no reset, no FIN). */
  dropDown?: (dir: Direction, sim: Sim) => boolean
}

export interface SimOptions {
  a?: Partial<ConnectionOptions>
  b?: Partial<ConnectionOptions>
  latencyMs?: number
  faults?: Faults
}

/** A run processing more events than this is a livelock in the engine (or a test that forgot heartbeats). */
const MAX_EVENTS_PER_RUN = 200_000

type Wire = { at: number; seq: number; what: 'frame'; frame: Frame } | { at: number; seq: number; what: 'down' }

export class Peer {
  readonly conn: ProtocolConnection
  readonly delivered: string[] = []
  readonly events: StateChange[] = []
  readonly log: Action[] = []
  readonly framesOut: Frame[] = []
  /** send id -> payload, in the order send() was called */
  readonly sends = new Map<number, string>()
  readonly written: number[] = []
  readonly rejected = new Map<number, RdmaGracefulError>()
  readonly settleErrors: string[] = []
  readonly shutdowns: number[] = []
  closed: { outcome: 'graceful' | 'forced'; reason: string; at: number; error?: RdmaGracefulError } | undefined
  closedCount = 0
  transportCloseCount = 0
  transportCloseGraceful: boolean | undefined
  peerEndedCount = 0
  /** The peer's REQUESTs delivered to this side's application, in order (id, body). */
  readonly requestsIn: Array<{ requestId: number; body: string }> = []
  /** This side's requests: body by request id, and how each ended (a reply, or not processed). */
  readonly requestsOut = new Map<number, string>()
  readonly replies = new Map<number, { ok: boolean; body: string }>()
  readonly notProcessed: number[] = []
  /** Sends withdrawn with cancelSend (settled by the caller). */
  readonly cancelled = new Set<number>()
  /** A reply or rejection for a request that had already ended (must never happen). */
  readonly requestErrors: string[] = []
  crashed = false
  framesAfterTransportClose = 0
  /**
   * With creditGrant 'on-consume' (the driver's): the application reads each delivered message
   * this long after it arrives (undefined: it never reads on its own; the test calls consumed()).
   */
  readDelayMs: number | undefined
  /** App-model hooks (set by a test): a request delivered, the peer's end. */
  onRequest: ((requestId: number, body: string) => void) | undefined
  onPeerEnded: (() => void) | undefined
  onShutdown: (() => void) | undefined

  constructor(
    readonly side: Side,
    options: ConnectionOptions,
  ) {
    this.conn = new ProtocolConnection(options)
  }

  /** Payloads this side wrote to the transport, in order. */
  writtenPayloads(): string[] {
    return this.written.map((id) => this.sends.get(id) as string)
  }

  closeStates(): string[] {
    return this.events.filter((e) => e.machine === 'close').map((e) => e.to)
  }

  states(): string[] {
    return this.events.filter((e) => e.machine === 'connection').map((e) => e.to)
  }
}

export class Sim {
  now = 0
  readonly A: Peer
  readonly B: Peer
  readonly latencyMs: number
  faults: Faults
  private seq = 0
  private readonly wires: Record<Direction, Wire[]> = { 'A->B': [], 'B->A': [] }
  private readonly lastAt: Record<Direction, number> = { 'A->B': 0, 'B->A': 0 }
  /** After a transport close the direction carries nothing new. */
  private readonly wireClosed: Record<Direction, boolean> = { 'A->B': false, 'B->A': false }

  constructor(o: SimOptions = {}) {
    this.latencyMs = o.latencyMs ?? 1
    this.faults = o.faults ?? {}
    this.A = new Peer('A', { role: 'active', connectionId: 0xa1, generation: 7, ...o.a })
    this.B = new Peer('B', { role: 'passive', connectionId: 0xb2, ...o.b })
  }

  peer(s: Side): Peer {
    return s === 'A' ? this.A : this.B
  }
  other(s: Side): Peer {
    return s === 'A' ? this.B : this.A
  }

  /** Both transports come up: A connected, B accepted (B's start arrives one latency later). */
  connect(): this {
    this.input('A', (c) => c.start(this.now))
    this.input('B', (c) => c.start(this.now))
    return this
  }

  /** Application timers on the simulated clock (app models: handlers that answer later, paced writers). */
  private readonly appTimers: Array<{ at: number; seq: number; fn: () => void }> = []

  /** Runs `fn` at simulated time `at` (after wire events and deadlines due at the same time). */
  at(at: number, fn: () => void): void {
    this.appTimers.push({ at, seq: this.seq++, fn })
    this.appTimers.sort((x, y) => x.at - y.at || x.seq - y.seq)
  }

  // ------------------------------------------------------------------ app inputs
  /**
   * Withdraws the newest send of `s` still waiting (the driver's send deadline or abort:
   * cancelSend); a withdrawn send counts as settled by its caller.
   */
  cancel(s: Side): void {
    const p = this.peer(s)
    const waiting = [...p.sends.keys()].filter((id) => !p.written.includes(id) && !p.rejected.has(id) && !p.cancelled.has(id))
    const id = waiting.at(-1)
    if (id === undefined) return
    this.input(s, (c) => {
      if (c.cancelSend(this.now, id)) p.cancelled.add(id)
    })
  }

  /** Returns the send id, or 0 when the side is crashed (nothing happens then). */
  send(s: Side, payload: string): number {
    if (this.peer(s).crashed) return 0
    let id = 0
    this.input(s, (c) => {
      id = c.send(this.now, Buffer.from(payload))
    })
    this.peer(s).sends.set(id, payload)
    // settle actions were already processed during input(); the map entry is for the writtenPayloads view
    return id
  }
  /** Sends a request; returns its request id (0 when the side is crashed). */
  request(s: Side, body: string): number {
    let requestId = 0
    let sendId = 0
    this.input(s, (c) => {
      ;({ requestId, sendId } = c.request(this.now, Buffer.from(body)))
    })
    const p = this.peer(s)
    // A request refused at once (after end, queue full ...) was never on its way: its caller heard so.
    if (requestId !== 0 && !p.rejected.has(sendId)) {
      p.requestsOut.set(requestId, body)
      p.sends.set(sendId, `request ${requestId}`)
    }
    return requestId
  }
  /** Answers the peer's request `requestId` (a no-op once crashed or terminal). */
  respond(s: Side, requestId: number, body: string): void {
    this.input(s, (c) => {
      if (!c.isTerminal) c.respond(this.now, requestId, Buffer.from(body))
    })
  }
  close(s: Side): void {
    this.input(s, (c) => c.close(this.now))
  }
  end(s: Side): void {
    this.input(s, (c) => c.end(this.now))
  }
  destroy(s: Side): void {
    this.input(s, (c) => c.destroy(this.now))
  }
  notice(graceMs: number): void {
    this.input('B', (c) => c.shutdownNotice(this.now, graceMs))
  }
  graceEnded(): void {
    this.input('B', (c) => c.graceEnded(this.now))
  }
  consumed(s: Side, n: number): void {
    this.input(s, (c) => c.consumed(this.now, n))
  }

  /** The side stops processing anything (frozen or vanished). With reset, the other side's transport reports it. */
  crash(s: Side, opts: { reset?: boolean } = {}): void {
    const p = this.peer(s)
    p.crashed = true
    if (opts.reset) this.pushDown(s === 'A' ? 'A->B' : 'B->A', this.now + this.latencyMs)
  }

  /** Injects a raw frame as if it came from the other side (for malformed / stale frames). */
  inject(to: Side, frame: Frame): void {
    this.input(to, (c) => c.frameReceived(this.now, frame))
  }

  // ------------------------------------------------------------------ time
  /** Processes everything due up to time t (inclusive), then sets the clock to t. */
  runUntil(t: number): void {
    for (let guard = 0; ; guard++) {
      if (guard > MAX_EVENTS_PER_RUN) throw new Error(`simulation did not settle by t=${t} (now ${this.now})`)
      const next = this.nextEvent()
      if (next === undefined || next.at > t) break
      this.now = Math.max(this.now, next.at)
      next.run()
    }
    this.now = Math.max(this.now, t)
  }

  advance(ms: number): void {
    this.runUntil(this.now + ms)
  }

  /** Runs until nothing is pending (or the limit), returns the time reached. */
  runToQuiet(limitMs = 10 * 365 * 24 * 3600 * 1000): number {
    for (let guard = 0; ; guard++) {
      if (guard > MAX_EVENTS_PER_RUN) throw new Error(`simulation did not go quiet (now ${this.now})`)
      const next = this.nextEvent()
      if (next === undefined || next.at > limitMs) return this.now
      this.now = Math.max(this.now, next.at)
      next.run()
    }
  }

  /** The earliest pending wire event or deadline: wires before deadlines at equal times, A before B. */
  private nextEvent(): { at: number; run: () => void } | undefined {
    let best: { at: number; rank: number; run: () => void } | undefined
    const consider = (at: number, rank: number, run: () => void): void => {
      if (best === undefined || at < best.at || (at === best.at && rank < best.rank)) best = { at, rank, run }
    }
    for (const dir of ['A->B', 'B->A'] as Direction[]) {
      const w = this.wires[dir][0]
      if (w !== undefined) consider(w.at, dir === 'A->B' ? 0 : 1, () => this.deliverWire(dir))
    }
    for (const p of [this.A, this.B]) {
      if (p.crashed) continue
      const at = p.conn.pollTimeout()
      if (at !== undefined) consider(at, p.side === 'A' ? 2 : 3, () => this.input(p.side, (c) => c.handleTimeout(this.now)))
    }
    const app = this.appTimers[0]
    if (app !== undefined) consider(app.at, 4, () => (this.appTimers.shift() as { fn: () => void }).fn())
    return best
  }

  private deliverWire(dir: Direction): void {
    const w = this.wires[dir].shift() as Wire
    const to = this.peer(dir === 'A->B' ? 'B' : 'A')
    if (to.crashed || to.transportCloseCount > 0) return // nobody reads this end any more
    if (w.what === 'down') this.input(to.side, (c) => c.transportDown(this.now, new Error('peer reset')))
    else this.input(to.side, (c) => c.frameReceived(this.now, w.frame))
  }

  private pushDown(dir: Direction, at: number): void {
    this.wireClosed[dir] = true
    if (this.faults.dropDown?.(dir, this) === true) return
    const when = Math.max(at, this.lastAt[dir])
    this.wires[dir].push({ at: when, seq: this.seq++, what: 'down' })
    this.lastAt[dir] = when
    this.wireClosed[dir] = true
  }

  // ------------------------------------------------------------------ action plumbing
  private input(s: Side, f: (c: ProtocolConnection) => void): void {
    const p = this.peer(s)
    if (p.crashed) return
    f(p.conn)
    for (const a of p.conn.pollActions()) this.apply(p, a)
  }

  private apply(p: Peer, a: Action): void {
    p.log.push(a)
    const dir: Direction = p.side === 'A' ? 'A->B' : 'B->A'
    switch (a.type) {
      case 'sendFrame': {
        if (p.transportCloseCount > 0) {
          p.framesAfterTransportClose++
          return
        }
        const frame: Frame = { kind: a.kind, credits: a.credits, payload: a.payload }
        p.framesOut.push(frame)
        if (a.sendId !== undefined) {
          if (p.written.includes(a.sendId) || p.rejected.has(a.sendId)) p.settleErrors.push(`send ${a.sendId} settled twice`)
          p.written.push(a.sendId)
        }
        if (this.wireClosed[dir]) return
        const isData = frame.kind === FrameKind.DATA
        if (this.faults.drop?.(frame, dir, this) === true) return
        const at = Math.max(this.lastAt[dir], this.now + this.latencyMs + (this.faults.delay?.(frame, dir, this) ?? 0))
        this.lastAt[dir] = at
        this.wires[dir].push({ at, seq: this.seq++, what: 'frame', frame })
        if (!isData && this.faults.duplicate?.(frame, dir, this) === true) {
          this.wires[dir].push({ at, seq: this.seq++, what: 'frame', frame })
        }
        return
      }
      case 'deliver':
        p.delivered.push(a.payload.toString())
        if (p.readDelayMs !== undefined) this.at(this.now + p.readDelayMs, () => this.consumed(p.side, 1))
        return
      case 'event': {
        const { type: _type, ...change } = a
        p.events.push(change)
        return
      }
      case 'rejectSends':
        for (const id of a.ids) {
          if (p.written.includes(id) || p.rejected.has(id)) p.settleErrors.push(`send ${id} settled twice`)
          p.rejected.set(id, a.error)
        }
        return
      case 'transportClose':
        p.transportCloseCount++
        p.transportCloseGraceful = a.graceful
        if (this.wireClosed[dir]) return
        if (a.graceful) {
          this.pushDown(dir, this.now + this.latencyMs) // after everything already on the wire
        } else {
          this.wires[dir] = [] // abort: what was in flight is lost
          this.lastAt[dir] = this.now
          this.pushDown(dir, this.now + this.latencyMs)
        }
        return
      case 'closed':
        p.closedCount++
        p.closed =
          a.error === undefined
            ? { outcome: a.outcome, reason: a.reason, at: a.at }
            : { outcome: a.outcome, reason: a.reason, at: a.at, error: a.error }
        return
      case 'shutdown':
        p.shutdowns.push(a.graceMs)
        p.onShutdown?.()
        return
      case 'peerEnded':
        p.peerEndedCount++
        p.onPeerEnded?.()
        return
      case 'request':
        p.requestsIn.push({ requestId: a.requestId, body: a.payload.toString() })
        p.onRequest?.(a.requestId, a.payload.toString())
        return
      case 'response':
        if (p.replies.has(a.requestId) || p.notProcessed.includes(a.requestId)) p.requestErrors.push(`request ${a.requestId} ended twice`)
        p.replies.set(a.requestId, { ok: a.ok, body: a.payload.toString() })
        return
      case 'notProcessed':
        for (const id of a.requestIds) {
          if (p.replies.has(id) || p.notProcessed.includes(id)) p.requestErrors.push(`request ${id} ended twice`)
          p.notProcessed.push(id)
        }
        return
      case 'diagnostic':
        return
    }
  }
}

/** Only control frames (not DATA), optionally of given kinds. */
export const controlOnly =
  (...kinds: number[]) =>
  (f: Frame): boolean =>
    f.kind !== FrameKind.DATA && (kinds.length === 0 || kinds.includes(f.kind))
