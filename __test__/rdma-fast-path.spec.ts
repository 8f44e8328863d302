/**
 * The rdma fast path (issue 19), in the Soft-RoCE guest: busy polling spins only while traffic
 * flows and leaves the loop's timers running; small messages (inline, unsignaled sends) arrive in
 * order around large ones and a close right after them loses nothing.
 */
import { connect, listen, type Connection } from '../src/index'
import { assertNoLiveResources, echo, LATE_TIMER_MS, rdmaHost, sleep } from './helpers'
import { rdmaTest } from './rdma-test'

const BUSY_US = 20_000

async function echoPair(busy: number | undefined): Promise<{ conn: Connection; close(): Promise<void> }> {
  const server = await listen({ transport: 'rdma', host: rdmaHost, port: 0, rdmaBusyPollUs: busy })
  server.on('connection', echo)
  const conn = await connect({ transport: 'rdma', host: rdmaHost, port: server.port, rdmaBusyPollUs: busy })
  return {
    conn,
    async close() {
      await conn.close()
      await server.close()
    },
  }
}

/**
 * The event loop's utilization over `ms` of wall time: the share of the time the loop did not
 * sleep in its poll phase. Busy polling keeps it near 1 (an idle handle makes the poll phase not
 * block); a loop that sleeps while nothing comes is near 0. Unlike CPU time it leaves out V8's
 * background threads (JIT, GC), whose work after a hot loop varies with the machine's load.
 */
async function loopUtilizationOver(ms: number, during: () => Promise<void> = () => sleep(ms)): Promise<number> {
  const e0 = performance.eventLoopUtilization()
  await during()
  return performance.eventLoopUtilization(e0).utilization
}

rdmaTest('busy polling spins while traffic flows and stops when it ends', async (t) => {
  const { conn, close } = await echoPair(BUSY_US)
  const payload = Buffer.alloc(64, 1)
  let rounds = 0
  // Both ends are in this process: while round trips go on, the loop never sleeps.
  const busy = await loopUtilizationOver(0, async () => {
    const end = performance.now() + 1000
    while (performance.now() < end) {
      await conn.send(payload)
      t.deepEqual(await conn.read(), payload)
      rounds++
    }
  })
  t.log(`${rounds} round trips in 1 s with busy polling: event loop utilization ${busy.toFixed(2)}`)
  // Idle: the window (20 ms) ends after the last completion; then the loop sleeps again. With the
  // idle handle left running, the loop would not sleep at all (utilization ~1).
  await sleep(100)
  const idle = await loopUtilizationOver(1000)
  t.log(`idle second after it: event loop utilization ${idle.toFixed(2)}`)
  t.true(idle < 0.2, `the loop of an idle process was busy ${(idle * 100).toFixed(0)} % of 1 s: busy polling did not stop`)
  t.is((await conn.close()).outcome, 'graceful')
  await close()
  assertNoLiveResources(t)
})

rdmaTest('busy polling leaves the loop its timers: a 10 ms interval keeps ticking during round trips', async (t) => {
  // A window of 1 s: polling that kept the loop (a spin inside one callback until the window
  // passes) would hold every timer for a second after each completion.
  const { conn, close } = await echoPair(1_000_000)
  const payload = Buffer.alloc(64, 2)
  const gaps: number[] = []
  let last = performance.now()
  const timer = setInterval(() => {
    const now = performance.now()
    gaps.push(now - last)
    last = now
  }, 10)
  const end = performance.now() + 1500
  while (performance.now() < end) {
    await conn.send(payload)
    await conn.read()
  }
  clearInterval(timer)
  // The bound is about starvation, not precision: a loop held by the polling would leave gaps of
  // the window (1 s). One slow emulated turn (a GC, a page of new JIT code) may take a few
  // hundred ms: LATE_TIMER_MS (500 ms) of slack, not tighter.
  t.log(`interval gaps: max ${Math.max(...gaps).toFixed(1)} ms over ${gaps.length} ticks`)
  t.true(gaps.length >= 20, `only ${gaps.length} ticks of a 10 ms interval in 1.5 s`)
  t.true(Math.max(...gaps) < LATE_TIMER_MS, `a 10 ms interval waited ${Math.max(...gaps).toFixed(0)} ms`)
  await close()
  assertNoLiveResources(t)
})

rdmaTest('small and large messages stay in order, and a close right after small sends loses none', async (t) => {
  for (const busy of [undefined, BUSY_US]) {
    const { conn, close } = await echoPair(busy)
    // Sizes around the inline limit (256) and the buffer size (8 KiB), mixed.
    const sizes = [0, 1, 64, 255, 256, 257, 1000, 8191, 8192, 8193, 65536]
    const sent: Buffer[] = []
    for (let i = 0; i < 300; i++) sent.push(Buffer.alloc(sizes[i % sizes.length]!, i & 0xff))
    const got: Buffer[] = []
    const reading = (async () => {
      for await (const m of conn) got.push(m)
    })()
    await Promise.all(sent.map((m) => conn.send(m)))
    // 5 small sends (fewer than one signaled send in 16), then close at once.
    for (let i = 0; i < 5; i++) void conn.send(Buffer.from([i]))
    const r = await conn.close()
    await reading
    t.is(r.outcome, 'graceful', `busy ${busy}: ${JSON.stringify(r)}`)
    t.is(got.length, sent.length + 5, `busy ${busy}: every echo came back before the close`)
    for (let i = 0; i < sent.length; i++) t.true(got[i]!.equals(sent[i]!), `busy ${busy}: message ${i} changed or out of order`)
    await close()
  }
  assertNoLiveResources(t)
})
