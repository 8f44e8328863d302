/**
 * The requester's half of `conn.request()`: the requests of one connection that wait for their
 * reply, each with its deadline and its caller's AbortSignal. The protocol engine numbers the
 * requests and says when a reply came (or that the peer never saw one); this table only settles
 * the promises. A request given up (timeout, abort) leaves the table at once: a reply that comes
 * later finds no one and is dropped.
 */
import { abortError, onAbort } from './abort'
import { setLongTimeout, type LongTimer } from './long-timer'
import { RequestTimeoutError } from './protocol'

export interface RequestOptions {
  /** Gives up the wait: rejects with an AbortError (`cause` the reason); a request not yet written is withdrawn. */
  signal?: AbortSignal
  /** Rejects with ERR_REQUEST_TIMEOUT after this long without a reply (default: the connection's `requestTimeoutMs`). */
  timeoutMs?: number
}

interface Pending {
  resolve(reply: Buffer): void
  reject(error: Error): void
  release: (() => void) | undefined
}

/**
 * The requests waiting for a reply, and their deadlines on ONE timer: a timer per request cost
 * about a quarter of a request's round trip (bench row 9). Deadlines are kept in order (the
 * default timeout makes them arrive in order; a request with its own timeoutMs is inserted in
 * place); a settled request leaves its deadline behind, dropped when it reaches the front. The
 * timer stays armed for the earliest deadline it was armed for: when it fires early (that request
 * was answered) it re-arms for the current front, so a steady stream of requests costs no timer
 * work per request.
 */
export class PendingRequests {
  private readonly pending = new Map<number, Pending>()
  private readonly deadlines: Array<{ requestId: number; at: number; timeoutMs: number }> = []
  private timer: LongTimer | undefined
  /** When the timer fires (performance.now() clock). */
  private timerAt = 0
  private refed = true

  /** `giveUp(requestId)` runs when the deadline passes or the signal aborts, before the rejection. */
  constructor(private readonly giveUp: (requestId: number) => void) {}

  get size(): number {
    return this.pending.size
  }

  add(
    requestId: number,
    settle: { resolve(reply: Buffer): void; reject(error: Error): void },
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): void {
    const entry: Pending = { resolve: settle.resolve, reject: settle.reject, release: undefined }
    this.pending.set(requestId, entry)
    if (Number.isFinite(timeoutMs)) this.addDeadline({ requestId, at: performance.now() + timeoutMs, timeoutMs })
    if (signal !== undefined) entry.release = onAbort(signal, () => this.abandon(requestId, abortError(signal, 'request()')))
  }

  /** Settles request `requestId` (a reply, or `error`); false when it is no longer waiting. */
  settle(requestId: number, error: Error | undefined, reply?: Buffer): boolean {
    const entry = this.pending.get(requestId)
    if (entry === undefined) return false
    this.pending.delete(requestId)
    entry.release?.()
    if (error !== undefined) entry.reject(error)
    else entry.resolve(reply as Buffer)
    return true
  }

  /** Rejects every waiting request with `error` (the connection ended). */
  rejectAll(error: Error): void {
    for (const id of [...this.pending.keys()]) this.settle(id, error)
    this.clearDeadlines()
  }

  /** Whether the timer keeps the process alive (follows the connection's ref()/unref()). */
  setRef(on: boolean): void {
    this.refed = on
    this.timer?.setRef(on)
  }

  private addDeadline(d: { requestId: number; at: number; timeoutMs: number }): void {
    this.dropSettled()
    let i = this.deadlines.length
    while (i > 0 && this.deadlines[i - 1]!.at > d.at) i--
    this.deadlines.splice(i, 0, d)
    // An armed timer due no later than this deadline will find it (it re-arms when it fires).
    if (this.timer === undefined || d.at < this.timerAt) this.arm()
  }

  /** The deadlines of requests already settled, at the front: dropped (they arrive mostly in order). */
  private dropSettled(): void {
    while (this.deadlines.length > 0 && !this.pending.has(this.deadlines[0]!.requestId)) this.deadlines.shift()
  }

  /** Arms the timer for the earliest deadline still waiting (none: no timer). */
  private arm(): void {
    this.timer?.cancel()
    this.timer = undefined
    this.dropSettled()
    const front = this.deadlines[0]
    if (front === undefined) return
    this.timerAt = front.at
    this.timer = setLongTimeout(this.onTimer, front.at - performance.now())
    if (!this.refed) this.timer.setRef(false)
  }

  private readonly onTimer = (): void => {
    this.timer = undefined
    const at = performance.now()
    while (this.deadlines.length > 0 && this.deadlines[0]!.at <= at) {
      const { requestId, timeoutMs } = this.deadlines.shift()!
      this.abandon(requestId, new RequestTimeoutError(timeoutMs))
    }
    this.arm()
  }

  private clearDeadlines(): void {
    this.deadlines.length = 0
    this.timer?.cancel()
    this.timer = undefined
  }

  private abandon(requestId: number, error: Error): void {
    if (!this.pending.has(requestId)) return
    this.giveUp(requestId)
    this.settle(requestId, error)
  }
}
