/**
 * Thousands of rdma connections (issue 13): 1,000 open at once between two processes, all through
 * one shared receive queue per device and process, one of them flooding while the others trickle.
 * Runs inside the Soft-RoCE guest (`npm run test:rdma`); elsewhere it is reported as skipped.
 */
import fs from 'node:fs'
import path from 'node:path'

import { connect, liveCounts, type Connection } from '../src/index'
import { assertNoLiveResources, rdmaHost, startPeer, withDeadline } from './helpers'
import { rdmaTest } from './rdma-test'

/** rxe's RNR counters (receiver-not-ready NAKs sent and received), summed over devices and ports. */
function rnrCounters(): Record<string, number> | undefined {
  const root = '/sys/class/infiniband'
  if (!fs.existsSync(root)) return undefined
  const out: Record<string, number> = {}
  for (const dev of fs.readdirSync(root)) {
    const ports = path.join(root, dev, 'ports')
    for (const port of fs.existsSync(ports) ? fs.readdirSync(ports) : []) {
      const dir = path.join(ports, port, 'hw_counters')
      for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
        if (name.includes('rnr')) out[name] = (out[name] ?? 0) + Number(fs.readFileSync(path.join(dir, name), 'utf8'))
      }
    }
  }
  return Object.keys(out).length > 0 ? out : undefined
}

async function roundTrip(c: Connection, text: string): Promise<number> {
  const t0 = performance.now()
  await c.send(text)
  const echo = (await c.read())?.toString()
  if (echo !== text) throw new Error(`echo of ${text} came back as ${echo}`)
  return performance.now() - t0
}

rdmaTest('rdma: 1,000 connections at once, one flooding while 999 trickle: nothing lost, no RNR, all closed gracefully', async (t) => {
  const peer = startPeer(t, ['server'], { RG_TRANSPORT: 'rdma', RG_HOST: rdmaHost })
  const { port } = await peer.waitFor('port', 'port', 60_000)
  const rnrBefore = rnrCounters()
  // The title's "no RNR" is checked on the device's counters: without them this test proves nothing.
  if (rnrBefore === undefined) throw new Error('no RNR counters under /sys/class/infiniband/*/ports/*/hw_counters: cannot check "no RNR"')
  const n = 1000
  const opts = { transport: 'rdma' as const, host: rdmaHost, port: port as number, heartbeatIntervalMs: 5000, heartbeatTimeoutMs: 60_000 }
  const conns: Connection[] = []
  const t0 = performance.now()
  // 50 at a time: rdma-cm's listen backlog holds connect requests not yet taken off its channel.
  while (conns.length < n) {
    conns.push(
      ...(await withDeadline(Promise.all(Array.from({ length: Math.min(50, n - conns.length) }, () => connect(opts))), 120_000, 'connecting 50')),
    )
  }
  const connectMs = performance.now() - t0
  const open = liveCounts()
  t.is(open.rdmaQueuePairs, n)
  t.is(open.rdmaSharedReceiveQueues, 1, 'one shared receive queue for all of them')
  t.log(
    `${n} connections in ${(connectMs / 1000).toFixed(1)} s; ${(open.rdmaRegisteredBytes / 2 ** 20).toFixed(1)} MiB registered here (${Math.round(open.rdmaRegisteredBytes / n)} bytes per connection)`,
  )
  // README: an idle connection costs 32 KiB, 1,000 about 36 MiB: 4,000 receive buffers of 8 KiB in
  // 16 pool chunks of 2 MiB, and the pool's 4 MiB of send slots. The bound allows one chunk more
  // (the pool grows a chunk at a time), not a second buffer set per connection.
  t.true(open.rdmaRegisteredBytes <= 38 * 2 ** 20, `${open.rdmaRegisteredBytes} bytes registered for ${n} connections (README: ~36 MiB)`)

  // One connection floods: 2,000 messages of 4 KiB, each carrying its number, read back in order.
  const [flooder, ...tricklers] = conns
  const flood = 2000
  const flooding = (async () => {
    const echoes: number[] = []
    const reading = (async () => {
      for await (const m of flooder) {
        echoes.push(m.readUInt32BE(0))
        if (echoes.length === flood) return
      }
    })()
    for (let i = 0; i < flood; i++) {
      const b = Buffer.alloc(4096, i & 0xff)
      b.writeUInt32BE(i, 0)
      await flooder.send(b)
    }
    await reading
    return echoes
  })()
  // The others trickle: three round trips each, all at once, while the flood runs.
  const trickles = await withDeadline(
    Promise.all(
      tricklers.map(async (c, i) => {
        let worst = 0
        for (let k = 0; k < 3; k++) worst = Math.max(worst, await roundTrip(c, `conn ${i} message ${k}`))
        return worst
      }),
    ),
    180_000,
    '999 connections trickling',
  )
  const echoes = await withDeadline(flooding, 180_000, 'the flood')
  t.deepEqual(
    echoes,
    Array.from({ length: flood }, (_, i) => i),
    'every flooded message came back once, in order',
  )
  const worst = Math.max(...trickles)
  t.log(`trickle round trips during the flood: worst ${worst.toFixed(0)} ms`)

  const results = await withDeadline(Promise.all(conns.map((c) => c.close())), 180_000, 'closing 1,000')
  t.true(
    results.every((r) => r.outcome === 'graceful'),
    JSON.stringify(results.find((r) => r.outcome !== 'graceful')),
  )
  assertNoLiveResources(t)
  const idle = await peer.waitFor('idle', 'idle', 60_000)
  t.is(idle.idle, n)
  // The server's listener (its CM id) still keeps the device pool; every connection is gone.
  const live = idle.live as Record<string, number>
  t.is(live.rdmaQueuePairs, 0, 'the server process destroyed every QP')
  t.is(live.rdmaCmIds, 1, "only the server's listener id is left")
  t.deepEqual(rnrCounters(), rnrBefore, 'no receiver-not-ready NAK was sent or received')
})
