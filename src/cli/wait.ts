/**
 * Waits with deadlines, and Ctrl-C: the first SIGINT/SIGTERM asks a command to wind down, a second
 * one forces it.
 */
import { CliError } from './args'

/** Rejects with ERR_DEADLINE if `p` does not settle within `ms`. */
export function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new CliError('ERR_DEADLINE', `${what}: not done within ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve()
    const done = (): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done, { once: true })
  })
}

export type SignalName = 'SIGINT' | 'SIGTERM'

/**
 * Calls `first` on the first SIGINT or SIGTERM and `second` on any later one, until the returned
 * function removes the handlers (the default then applies again).
 */
export function onInterrupt(first: (s: SignalName) => void, second: (s: SignalName) => void): () => void {
  let count = 0
  const handler = (s: SignalName): void => {
    if (count++ === 0) first(s)
    else second(s)
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
  return () => {
    process.off('SIGINT', handler)
    process.off('SIGTERM', handler)
  }
}

/** The exit status of a process that ends because of signal `s` (128 + its number). */
export function signalExit(s: SignalName): number {
  return s === 'SIGINT' ? 130 : 143
}
