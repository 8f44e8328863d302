/**
 * 9. Requests and replies (issue 18): conn.request() / conn.handle() against plain send()/read()
 * on the same transport in the same run: the round trip of one request at a time (64 B), the
 * requests per second with 64 in flight, and the close time with 64 requests pending.
 */
import { connect, listen, type Connection, type Server } from '../../src/index'
import type { Bench, BenchContext } from '../context'
import { median, now } from '../lib'

async function handlerServer(ctx: BenchContext): Promise<Server> {
  const server = await listen({ ...ctx.baseOpts, port: 0 })
  server.on('connection', (c: Connection) => c.handle((body) => body))
  return server
}

/** One request at a time: RTTs (us) through request() or through send()+read(). */
async function roundTrips(conn: Connection, via: 'request' | 'plain', n: number): Promise<number[]> {
  const payload = Buffer.alloc(64, 7)
  const rtts: number[] = []
  for (let i = 0; i < n + 50; i++) {
    const t0 = now()
    if (via === 'request') await conn.request(payload)
    else {
      await conn.send(payload)
      await conn.read()
    }
    if (i >= 50) rtts.push((now() - t0) * 1000)
  }
  return rtts
}

/** `total` exchanges of 64 B with 64 in flight; requests (or messages) per second. */
async function inFlight64(conn: Connection, via: 'request' | 'plain', total: number): Promise<number> {
  const payload = Buffer.alloc(64, 7)
  const t0 = now()
  if (via === 'request') {
    let next = 0
    const worker = async (): Promise<void> => {
      while (next++ < total) await conn.request(payload)
    }
    await Promise.all(Array.from({ length: 64 }, worker))
  } else {
    let sent = 0
    let got = 0
    let wake: (() => void) | undefined
    const reading = (async () => {
      while (got < total) {
        await conn.read()
        got++
        wake?.()
      }
    })()
    while (sent < total) {
      if (sent - got >= 64) await new Promise<void>((r) => (wake = r))
      else {
        void conn.send(payload)
        sent++
      }
    }
    await reading
  }
  return total / (now() - t0)
}

export const requests: Bench = {
  name: 'requests',
  async run(ctx) {
    const { N, row } = ctx
    const rtt = { ours: [] as number[], plain: [] as number[] }
    const rate = { ours: [] as number[], plain: [] as number[] }
    const close = { pending: [] as number[], idle: [] as number[] }
    const handled = await handlerServer(ctx)
    const echo = await ctx.echoServer()
    for (let rep = 0; rep < N.reps; rep++) {
      const r = await connect({ ...ctx.baseOpts, port: handled.port })
      const p = await connect({ ...ctx.baseOpts, port: echo.port })
      rtt.ours.push(median(await roundTrips(r, 'request', N.pingPong)))
      rtt.plain.push(median(await roundTrips(p, 'plain', N.pingPong)))
      rate.ours.push(await inFlight64(r, 'request', N.pingPong * 5))
      rate.plain.push(await inFlight64(p, 'plain', N.pingPong * 5))
      await p.close()
      // Close with 64 requests pending (each answered before the ACK) against the close of an idle one.
      const pending = Array.from({ length: 64 }, () => r.request(Buffer.alloc(64)))
      let t0 = now()
      await r.close()
      close.pending.push((now() - t0) * 1000)
      if ((await Promise.all(pending)).length !== 64) throw new Error('requests: replies missing')
      const idle = await connect({ ...ctx.baseOpts, port: handled.port })
      t0 = now()
      await idle.close()
      close.idle.push((now() - t0) * 1000)
    }
    await handled.close({ graceMs: 1000 })
    await echo.close({ graceMs: 1000 })
    const anchorName = 'plain send()+read(), same run'
    row({ bench: '9. requests', metric: 'round trip p50, 64 B, one at a time', unit: 'us', ours: rtt.ours, anchorName, anchor: rtt.plain })
    row({
      bench: '9. requests',
      metric: 'exchanges per second, 64 B, 64 in flight',
      unit: 'k/s',
      ours: rate.ours,
      anchorName,
      anchor: rate.plain,
      note: 'higher is better: a ratio above 1.0 is request() faster',
    })
    row({
      bench: '9. requests',
      metric: 'close() with 64 requests pending, until every reply and the ACK',
      unit: 'us',
      ours: close.pending,
      anchorName: 'close() of an idle connection, same run',
      anchor: close.idle,
    })
  },
}
