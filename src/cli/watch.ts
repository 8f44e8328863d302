/**
 * Shows each connection's steps live: subscribes to diagnostics_channel 'rdma-graceful:state' and
 * prints every step of the connections it was told about, with the time since the first step of
 * its phase (setup, then close). A connection's first steps happen before connect() resolves or
 * the server's 'connection' event names it: they are held until then.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'

import type { Connection } from '../index'
import { describeStep, phaseOf, type StateEvent } from '../steps'
import { ms, round, type Output } from './output'

const CHANNEL = 'rdma-graceful:state'
/** Steps held for connections not named yet; beyond this the oldest are dropped. */
const MAX_PENDING = 1000

export interface Named {
  /** The number this process gives the connection (1, 2, ...): `conn` in JSON, `#n` for people. */
  n: number
  label: string
}

export class StepWatcher {
  private readonly names = new Map<number, Named>()
  private readonly phaseStart = new Map<string, number>()
  private pending: StateEvent[] = []
  private readonly onMessage = (message: unknown): void => {
    const e = message as StateEvent
    if (this.names.has(e.connectionId)) this.print(e)
    else {
      this.pending.push(e)
      if (this.pending.length > MAX_PENDING) this.pending.shift()
    }
  }

  constructor(
    private readonly out: Output,
    /** Steps are printed indented under a heading (ping) or prefixed with the label (serve). */
    private readonly style: 'indented' | 'labelled',
  ) {
    subscribe(CHANNEL, this.onMessage)
  }

  /** Starts printing `c`'s steps, beginning with those it already took. */
  name(c: Connection, named: Named): void {
    this.names.set(c.id, named)
    const mine = this.pending.filter((p) => p.connectionId === c.id)
    this.pending = this.pending.filter((p) => p.connectionId !== c.id)
    for (const e of mine) this.print(e)
    c.on('diagnostic', (d: { code: string; detail: string }) => this.note(named, d.code, d.detail))
    // Forget it once closed (a long-running server sees many connections).
    void c.closed.then(() => {
      this.names.delete(c.id)
      this.phaseStart.delete(`${c.id}:setup`)
      this.phaseStart.delete(`${c.id}:close`)
    })
  }

  stop(): void {
    unsubscribe(CHANNEL, this.onMessage)
  }

  /** Something noteworthy that is not a state change: SHUTDOWN_NOTICE sent, a retry, a stale READY. */
  private note(named: Named, code: string, detail: string): void {
    this.out.event('note', { conn: named.n, code, detail })
    // Durations in the engine's words are unrounded ("grace 1500.0000000000005 ms").
    const words = detail.replace(/\d+\.\d+/g, (n) => String(Math.round(Number(n))))
    const text = code === 'notice-sent' ? this.out.paint('yellow', words) : `${code}: ${words}`
    this.emitLine(named, ''.padStart(12), text)
  }

  private emitLine(named: Named, time: string, words: string): void {
    if (this.style === 'indented') this.out.line(`  ${time}  ${words}`)
    else this.out.line(`${this.out.paint('cyan', named.label.padEnd(4))}${time}  ${words}`)
  }

  private print(e: StateEvent): void {
    const named = this.names.get(e.connectionId)!
    const phase = `${e.connectionId}:${phaseOf(e)}`
    const t0 = this.phaseStart.get(phase) ?? e.at
    if (!this.phaseStart.has(phase)) this.phaseStart.set(phase, e.at)
    const since = e.at - t0
    const text = describeStep(e)
    this.out.event('step', {
      conn: named.n,
      id: e.connectionId,
      phase: phaseOf(e),
      machine: e.machine,
      from: e.from,
      to: e.to,
      reason: e.reason,
      ms: round(since),
    })
    if (text === undefined) return
    const time = this.out.paint('dim', `+${ms(since)}`.padStart(12))
    const colour = e.to === 'DOWN' ? 'red' : e.to === 'OPEN' || e.to === 'CLOSED' ? 'green' : undefined
    const words = colour ? this.out.paint(colour, text) : text
    this.emitLine(named, time, words)
  }
}
