/**
 * Aborting a wait with an AbortSignal the way Node's own APIs do: the wait rejects with an
 * `AbortError` (`name` 'AbortError', `code` 'ABORT_ERR', `cause` the signal's reason), and the
 * listener on the signal is removed as soon as the wait settles either way, so a long-lived signal
 * shared by many waits does not collect listeners.
 */
import { invalid } from './options'

/** Like Node's internal AbortError (what `events.once`, `fs` and `timers/promises` reject with). */
export class AbortError extends Error {
  readonly code = 'ABORT_ERR' as const

  constructor(message = 'The operation was aborted', options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'AbortError'
  }
}

/** The error a wait aborted by `signal` rejects with. */
export function abortError(signal: AbortSignal, what = 'The operation'): AbortError {
  return new AbortError(`${what} was aborted`, { cause: signal.reason })
}

/** `signal` from an options object, checked: undefined or an AbortSignal (else ERR_INVALID_ARGUMENT). */
export function signalOf(opts: unknown, where: string): AbortSignal | undefined {
  if (opts === undefined || opts === null) return undefined
  if (typeof opts !== 'object') throw invalid(`${where} options must be an object, got ${typeof opts}`)
  const { signal } = opts as { signal?: unknown }
  if (signal === undefined) return undefined
  if (!(signal instanceof AbortSignal)) throw invalid(`${where}: signal must be an AbortSignal`)
  return signal
}

interface Settleable<T> {
  resolve(value: T): void
  reject(error: Error): void
}

/**
 * One real 'abort' listener per signal, however many waits share it: a signal shared by hundreds of
 * sends, reads and requests (across connections) raises no MaxListenersExceededWarning. Each wait
 * registers a callback here; the returned function unregisters it (and the real listener goes with
 * the last one).
 */
const waits = new WeakMap<AbortSignal, { callbacks: Set<() => void>; listener: () => void }>()

export function onAbort(signal: AbortSignal, callback: () => void): () => void {
  let entry = waits.get(signal)
  if (entry === undefined) {
    const callbacks = new Set<() => void>()
    const listener = (): void => {
      waits.delete(signal)
      for (const cb of callbacks) cb()
    }
    entry = { callbacks, listener }
    waits.set(signal, entry)
    signal.addEventListener('abort', listener, { once: true })
  }
  const { callbacks, listener } = entry
  callbacks.add(callback)
  return () => {
    if (!callbacks.delete(callback) || callbacks.size > 0) return
    waits.delete(signal)
    signal.removeEventListener('abort', listener)
  }
}

/**
 * Makes `pending` abortable by `signal`: on abort, `withdraw()` takes it out of whatever queue
 * holds it (returning false if it already left), and it rejects with an AbortError. Settling
 * `pending` by any route removes the abort listener.
 */
export function bindAbort<T, P extends Settleable<T>>(signal: AbortSignal, pending: P, withdraw: () => boolean, what?: string): P {
  const { resolve, reject } = pending
  const release = onAbort(signal, () => {
    if (withdraw()) pending.reject(abortError(signal, what))
  })
  pending.resolve = (value) => {
    release()
    resolve(value)
  }
  pending.reject = (error) => {
    release()
    reject(error)
  }
  return pending
}
