/**
 * setLongTimeout: a real-clock timeout that works for any duration, from 1 ms to years.
 *
 * Node's setTimeout treats a delay above 2^31-1 ms (~24.8 days) as 1 ms and fires at once. This helper
 * chains timers of at most MAX_TIMER_STEP_MS, re-reading the clock at each step, so it never fires early
 * and drift does not accumulate. The clock and the timer functions are injectable for tests.
 */

export const MAX_TIMER_STEP_MS = 2 ** 31 - 1

export interface LongTimer {
  cancel(): void
  /** Whether the timer keeps the process alive (default true), like `Timeout#ref/unref`. */
  setRef(on: boolean): void
}

export interface TimerBackend {
  now(): number
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
  setRef?(handle: unknown, on: boolean): void
}

const realBackend: TimerBackend = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  setRef: (h, on) => void (on ? (h as NodeJS.Timeout).ref() : (h as NodeJS.Timeout).unref()),
}

/** Calls `fn` once, no earlier than `ms` from now; `cancel()` stops it (idempotent). */
export function setLongTimeout(fn: () => void, ms: number, backend: TimerBackend = realBackend): LongTimer {
  if (typeof ms !== 'number' || Number.isNaN(ms)) throw new RangeError(`timeout must be a number of ms, got ${ms}`)
  const deadline = backend.now() + Math.max(0, ms)
  let handle: unknown
  let cancelled = false
  let refed = true

  if (ms === Infinity) return { cancel: () => {}, setRef: () => {} } // never fires

  // Always asynchronous, like setTimeout, even for 0 ms.
  const schedule = (): void => {
    const remaining = Math.max(0, Math.ceil(deadline - backend.now()))
    handle = backend.setTimeout(step, Math.min(remaining, MAX_TIMER_STEP_MS))
    if (!refed) backend.setRef?.(handle, false)
  }
  const step = (): void => {
    if (cancelled) return
    if (backend.now() < deadline) return schedule() // an intermediate step of a long wait
    cancelled = true
    fn()
  }
  schedule()

  return {
    cancel(): void {
      if (cancelled) return
      cancelled = true
      if (handle !== undefined) backend.clearTimeout(handle)
    },
    setRef(on: boolean): void {
      refed = on
      if (!cancelled && handle !== undefined) backend.setRef?.(handle, on)
    },
  }
}
