/** 3. Ping-pong latency: one message echoed at a time, 64 B and 4 KiB; RTT p50 and p99. */
import { connect } from '../../src/index'
import type { Bench, BenchContext } from '../context'
import { closeServer, median, now, portOfServer, quantile, RawClient, rawServer } from '../lib'
import { ibSendLat } from '../perftest'

async function pingPongOurs(ctx: BenchContext, size: number, n: number): Promise<number[]> {
  const server = await ctx.echoServer()
  const conn = await connect({ ...ctx.baseOpts, port: server.port })
  const payload = Buffer.alloc(size, 7)
  const rtts: number[] = []
  for (let i = 0; i < n + 50; i++) {
    const t0 = now()
    await conn.send(payload)
    const r = await conn.read()
    if (r === null || r.length !== size) throw new Error('ping-pong: bad echo')
    if (i >= 50) rtts.push((now() - t0) * 1000)
  }
  await conn.close()
  await server.close({ graceMs: 1000 })
  return rtts
}

async function pingPongRaw(size: number, n: number): Promise<number[]> {
  const server = await rawServer('echo')
  const c = await RawClient.connect(portOfServer(server))
  const payload = Buffer.alloc(size, 7)
  const rtts: number[] = []
  for (let i = 0; i < n + 50; i++) {
    const t0 = now()
    await c.write(payload)
    const r = await c.read()
    if (r.length !== size) throw new Error('raw ping-pong: bad echo')
    if (i >= 50) rtts.push((now() - t0) * 1000)
  }
  await c.close()
  await closeServer(server)
  return rtts
}

/** Also leaves the 64 B RTT medians (us) of ours and of the anchor, per repetition, in ctx.rtt64. */
export const pingPong: Bench = {
  name: 'pingpong',
  async run(ctx) {
    const { transport, N, row } = ctx
    for (const size of [64, 4096]) {
      const ours: number[] = []
      const oursP99: number[] = []
      const anchor: number[] = []
      const anchorP99: number[] = []
      const netRaw: number[] = []
      for (let rep = 0; rep < N.reps; rep++) {
        const o = await pingPongOurs(ctx, size, N.pingPong)
        ours.push(median(o))
        oursP99.push(quantile(o, 0.99))
        // raw node:net is the anchor on both: on rdma (in the guest, over its loopback) it is the bar
        // our rdma must beat; ib_send_lat is the floor below it.
        const a = await pingPongRaw(size, N.pingPong)
        netRaw.push(median(a))
        anchorP99.push(quantile(a, 0.99))
        anchor.push(transport === 'tcp' ? median(a) : 2 * (await ibSendLat(ctx.host, size, N.perftestIters)))
      }
      const anchorName = transport === 'tcp' ? 'raw node:net' : 'ib_send_lat (2 x t_typical)'
      const label = size === 64 ? '64 B' : '4 KiB'
      if (transport === 'rdma') {
        row({
          bench: '3. ping-pong',
          metric: `RTT p50, ${label}`,
          unit: 'us',
          ours,
          anchorName: 'raw node:net tcp, same guest run',
          anchor: netRaw,
          note: 'target: below 1.0 (rdma faster than tcp through node:net)',
        })
      }
      row({ bench: '3. ping-pong', metric: `RTT p50, ${label}`, unit: 'us', ours, anchorName, anchor })
      const p99Anchor = transport === 'tcp' ? 'raw node:net' : 'raw node:net tcp, same guest run'
      row({ bench: '3. ping-pong', metric: `RTT p99, ${label}`, unit: 'us', ours: oursP99, anchorName: p99Anchor, anchor: anchorP99 })
      if (size === 64) ctx.rtt64 = { ours, anchor }
    }
  },
}
