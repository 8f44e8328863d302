/**
 * Two more application shapes over tcp (issue 18): a proxy chain (clients -> P -> upstream U)
 * shut down under traffic in both orders, and a fan-out to 50 subscribers with one slow. Counted
 * at the edges: every request answered exactly once (a reply, or a typed refusal the client
 * hears), nothing lost, nothing duplicated.
 */
import test, { type ExecutionContext } from 'ava'

import { connect, listen, type Connection, type Server } from '../src/index'
import { assertNoLiveResources, sleep, withDeadline } from './helpers'

interface Chain {
  upstream: Server
  proxy: Server
  clients: Connection[]
}

/** U answers after a short async step; P forwards each request over its own upstream connection. */
async function chain(clientCount: number): Promise<Chain> {
  const upstream = await listen({ port: 0 })
  upstream.on('connection', (c) =>
    c.handle(async (body) => {
      await sleep(2)
      return `U:${body.toString()}`
    }),
  )
  const proxy = await listen({ port: 0 })
  proxy.on('connection', async (c) => {
    const up = await connect({ port: upstream.port })
    // The README's idiom: refuse new work once either side is shutting down, finish the old.
    c.handle((body) => {
      if (up.shuttingDown) throw new Error('upstream is shutting down')
      return up.request(body)
    })
    await c.closed
    await up.close()
  })
  const clients = await Promise.all(Array.from({ length: clientCount }, () => connect({ port: proxy.port })))
  return { upstream, proxy, clients }
}

interface Tally {
  sent: number
  ok: number
  refused: number
  wrong: string[]
}

/** Each client sends requests back to back with 8 in flight until `stop`; every outcome is counted. */
function traffic(clients: Connection[], stop: { now: boolean }): Promise<Tally> {
  const tally: Tally = { sent: 0, ok: 0, refused: 0, wrong: [] }
  const one = async (c: Connection, k: number): Promise<void> => {
    for (let i = 0; !stop.now && !c.shuttingDown; i++) {
      const body = `c${k}.${i}`
      tally.sent++
      try {
        const reply = (await c.request(body)).toString()
        if (reply === `U:${body}`) tally.ok++
        else tally.wrong.push(`${body} -> ${reply}`)
      } catch (err) {
        const code = (err as { code?: string }).code
        if (code === 'ERR_REMOTE_HANDLER' || code === 'ERR_REQUEST_NOT_PROCESSED') tally.refused++
        else tally.wrong.push(`${body}: ${code}`)
      }
    }
  }
  return Promise.all(clients.flatMap((c, k) => Array.from({ length: 8 }, () => one(c, k)))).then(() => tally)
}

async function checkEdges(t: ExecutionContext, tally: Tally, clients: Connection[]): Promise<void> {
  t.deepEqual(tally.wrong, [], 'no reply lost, wrong or duplicated')
  t.is(tally.ok + tally.refused, tally.sent, `sent ${tally.sent} = ${tally.ok} replies + ${tally.refused} refusals`)
  t.true(tally.ok > 100, `traffic flowed (${tally.ok} replies)`)
  for (const c of clients) t.is((await withDeadline(c.closed, 10_000, 'client closed')).outcome, 'graceful')
}

test.serial('proxy chain: the proxy shuts down first under traffic: every request at the edge answered, all graceful', async (t) => {
  const { upstream, proxy, clients } = await chain(4)
  const stop = { now: false }
  const running = traffic(clients, stop)
  await sleep(300)
  const closing = proxy.close({ graceMs: 5000 })
  const tally = await withDeadline(running, 10_000, 'traffic')
  t.deepEqual(await closing, { graceful: 4, forced: 0 })
  await checkEdges(t, tally, clients)
  t.is(tally.refused, 0, 'the clients stopped at the notice; nothing needed refusing')
  await upstream.close({ graceMs: 1000 })
  assertNoLiveResources(t)
})

