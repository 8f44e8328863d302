/**
 * 2. Connect latency: connect() until OPEN and until the server's first message, with the readiness
 * gate on and off, against raw node:net (tcp); the gate's cost against our 64 B RTT (ping-pong).
 */
import { once } from 'node:events'
import * as net from 'node:net'

import { connect, listen, type Connection, type Server } from '../../src/index'
import { ALL_CAPABILITIES, Capability } from '../../src/protocol'
import type { Bench, BenchContext } from '../context'
import { closeServer, median, now, portOfServer, quantile } from '../lib'

async function connectOnce(ctx: BenchContext, port: number, caps?: number): Promise<{ open: number; firstByte: number; serverGate: number }> {
  const t0 = now()
  const conn = await connect({ ...ctx.baseOpts, port, ...(caps === undefined ? {} : { capabilities: caps }) })
  const open = now() - t0
  const first = await conn.read()
  const firstByte = now() - t0
  if (first === null) throw new Error('connect: no greeting')
  await conn.close()
  return { open, firstByte, serverGate: lastServerConnectMs }
}

let lastServerConnectMs = NaN

async function greeter(ctx: BenchContext, caps?: number): Promise<Server> {
  const server = await listen({ ...ctx.baseOpts, port: 0, ...(caps === undefined ? {} : { capabilities: caps }) })
  server.on('connection', (conn: Connection) => {
    conn.once('open', () => (lastServerConnectMs = conn.timings.connectMs ?? NaN))
    conn.send('hi').catch(() => {})
    void (async () => {
      for await (const _ of conn);
    })().catch(() => {})
  })
  return server
}

async function rawConnectOnce(host: string, port: number): Promise<{ open: number; firstByte: number }> {
  const t0 = now()
  const sock = net.connect(port, host)
  await once(sock, 'connect')
  const open = now() - t0
  await once(sock, 'data')
  const firstByte = now() - t0
  sock.end()
  if (!sock.closed) await once(sock, 'close')
  return { open, firstByte }
}

export const connectLatency: Bench = {
  name: 'connect',
  needs: ['pingpong'],
  async run(ctx) {
    const { transport, N, row } = ctx
    const rtt = ctx.rtt64.ours
    const noGate = ALL_CAPABILITIES & ~Capability.READY_GATE
    const gateOn = await greeter(ctx)
    const gateOff = await greeter(ctx, noGate)
    const raw = net.createServer((s) => {
      s.on('error', () => {})
      s.end('h')
    })
    raw.listen(0, '127.0.0.1')
    await once(raw, 'listening')
    const f = {
      onOpen: [] as number[],
      offOpen: [] as number[],
      onFirst: [] as number[],
      offFirst: [] as number[],
      onServer: [] as number[],
      offServer: [] as number[],
      rawOpen: [] as number[],
      rawFirst: [] as number[],
      onOpenP99: [] as number[],
      offOpenP99: [] as number[],
    }
    for (let rep = 0; rep < N.reps; rep++) {
      const r = { onOpen: [] as number[], offOpen: [] as number[], onFirst: [] as number[], offFirst: [] as number[] }
      const s = { on: [] as number[], off: [] as number[] }
      const rawR = { open: [] as number[], first: [] as number[] }
      for (let i = 0; i < N.connect; i++) {
        const a = await connectOnce(ctx, gateOn.port)
        r.onOpen.push(a.open * 1000)
        r.onFirst.push(a.firstByte * 1000)
        s.on.push(a.serverGate * 1000)
        const b = await connectOnce(ctx, gateOff.port, noGate)
        r.offOpen.push(b.open * 1000)
        r.offFirst.push(b.firstByte * 1000)
        s.off.push(b.serverGate * 1000)
        if (transport === 'tcp') {
          const c = await rawConnectOnce(ctx.host, portOfServer(raw))
          rawR.open.push(c.open * 1000)
          rawR.first.push(c.firstByte * 1000)
        }
      }
      f.onOpen.push(median(r.onOpen))
      f.offOpen.push(median(r.offOpen))
      f.onOpenP99.push(quantile(r.onOpen, 0.99))
      f.offOpenP99.push(quantile(r.offOpen, 0.99))
      f.onFirst.push(median(r.onFirst))
      f.offFirst.push(median(r.offFirst))
      f.onServer.push(median(s.on))
      f.offServer.push(median(s.off))
      if (transport === 'tcp') {
        f.rawOpen.push(median(rawR.open))
        f.rawFirst.push(median(rawR.first))
      }
    }
    const rawName = 'raw node:net'
    const isTcp = transport === 'tcp'
    row({
      bench: '2. connect',
      metric: 'connect() resolved, gate ON, p50',
      unit: 'us',
      ours: f.onOpen,
      ...(isTcp ? { anchorName: `${rawName} connect`, anchor: f.rawOpen } : {}),
    })
    row({
      bench: '2. connect',
      metric: 'connect() resolved, gate OFF, p50',
      unit: 'us',
      ours: f.offOpen,
      ...(isTcp ? { anchorName: `${rawName} connect`, anchor: f.rawOpen } : {}),
    })
    row({ bench: '2. connect', metric: 'connect() resolved, gate ON, p99', unit: 'us', ours: f.onOpenP99 })
    row({ bench: '2. connect', metric: 'connect() resolved, gate OFF, p99', unit: 'us', ours: f.offOpenP99 })
    row({
      bench: '2. connect',
      metric: "connect() until the server's first message, gate ON, p50",
      unit: 'us',
      ours: f.onFirst,
      ...(isTcp ? { anchorName: `${rawName} connect + first byte`, anchor: f.rawFirst } : {}),
    })
    row({
      bench: '2. connect',
      metric: "connect() until the server's first message, gate OFF, p50",
      unit: 'us',
      ours: f.offFirst,
      ...(isTcp ? { anchorName: `${rawName} connect + first byte`, anchor: f.rawFirst } : {}),
    })
    row({ bench: '2. connect', metric: 'server: transport up until it may send (timings.connectMs), gate ON, p50', unit: 'us', ours: f.onServer })
    row({ bench: '2. connect', metric: 'server: transport up until it may send (timings.connectMs), gate OFF, p50', unit: 'us', ours: f.offServer })
    const gateCost = f.onFirst.map((v, i) => v - f.offFirst[i]!)
    const oneWay = rtt.map((v) => v / 2)
    row({
      bench: '2. connect',
      metric: 'gate cost: first message ON - OFF',
      unit: 'us',
      ours: gateCost,
      anchorName: 'one-way trip (our 64 B RTT / 2)',
      anchor: oneWay,
      note: 'the issue expected about one one-way trip',
    })
    row({
      bench: '2. connect',
      metric: 'gate cost: first message ON - OFF',
      unit: 'us',
      ours: gateCost,
      anchorName: 'our 64 B RTT',
      anchor: rtt,
      note: 'by the handshake order (passive HELLO only after the active HELLO; READY after the passive HELLO) the gate adds one RTT: READY out, then the data back instead of riding with HELLO',
    })
    await gateOn.close({ graceMs: 1000 })
    await gateOff.close({ graceMs: 1000 })
    await closeServer(raw)
  },
}
