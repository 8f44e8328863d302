/**
 * The idle timeout of `conn.setTimeout(ms)`, like `net.Socket#setTimeout`: 'timeout' after `ms`
 * without application traffic (DATA) either way; heartbeats and other control frames do not count.
 * It only reports: the connection stays open. After it fires it stays quiet until traffic resumes,
 * then counts `ms` again.
 *
 * One timer per connection at most, re-armed lazily: traffic only records the time (no timer call
 * per message); the timer, when it fires early because of traffic, re-arms for the time left.
 * It never keeps the process alive (unref'd, as Node's is).
 */
import { setLongTimeout, type LongTimer } from './long-timer'
import { invalid } from './options'

export class IdleTimeout {
  private ms = 0
  private lastActivity = 0
  private timer: LongTimer | undefined
  /** Fired and waiting for traffic to count again. */
  private fired = false

  constructor(private readonly onTimeout: () => void) {}

  get timeoutMs(): number {
    return this.ms
  }

  /** 0 disables; any other duration (ms, up to years) (re)starts the count from now. */
  set(ms: unknown): void {
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0 || ms > Number.MAX_SAFE_INTEGER) {
      throw invalid(`setTimeout() takes a finite number of ms >= 0, got ${String(ms)}`)
    }
    this.stop()
    this.ms = Math.floor(ms)
    if (this.ms === 0) return
    this.lastActivity = performance.now()
    this.arm(this.ms)
  }

  /** Application traffic just now (a message sent or received). */
  activity(): void {
    if (this.ms === 0) return
    this.lastActivity = performance.now()
    if (this.fired) {
      this.fired = false
      this.arm(this.ms)
    }
  }

  stop(): void {
    this.timer?.cancel()
    this.timer = undefined
    this.fired = false
  }

  private arm(ms: number): void {
    this.timer = setLongTimeout(() => this.expired(), ms)
    this.timer.setRef(false)
  }

  private expired(): void {
    this.timer = undefined
    const idle = performance.now() - this.lastActivity
    if (idle < this.ms) return this.arm(this.ms - idle)
    this.fired = true
    this.onTimeout()
  }
}
