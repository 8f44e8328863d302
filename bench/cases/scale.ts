/**
 * 8. Scale (rdma only): 1,000 connections open at once (both ends in this process): what they
 * register (per idle connection and in all), and how long each takes to set up against rdma-core's
 * `cmtime` (rdma-cm connection setup alone, 1,000 connections, same guest run).
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'

import { connect, liveCounts, type Connection } from '../../src/index'
import type { Bench } from '../context'
import { now } from '../lib'

const CONNECTIONS = 1000

export const scale: Bench = {
  name: 'scale',
  async run(ctx) {
    if (ctx.transport !== 'rdma') return
    const registered: number[] = []
    const perConn: number[] = []
    const setupUs: number[] = []
    const reps = 2
    for (let rep = 0; rep < reps; rep++) {
      // Heartbeats every 5 s, dead after 60 s: 2,000 ends in one emulated guest with the default
      // 1 s / 5 s heartbeats saw a heartbeat-timeout (an open finding, bench/NOTES.md).
      const hb = { heartbeatIntervalMs: 5000, heartbeatTimeoutMs: 60_000 }
      const server = await ctx.echoServer({ backlog: 4096, ...hb })
      const conns: Connection[] = []
      const t0 = now()
      for (let i = 0; i < CONNECTIONS; i += 50) {
        conns.push(
          ...(await Promise.all(Array.from({ length: Math.min(50, CONNECTIONS - i) }, () => connect({ ...ctx.baseOpts, ...hb, port: server.port })))),
        )
      }
      setupUs.push(((now() - t0) * 1000) / CONNECTIONS)
      const bytes = liveCounts().rdmaRegisteredBytes ?? 0
      registered.push(bytes / 2 ** 20)
      perConn.push(bytes / (2 * CONNECTIONS) / 1024)
      await Promise.all(conns.map((c) => c.close()))
      await server.close({ graceMs: 1000 })
    }
    const cm = [await cmtime(ctx.host, CONNECTIONS), await cmtime(ctx.host, CONNECTIONS)]
    ctx.extra.cmtime = cm.map((c) => c.table)
    const note = `${CONNECTIONS} connections, both ends in one process (${2 * CONNECTIONS} connection ends), 50 connecting at a time`
    ctx.row({
      bench: '8. scale',
      metric: 'registered memory per idle connection end',
      unit: 'KiB',
      ours: perConn,
      note: 'target <= 64 KiB; was 5,120 KiB (80 buffers of 64 KiB)',
    })
    ctx.row({
      bench: '8. scale',
      metric: `registered memory, ${CONNECTIONS} connections open with both ends in this process`,
      unit: 'MiB',
      ours: registered,
      note: `${note}; one end per process (the server's side of ${CONNECTIONS}, target <= 64 MiB) is half: 36 MiB in __test__/rdma-scale.spec.ts`,
    })
    ctx.row({
      bench: '8. scale',
      metric: 'connection setup per connection (ours: rdma-cm + QP + HELLO/READY gate)',
      unit: 'us',
      ours: setupUs,
      anchorName: `cmtime -c ${CONNECTIONS}: rdma-cm connect step, us per connection`,
      anchor: cm.map((c) => c.connectUsPerConn),
      note,
    })
  },
}

/**
 * rdma-core's cmtime (rdmacm-utils): a server and a client setting up `n` connections; returns the
 * client's table and its "connect" step in us per connection.
 */
async function cmtime(host: string, n: number): Promise<{ table: string; connectUsPerConn: number }> {
  const port = String(20000 + Math.floor(Math.random() * 20000))
  const srv = spawn('cmtime', ['-b', host, '-p', port], { stdio: ['ignore', 'ignore', 'pipe'] })
  srv.on('error', () => {})
  await new Promise((r) => setTimeout(r, 500))
  const cli = spawn('cmtime', ['-s', host, '-b', host, '-p', port, '-c', String(n)], { stdio: ['ignore', 'pipe', 'pipe'] })
  let text = ''
  cli.stdout.on('data', (d: Buffer) => (text += d.toString()))
  cli.stderr.on('data', (d: Buffer) => (text += d.toString()))
  const timer = setTimeout(() => cli.kill(), 120_000)
  await once(cli, 'exit')
  clearTimeout(timer)
  srv.kill()
  if (srv.exitCode === null && srv.signalCode === null) await once(srv, 'exit')
  // cmtime prints one line per step: name, total ms, max ms, min us, us / conn.
  const line = text.split('\n').find((l) => /^\s*connect\s*:/.test(l))
  const usPerConn = line === undefined ? Number.NaN : Number(line.trim().split(/\s+/).at(-1))
  if (!Number.isFinite(usPerConn)) throw new Error(`cmtime: no "connect" step in its output:\n${text}`)
  return { table: text.trim(), connectUsPerConn: usPerConn }
}
