/** 1. Close latency: the three-way close of one connection at a time, both sides timed. */
import { connect, type Connection } from '../../src/index'
import type { Bench } from '../context'
import { median, now, quantile } from '../lib'

export const closeLatency: Bench = {
  name: 'close',
  needs: ['pingpong'],
  async run(ctx) {
    const { transport, N, row } = ctx
    const rtt = ctx.rtt64
    const server = await ctx.echoServer()
    const serverTimes: number[] = []
    const serverReqAt = new Map<Connection, number>()
    let lastServerClose: Promise<void> = Promise.resolve()
    server.on('connection', (conn: Connection) => {
      conn.on('state', (e: { machine: string; to: string }) => {
        if (e.machine === 'close' && e.to === 'REQ_RECEIVED') serverReqAt.set(conn, now())
      })
      lastServerClose = new Promise((resolve) =>
        conn.once('close', (r: { outcome: string }) => {
          const at = serverReqAt.get(conn)
          serverReqAt.delete(conn)
          if (r.outcome !== 'graceful') forced++
          if (at !== undefined) serverTimes.push((now() - at) * 1000)
          resolve()
        }),
      )
    })
    let forced = 0
    const f = { p50: [] as number[], p99: [] as number[], sp50: [] as number[], sp99: [] as number[], both: [] as number[], hs50: [] as number[] }
    let total = 0
    for (let rep = 0; rep < N.reps; rep++) {
      const client: number[] = []
      const both: number[] = []
      const handshake: number[] = []
      serverTimes.length = 0
      for (let i = 0; i < N.close; i++) {
        const conn = await connect({ ...ctx.baseOpts, port: server.port })
        await conn.send('x')
        await conn.read()
        const t0 = now()
        const r = await conn.close()
        client.push((now() - t0) * 1000)
        handshake.push(conn.timings.closeMs! * 1000)
        await lastServerClose
        both.push((now() - t0) * 1000)
        if (r.outcome !== 'graceful') forced++
        total++
      }
      f.p50.push(median(client))
      f.p99.push(quantile(client, 0.99))
      f.sp50.push(median(serverTimes))
      f.sp99.push(quantile(serverTimes, 0.99))
      f.both.push(median(both))
      f.hs50.push(median(handshake))
    }
    await server.close({ graceMs: 1000 })
    const rttName = 'our 64 B ping-pong RTT'
    const note = `${total} closes, ${forced} not graceful (either side); target: within 3 RTTs`
    row({ bench: '1. close', metric: 'client close() until its result, p50', unit: 'us', ours: f.p50, anchorName: rttName, anchor: rtt.ours, note })
    row({ bench: '1. close', metric: 'client close() until its result, p99', unit: 'us', ours: f.p99, anchorName: rttName, anchor: rtt.ours })
    row({ bench: '1. close', metric: "server: REQ received until its 'close', p50", unit: 'us', ours: f.sp50, anchorName: rttName, anchor: rtt.ours })
    row({ bench: '1. close', metric: "server: REQ received until its 'close', p99", unit: 'us', ours: f.sp99, anchorName: rttName, anchor: rtt.ours })
    row({
      bench: '1. close',
      metric: "client close() until both sides' 'close', p50",
      unit: 'us',
      ours: f.both,
      anchorName: rttName,
      anchor: rtt.ours,
    })
    // close() resolves only once the native side freed everything; timings.closeMs stops at the
    // protocol's terminal state (REQ sent, ACK in, FIN out): the handshake without the teardown.
    row({
      bench: '1. close',
      metric: 'client handshake only (timings.closeMs: close() to FIN sent), p50',
      unit: 'us',
      ours: f.hs50,
      anchorName: rttName,
      anchor: rtt.ours,
      note: 'the rest of close() is freeing the transport resources (verified teardown)',
    })
    const rawName = transport === 'tcp' ? 'raw node:net 64 B RTT' : 'ib_send_lat RTT (2 x t_typical)'
    row({ bench: '1. close', metric: 'client close() until its result, p50', unit: 'us', ours: f.p50, anchorName: rawName, anchor: rtt.anchor })
    ctx.extra.closeForced = forced
  },
}
