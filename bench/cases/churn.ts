/** 6. Churn: connect/close cycles one after the other; every live count must read zero at the end. */
import { once } from 'node:events'
import * as net from 'node:net'

import { connect, liveCounts, type Connection } from '../../src/index'
import type { Bench } from '../context'
import { closeServer, mib, now, portOfServer } from '../lib'

export const churn: Bench = {
  name: 'churn',
  async run(ctx) {
    const { transport, N, row } = ctx
    const n = N.churn
    const server = await ctx.echoServer()
    let notGraceful = 0
    server.on('connection', (c: Connection) => c.closed.then((r) => r.outcome !== 'graceful' && notGraceful++))
    const rssStart = process.memoryUsage.rss()
    const per: number[] = []
    const t0 = now()
    let chunkStart = now()
    const chunk = Math.max(1, Math.floor(n / 10))
    let rssMid = 0
    for (let i = 0; i < n; i++) {
      const c = await connect({ ...ctx.baseOpts, port: server.port })
      const r = await c.close()
      if (r.outcome !== 'graceful') notGraceful++
      if ((i + 1) % chunk === 0) {
        per.push(((now() - chunkStart) / chunk) * 1000)
        chunkStart = now()
      }
      if (i === Math.floor(n / 2)) rssMid = process.memoryUsage.rss()
    }
    const total = now() - t0
    await server.close({ graceMs: 1000 })
    await new Promise((r) => setTimeout(r, 50))
    const counts = liveCounts()
    const nonZero = Object.entries(counts).filter(([, v]) => v !== 0)
    const rssEnd = process.memoryUsage.rss()
    let rawPer: number[] = []
    if (transport === 'tcp') rawPer = await rawChurn(Math.min(n, 5000))
    row({
      bench: '6. churn',
      metric: `${n} connect/close cycles: time per cycle (median of 10 chunks)`,
      unit: 'us',
      ours: per,
      ...(transport === 'tcp' ? { anchorName: `raw node:net connect/end cycle (${Math.min(n, 5000)} cycles)`, anchor: rawPer } : {}),
      note: `total ${(total / 1000).toFixed(1)} s; not graceful: ${notGraceful}; live counts at the end: ${nonZero.length === 0 ? 'all zero' : JSON.stringify(Object.fromEntries(nonZero))}; RSS start ${mib(rssStart).toFixed(1)} MiB, middle ${mib(rssMid).toFixed(1)} MiB, end ${mib(rssEnd).toFixed(1)} MiB`,
    })
    ctx.extra.churn = {
      n,
      notGraceful,
      liveCounts: counts,
      rssStartMiB: mib(rssStart),
      rssMidMiB: mib(rssMid),
      rssEndMiB: mib(rssEnd),
      totalMs: total,
    }
    if (nonZero.length > 0) throw new Error(`churn: live counts not zero at the end: ${JSON.stringify(counts)}`)
  },
}

async function rawChurn(n: number): Promise<number[]> {
  const server = net.createServer((s) => {
    s.on('error', () => {})
    s.on('end', () => s.end())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const per: number[] = []
  const chunk = Math.max(1, Math.floor(n / 10))
  let chunkStart = now()
  for (let i = 0; i < n; i++) {
    const s = net.connect(portOfServer(server), '127.0.0.1')
    await once(s, 'connect')
    s.end()
    s.resume()
    if (!s.closed) await once(s, 'close')
    if ((i + 1) % chunk === 0) {
      per.push(((now() - chunkStart) / chunk) * 1000)
      chunkStart = now()
    }
  }
  await closeServer(server)
  return per
}
