/**
 * The engine's deadlines: one slot per timer id, in a table the engine owns (quinn-proto's
 * TimerTable). The driver never sees the ids: it asks for the earliest deadline
 * (`ProtocolConnection#pollTimeout`) and arms one real timer for it, then calls `handleTimeout(now)`
 * when it is reached; the engine works out which deadlines passed.
 *
 * - handshake: setup deadline (HELLO, READY)
 * - heartbeat: send a HEARTBEAT if nothing was sent for the interval
 * - liveness:  go DOWN if nothing was received for the timeout
 * - close:     the current close-handshake deadline (flush, ACK, drain, FIN, linger)
 * - grace:     passive side's shutdown grace period
 */

export type TimerId = 'handshake' | 'heartbeat' | 'liveness' | 'close' | 'grace'

/** The order in which deadlines that passed together are handled. */
export const TIMER_IDS: readonly TimerId[] = ['handshake', 'heartbeat', 'liveness', 'close', 'grace']

export class TimerTable {
  /** Absolute deadline (ms, the engine's `now` clock) per armed timer. */
  private readonly deadlines: Record<TimerId, number | undefined> = {
    handshake: undefined,
    heartbeat: undefined,
    liveness: undefined,
    close: undefined,
    grace: undefined,
  }

  /** Arms `id` for `at`, replacing its previous deadline. */
  set(id: TimerId, at: number): void {
    this.deadlines[id] = at
  }

  get(id: TimerId): number | undefined {
    return this.deadlines[id]
  }

  stop(id: TimerId): void {
    this.deadlines[id] = undefined
  }

  stopAll(): void {
    for (const id of TIMER_IDS) this.deadlines[id] = undefined
  }

  /** The earliest armed deadline, or undefined when none is armed. */
  next(): number | undefined {
    let earliest: number | undefined
    for (const id of TIMER_IDS) {
      const at = this.deadlines[id]
      if (at !== undefined && (earliest === undefined || at < earliest)) earliest = at
    }
    return earliest
  }

  isExpired(id: TimerId, now: number): boolean {
    const at = this.deadlines[id]
    return at !== undefined && at <= now
  }
}
