/** Helpers of the reliability suite: clocks, settling promises, line matchers (the peer process: helpers.startPeer). */
import type { Line } from '../helpers'

export type { Line }

/** Wall-clock ms (as the fixture prints in `at`): comparable across processes on one machine. */
export const wall = (): number => performance.timeOrigin + performance.now()
export { sleep } from '../helpers'
/** What `p` rejected with, or undefined once it resolved: a promise that never rejects. */
export const settledError = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (x: unknown) => x,
  )

export const has =
  (key: string) =>
  (l: Line): boolean =>
    key in l

/** Errors' codes, for counting how a batch of promises settled. */
export async function settleCodes(ps: Array<Promise<unknown>>): Promise<Record<string, number>> {
  const tally: Record<string, number> = {}
  for (const r of await Promise.allSettled(ps)) {
    const k = r.status === 'fulfilled' ? 'ok' : String((r.reason as { code?: string }).code ?? r.reason)
    tally[k] = (tally[k] ?? 0) + 1
  }
  return tally
}
