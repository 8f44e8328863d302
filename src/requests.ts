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
  timer: LongTimer | undefined
  release: (() => void) | undefined
}

export class PendingRequests {
  private readonly pending = new Map<number, Pending>()

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
    refed: boolean,
  ): void {
    const entry: Pending = { ...settle, timer: undefined, release: undefined }
    this.pending.set(requestId, entry)
    if (Number.isFinite(timeoutMs)) {
      entry.timer = setLongTimeout(() => this.abandon(requestId, new RequestTimeoutError(timeoutMs)), timeoutMs)
      if (!refed) entry.timer.setRef(false)
    }
    if (signal !== undefined) entry.release = onAbort(signal, () => this.abandon(requestId, abortError(signal, 'request()')))
  }

  /** Settles request `requestId` (a reply, or `error`); false when it is no longer waiting. */
  settle(requestId: number, error: Error | undefined, reply?: Buffer): boolean {
    const entry = this.take(requestId)
    if (entry === undefined) return false
    if (error !== undefined) entry.reject(error)
    else entry.resolve(reply as Buffer)
    return true
  }

  /** Rejects every waiting request with `error` (the connection ended). */
  rejectAll(error: Error): void {
    for (const id of [...this.pending.keys()]) this.settle(id, error)
  }

  /** Whether the timers keep the process alive (follows the connection's ref()/unref()). */
  setRef(on: boolean): void {
    for (const entry of this.pending.values()) entry.timer?.setRef(on)
  }

  private abandon(requestId: number, error: Error): void {
    if (!this.pending.has(requestId)) return
    this.giveUp(requestId)
    this.settle(requestId, error)
  }

  private take(requestId: number): Pending | undefined {
    const entry = this.pending.get(requestId)
    if (entry === undefined) return undefined
    this.pending.delete(requestId)
    entry.timer?.cancel()
    entry.release?.()
    return entry
  }
}
