/** 4. Throughput: one connection sending 4 KiB and 64 KiB messages as fast as credits allow. */
import { connect, listen, type Connection } from '../../src/index'
import type { Bench, BenchContext } from '../context'
import { closeServer, mib, now, portOfServer, RawClient, rawServer } from '../lib'
import { ibSendBw } from '../perftest'

async function tputOurs(ctx: BenchContext, size: number, count: number): Promise<number> {
  const server = await listen({ ...ctx.baseOpts, port: 0 })
  server.on('connection', (conn: Connection) => {
    void (async () => {
      let n = 0
      for await (const m of conn) {
        if (m.length === size && ++n === count) await conn.send('done')
      }
    })().catch(() => {})
  })
  const conn = await connect({ ...ctx.baseOpts, port: server.port })
  const payload = Buffer.alloc(size, 1)
  const t0 = now()
  let pending: Promise<void>[] = []
  for (let i = 0; i < count; i++) {
    pending.push(conn.send(payload))
    if (pending.length >= 512) {
      await Promise.all(pending)
      pending = []
    }
  }
  await Promise.all(pending)
  const done = await conn.read()
  const secs = (now() - t0) / 1000
  if (done?.toString() !== 'done') throw new Error('throughput: no done')
  await conn.close()
  await server.close({ graceMs: 1000 })
  return mib(size * count) / secs
}

async function tputRaw(size: number, count: number): Promise<number> {
  const server = await rawServer('sink')
  const c = await RawClient.connect(portOfServer(server))
  const payload = Buffer.alloc(size, 1)
  const head = Buffer.alloc(4)
  head.writeUInt32BE(count)
  const t0 = now()
  await c.write(head)
  for (let i = 0; i < count; i++) await c.write(payload)
  const done = await c.read()
  const secs = (now() - t0) / 1000
  if (done.toString() !== 'done') throw new Error('raw throughput: no done')
  await c.close()
  await closeServer(server)
  return mib(size * count) / secs
}

export const throughput: Bench = {
  name: 'throughput',
  async run(ctx) {
    const { transport, N, row } = ctx
    for (const [size, count] of [
      [4096, N.tputMsgs4k],
      [65536, N.tputMsgs64k],
    ] as const) {
      const ours: number[] = []
      const anchor: number[] = []
      for (let rep = 0; rep < N.reps; rep++) {
        ours.push(await tputOurs(ctx, size, count))
        anchor.push(transport === 'tcp' ? await tputRaw(size, count) : await ibSendBw(ctx.host, size, Math.min(count, 2000)))
      }
      row({
        bench: '4. throughput',
        metric: `${size === 4096 ? '4 KiB' : '64 KiB'} messages (${count} per run)`,
        unit: 'MiB/s',
        ours,
        anchorName: transport === 'tcp' ? 'raw node:net' : 'ib_send_bw (BW average)',
        anchor,
        note: 'higher is better; ratio < 1 means slower than the anchor',
      })
    }
  },
}
