/** 5. Mass close: 1,000 connections (both ends in this process) closing at once; peak RSS. */
import { once } from 'node:events'
import * as net from 'node:net'

import { connect, type Connection } from '../../src/index'
import type { Bench } from '../context'
import { closeServer, mib, now, portOfServer, rssSampler } from '../lib'

export const massClose: Bench = {
  name: 'mass',
  async run(ctx) {
    const { transport, N, row } = ctx
    const n = N.massClose
    const times: number[] = []
    const peaks: number[] = []
    const rawTimes: number[] = []
    let notGraceful = 0
    const reps = ctx.scale === 'guest' ? 2 : 3
    for (let rep = 0; rep < reps; rep++) {
      const server = await ctx.echoServer({ backlog: 4096 })
      const serverClosed: Promise<{ outcome: string }>[] = []
      server.on('connection', (c: Connection) => serverClosed.push(c.closed))
      const rssBefore = process.memoryUsage.rss()
      const sampler = rssSampler(5)
      const conns: Connection[] = []
      for (let i = 0; i < n; i += 50) {
        const batch = await Promise.all(Array.from({ length: Math.min(50, n - i) }, () => connect({ ...ctx.baseOpts, port: server.port })))
        conns.push(...batch)
      }
      // every connection carries one message first, so that both sides are open and have read
      await Promise.all(
        conns.map(async (c) => {
          await c.send('x')
          await c.read()
        }),
      )
      const t0 = now()
      const results = await Promise.all(conns.map((c) => c.close()))
      const sresults = await Promise.all(serverClosed)
      times.push(now() - t0)
      peaks.push(mib(sampler.stop()))
      notGraceful += results.filter((r) => r.outcome !== 'graceful').length + sresults.filter((r) => r.outcome !== 'graceful').length
      ctx.extra[`massCloseRssBeforeMiB_${rep}`] = mib(rssBefore)
      await server.close({ graceMs: 1000 })
      if (transport === 'tcp') rawTimes.push(await rawMassClose(n))
    }
    const note = `${n} connections x ${reps} repetitions; outcomes not graceful (both sides): ${notGraceful}`
    row({
      bench: '5. mass close',
      metric: `${n} connections closing at once: total time`,
      unit: 'ms',
      ours: times,
      ...(transport === 'tcp' ? { anchorName: `raw node:net, ${n} sockets end() at once`, anchor: rawTimes } : {}),
      note,
    })
    row({ bench: '5. mass close', metric: 'peak RSS of the process (both ends in it)', unit: 'MiB', ours: peaks })
    ctx.extra.massCloseNotGraceful = notGraceful
  },
}

async function rawMassClose(n: number): Promise<number> {
  const serverSocks: net.Socket[] = []
  const server = net.createServer((s) => {
    s.on('error', () => {})
    serverSocks.push(s)
    s.on('end', () => s.end())
  })
  server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 })
  await once(server, 'listening')
  const socks: net.Socket[] = []
  for (let i = 0; i < n; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, n - i) }, async () => {
        const s = net.connect(portOfServer(server), '127.0.0.1')
        s.on('error', () => {})
        await once(s, 'connect')
        return s
      }),
    )
    socks.push(...batch)
  }
  while (serverSocks.length < n) await new Promise((r) => setTimeout(r, 1))
  const t0 = now()
  await Promise.all(
    [...socks, ...serverSocks].map((s) => {
      if (socks.includes(s)) s.end()
      return s.closed ? Promise.resolve() : once(s, 'close')
    }),
  )
  const t = now() - t0
  await closeServer(server)
  return t
}
