import test from 'ava'

import { MAX_TIMER_STEP_MS, setLongTimeout, type TimerBackend } from '../../src/long-timer'
import { sleep } from '../helpers'

/** A fake clock with a timer list, to check multi-year timeouts without waiting for them. */
function fakeBackend() {
  let now = 0
  let seq = 0
  const timers = new Map<number, { at: number; fn: () => void; ms: number }>()
  const requested: number[] = []
  const backend: TimerBackend = {
    now: () => now,
    setTimeout(fn, ms) {
      requested.push(ms)
      // Mirror Node: above 2^31-1 ms the delay becomes 1 ms (this is the bug being guarded against).
      const effective = ms > MAX_TIMER_STEP_MS ? 1 : ms
      const id = ++seq
      timers.set(id, { at: now + effective, fn, ms })
      return id
    },
    clearTimeout(h) {
      timers.delete(h as number)
    },
  }
  const advanceTo = (t: number): void => {
    for (;;) {
      const due = [...timers.entries()].filter(([, v]) => v.at <= t).sort((a, b) => a[1].at - b[1].at)[0]
      if (due === undefined) break
      timers.delete(due[0])
      now = due[1].at
      due[1].fn()
    }
    now = t
  }
  return { backend, advanceTo, requested, pending: () => timers.size }
}

test('short delay fires on the real clock, and not before its time', async (t) => {
  const started = performance.now()
  const firedAt = await new Promise<number>((resolve) => {
    setLongTimeout(() => resolve(performance.now()), 30)
  })
  t.true(firedAt - started >= 29, `fired after ${firedAt - started} ms`)
})

test('cancel() stops a real timer', async (t) => {
  let fired = false
  const timer = setLongTimeout(() => {
    fired = true
  }, 20)
  timer.cancel()
  timer.cancel() // idempotent
  await sleep(50)
  t.false(fired)
})

test('a timeout of 3 years does not fire early, and fires at its deadline', (t) => {
  const f = fakeBackend()
  const threeYears = 3 * 365 * 24 * 3600 * 1000
  let firedAt: number | undefined
  setLongTimeout(
    () => {
      firedAt = f.backend.now()
    },
    threeYears,
    f.backend,
  )
  t.true(
    f.requested.every((ms) => ms <= MAX_TIMER_STEP_MS),
    'every step fits in a Node timer',
  )
  f.advanceTo(threeYears - 1)
  t.is(firedAt, undefined, 'not fired one ms before the deadline')
  t.true(f.requested.length > 40, `chained ${f.requested.length} steps`)
  f.advanceTo(threeYears + 10)
  t.is(firedAt, threeYears)
})

test('just above 2^31-1 ms does not fire at once (the Node pitfall)', (t) => {
  const f = fakeBackend()
  let fired = false
  setLongTimeout(
    () => {
      fired = true
    },
    MAX_TIMER_STEP_MS + 5,
    f.backend,
  )
  f.advanceTo(1000)
  t.false(fired)
  f.advanceTo(MAX_TIMER_STEP_MS + 4)
  t.false(fired)
  f.advanceTo(MAX_TIMER_STEP_MS + 5)
  t.true(fired)
})

test('cancel() in the middle of a long chain stops it', (t) => {
  const f = fakeBackend()
  let fired = false
  const timer = setLongTimeout(
    () => {
      fired = true
    },
    10 * MAX_TIMER_STEP_MS,
    f.backend,
  )
  f.advanceTo(3 * MAX_TIMER_STEP_MS)
  timer.cancel()
  t.is(f.pending(), 0)
  f.advanceTo(20 * MAX_TIMER_STEP_MS)
  t.false(fired)
})

test('Infinity never fires and NaN is refused', (t) => {
  const f = fakeBackend()
  let fired = false
  setLongTimeout(
    () => {
      fired = true
    },
    Infinity,
    f.backend,
  )
  f.advanceTo(Number.MAX_SAFE_INTEGER)
  t.false(fired)
  t.throws(() => setLongTimeout(() => {}, Number.NaN, f.backend), { instanceOf: RangeError })
})