test.serial('proxy chain: the upstream shuts down first, then the proxy: in-flight requests finish, new ones are refused, none lost', async (t) => {
  const { upstream, proxy, clients } = await chain(4)
  const stop = { now: false }
  const running = traffic(clients, stop)
  await sleep(300)
  const upClosing = upstream.close({ graceMs: 5000 })
  t.deepEqual(await withDeadline(upClosing, 10_000, 'upstream closed'), { graceful: 4, forced: 0 })
  await sleep(100) // the clients meet refusals now
  const proxyClosing = proxy.close({ graceMs: 5000 })
  const tally = await withDeadline(running, 10_000, 'traffic')
  t.deepEqual(await proxyClosing, { graceful: 4, forced: 0 })
  await checkEdges(t, tally, clients)
  t.true(tally.refused > 0, `requests after the upstream's notice were refused, and the clients heard it (${tally.refused})`)
  assertNoLiveResources(t)
})

/** p99 of `xs` (nearest rank). */
const p99 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.max(0, Math.ceil(xs.length * 0.99) - 1)]

/**
 * Publishes `events` events to 50 subscribers (one every ms), skipping a subscriber whose queue is
 * over its mark (the README's idiom); returns the fast subscribers' delivery latencies.
 */
async function fanOut(withSlow: boolean, events: number): Promise<{ fastLatencies: number[]; slowGot: number; dropped: number }> {
  const server = await listen({ port: 0, writableHighWaterMark: 16 * 1024 })
  const subs: Connection[] = []
  server.on('connection', (c) => {
    subs.push(c)
    c.once('end', () => c.end())
  })
  const clients = await Promise.all(Array.from({ length: 50 }, () => connect({ port: server.port, receiveWindow: 16 })))
  while (subs.length < 50) await sleep(5)
  const fastLatencies: number[] = []
  let slowGot = 0
  const readers = clients.map(async (c, i) => {
    const slow = withSlow && i === 0
    for await (const m of c) {
      if (slow) {
        slowGot++
        await sleep(50) // a consumer far slower than the publisher
      } else fastLatencies.push(performance.now() - m.readDoubleBE(0))
    }
  })
  let dropped = 0
  const body = Buffer.alloc(512)
  for (let e = 0; e < events; e++) {
    body.writeDoubleBE(performance.now(), 0)
    for (const sub of subs) {
      if (sub.writableNeedDrain) dropped++
      else sub.write(Buffer.from(body))
    }
    await sleep(1)
  }
  await Promise.all(clients.map((c) => c.close()))
  await Promise.all(readers)
  await server.close({ graceMs: 1000 })
  return { fastLatencies, slowGot, dropped }
}

test.serial('fan-out to 50 subscribers, one slow: dropping for the slow one keeps the 49 fast within 2x of a run without it', async (t) => {
  const events = 400
  // Runs with and without the slow one alternate, and their medians are compared: one pair alone
  // compares two moments of a shared machine (a load spike in either decided it).
  const alone: number[] = []
  const beside: number[] = []
  for (let pair = 0; pair < 3; pair++) {
    const base = await fanOut(false, events)
    const slowed = await fanOut(true, events)
    t.is(base.dropped, 0)
    t.is(base.fastLatencies.length, 50 * events, 'without a slow subscriber, every event reached everyone')
    t.is(slowed.fastLatencies.length, 49 * events, 'the 49 fast subscribers got every event')
    t.true(slowed.dropped > 0 && slowed.slowGot + slowed.dropped === events, `the slow one got ${slowed.slowGot}, ${slowed.dropped} dropped for it`)
    alone.push(p99(base.fastLatencies))
    beside.push(p99(slowed.fastLatencies))
  }
  const med = (xs: number[]): number => [...xs].sort((x, y) => x - y)[1]!
  const [a, b] = [med(alone), med(beside)]
  const ms = (xs: number[]): string => xs.map((x) => x.toFixed(1)).join(', ')
  t.log(`p99 of the fast subscribers, three alternating pairs: ${ms(alone)} ms alone, ${ms(beside)} ms beside a slow one`)
  t.true(b <= 2 * a, `median p99 ${b.toFixed(1)} ms beside a slow subscriber, ${a.toFixed(1)} ms without`)
  assertNoLiveResources(t)
})
