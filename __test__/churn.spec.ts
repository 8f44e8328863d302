/**
 * Thousands of connect/close cycles leak nothing: native live counts return to zero and the JS
 * heap, measured after forced collections, stays flat.
 */
import test from 'ava'

import { connect, listen, liveCounts } from '../src/index'
import { assertNoLiveResources, echo, sleep } from './helpers'

const gc = (globalThis as { gc?: () => void }).gc

async function settledHeap(): Promise<number> {
  gc!()
  await sleep(20)
  gc!()
  return process.memoryUsage().heapUsed
}

test.serial('4,000 connect/send/close cycles: no live native resource left, JS heap flat', async (t) => {
  if (gc === undefined) return t.fail('run with --expose-gc (package.json ava.nodeArguments)')
  const server = await listen({ port: 0 })
  server.on('connection', echo)
  const cycle = async (): Promise<void> => {
    const c = await connect({ port: server.port })
    await c.send('ping')
    t.is((await c.read())?.toString(), 'ping')
    const r = await c.close()
    if (r.outcome !== 'graceful') t.fail(`a close was ${r.outcome}: ${r.reason}`)
  }
  for (let i = 0; i < 1000; i++) await cycle() // warm-up: JIT, pools, caches
  const before = await settledHeap()
  for (let i = 0; i < 3000; i++) await cycle()
  const after = await settledHeap()
  const growthMiB = (after - before) / 1048576
  t.log(`heap after warm-up ${(before / 1048576).toFixed(1)} MiB, after 3,000 more cycles ${(after / 1048576).toFixed(1)} MiB`)
  // A leak of even one small object graph per cycle (a Connection, its engine, its timers) would be
  // several MiB over 3,000 cycles.
  t.true(growthMiB < 1.5, `JS heap grew ${growthMiB.toFixed(2)} MiB over 3,000 cycles`)
  t.deepEqual(
    Object.entries(liveCounts()).filter(([name, n]) => n !== 0 && name !== 'tcpListeners'),
    [],
    'only the listener is live between cycles',
  )
  await server.close({ graceMs: 100 })
  assertNoLiveResources(t)
})
